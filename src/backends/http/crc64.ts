/**
 * CRC-64/GO-ISO: Go's `hash/crc64` with the ISO table, the checksum classic bitfog lists
 * as `hash`. Reflected polynomial 0xD800000000000000, init and xorout all ones.
 * crc("123456789") = 0xB90956C775A41001 = 13333283586479230977.
 *
 * The 64-bit state is kept as two uint32 halves so the inner loop never allocates a
 * BigInt; the value is exposed as a BigInt (it exceeds 2^53, so a JS number would round it).
 */

// Slicing-by-8 tables: LO[k*256 + i] / HI[k*256 + i] is table k (k = 0 is the classic
// byte-wise table). Eight bytes are folded per step, about three times the speed of the
// byte-wise loop, which still handles the unaligned head and tail.
const LO = new Uint32Array(8 * 256);
const HI = new Uint32Array(8 * 256);
for (let i = 0; i < 256; i++) {
  let lo = i;
  let hi = 0;
  for (let bit = 0; bit < 8; bit++) {
    const carry = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (carry) hi = (hi ^ 0xd8000000) >>> 0;
  }
  LO[i] = lo;
  HI[i] = hi;
}
for (let k = 1; k < 8; k++) {
  for (let i = 0; i < 256; i++) {
    const plo = LO[(k - 1) * 256 + i]!;
    const phi = HI[(k - 1) * 256 + i]!;
    const idx = plo & 0xff;
    LO[k * 256 + i] = (((plo >>> 8) | (phi << 24)) ^ LO[idx]!) >>> 0;
    HI[k * 256 + i] = ((phi >>> 8) ^ HI[idx]!) >>> 0;
  }
}

/** An incremental CRC-64/GO-ISO. */
export class Crc64 {
  #lo = 0xffffffff;
  #hi = 0xffffffff;

  update(data: Uint8Array): this {
    let lo = this.#lo;
    let hi = this.#hi;
    const n = data.length;
    let i = 0;
    for (; i + 8 <= n; i += 8) {
      lo ^= data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
      hi ^= data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24);
      const l =
        LO[1792 + (lo & 0xff)]! ^ LO[1536 + ((lo >>> 8) & 0xff)]! ^ LO[1280 + ((lo >>> 16) & 0xff)]! ^ LO[1024 + (lo >>> 24)]! ^
        LO[768 + (hi & 0xff)]! ^ LO[512 + ((hi >>> 8) & 0xff)]! ^ LO[256 + ((hi >>> 16) & 0xff)]! ^ LO[hi >>> 24]!;
      const h =
        HI[1792 + (lo & 0xff)]! ^ HI[1536 + ((lo >>> 8) & 0xff)]! ^ HI[1280 + ((lo >>> 16) & 0xff)]! ^ HI[1024 + (lo >>> 24)]! ^
        HI[768 + (hi & 0xff)]! ^ HI[512 + ((hi >>> 8) & 0xff)]! ^ HI[256 + ((hi >>> 16) & 0xff)]! ^ HI[hi >>> 24]!;
      lo = l;
      hi = h;
    }
    for (; i < n; i++) {
      const idx = (lo ^ data[i]!) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ LO[idx]!;
      hi = (hi >>> 8) ^ HI[idx]!;
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
