/**
 * Ranking in the worker process, on the generated reranker: the scores of documents for a query
 * (random weights: what holds is determinism, the bounds, the errors and cancelling, not meaning).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerHandle } from '../../src/engine/types.js';
import { spawnWorker } from '../../src/engine/worker/client.js';
import { tinyModelPath, tinyRerankerPath } from '../helpers/tiny-model.js';
import { rejection } from '../helpers/rejection.js';

let reranker: WorkerHandle;

beforeAll(async () => {
  reranker = await spawnWorker({
    modelPath: await tinyRerankerPath(),
    threads: 1,
    slots: 1,
    contextSize: 256,
  });
});
afterAll(async () => {
  await reranker?.stop({ timeoutMs: 2000 });
});

describe('ranking in the worker', () => {
  it('scores each document from 0 to 1, in order, the same every time and alone or together', async () => {
    const documents = ['a hive runs workers', 'the queen places jobs', 'a hive runs workers', 'honey'];
    const first = await reranker.rank('what runs workers', documents);
    expect(first.scores).toHaveLength(4);
    for (const score of first.scores) {
      expect(score).toBeGreaterThan(0);
      expect(score).toBeLessThan(1);
    }
    expect(first.scores[2]).toBe(first.scores[0]);
    expect(new Set(first.scores).size).toBe(3);
    expect(first.promptTokens).toBeGreaterThan(documents.length * 3);
    const again = await reranker.rank('what runs workers', documents);
    expect(again).toEqual(first);
    const alone = await reranker.rank('what runs workers', ['the queen places jobs']);
    expect(alone.scores[0]).toBe(first.scores[1]);
  });

  it('refuses a pair longer than its context with BAD_REQUEST naming the document, and carries on', async () => {
    const long = 'lorem ipsum dolor sit amet '.repeat(200);
    const error = await rejection(reranker.rank('query', ['short', long]));
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.message).toContain('document 1');
    expect((await reranker.rank('query', ['short'])).scores).toHaveLength(1);
  });

  it('cancels with JOB_CANCELLED between documents and keeps serving', async () => {
    const controller = new AbortController();
    const many = reranker.rank(
      'query',
      Array.from({ length: 300 }, (_, i) => `document number ${i}`),
      { signal: controller.signal },
    );
    controller.abort();
    expect((await rejection(many)).code).toBe('JOB_CANCELLED');
    expect((await reranker.rank('after', ['the cancel'])).scores).toHaveLength(1);
  });

  it('says a reranker cannot embed, and a generative model cannot rank', async () => {
    expect((await rejection(reranker.embed(['text']))).code).toBe('EMBEDDINGS_UNSUPPORTED');
    const generative = await spawnWorker({ modelPath: await tinyModelPath(), threads: 1, slots: 1 });
    try {
      const error = await rejection(generative.rank('query', ['document']));
      expect(error.code).toBe('MODEL_CANNOT_RANK');
      expect(error.message).toContain('cannot rank');
    } finally {
      await generative.stop({ timeoutMs: 2000 });
    }
  });
});
