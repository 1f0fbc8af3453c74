/**
 * Deterministic llama-architecture GGUF models with seeded random weights. Nothing here can
 * download weights, so rbee writes its own: they load in node-llama-cpp and llama.cpp, decode
 * greedily to printable text, chat through a ChatML template, and are byte-identical for the same
 * preset and seed. What a loadable model takes (metadata, tensors, vocabulary, silent rows, the
 * shapes that worked) is written down in docs/test-models.md.
 */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { createRandom } from './random.js';
import { throwIfAborted } from './writer.js';
import { buildTestVocab, isSilentToken, SPECIAL_TOKENS, type TestVocab } from './vocab.js';
import type { GgmlType } from './encoders.js';
import { elementCount, gguf, writeGguf, type GgufTensorSpec, type GgufValue } from './writer.js';

export type TestModelPreset = 'tiny' | 'small';

export interface TestModelShape {
  embedding: number;
  layers: number;
  heads: number;
  kvHeads: number;
  feedForward: number;
  vocab: number;
  context: number;
}

export const TEST_MODEL_SHAPES: Readonly<Record<TestModelPreset, Readonly<TestModelShape>>> = {
  // ≈0.9M parameters, ≈1 MB in Q8_0.
  tiny: { embedding: 128, layers: 2, heads: 4, kvHeads: 2, feedForward: 384, vocab: 2048, context: 2048 },
  // SmolLM-135M's shape: ≈163M parameters, ≈174 MB in Q8_0.
  small: { embedding: 576, layers: 30, heads: 9, kvHeads: 3, feedForward: 1536, vocab: 49152, context: 2048 },
};

export const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

export interface GenerateTestModelInit {
  path: string;
  /** Defaults to 'tiny'. */
  preset?: TestModelPreset;
  /** Any integer in [0, 2³²). Defaults to 1. */
  seed?: number;
  /** Encoding of the 2-D weights. Defaults to 'q8_0' (norms are always f32). */
  weightType?: GgmlType;
  /**
   * A reranker instead of a generative model: the same shape as qwen3 (per-head q/k norms), with
   * `pooling_type` rank and a two-label (`yes`, `no`) classifier head `cls.output.weight`, as
   * llama.cpp converts Qwen3 rerankers. Defaults to false.
   */
  reranker?: boolean;
  signal?: AbortSignal;
}

export interface GenerateTestModelResult {
  path: string;
  bytes: number;
  params: number;
}

/** llama.cpp's `general.file_type` (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q8_0). */
const FILE_TYPE: Record<GgmlType, number> = { f32: 0, f16: 1, q8_0: 7 };

export async function generateTestModel(init: GenerateTestModelInit): Promise<GenerateTestModelResult> {
  const preset = init.preset ?? 'tiny';
  const seed = init.seed ?? 1;
  const weightType = init.weightType ?? 'q8_0';
  const shape = TEST_MODEL_SHAPES[preset] as Readonly<TestModelShape> | undefined;
  if (shape === undefined) throw new RbeeError('BAD_REQUEST', `unknown test model preset ${String(preset)}`);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffff_ffff) {
    throw new RbeeError('BAD_REQUEST', `test model seed must be an integer in [0, 2^32), got ${seed}`);
  }
  throwIfAborted(init.signal);
  try {
    await mkdir(dirname(init.path), { recursive: true });
  } catch (error) {
    throw toRbeeError(error);
  }
  const vocab = buildTestVocab(shape.vocab);
  const reranker = init.reranker === true;
  const tensors = testModelTensors(shape, vocab, seed, weightType, reranker);
  const { bytes } = await writeGguf({
    path: init.path,
    metadata: testModelMetadata(preset, shape, vocab, seed, weightType, reranker),
    tensors,
    ...(init.signal === undefined ? {} : { signal: init.signal }),
  });
  const params = tensors.reduce((sum, t) => sum + elementCount(t.dims), 0);
  return { path: init.path, bytes, params };
}

function testModelMetadata(
  preset: TestModelPreset,
  shape: TestModelShape,
  vocab: TestVocab,
  seed: number,
  weightType: GgmlType,
  reranker: boolean,
): Record<string, GgufValue> {
  // llama.cpp ranks with qwen3's graph (softmax over the labels, last token pooled); the llama
  // architecture loads no classifier head.
  const arch = reranker ? 'qwen3' : 'llama';
  const kind = reranker ? 'reranker, ' : '';
  return {
    'general.architecture': gguf.string(arch),
    'general.type': gguf.string('model'),
    'general.name': gguf.string(`rbee demo (${kind}${preset}, random weights — for smoke tests)`),
    'general.description': gguf.string(
      `Seeded random weights (seed ${seed}) written by rbee for offline tests; its text is meaningless.`,
    ),
    'general.file_type': gguf.u32(FILE_TYPE[weightType]),
    'rbee.test_model.preset': gguf.string(preset),
    'rbee.test_model.seed': gguf.u32(seed),
    [`${arch}.vocab_size`]: gguf.u32(shape.vocab),
    [`${arch}.context_length`]: gguf.u32(shape.context),
    [`${arch}.embedding_length`]: gguf.u32(shape.embedding),
    [`${arch}.block_count`]: gguf.u32(shape.layers),
    [`${arch}.feed_forward_length`]: gguf.u32(shape.feedForward),
    [`${arch}.rope.dimension_count`]: gguf.u32(shape.embedding / shape.heads),
    [`${arch}.rope.freq_base`]: gguf.f32(10000),
    [`${arch}.attention.head_count`]: gguf.u32(shape.heads),
    [`${arch}.attention.head_count_kv`]: gguf.u32(shape.kvHeads),
    [`${arch}.attention.layer_norm_rms_epsilon`]: gguf.f32(1e-5),
    ...(reranker
      ? {
          // llama.cpp's LLAMA_POOLING_TYPE_RANK
          [`${arch}.pooling_type`]: gguf.u32(4),
          [`${arch}.classifier.output_labels`]: gguf.strings(['yes', 'no']),
        }
      : {}),
    'tokenizer.ggml.model': gguf.string('llama'),
    'tokenizer.ggml.tokens': gguf.strings(vocab.tokens),
    'tokenizer.ggml.scores': gguf.f32s(vocab.scores),
    'tokenizer.ggml.token_type': gguf.i32s(vocab.types),
    'tokenizer.ggml.bos_token_id': gguf.u32(SPECIAL_TOKENS.bos),
    'tokenizer.ggml.eos_token_id': gguf.u32(SPECIAL_TOKENS.eos),
    'tokenizer.ggml.unknown_token_id': gguf.u32(SPECIAL_TOKENS.unk),
    'tokenizer.ggml.add_bos_token': gguf.bool(true),
    'tokenizer.ggml.add_eos_token': gguf.bool(false),
    'tokenizer.ggml.add_space_prefix': gguf.bool(true),
    'tokenizer.chat_template': gguf.string(CHATML_TEMPLATE),
  };
}

function testModelTensors(
  shape: TestModelShape,
  vocab: TestVocab,
  seed: number,
  weightType: GgmlType,
  reranker: boolean,
): GgufTensorSpec[] {
  const { embedding: n, feedForward: ff, vocab: nVocab } = shape;
  const headDim = n / shape.heads;
  const kv = headDim * shape.kvHeads;
  const ones = (name: string, length = n): GgufTensorSpec => ({
    name,
    dims: [length],
    type: 'f32',
    fill: (out) => out.fill(1),
  });
  // Uniform in ±sqrt(3 / fan_in): unit-variance activations, so nothing overflows in 30 layers.
  const matrix = (name: string, rowLength: number, rows: number, silentRow?: (row: number) => boolean) =>
    randomTensor({ name, dims: [rowLength, rows], type: weightType, seed, silentRow });

  const tensors: GgufTensorSpec[] = [matrix('token_embd.weight', n, nVocab)];
  for (let l = 0; l < shape.layers; l++) {
    const blk = `blk.${l}`;
    tensors.push(
      ones(`${blk}.attn_norm.weight`),
      matrix(`${blk}.attn_q.weight`, n, n),
      matrix(`${blk}.attn_k.weight`, n, kv),
      matrix(`${blk}.attn_v.weight`, n, kv),
      matrix(`${blk}.attn_output.weight`, n, n),
      ones(`${blk}.ffn_norm.weight`),
      matrix(`${blk}.ffn_gate.weight`, n, ff),
      matrix(`${blk}.ffn_up.weight`, n, ff),
      matrix(`${blk}.ffn_down.weight`, ff, n),
    );
    if (reranker)
      tensors.push(ones(`${blk}.attn_q_norm.weight`, headDim), ones(`${blk}.attn_k_norm.weight`, headDim));
  }
  // Zero logits for control and byte tokens: greedy decoding stays printable and never ends early.
  tensors.push(
    ones('output_norm.weight'),
    matrix('output.weight', n, nVocab, (row) => isSilentToken(vocab, row)),
  );
  // One row per label: the relevance score is the softmax's share of `yes`.
  if (reranker) tensors.push(matrix('cls.output.weight', n, 2));
  return tensors;
}

interface RandomTensorInit {
  name: string;
  dims: [number, number];
  type: GgmlType;
  seed: number;
  /** Rows (tokens, for `output.weight`) that are all zeros. */
  silentRow: ((row: number) => boolean) | undefined;
}

function randomTensor(init: RandomTensorInit): GgufTensorSpec {
  const { name, dims, seed, silentRow } = init;
  const rowLength = dims[0];
  const bound = Math.sqrt(3 / rowLength);
  const random = createRandom(seed, name);
  let next = 0;
  return {
    name,
    dims,
    type: init.type,
    fill: (out, start) => {
      if (start !== next) throw new RbeeError('INTERNAL', `tensor ${name} filled out of order`);
      next = start + out.length;
      random.fillUniform(out, bound);
      if (silentRow === undefined) return;
      // Values are drawn before zeroing so that the other rows do not depend on which rows are silent.
      const firstRow = Math.floor(start / rowLength);
      const lastRow = Math.floor((next - 1) / rowLength);
      for (let row = firstRow; row <= lastRow; row++) {
        if (!silentRow(row)) continue;
        const from = Math.max(row * rowLength, start) - start;
        const to = Math.min((row + 1) * rowLength, next) - start;
        out.fill(0, from, to);
      }
    },
  };
}
