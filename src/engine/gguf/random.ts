/**
 * Seeded randomness for test models. Each tensor gets its own generator seeded from
 * hash(seed, tensor name), so a tensor's values depend on neither write order nor encoding.
 */
import { createHash } from 'node:crypto';

export interface Random {
  /** A uniform 32-bit unsigned integer. */
  nextU32(): number;
  /** A uniform float in [0, 1) with 24 random bits (exact in float32). */
  nextFloat(): number;
  /** Fills `out` with uniform values in [-bound, bound); one draw per element, in order. */
  fillUniform(out: Float32Array, bound: number): void;
}

/** xoshiro128** seeded with the first 16 bytes of sha256(domain, seed, name). */
export function createRandom(seed: number, name: string, domain = 'rbee-gguf-v1'): Random {
  const digest = createHash('sha256').update(`${domain}\0${seed}\0${name}`).digest();
  const s = new Int32Array(4);
  for (let i = 0; i < 4; i++) s[i] = digest.readInt32LE(i * 4);
  // xoshiro's one forbidden state; a sha256 prefix of zeros will not happen, but be exact.
  if ((s[0]! | s[1]! | s[2]! | s[3]!) === 0) s[0] = 1;
  return createXoshiro128(s);
}

function createXoshiro128(state: Int32Array): Random {
  let s0 = state[0]!;
  let s1 = state[1]!;
  let s2 = state[2]!;
  let s3 = state[3]!;
  const nextU32 = (): number => {
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return result;
  };
  return {
    nextU32,
    nextFloat: () => (nextU32() >>> 8) * 2 ** -24,
    fillUniform: (out, bound) => {
      // The generator is inlined by hand: this loop draws 163M values for the small preset.
      const scale = bound * 2 ** -31;
      for (let i = 0; i < out.length; i++) {
        const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
        const t = s1 << 9;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = (s3 << 11) | (s3 >>> 21);
        out[i] = result * scale;
      }
    },
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
