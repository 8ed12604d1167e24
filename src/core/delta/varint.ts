/**
 * Unsigned LEB128 integers and a bounds-checked reader, shared by the signature and recipe
 * encodings. Values up to 2^53 - 1 (file sizes and offsets), so arithmetic, not bit ops.
 */
import { BitfogError } from '../errors.ts';

/** Appends `value` as unsigned LEB128 to `out`. */
export function pushVarint(out: number[], value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new BitfogError('EIO', `cannot encode ${value} as a varint`);
  while (value >= 0x80) {
    out.push((value % 0x80) | 0x80);
    value = Math.floor(value / 0x80);
  }
  out.push(value);
}

/** Reads a byte buffer front to back; every overrun or malformed value throws EBADSPOOL naming `what`. */
export class ByteReader {
  private at = 0;
  constructor(
    private readonly buf: Uint8Array,
    private readonly what: string,
  ) {}

  get remaining(): number {
    return this.buf.length - this.at;
  }

  fail(reason: string): never {
    throw new BitfogError('EBADSPOOL', `${this.what} is damaged: ${reason}`);
  }

  u8(): number {
    if (this.at >= this.buf.length) this.fail('truncated');
    return this.buf[this.at++]!;
  }

  varint(): number {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      value += (b & 0x7f) * scale;
      if (!Number.isSafeInteger(value)) this.fail('integer out of range');
      if (b < 0x80) return value;
      scale *= 0x80;
    }
    this.fail('integer too long');
  }

  bytes(n: number): Uint8Array {
    if (n > this.remaining) this.fail('truncated');
    const out = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  end(): void {
    if (this.remaining !== 0) this.fail(`${this.remaining} trailing bytes`);
  }
}
