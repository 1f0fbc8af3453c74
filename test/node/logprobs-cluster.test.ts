/**
 * Log probabilities across a cluster: two real `rbee node` processes on loopback. A model only the
 * other hive holds runs there; its tokens' log probabilities stream back to the entry node with them.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Sandbox } from '../helpers/cli.js';
import { pullModelOnlyOn, startPair, type ClusterNodeProcess } from '../helpers/cluster-nodes.js';
import { waitFor } from '../helpers/wait-for.js';

const sandboxes: Sandbox[] = [];
let alpha: ClusterNodeProcess;
let beta: ClusterNodeProcess;

beforeAll(async () => {
  [alpha, beta] = await startPair(sandboxes);
});

afterAll(async () => {
  await Promise.all(sandboxes.map((s) => s.cleanup()));
});

describe('logprobs in a cluster of two', () => {
  it('come back from the hive that ran the job, one per token', async () => {
    // a file only beta's machine has: the job runs there
    await pullModelOnlyOn(beta, 'Beta-Only-Q8_0.gguf');
    const openai = new OpenAI({ baseURL: `${alpha.sandbox.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const model = await waitFor(
      async () => (await openai.models.list()).data.find((m) => m.owned_by === 'beta')?.id,
      { what: "beta's model in alpha's list" },
    );

    const answer = await openai.completions.create({
      model,
      prompt: 'Once upon a time',
      // enough tokens that some travel together in one frame (a token run)
      max_tokens: 24,
      temperature: 0,
      logprobs: 3,
    });
    const logprobs = answer.choices[0]!.logprobs!;
    expect(logprobs.tokens).toHaveLength(answer.usage!.completion_tokens);
    expect(logprobs.tokens!.join('')).toBe(answer.choices[0]!.text);
    logprobs.top_logprobs!.forEach((top, i) => {
      expect(Object.keys(top).length).toBeGreaterThan(0);
      expect(Math.max(...Object.values(top))).toBeCloseTo(logprobs.token_logprobs![i]!, 5);
    });
  });
});
