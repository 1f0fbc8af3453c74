/**
 * Log probabilities from a real worker on the tiny model: present only when asked for, one per
 * generated token, and consistent with what was sampled.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateRequest, WorkerHandle } from '../../src/engine/types.js';
import { spawnWorker } from '../../src/engine/worker/client.js';
import type { TokenLogprob } from '../../src/shared/wire.js';
import { tinyModelPath } from '../helpers/tiny-model.js';

let worker: WorkerHandle;

beforeAll(async () => {
  worker = await spawnWorker({ modelPath: await tinyModelPath(), threads: 1, slots: 1 });
});

afterAll(async () => {
  await worker?.stop({ timeoutMs: 2000 });
});

interface Collected {
  text: string;
  tokens: number[];
  logprobs: TokenLogprob[] | undefined;
  completionTokens: number;
}

async function collect(request: GenerateRequest): Promise<Collected> {
  const out: Collected = { text: '', tokens: [], logprobs: undefined, completionTokens: 0 };
  for await (const chunk of worker.generate(request)) {
    if (chunk.type === 'token') {
      out.text += chunk.text;
      out.tokens.push(...chunk.tokens);
      if ('logprobs' in chunk) (out.logprobs ??= []).push(...(chunk.logprobs ?? []));
    } else {
      out.completionTokens = chunk.usage.completionTokens;
      return out;
    }
  }
  throw new Error('stream ended without done');
}

const sumOfProbabilities = (entry: TokenLogprob): number =>
  (entry.top ?? []).reduce((sum, t) => sum + Math.exp(t.logprob), 0);

describe('logprobs', () => {
  const greedy = { prompt: 'The weather today is', maxTokens: 12, temperature: 0 };

  it('are absent unless asked for, and asking does not change the answer', async () => {
    const plain = await collect(greedy);
    expect(plain.logprobs).toBeUndefined();
    const withLogprobs = await collect({ ...greedy, logprobs: 3 });
    expect(withLogprobs.text).toBe(plain.text);
    expect(withLogprobs.tokens).toEqual(plain.tokens);
  });

  it('greedy: one per token, the chosen token is the most likely one, top sums to at most 1', async () => {
    const result = await collect({ ...greedy, logprobs: 5 });
    const logprobs = result.logprobs!;
    expect(logprobs).toHaveLength(result.completionTokens);
    expect(logprobs.map((l) => l.token).join('')).toBe(result.text);
    for (const entry of logprobs) {
      expect(entry.logprob).toBeLessThanOrEqual(0);
      expect(entry.top).toHaveLength(5);
      const [best, ...rest] = entry.top!;
      expect(best!.token).toBe(entry.token);
      expect(best!.logprob).toBeCloseTo(entry.logprob, 5);
      for (const other of rest) expect(other.logprob).toBeLessThanOrEqual(best!.logprob);
      expect(sumOfProbabilities(entry)).toBeLessThanOrEqual(1 + 1e-5);
    }
    // a random-weights model is not certain of anything: the figures are real, not a constant
    expect(logprobs.some((l) => l.logprob < -0.01)).toBe(true);
  });

  it('sampled: the chosen token has the probability its own top entry shows', async () => {
    const result = await collect({
      prompt: 'Once upon a time',
      maxTokens: 16,
      temperature: 1.5,
      topK: 0,
      topP: 1,
      seed: 7,
      logprobs: 20,
    });
    const logprobs = result.logprobs!;
    expect(logprobs).toHaveLength(result.completionTokens);
    let found = 0;
    for (const entry of logprobs) {
      expect(sumOfProbabilities(entry)).toBeLessThanOrEqual(1 + 1e-5);
      const same = entry.top!.find((t) => t.token === entry.token);
      if (same !== undefined) {
        found += 1;
        expect(same.logprob).toBeCloseTo(entry.logprob, 5);
      }
    }
    expect(found).toBeGreaterThan(0);
  });

  it('without top alternatives: only the chosen token', async () => {
    const result = await collect({ ...greedy, logprobs: 0 });
    expect(result.logprobs).toHaveLength(result.completionTokens);
    for (const entry of result.logprobs!) expect(entry.top).toBeUndefined();
  });
});
