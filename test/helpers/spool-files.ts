/**
 * The content a spool holds, read from its files the way the format is documented (blob
 * files under blobs/sha256, records in packs/*.pack), independently of src/core: tests use
 * it to damage a blob's bytes in place and to check what a crash left behind.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export interface StoredBlob {
  hash: string;
  /** The file holding the content, and where in it the content starts. */
  file: string;
  offset: number;
  size: number;
  packed: boolean;
  /** For packed blobs: where the record's header starts. */
  header?: number;
}

/** Every blob the spool would find: blob files, and the live records of each pack up to its first torn one. */
export async function storedBlobs(spool: string): Promise<StoredBlob[]> {
  const out: StoredBlob[] = [];
  const root = path.join(spool, 'blobs', 'sha256');
  for (const prefix of await fsp.readdir(root).catch(() => [] as string[])) {
    for (const name of await fsp.readdir(path.join(root, prefix))) {
      const file = path.join(root, prefix, name);
      out.push({ hash: `sha256:${name}`, file, offset: 0, size: (await fsp.stat(file)).size, packed: false });
    }
  }
  const packs = path.join(spool, 'packs');
  for (const name of (await fsp.readdir(packs).catch(() => [] as string[])).filter((n) => n.endsWith('.pack')).sort()) {
    const file = path.join(packs, name);
    const bytes = await fsp.readFile(file);
    for (let at = 0; at + 48 <= bytes.length; ) {
      const state = bytes[at + 4];
      const size = Number(bytes.readBigUInt64LE(at + 8));
      if (bytes.toString('latin1', at, at + 4) !== 'BFPK' || (state !== 0x4c && state !== 0x44) || at + 48 + size > bytes.length) break;
      if (state === 0x4c) out.push({ hash: `sha256:${bytes.toString('hex', at + 16, at + 48)}`, file, offset: at + 48, size, packed: true, header: at });
      at += 48 + size;
    }
  }
  return out;
}

/** The content of one stored blob. */
export async function storedContent(blob: StoredBlob): Promise<Buffer> {
  const h = await fsp.open(blob.file, 'r');
  try {
    const b = Buffer.alloc(blob.size);
    await h.read(b, 0, blob.size, blob.offset);
    return b;
  } finally {
    await h.close();
  }
}

/** Inverts one byte of a stored blob's content, in place. */
export async function flipStoredByte(blob: StoredBlob, offsetInContent: number): Promise<void> {
  const h = await fsp.open(blob.file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, blob.offset + offsetInContent);
    b[0] = b[0]! ^ 0xff;
    await h.write(b, 0, 1, blob.offset + offsetInContent);
  } finally {
    await h.close();
  }
}
