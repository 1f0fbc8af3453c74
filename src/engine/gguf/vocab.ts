/**
 * A SentencePiece-style ("llama" tokenizer) vocabulary for test models: control tokens, 256 byte
 * fallback tokens, single characters, then word-like n-grams, each a merge of two existing pieces
 * so that llama.cpp's SPM merge loop can reach every one of them (docs/test-models.md).
 */
import { RbeeError } from '../../shared/errors.js';
import { createRandom } from './random.js';

/** llama.cpp token attribute types (`tokenizer.ggml.token_type`). */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, byte: 6 } as const;

export const SPECIAL_TOKENS = {
  unk: 0,
  bos: 1,
  eos: 2,
  imStart: 3,
  imEnd: 4,
} as const;

export interface TestVocab {
  tokens: string[];
  scores: Float32Array;
  types: Int32Array;
}

/** SentencePiece's visible space. */
const SPACE = '\u2581';
const MAX_PIECE_CHARS = 8;

/** Deterministic for a given size; independent of the weights' seed so tokenization is stable. */
export function buildTestVocab(size: number): TestVocab {
  const tokens: string[] = ['<unk>', '<s>', '</s>', '<|im_start|>', '<|im_end|>'];
  const types: number[] = [
    TOKEN_TYPE.unknown,
    TOKEN_TYPE.control,
    TOKEN_TYPE.control,
    TOKEN_TYPE.control,
    TOKEN_TYPE.control,
  ];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_TYPE.byte);
  }
  const seen = new Set<string>();
  const addNormal = (piece: string): void => {
    seen.add(piece);
    tokens.push(piece);
    types.push(TOKEN_TYPE.normal);
  };
  addNormal(SPACE);
  const printable: string[] = [];
  for (let c = 0x21; c <= 0x7e; c++) printable.push(String.fromCharCode(c));
  for (const ch of printable) addNormal(ch);
  for (const ch of printable) addNormal(SPACE + ch);
  if (tokens.length > size) {
    throw new RbeeError('BAD_REQUEST', `test vocab needs at least ${tokens.length} tokens, got ${size}`);
  }

  // Word-like pieces: a left part (a word start or a letter run) plus a letter run on the right.
  const letters = [...'abcdefghijklmnopqrstuvwxyz'];
  const wordish = [...letters, ...letters.map((l) => SPACE + l)];
  const runs = [...letters];
  const random = createRandom(size, 'vocab', 'rbee-gguf-vocab-v1');
  // u² favours early (short, common) pieces, so the vocab grows like a BPE merge list does.
  const pick = (pool: readonly string[]): string => {
    const u = random.nextFloat();
    return pool[Math.floor(u * u * pool.length)] ?? '';
  };
  let attempts = 0;
  while (tokens.length < size) {
    if (++attempts > size * 1000) {
      throw new RbeeError('INTERNAL', `could not build a test vocab of ${size} tokens`);
    }
    const piece = pick(wordish) + pick(runs);
    if (piece.length > MAX_PIECE_CHARS || seen.has(piece)) continue;
    addNormal(piece);
    wordish.push(piece);
    if (!piece.startsWith(SPACE)) runs.push(piece);
  }

  // SPM merges the pair whose result has the highest score: earlier (shorter) pieces win.
  const scores = new Float32Array(size);
  for (let id = 0; id < size; id++) scores[id] = types[id] === TOKEN_TYPE.normal ? -id : 0;
  return { tokens, scores, types: Int32Array.from(types) };
}

/** Tokens greedy decoding must never produce: control, unknown and byte tokens. */
export function isSilentToken(vocab: TestVocab, id: number): boolean {
  return vocab.types[id] !== TOKEN_TYPE.normal;
}
