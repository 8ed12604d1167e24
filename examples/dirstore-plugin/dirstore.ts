/**
 * dirstore: a tree kept in a plain local directory, but not as a tree.
 *
 * Layout under the root directory:
 *
 *   dirstore.json                  marker: { "format": "bitfog-dirstore", "version": 1 }
 *   index/<H(dir)>/<H(name)>       one JSON record per entry of directory `dir`:
 *                                  { name, kind, size, hash, mtimeMs, object }
 *   objects/<id>                   file content, immutable once its record points at it
 *   tmp/                           records and objects being written
 *
 * H is sha256 in hex, so any name of any length and any bytes becomes a short, portable
 * file name (the index is flat per directory, content is flat). A record's `object` is a
 * random id: each write makes a new object, which gives every version a distinct
 * `version` token. `hash` is the sha256 of the content, computed while it streams in, so
 * `list` reports hashes without reading content (serverSideHashes).
 *
 * What it can and cannot do, honestly declared in `dirstoreCapabilities`:
 * - atomic writes: content goes to a new object first; the entry appears only when its
 *   record is renamed into the index, all at once. An aborted or short write leaves
 *   nothing visible (at most an unreferenced object, never listed).
 * - atomic renames: a file's record is replaced by one rename(2).
 * - whole-second mtimes, no modes, no symlinks.
 * - directories are real entries (empty ones too) but cannot be renamed: their children
 *   are indexed under the hash of their path. `rename` of a directory is EOPNOTSUPP.
 *
 * Durability: `write` does not fsync; `sync(paths)` flushes the records, objects and
 * index directories of a batch, which the core calls before relying on them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as C, createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  baseName,
  bitfogError,
  childPath,
  parentPath,
  throwIfAborted,
  toBitfogError,
  type Destination,
  type Entry,
  type ListOptions,
  type Metadata,
  type ReadOptions,
  type RelPath,
  type WriteOptions,
} from 'bitfog/plugin';
import { dirstoreCapabilities } from './capabilities.ts';


const MARKER = 'dirstore.json';
const FORMAT = { format: 'bitfog-dirstore', version: 1 };

interface DirRecord {
  name: string;
  kind: 'file' | 'directory';
  size: number;
  /** sha256 hex of the content (files). */
  hash?: string;
  mtimeMs: number;
  /** Id of the content object under objects/ (files). */
  object?: string;
}

export class DirStore implements Destination {
  readonly capabilities = dirstoreCapabilities;

  private constructor(
    readonly url: string,
    readonly root: string,
  ) {}

  /**
   * Opens the dirstore at local directory `root`. For writing, creates it when missing.
   * Throws ENOENT (reading a missing store), EBADURL (a directory that is not a dirstore).
   */
  static async open(url: string, root: string, { write }: { write: boolean }): Promise<DirStore> {
    const store = new DirStore(url, path.resolve(root));
    let marker: string | undefined;
    try {
      marker = await fsp.readFile(path.join(store.root, MARKER), 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw toBitfogError(e, `cannot open ${url}`);
    }
    if (marker === undefined) {
      if (!write) throw bitfogError('ENOENT', `${url} does not exist (no dirstore there)`);
      const existing = await fsp.readdir(store.root).catch(() => [] as string[]);
      if (existing.length > 0) throw bitfogError('EBADURL', `${url} is a non-empty directory that is not a dirstore`);
      try {
        for (const dir of ['objects', 'tmp', path.join('index', hashName(''))]) {
          await fsp.mkdir(path.join(store.root, dir), { recursive: true });
        }
        await fsp.writeFile(path.join(store.root, MARKER), JSON.stringify(FORMAT) + '\n');
      } catch (e) {
        throw toBitfogError(e, `cannot create ${url}`);
      }
    } else if ((JSON.parse(marker) as { format?: unknown }).format !== FORMAT.format) {
      throw bitfogError('EBADURL', `${url} is not a dirstore`);
    }
    return store;
  }

  async *list(options: ListOptions = {}): AsyncIterable<Entry> {
    const pending: RelPath[] = ['' as RelPath];
    while (pending.length > 0) {
      throwIfAborted(options.signal);
      const dir = pending.pop()!;
      let folder: import('node:fs').Dir;
      try {
        folder = await fsp.opendir(this.#folder(dir));
      } catch (e) {
        // A directory whose record exists but that never had a child has no folder yet.
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' && dir !== '') continue;
        throw toBitfogError(e, `cannot list ${this.url}`);
      }
      for await (const dirent of folder) {
        const record = await this.#readRecordFile(path.join(this.#folder(dir), dirent.name));
        if (!record) continue; // removed while we listed
        const p = childPath(dir, record.name);
        if (record.kind === 'directory') pending.push(p);
        yield toEntry(p, record);
      }
    }
  }

  async stat(p: RelPath): Promise<Entry> {
    return toEntry(p, await this.#record(p));
  }

  async read(p: RelPath, options: ReadOptions = {}): Promise<Readable> {
    throwIfAborted(options.signal);
    const record = await this.#record(p);
    if (record.kind === 'directory') throw bitfogError('EISDIR', `${JSON.stringify(p)} is a directory`, { path: p });
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(this.#object(record.object!), C.O_RDONLY);
    } catch (e) {
      // Replaced between reading its record and opening its object: it is gone as we knew it.
      throw toBitfogError(e, `cannot read ${JSON.stringify(p)}`, p);
    }
    const start = options.start ?? 0;
    const end = Math.min(options.end ?? record.size, record.size);
    if (end <= start) {
      await handle.close();
      return Readable.from([]);
    }
    return createReadStream('', {
      fd: handle,
      start,
      end: end - 1, // inclusive
      autoClose: true,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  async readlink(p: RelPath): Promise<string> {
    await this.#record(p);
    throw bitfogError('EIO', `${JSON.stringify(p)} is not a symlink (a dirstore has none)`, { path: p });
  }

  async write(p: RelPath, content: Readable, options: WriteOptions): Promise<void> {
    throwIfAborted(options.signal);
    await this.#checkParent(p);
    const existing = await this.#record(p).catch(() => undefined);
    if (existing?.kind === 'directory') throw bitfogError('EISDIR', `${JSON.stringify(p)} is a directory`, { path: p });

    const object = newId();
    const objectPath = this.#object(object);
    const sha = createHash('sha256');
    let written = 0;
    const handle = await fsp.open(objectPath, C.O_WRONLY | C.O_CREAT | C.O_EXCL, 0o600).catch((e: unknown) => {
      throw toBitfogError(e, `cannot write ${JSON.stringify(p)}`, p);
    });
    try {
      for await (const chunk of content as AsyncIterable<Buffer>) {
        throwIfAborted(options.signal);
        sha.update(chunk);
        let off = 0;
        while (off < chunk.length) off += (await handle.write(chunk, off, chunk.length - off, written + off)).bytesWritten;
        written += chunk.length;
      }
      await handle.close();
      if (written !== options.size) {
        throw bitfogError('EINTEGRITY', `got ${written} bytes for ${JSON.stringify(p)}, expected ${options.size}`, { path: p });
      }
      const hash = sha.digest('hex');
      if (options.hash !== undefined && options.hash !== `sha256:${hash}`) {
        throw bitfogError('EINTEGRITY', `content of ${JSON.stringify(p)} does not match its hash`, { path: p });
      }
      // The entry appears here, in one rename; before this nothing under `p` changed.
      await this.#putRecord(p, { name: baseName(p), kind: 'file', size: written, hash, mtimeMs: wholeSeconds(options.mtimeMs ?? Date.now()), object });
    } catch (e) {
      await handle.close().catch(() => {});
      content.destroy();
      await fsp.rm(objectPath, { force: true });
      throw toBitfogError(e, `cannot write ${JSON.stringify(p)}`, p);
    }
    if (existing?.object) await fsp.rm(this.#object(existing.object), { force: true });
  }

  async mkdir(p: RelPath): Promise<void> {
    await this.#checkParent(p);
    const existing = await this.#record(p).catch(() => undefined);
    if (existing) {
      if (existing.kind === 'directory') return;
      throw bitfogError('EEXIST', `${JSON.stringify(p)} exists and is not a directory`, { path: p });
    }
    await fsp.mkdir(this.#folder(p), { recursive: true });
    await this.#putRecord(p, { name: baseName(p), kind: 'directory', size: 0, mtimeMs: wholeSeconds(Date.now()) });
  }

  async remove(p: RelPath): Promise<void> {
    const record = await this.#record(p);
    if (record.kind === 'directory') throw bitfogError('EISDIR', `${JSON.stringify(p)} is a directory`, { path: p });
    await this.#unlinkRecord(p);
    await fsp.rm(this.#object(record.object!), { force: true });
  }

  async rmdir(p: RelPath): Promise<void> {
    const record = await this.#record(p);
    if (record.kind !== 'directory') throw bitfogError('ENOTDIR', `${JSON.stringify(p)} is not a directory`, { path: p });
    const children = await fsp.readdir(this.#folder(p)).catch(() => [] as string[]);
    if (children.length > 0) throw bitfogError('ENOTEMPTY', `${JSON.stringify(p)} is not empty`, { path: p });
    await this.#unlinkRecord(p);
    await fsp.rm(this.#folder(p), { recursive: true, force: true });
  }

  async symlink(p: RelPath): Promise<void> {
    throw bitfogError('EOPNOTSUPP', `cannot create symlink ${JSON.stringify(p)}: a dirstore stores no symlinks`, { path: p });
  }

  async rename(from: RelPath, to: RelPath): Promise<void> {
    const record = await this.#record(from);
    if (record.kind === 'directory') {
      throw bitfogError('EOPNOTSUPP', `cannot rename directory ${JSON.stringify(from)}: a dirstore indexes children by their path`, { path: from });
    }
    await this.#checkParent(to);
    const replaced = await this.#record(to).catch(() => undefined);
    if (replaced?.kind === 'directory') throw bitfogError('EISDIR', `${JSON.stringify(to)} is a directory`, { path: to });
    // The new name gets its own hard link to the content, so a crash between the steps
    // below leaves two independent entries, never two records sharing one object.
    const object = newId();
    await fsp.link(this.#object(record.object!), this.#object(object));
    await this.#putRecord(to, { ...record, name: baseName(to), object });
    await this.#unlinkRecord(from);
    await fsp.rm(this.#object(record.object!), { force: true });
    if (replaced?.object) await fsp.rm(this.#object(replaced.object), { force: true });
  }

  async setMetadata(p: RelPath, metadata: Metadata): Promise<void> {
    const record = await this.#record(p);
    if (metadata.mtimeMs === undefined) return; // modes are not kept
    await this.#putRecord(p, { ...record, mtimeMs: wholeSeconds(metadata.mtimeMs) });
  }

  async sync(paths: RelPath[]): Promise<void> {
    const files = new Set<string>();
    for (const p of paths) {
      if (p === '') {
        files.add(this.#folder(p));
        continue;
      }
      const record = await this.#record(p).catch(() => undefined);
      if (!record) continue; // already gone: nothing to flush
      files.add(this.#recordPath(p));
      files.add(this.#folder(parentPath(p)));
      // A directory is synced after renames into it: its children's records live in its folder.
      if (record.kind === 'directory') files.add(this.#folder(p));
      if (record.object) files.add(this.#object(record.object));
    }
    files.add(path.join(this.root, 'objects'));
    await Promise.all(
      [...files].map(async (f) => {
        const handle = await fsp.open(f, C.O_RDONLY).catch(() => undefined);
        try {
          await handle?.sync();
        } catch (e) {
          throw toBitfogError(e, `cannot sync ${this.url}`);
        } finally {
          await handle?.close();
        }
      }),
    );
  }

  async freeSpace(): Promise<number> {
    const st = await fsp.statfs(this.root);
    return Number(st.bavail) * Number(st.bsize);
  }

  async close(): Promise<void> {}

  #folder(dir: RelPath): string {
    return path.join(this.root, 'index', hashName(dir));
  }

  #recordPath(p: RelPath): string {
    return path.join(this.#folder(parentPath(p)), hashName(baseName(p)));
  }

  #object(id: string): string {
    return path.join(this.root, 'objects', id);
  }

  async #record(p: RelPath): Promise<DirRecord> {
    const record = await this.#readRecordFile(this.#recordPath(p));
    if (!record) throw bitfogError('ENOENT', `${JSON.stringify(p)} does not exist`, { path: p });
    return record;
  }

  async #readRecordFile(file: string): Promise<DirRecord | undefined> {
    try {
      return JSON.parse(await fsp.readFile(file, 'utf8')) as DirRecord;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw toBitfogError(e, `cannot read the index of ${this.url}`);
    }
  }

  /** Writes a record to a temporary file and renames it into the index: it appears whole or not at all. */
  async #putRecord(p: RelPath, record: DirRecord): Promise<void> {
    const tmp = path.join(this.root, 'tmp', newId());
    try {
      await fsp.writeFile(tmp, JSON.stringify(record));
      await fsp.mkdir(this.#folder(parentPath(p)), { recursive: true });
      await fsp.rename(tmp, this.#recordPath(p));
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw toBitfogError(e, `cannot update the index for ${JSON.stringify(p)}`, p);
    }
  }

  async #unlinkRecord(p: RelPath): Promise<void> {
    try {
      await fsp.unlink(this.#recordPath(p));
    } catch (e) {
      throw toBitfogError(e, `cannot remove ${JSON.stringify(p)}`, p);
    }
  }

  /** Parents exist by contract; checking is cheap and turns a caller's bug into a clear ENOENT/ENOTDIR. */
  async #checkParent(p: RelPath): Promise<void> {
    const parent = parentPath(p);
    if (parent === '') return;
    const record = await this.#record(parent);
    if (record.kind !== 'directory') throw bitfogError('ENOTDIR', `${JSON.stringify(parent)} is not a directory`, { path: p });
  }
}

function toEntry(p: RelPath, record: DirRecord): Entry {
  const entry: Entry = { path: p, kind: record.kind, size: record.size, mtimeMs: record.mtimeMs };
  if (record.hash) entry.hash = `sha256:${record.hash}`;
  if (record.object) entry.version = `${record.object}:${record.mtimeMs}`;
  return entry;
}

function hashName(s: string): string {
  return createHash('sha256').update(s, 'utf8').digest('hex');
}

function newId(): string {
  return randomBytes(16).toString('hex');
}

function wholeSeconds(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}
