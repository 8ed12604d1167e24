/**
 * CRC-64/GO-ISO: Go's `hash/crc64` with the ISO table, the checksum classic bitfog lists
 * as `hash`. Reflected polynomial 0xD800000000000000, init and xorout all ones.
 * crc("123456789") = 0xB90956C775A41001 = 13333283586479230977.
 *
 * The 64-bit state is kept as two uint32 halves so the inner loop never allocates a
 * BigInt; the value is exposed as a BigInt (it exceeds 2^53, so a JS number would round it).
 */

const TABLE_LO = new Uint32Array(256);
const TABLE_HI = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  let lo = i;
  let hi = 0;
  for (let bit = 0; bit < 8; bit++) {
    const carry = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (carry) hi = (hi ^ 0xd8000000) >>> 0;
  }
  TABLE_LO[i] = lo;
  TABLE_HI[i] = hi;
}

/** An incremental CRC-64/GO-ISO. */
export class Crc64 {
  #lo = 0xffffffff;
  #hi = 0xffffffff;

  update(data: Uint8Array): this {
    let lo = this.#lo;
    let hi = this.#hi;
    for (let i = 0; i < data.length; i++) {
      const idx = (lo ^ data[i]!) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ TABLE_LO[idx]!;
      hi = (hi >>> 8) ^ TABLE_HI[idx]!;
    }
    this.#lo = lo >>> 0;
    this.#hi = hi >>> 0;
    return this;
  }

  /** The checksum as an unsigned 64-bit BigInt. */
  digest(): bigint {
    return (BigInt((this.#hi ^ 0xffffffff) >>> 0) << 32n) | BigInt((this.#lo ^ 0xffffffff) >>> 0);
  }
}

/** The CRC-64/GO-ISO of a whole buffer. */
export function crc64(data: Uint8Array): bigint {
  return new Crc64().update(data).digest();
}
