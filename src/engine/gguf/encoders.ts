/**
 * Tensor data encoders: F32, F16 and Q8_0 (blocks of 32 values: an f16 scale and 32 int8), bit-exact
 * with ggml's reference conversions (see docs/test-models.md).
 */
import { endianness } from 'node:os';
import { RbeeError } from '../../shared/errors.js';

/** Tensor types this writer can encode. */
export type GgmlType = 'f32' | 'f16' | 'q8_0';

export const Q8_0_BLOCK = 32;
/** An f16 scale plus 32 int8 values. */
export const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK;

const LITTLE_ENDIAN = endianness() === 'LE';

/** Encodes `src` as `type` into `out`; returns the number of bytes written. */
export function encodeTensorData(type: GgmlType, src: Float32Array, out: Buffer): number {
  switch (type) {
    case 'f32':
      if (LITTLE_ENDIAN) out.set(new Uint8Array(src.buffer, src.byteOffset, src.length * 4));
      else for (let i = 0; i < src.length; i++) out.writeFloatLE(src[i] ?? 0, i * 4);
      return src.length * 4;
    case 'f16':
      for (let i = 0; i < src.length; i++) out.writeUInt16LE(f32ToF16Bits(src[i] ?? 0), i * 2);
      return src.length * 2;
    case 'q8_0':
      return encodeQ8_0(src, out);
  }
}

/**
 * Q8_0 exactly as ggml quantizes it (`quantize_row_q8_0_ref`, float32 arithmetic): per block of 32,
 * d = max|x| / 127 stored as f16, then q = roundf(x / d) as int8.
 */
export function encodeQ8_0(src: Float32Array, out: Buffer): number {
  if (src.length % Q8_0_BLOCK !== 0) {
    throw new RbeeError('BAD_REQUEST', 'Q8_0 input length must be a multiple of 32');
  }
  // Typed views instead of Buffer.write*: this loop runs 163M times for the small preset.
  const bytes = new Uint8Array(out.buffer, out.byteOffset, out.length);
  const ints = new Int8Array(out.buffer, out.byteOffset, out.length);
  let at = 0;
  for (let b = 0; b < src.length; b += Q8_0_BLOCK) {
    let amax = 0;
    for (let j = b; j < b + Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(src[j] ?? 0));
    const d = Math.fround(amax / 127);
    const id = d === 0 ? 0 : Math.fround(1 / d);
    const dBits = f32ToF16Bits(d);
    bytes[at] = dBits & 0xff;
    bytes[at + 1] = dBits >>> 8;
    at += 2;
    for (let j = b; j < b + Q8_0_BLOCK; j++) {
      const x = Math.fround((src[j] ?? 0) * id);
      // roundf(x), branch-free because random signs defeat the branch predictor (2-3x slower):
      // floor(x + 0.5) via an int conversion (exact: |x| <= 127), then halves moved away from zero.
      const r = ((x + 128.5) | 0) - 128;
      ints[at++] = r - (r - x === 0.5 && x < 0 ? 1 : 0);
    }
  }
  return at;
}

const f32View = new Float32Array(1);
const u32View = new Uint32Array(f32View.buffer);

/** IEEE 754 binary32 → binary16 bits, round to nearest even (what ggml's FP32→FP16 does). */
export function f32ToF16Bits(value: number): number {
  f32View[0] = value;
  const x = u32View[0] ?? 0;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (m & 1) === 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1) === 1)) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/** binary16 bits → number, for tests and readers. */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
