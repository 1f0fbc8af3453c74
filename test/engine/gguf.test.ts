import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  getLlama,
  LlamaChatSession,
  LlamaCompletion,
  LlamaLogLevel,
  readGgufFileInfo,
  type Llama,
  type LlamaContext,
  type LlamaModel,
} from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildTestVocab,
  CHATML_TEMPLATE,
  encodeQ8_0,
  f16BitsToF32,
  f32ToF16Bits,
  generateTestModel,
  gguf,
  SPECIAL_TOKENS,
  TOKEN_TYPE,
  writeGguf,
} from '../../src/engine/gguf/index.js';
import { RbeeError } from '../../src/shared/errors.js';
import { tinyModelPath } from '../helpers/tiny-model.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rbee-gguf-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha256 = async (path: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex');

describe('encoders', () => {
  it('converts float32 to float16 with round-to-nearest-even', () => {
    expect(f32ToF16Bits(1)).toBe(0x3c00);
    expect(f32ToF16Bits(-2)).toBe(0xc000);
    expect(f32ToF16Bits(65504)).toBe(0x7bff);
    expect(f32ToF16Bits(70000)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -24)).toBe(0x0001);
    expect(f32ToF16Bits(0)).toBe(0);
    // 1 + 2^-11 is exactly halfway between 1 and the next f16: ties go to the even mantissa.
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00);
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(Number.isNaN(f16BitsToF32(f32ToF16Bits(NaN)))).toBe(true);
    for (const x of [0.1, -3.75, 1e-3, 1234.5]) {
      expect(Math.abs(f16BitsToF32(f32ToF16Bits(x)) - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11);
    }
  });

  it('quantizes Q8_0 blocks like ggml (scale max/127, roundf halves away from zero)', () => {
    const src = new Float32Array(64);
    src[0] = 127;
    src[1] = 2.5;
    src[2] = -2.5;
    src[3] = -127;
    src[4] = 0.49;
    // The second block stays all zeros: scale 0, no division by zero.
    const out = Buffer.alloc(68);
    expect(encodeQ8_0(src, out)).toBe(68);
    expect(f16BitsToF32(out.readUInt16LE(0))).toBe(1);
    expect([1, 2, 3, 4, 5].map((i) => out.readInt8(i + 1))).toEqual([127, 3, -3, -127, 0]);
    expect(out.readUInt16LE(34)).toBe(0);
    expect(out.subarray(36).every((b) => b === 0)).toBe(true);
    expect(() => encodeQ8_0(new Float32Array(31), out)).toThrow(RbeeError);
  });
});

describe('writeGguf', () => {
  it('writes metadata, tensor infos and aligned data that node-llama-cpp reads back', async () => {
    const path = join(dir, 'custom.gguf');
    const values = Float32Array.from({ length: 64 }, (_, i) => i / 8 - 4);
    const fillFrom = (out: Float32Array, start: number): void =>
      out.set(values.subarray(start, start + out.length));
    const result = await writeGguf({
      path,
      metadata: {
        'general.architecture': gguf.string('llama'),
        'test.u32': gguf.u32(7),
        'test.i32': gguf.i32(-7),
        'test.f32': gguf.f32(0.5),
        'test.bool': gguf.bool(true),
        'test.strings': gguf.strings(['a', 'β', '']),
        'test.i32s': gguf.i32s([1, -2, 3]),
      },
      tensors: [
        { name: 'a', dims: [3], type: 'f32', fill: fillFrom },
        { name: 'b', dims: [32, 2], type: 'q8_0', fill: fillFrom },
        { name: 'c', dims: [8, 2], type: 'f16', fill: fillFrom },
      ],
    });
    const info = await readGgufFileInfo(path, { logWarnings: false });
    const meta = info.metadata as unknown as Record<string, Record<string, unknown>>;
    expect(info.version).toBe(3);
    expect(meta.general).toMatchObject({ architecture: 'llama', alignment: 32 });
    expect(meta.test).toEqual({
      u32: 7,
      i32: -7,
      f32: 0.5,
      bool: true,
      strings: ['a', 'β', ''],
      i32s: [1, -2, 3],
    });
    const tensors = info.tensorInfo ?? [];
    expect(tensors.map((t) => [t.name, t.dimensions.map(Number), t.ggmlType])).toEqual([
      ['a', [3], 0],
      ['b', [32, 2], 8],
      ['c', [8, 2], 1],
    ]);
    expect(tensors.map((t) => Number(t.offset))).toEqual([0, 32, 128]);
    const bytes = await readFile(path);
    const dataStart = info.infoEndOffset ?? 0;
    expect(dataStart % 32).toBe(0);
    expect(result.bytes).toBe(bytes.length);
    expect(bytes.length).toBe(dataStart + 128 + 16 * 2);
    expect([0, 1, 2].map((i) => bytes.readFloatLE(dataStart + i * 4))).toEqual([-4, -3.875, -3.75]);
    expect(f16BitsToF32(bytes.readUInt16LE(dataStart + 128 + 2 * 5))).toBe(values[5]);
    expect(await readdir(dir)).not.toContain('custom.gguf.partial');
  });

  it('rejects invalid tensors and leaves nothing behind when aborted', async () => {
    const path = join(dir, 'bad.gguf');
    const fill = (out: Float32Array): void => void out.fill(1);
    await expect(
      writeGguf({ path, metadata: {}, tensors: [{ name: 'x', dims: [48], type: 'q8_0', fill }] }),
    ).rejects.toMatchObject({ code: 'BAD_REQUEST' });

    const controller = new AbortController();
    const aborting = (out: Float32Array, start: number): void => {
      out.fill(1);
      if (start > 0) controller.abort();
    };
    await expect(
      writeGguf({
        path,
        metadata: {},
        tensors: [{ name: 'big', dims: [1024, 4096], type: 'f32', fill: aborting }],
        signal: controller.signal,
      }),
    ).rejects.toMatchObject({ code: 'JOB_CANCELLED' });
    const left = await readdir(dir);
    expect(left.filter((f) => f.startsWith('bad.gguf'))).toEqual([]);
  });
});

describe('test model files', () => {
  it('is byte-identical for the same preset and seed, and differs across seeds', async () => {
    const a = await generateTestModel({ path: join(dir, 'a.gguf'), preset: 'tiny', seed: 1 });
    const b = await generateTestModel({ path: join(dir, 'b.gguf'), preset: 'tiny', seed: 1 });
    const c = await generateTestModel({ path: join(dir, 'c.gguf'), preset: 'tiny', seed: 2 });
    expect(a.bytes).toBe(b.bytes);
    expect(a.params).toBe(c.params);
    expect(await sha256(a.path)).toBe(await sha256(b.path));
    expect(await sha256(a.path)).not.toBe(await sha256(c.path));
    expect(await sha256(await tinyModelPath())).toBe(await sha256(a.path));
    // ~1 MB: Q8_0 weights plus the vocab.
    expect(a.bytes).toBeGreaterThan(900_000);
    expect(a.bytes).toBeLessThan(2_000_000);
  });

  it('rejects an invalid seed', async () => {
    await expect(generateTestModel({ path: join(dir, 'x.gguf'), seed: -1 })).rejects.toMatchObject({
      code: 'BAD_REQUEST',
    });
  });

  it('builds a vocab of exactly the requested size whose n-grams are merges of earlier pieces', () => {
    const vocab = buildTestVocab(2048);
    expect(vocab.tokens).toHaveLength(2048);
    expect(new Set(vocab.tokens).size).toBe(2048);
    const known = new Set<string>();
    for (const [id, piece] of vocab.tokens.entries()) {
      if (vocab.types[id] === TOKEN_TYPE.normal && [...piece].length > 1) {
        const splits = [...piece].map((_, i) => [piece.slice(0, i), piece.slice(i)] as const).slice(1);
        expect(
          splits.some(([l, r]) => known.has(l) && known.has(r)),
          piece,
        ).toBe(true);
      }
      known.add(piece);
    }
  });

  it('reports architecture llama and the metadata written', async () => {
    const info = await readGgufFileInfo(await tinyModelPath(), { logWarnings: false });
    const { general, llama, tokenizer } = info.metadata as unknown as Record<string, Record<string, unknown>>;
    expect(general?.architecture).toBe('llama');
    expect(general?.name).toMatch(/^rbee demo \(tiny, random weights/);
    expect(general?.file_type).toBe(7);
    expect(info.architectureMetadata).toMatchObject({
      vocab_size: 2048,
      context_length: 2048,
      embedding_length: 128,
      block_count: 2,
      feed_forward_length: 384,
      attention: { head_count: 4, head_count_kv: 2 },
      rope: { dimension_count: 32 },
    });
    expect(llama).toBeDefined();
    expect(tokenizer).toMatchObject({
      chat_template: CHATML_TEMPLATE,
      ggml: { model: 'llama', bos_token_id: 1, eos_token_id: 2, unknown_token_id: 0 },
    });
    expect(info.tensorInfo).toHaveLength(2 + 2 * 9 + 1);
  });
});

describe('tiny model in node-llama-cpp', () => {
  let llama: Llama;
  let model: LlamaModel;
  let context: LlamaContext;
  const errors: string[] = [];

  beforeAll(async () => {
    llama = await getLlama({
      gpu: false,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => {
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) errors.push(message);
      },
    });
    model = await llama.loadModel({ modelPath: await tinyModelPath() });
    // Never the default thread count: on 2 cores it spin-waits ~300x slower (measured).
    context = await model.createContext({ contextSize: 512, sequences: 1, threads: 1 });
  });
  afterAll(async () => {
    await context?.dispose();
    await model?.dispose();
    await llama?.dispose();
  });

  it('knows the special tokens', () => {
    expect(model.tokens.bos).toBe(SPECIAL_TOKENS.bos);
    expect(model.tokens.eos).toBe(SPECIAL_TOKENS.eos);
    expect(model.tokenize('<|im_start|>', true)).toEqual([SPECIAL_TOKENS.imStart]);
    expect(model.detokenize(model.tokenize('hello world'))).toBe('hello world');
    expect(errors).toEqual([]);
  });

  it('decodes greedily to printable text of the requested length, the same every run', async () => {
    const sequence = context.getSequence();
    const run = async (): Promise<{ text: string; tokens: number[]; stopReason: string }> => {
      await sequence.clearHistory();
      const tokens: number[] = [];
      const completion = new LlamaCompletion({ contextSequence: sequence });
      const { response, metadata } = await completion.generateCompletionWithMeta('The quick brown fox', {
        maxTokens: 24,
        temperature: 0,
        onToken: (chunk) => void tokens.push(...chunk),
      });
      completion.dispose({ disposeSequence: false });
      return { text: response, tokens, stopReason: metadata.stopReason };
    };
    try {
      const first = await run();
      const second = await run();
      expect(first.stopReason).toBe('maxTokens');
      expect(first.tokens).toHaveLength(24);
      expect(first.text.trim()).not.toBe('');
      expect(first.text).toMatch(/^[\x20-\x7e]+$/);
      expect(first.tokens.every((t) => t > 260)).toBe(true);
      expect(second).toEqual(first);
    } finally {
      await sequence.dispose();
    }
  });

  it('chats through the ChatML template', async () => {
    const sequence = context.getSequence();
    const session = new LlamaChatSession({ contextSequence: sequence });
    try {
      expect(session.chatWrapper.wrapperName).toBe('ChatML');
      const { contextText } = session.chatWrapper.generateContextState({
        chatHistory: [
          { type: 'user', text: 'hi' },
          { type: 'model', response: [] },
        ],
      });
      expect(contextText.toString()).toContain('<|im_start|>user\nhi<|im_end|>');
      const chunks: string[] = [];
      const { response, stopReason } = await session.promptWithMeta('Say hello', {
        maxTokens: 12,
        temperature: 0,
        onTextChunk: (text) => void chunks.push(text),
      });
      expect(stopReason).toBe('maxTokens');
      const text = response.filter((r) => typeof r === 'string').join('');
      expect(text.trim()).not.toBe('');
      expect(chunks.join('')).toBe(text);
    } finally {
      session.dispose({ disposeSequence: true });
    }
  });
});
