/**
 * Requests of the OpenAI routes that run as jobs beyond one generation, with the official `openai`
 * client against a real node on the demo model whose workers have two slots: `n` choices (one job
 * per choice, merged into one answer) and embeddings (a job each).
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait-for.js';

let node: TestNode;
let client: OpenAI;

beforeAll(async () => {
  node = await startTestNode('rbee-choices-', {}, { slots: 2 });
  client = new OpenAI({ baseURL: `${node.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await node?.stop();
});

interface JobRow {
  id: string;
  state: string;
  model: string;
}
async function jobs(): Promise<JobRow[]> {
  const response = await fetch(`${node.url}/v1/jobs`);
  return ((await response.json()) as { jobs: JobRow[] }).jobs;
}

describe('n choices', () => {
  const params = {
    model: 'demo',
    messages: [{ role: 'user' as const, content: 'Pick a word' }],
    max_tokens: 6,
    temperature: 1.2,
    seed: 11,
    n: 2,
  };

  it('answers n choices with their index, seeded choices apart, and usage summed', async () => {
    const answer = await client.chat.completions.create(params);
    expect(answer.choices.map((c) => c.index)).toEqual([0, 1]);
    const [a, b] = answer.choices.map((c) => c.message.content);
    expect(a!.length).toBeGreaterThan(0);
    // choice i samples with seed + i: different draws
    expect(a).not.toBe(b);
    expect(answer.usage!.completion_tokens).toBe(12);
    // seeded: the same choices again
    const again = await client.chat.completions.create(params);
    expect(again.choices.map((c) => c.message.content)).toEqual([a, b]);

    // streamed: chunks of both choices, each with its index, the same texts
    const stream = await client.chat.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    });
    const texts = ['', ''];
    const finishes: (string | null)[] = [null, null];
    let completionTokens = 0;
    for await (const chunk of stream) {
      for (const choice of chunk.choices) {
        texts[choice.index] += choice.delta.content ?? '';
        finishes[choice.index] = choice.finish_reason ?? finishes[choice.index]!;
      }
      completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
    }
    expect(texts).toEqual([a, b]);
    expect(finishes).toEqual(['length', 'length']);
    expect(completionTokens).toBe(12);
  });

  it('answers n choices on completions too, unseeded choices drawn apart', async () => {
    const answer = await client.completions.create({
      model: 'demo',
      prompt: 'Once upon a time',
      max_tokens: 8,
      temperature: 1.5,
      n: 2,
    });
    expect(answer.choices.map((c) => c.index)).toEqual([0, 1]);
    expect(answer.choices[0]!.text).not.toBe(answer.choices[1]!.text);
    expect(answer.usage!.completion_tokens).toBe(16);
  });

  it('refuses more choices than a worker has slots with TOO_MANY_CHOICES', async () => {
    await expect(client.chat.completions.create({ ...params, n: 3 })).rejects.toMatchObject({
      status: 400,
      code: 'TOO_MANY_CHOICES',
      message: expect.stringContaining('at most 2') as unknown,
    });
  });

  it('cancels every choice when the client leaves', async () => {
    const before = new Set((await jobs()).map((j) => j.id));
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { ...params, max_tokens: 4000, stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    try {
      for await (const _chunk of stream) {
        if (++chunks === 3) controller.abort();
      }
    } catch {
      // the client's own abort
    }
    expect(chunks).toBeGreaterThanOrEqual(3);
    await waitFor(async () => {
      const mine = (await jobs()).filter((j) => !before.has(j.id));
      return mine.length === 2 && mine.every((j) => j.state === 'cancelled');
    });
  });
});

describe('embeddings as jobs', () => {
  it('are a job each: listed, in the jobs table and counted in /metrics', async () => {
    const before = new Set((await jobs()).map((j) => j.id));
    const result = await client.embeddings.create({ model: 'demo', input: ['hello', 'other words'] });
    expect(result.data.map((d) => d.index)).toEqual([0, 1]);
    expect(result.data[0]!.embedding).toHaveLength(128);
    expect(result.usage.prompt_tokens).toBeGreaterThan(0);
    const mine = (await jobs()).filter((j) => !before.has(j.id));
    expect(mine).toMatchObject([{ model: 'demo', state: 'done' }]);
    const history = (await (await fetch(`${node.url}/v1/jobs/history`)).json()) as { jobs: JobRow[] };
    expect(history.jobs.find((j) => j.id === mine[0]!.id)).toMatchObject({ state: 'done' });
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    expect(metrics).toMatch(/rbee_jobs_total\{outcome="done"\} [1-9]/);
  });

  it('are cancellable: DELETE of the job ends the request as cancelled', async () => {
    const before = new Set((await jobs()).map((j) => j.id));
    // enough text that the worker is still embedding when the job is cancelled
    const input = Array.from({ length: 512 }, (_, i) => `text ${i}: ${'many words here '.repeat(60)}`);
    const answer = client.embeddings.create({ model: 'demo', input });
    const settled = answer.then(
      () => undefined,
      (error: unknown) => error,
    );
    const job = await waitFor(async () =>
      (await jobs()).find((j) => !before.has(j.id) && j.state === 'running'),
    );
    const cancel = await fetch(`${node.url}/v1/jobs/${job.id}`, {
      method: 'DELETE',
      headers: { 'x-rbee-client': '1' },
    });
    expect(cancel.ok).toBe(true);
    expect(await settled).toMatchObject({ status: 499, code: 'JOB_CANCELLED' });
    await waitFor(async () => (await jobs()).find((j) => j.id === job.id)?.state === 'cancelled');
  });
});
