/**
 * What a job streams besides text, across a cluster: two real `rbee node` processes on loopback. A
 * model only the other hive holds runs there; its tokens' log probabilities, the prompt's size with
 * the first token, and a reranker's scores come back to the entry node.
 */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, type Sandbox } from '../helpers/cli.js';
import { tinyRerankerPath } from '../helpers/tiny-model.js';
import { pullModelOnlyOn, startPair, type ClusterNodeProcess } from '../helpers/cluster-nodes.js';
import { waitFor } from '../helpers/wait-for.js';

const sandboxes: Sandbox[] = [];

interface Usage {
  input_tokens: number;
  cache_read_input_tokens: number;
}
interface SseEvent {
  type: string;
  message?: { usage: Usage };
  usage?: Usage;
}
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

  it("report the prompt's tokens in an Anthropic stream's message_start, from the hive that ran it", async () => {
    const openai = new OpenAI({ baseURL: `${alpha.sandbox.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const model = (await openai.models.list()).data.find((m) => m.owned_by === 'beta')!.id;
    const response = await fetch(`${alpha.sandbox.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({
        model,
        max_tokens: 4,
        stream: true,
        messages: [{ role: 'user', content: 'Count my tokens' }],
      }),
    });
    expect(response.status).toBe(200);
    const events = (await response.text())
      .split('\n\n')
      .filter((block) => block.startsWith('event: '))
      .map((block) => JSON.parse(block.split('\n')[1]!.slice('data: '.length)) as SseEvent);
    const start = events[0]!.message!.usage;
    const end = events.find((e) => e.type === 'message_delta')!.usage!;
    expect(start.input_tokens + start.cache_read_input_tokens).toBeGreaterThan(5);
    expect(start.input_tokens).toBe(end.input_tokens);
    expect(start.cache_read_input_tokens).toBe(end.cache_read_input_tokens);
  });

  it('rerank on the hive that holds the reranker, with the scores it gives there', async () => {
    const file = join(beta.sandbox.home, 'Beta-Rerank-Q8_0.gguf');
    copyFileSync(await tinyRerankerPath(), file);
    const pull = await runCli(['models', 'pull', file, '--json'], { env: beta.sandbox.env });
    expect(pull.code, pull.stderr).toBe(0);
    const openai = new OpenAI({ baseURL: `${alpha.sandbox.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const model = await waitFor(
      async () => (await openai.models.list()).data.find((m) => m.id.startsWith('beta-rerank'))?.id,
      { what: "beta's reranker in alpha's list" },
    );
    const rerank = async (url: string): Promise<unknown> => {
      const response = await fetch(`${url}/v1/rerank`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, query: 'which hive', documents: ['alpha', 'beta', 'a queen'] }),
      });
      expect(response.status).toBe(200);
      return response.json();
    };
    const viaAlpha = (await rerank(alpha.sandbox.url)) as { results: { index: number }[] };
    expect(viaAlpha.results.map((r) => r.index).sort()).toEqual([0, 1, 2]);
    expect(await rerank(beta.sandbox.url)).toEqual(viaAlpha);
  });
});
