import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_MODEL_SHAPES } from '../../src/engine/gguf/index.js';
import { estimateWorkerMemory } from '../../src/engine/memory.js';
import type { GenerateChunk, GenerateRequest, WorkerHandle } from '../../src/engine/types.js';
import { spawnWorker } from '../../src/engine/worker/client.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { rejection } from '../helpers/rejection.js';

let modelPath: string;
let worker: WorkerHandle;

beforeAll(async () => {
  modelPath = await tinyModelPath();
  // threads: 1: on a 2-core box two spin-waiting threads are far slower.
  worker = await spawnWorker({ modelPath, threads: 1, slots: 2 });
});

afterAll(async () => {
  if (worker === undefined) return;
  await worker.stop({ timeoutMs: 2000 });
  expect(worker.info.state).toBe('exited');
});

async function collect(
  request: GenerateRequest,
): Promise<{ text: string; done: Extract<GenerateChunk, { type: 'done' }> }> {
  let text = '';
  for await (const chunk of worker.generate(request)) {
    if (chunk.type === 'token') text += chunk.text;
    else return { text, done: chunk };
  }
  throw new Error('stream ended without done');
}

describe('sampling penalties', () => {
  const greedy = { prompt: 'The weather today is', maxTokens: 48, temperature: 0 };

  it('change greedy output, deterministically, and only when they look at some tokens', async () => {
    const plain = await collect(greedy);
    for (const penalty of [{ repeatPenalty: 1.8 }, { presencePenalty: 1.5 }, { frequencyPenalty: 1.5 }]) {
      const a = await collect({ ...greedy, ...penalty });
      const b = await collect({ ...greedy, ...penalty });
      expect(a.text, JSON.stringify(penalty)).toBe(b.text);
      expect(a.text, JSON.stringify(penalty)).not.toBe(plain.text);
      // A window of 0 tokens turns the penalties off: back to the plain output.
      const off = await collect({ ...greedy, ...penalty, repeatLastTokens: 0 });
      expect(off.text, JSON.stringify(penalty)).toBe(plain.text);
    }
    // Neutral values are the same as none.
    const neutral = await collect({ ...greedy, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 });
    expect(neutral.text).toBe(plain.text);
  });

  it('refuses out-of-range values with BAD_REQUEST', async () => {
    const error = await rejection(collect({ ...greedy, repeatPenalty: 7 }));
    expect(error.code).toBe('BAD_REQUEST');
  });
});

describe('constrained output', () => {
  const schema = { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] };

  it('forces JSON that matches a schema, even from random weights (raw prompt and chat)', async () => {
    for (const request of [
      { prompt: 'Give me a number', jsonSchema: schema, maxTokens: 64 },
      {
        messages: [{ role: 'user' as const, content: 'A number, please' }],
        jsonSchema: schema,
        maxTokens: 64,
      },
      // Sampled rather than greedy: still valid, whatever is drawn.
      { prompt: 'x', jsonSchema: schema, maxTokens: 64, temperature: 1, seed: 3 },
    ]) {
      const { text, done } = await collect(request);
      expect(done.finishReason).toBe('stop');
      const value = JSON.parse(text) as Record<string, unknown>;
      expect(Object.keys(value)).toEqual(['a']);
      expect(Number.isInteger(value.a)).toBe(true);
    }
  });

  it('keeps integers plain and finite whatever is sampled', async () => {
    const integers = { type: 'array', items: { type: 'integer' }, minItems: 4, maxItems: 4 };
    for (let seed = 1; seed <= 6; seed++) {
      const { text } = await collect({
        prompt: 'Numbers',
        jsonSchema: integers,
        maxTokens: 120,
        temperature: 1.5,
        seed,
      });
      const values = JSON.parse(text) as unknown[];
      expect(values).toHaveLength(4);
      for (const value of values) expect(Number.isSafeInteger(value), text).toBe(true);
      expect(text, text).not.toMatch(/[eE]/);
    }
  });

  it('handles nested schemas with arrays, enums, bounded strings, $refs and anyOf', async () => {
    const nested = {
      type: 'object',
      properties: {
        name: { type: 'string', maxLength: 6 },
        tags: { type: 'array', items: { enum: ['red', 'green'] }, maxItems: 3 },
        size: { anyOf: [{ type: 'integer' }, { type: 'null' }] },
        point: { $ref: '#/$defs/point' },
      },
      additionalProperties: false,
      $defs: { point: { type: 'array', prefixItems: [{ type: 'boolean' }, { const: 'p' }], maxItems: 2 } },
    };
    const { text } = await collect({ prompt: 'Describe it', jsonSchema: nested, maxTokens: 120 });
    const value = JSON.parse(text) as { name: unknown; tags: unknown[]; size: unknown; point: unknown[] };
    expect(typeof value.name).toBe('string');
    expect((value.name as string).length).toBeLessThanOrEqual(6);
    expect(value.tags.every((t) => t === 'red' || t === 'green')).toBe(true);
    expect(value.tags.length).toBeLessThanOrEqual(3);
    expect(value.size === null || Number.isInteger(value.size)).toBe(true);
    expect(value.point).toHaveLength(2);
    expect(typeof value.point[0]).toBe('boolean');
    expect(value.point[1]).toBe('p');
  });

  it('forces a GBNF grammar', async () => {
    for (const prompt of ['Is it raining?', 'Well', 'Tell me a story']) {
      const { text, done } = await collect({ prompt, grammar: 'root ::= "yes" | "no"', maxTokens: 16 });
      expect(['yes', 'no']).toContain(text);
      expect(done.finishReason).toBe('stop');
    }
    const chat = await collect({
      messages: [{ role: 'user', content: 'Pick a digit' }],
      grammar: 'root ::= [0-9] [0-9]',
      maxTokens: 16,
    });
    expect(chat.text).toMatch(/^[0-9]{2}$/);
  });

  it('refuses a grammar llama.cpp cannot parse with BAD_REQUEST from the worker, which carries on', async () => {
    for (const grammar of ['root ::= foo', 'root ::= root "a"', 'rule ::= "no root"', 'root ::= ["']) {
      const error = await rejection(collect({ prompt: 'x', grammar, maxTokens: 4 }));
      expect(error.code, grammar).toBe('BAD_REQUEST');
      expect(error.message, grammar).toContain('grammar');
    }
    const next = await collect({ prompt: 'still here', maxTokens: 3 });
    expect(next.done.usage.completionTokens).toBe(3);
    expect(worker.info.state).not.toBe('exited');
  });

  it('refuses what would hang llama.cpp, and invalid schemas, with clear BAD_REQUESTs', async () => {
    const hang = await rejection(collect({ prompt: 'x', grammar: 'root ::= "a"{3,1}', maxTokens: 4 }));
    expect(hang.code).toBe('BAD_REQUEST');
    expect(hang.message).toContain('maximum below its minimum');
    const not = { type: 'object', properties: { a: { type: 'string', not: { const: 'x' } } } };
    const bad = await rejection(collect({ prompt: 'x', jsonSchema: not, maxTokens: 4 }));
    expect(bad.code).toBe('BAD_REQUEST');
    expect(bad.message).toContain('$.properties.a: keyword "not" is not supported');
    const regex = { type: 'object', properties: { a: { type: 'string', pattern: '([a-z' } } };
    const broken = await rejection(collect({ prompt: 'x', jsonSchema: regex, maxTokens: 4 }));
    expect(broken.code).toBe('BAD_REQUEST');
    expect(broken.message).toContain('invalid jsonSchema');
    const both = await rejection(collect({ prompt: 'x', grammar: 'root ::= "a"', jsonSchema: schema }));
    expect(both.code).toBe('BAD_REQUEST');
  });
});

describe('embeddings', () => {
  const dims = TEST_MODEL_SHAPES.tiny.embedding;

  it("returns unit vectors of the model's embedding size, deterministic, distinct per text", async () => {
    const texts = ['hello world', 'something else entirely', 'hello world'];
    const first = await worker.embed(texts);
    expect(first.embeddings).toHaveLength(3);
    for (const vector of first.embeddings) {
      expect(vector).toHaveLength(dims);
      expect(vector.every(Number.isFinite)).toBe(true);
      expect(Math.hypot(...vector)).toBeCloseTo(1, 5);
    }
    const [a, b, c] = first.embeddings;
    expect(c).toEqual(a);
    expect(b).not.toEqual(a);
    expect(first.promptTokens).toBeGreaterThan(texts.length);
    const again = await worker.embed(['something else entirely']);
    expect(again.embeddings[0]).toEqual(b);
  });

  it('embeds while a generation runs on a slot', async () => {
    const [generated, embedded] = await Promise.all([
      collect({ prompt: 'Once upon a time', maxTokens: 20 }),
      worker.embed(['in parallel']),
    ]);
    expect(generated.done.usage.completionTokens).toBe(20);
    expect(embedded.embeddings[0]).toHaveLength(dims);
  });

  it('refuses empty and over-long texts with BAD_REQUEST', async () => {
    expect((await rejection(worker.embed([]))).code).toBe('BAD_REQUEST');
    expect((await rejection(worker.embed(['ok', '']))).code).toBe('BAD_REQUEST');
    const long = 'lorem ipsum dolor sit amet '.repeat(2000);
    const error = await rejection(worker.embed(['short', long]));
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.message).toContain('text 1');
  });

  it('cancels with JOB_CANCELLED and keeps serving', async () => {
    const controller = new AbortController();
    controller.abort();
    expect((await rejection(worker.embed(['x'], { signal: controller.signal }))).code).toBe('JOB_CANCELLED');
    const midway = new AbortController();
    const many = worker.embed(
      Array.from({ length: 200 }, (_, i) => `text number ${i}`),
      { signal: midway.signal },
    );
    midway.abort();
    expect((await rejection(many)).code).toBe('JOB_CANCELLED');
    const after = await worker.embed(['after the cancel']);
    expect(after.embeddings[0]).toHaveLength(dims);
  });
});

describe('memory estimate in the worker info', () => {
  it('equals estimateWorkerMemory for the same model, context and slots', async () => {
    expect(worker.info.estimatedBytes).toBeGreaterThan(0);
    const estimate = await estimateWorkerMemory(modelPath, {
      contextSize: worker.info.contextSize,
      slots: 2,
    });
    expect(worker.info.estimatedBytes).toBe(estimate.totalBytes);
  });
});
