/**
 * The OpenAI-compatible API, driven by the official `openai` client as editors and agents do,
 * against a real node with the demo model and a real worker.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestNode, testNodeConfig } from '../helpers/test-node.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';
import { waitFor } from '../helpers/wait-for.js';

let home: string;
let node: RunningNode;
let client: OpenAI;

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), 'rbee-openai-'));
  node = await startNode(testNodeConfig(home));
  client = new OpenAI({ baseURL: `${node.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await node.close('test done');
  rmSync(home, { recursive: true, force: true });
});

describe('OpenAI-compatible API', () => {
  it('answers a chat completion, fetching the model on first use', async () => {
    const completion = await client.chat.completions.create({
      model: 'demo',
      messages: [{ role: 'user', content: 'Hello' }],
      max_tokens: 6,
      temperature: 0,
      seed: 1,
    });
    expect(completion.object).toBe('chat.completion');
    expect(completion.choices[0]!.message.role).toBe('assistant');
    expect(completion.choices[0]!.message.content!.length).toBeGreaterThan(0);
    expect(completion.choices[0]!.finish_reason).toBe('length');
    expect(completion.usage).toMatchObject({ completion_tokens: 6 });
  });

  it('streams the same text it answers whole, with usage at the end', async () => {
    const params = {
      model: 'demo',
      messages: [{ role: 'user' as const, content: 'Stream it' }],
      max_tokens: 8,
      temperature: 0,
      seed: 1,
    };
    const whole = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({
      ...params,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let finish: string | null = null;
    let completionTokens = 0;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
      completionTokens = chunk.usage?.completion_tokens ?? completionTokens;
    }
    expect(text).toBe(whole.choices[0]!.message.content);
    expect(finish).toBe('length');
    expect(completionTokens).toBe(8);
  });

  it('answers raw completions without the chat template', async () => {
    const completion = await client.completions.create({
      model: 'demo',
      prompt: 'Once upon',
      max_tokens: 5,
      temperature: 0,
    });
    expect(completion.object).toBe('text_completion');
    expect(completion.choices[0]!.text.length).toBeGreaterThan(0);
    expect(completion.usage!.completion_tokens).toBe(5);
  });

  it('constrains output to a JSON schema with response_format', async () => {
    const completion = await client.chat.completions.create({
      model: 'demo',
      messages: [{ role: 'user', content: 'Give me a number' }],
      max_tokens: 40,
      temperature: 0,
      response_format: {
        type: 'json_schema',
        json_schema: {
          name: 'n',
          schema: { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] },
        },
      },
    });
    // Random weights, but the grammar forces valid JSON of the schema's shape.
    const parsed = JSON.parse(completion.choices[0]!.message.content!) as { a: unknown };
    expect(Number.isInteger(parsed.a)).toBe(true);
  });

  it('returns embeddings of the model size, the same for the same text', async () => {
    const result = await client.embeddings.create({
      model: 'demo',
      input: ['hello', 'hello', 'other words'],
    });
    expect(result.data).toHaveLength(3);
    const [a, b, c] = result.data.map((d) => d.embedding);
    expect(a!.length).toBe(128);
    expect(a).toEqual(b);
    expect(c).not.toEqual(a);
    expect(result.usage.prompt_tokens).toBeGreaterThan(0);
  });

  it("reports the part of a chat's next turn that the worker had cached", async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [
      { role: 'system', content: 'You answer questions about the weather. '.repeat(8) },
      { role: 'user', content: 'Will it rain?' },
    ];
    const params = { model: 'demo', max_tokens: 8, temperature: 0, seed: 1 };
    const first = await client.chat.completions.create({ ...params, messages });
    const next = await client.chat.completions.create({
      ...params,
      messages: [
        ...messages,
        { role: 'assistant', content: first.choices[0]!.message.content! },
        { role: 'user', content: 'And tomorrow?' },
      ],
    });
    // the whole prompt is counted; the previous turn's part of it came from the cache
    expect(next.usage!.prompt_tokens).toBeGreaterThan(first.usage!.prompt_tokens);
    const cached = next.usage!.prompt_tokens_details!.cached_tokens!;
    expect(cached).toBeGreaterThanOrEqual(first.usage!.prompt_tokens);
    expect(cached).toBeLessThan(next.usage!.prompt_tokens);
  });

  it('lists models in OpenAI shape, under names that work as `model`, without paths', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.object)).toEqual(['model']);
    const [model] = models.data as unknown as Record<string, unknown>[];
    const { node: nodeName } = (await (await fetch(`${node.url}/health`)).json()) as { node: string };
    expect(model).toMatchObject({
      id: expect.stringMatching(/^tiny:[a-z0-9_]+$/) as unknown,
      owned_by: nodeName,
      context_length: expect.any(Number) as unknown,
      aliases: [],
      ref: 'demo:tiny',
    });
    expect(model!.created).toBeGreaterThan(1_600_000_000);
    expect(JSON.stringify(models.data)).not.toContain(home);
    for (const name of [model!.id, model!.model_id, model!.name] as string[]) {
      const completion = await client.chat.completions.create({
        model: name,
        messages: [{ role: 'user', content: 'Hi' }],
        max_tokens: 2,
      });
      expect(completion.model, name).toBe(name);
      expect((await client.models.retrieve(name)).id).toBe(model!.id);
    }
  });

  it('answers for an alias until it is removed', async () => {
    const headers = { 'content-type': 'application/json' };
    const set = await fetch(`${node.url}/v1/aliases`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ name: 'chatty', model: 'demo' }),
    });
    expect(set.status).toBe(200);
    const listed = (await client.models.list()).data as unknown as { aliases: string[] }[];
    expect(listed[0]!.aliases).toEqual(['chatty']);
    const completion = await client.completions.create({ model: 'chatty', prompt: 'Hi', max_tokens: 2 });
    expect(completion.choices[0]!.text.length).toBeGreaterThan(0);
    expect(
      (await fetch(`${node.url}/v1/aliases/chatty`, { method: 'DELETE', headers, body: '{}' })).status,
    ).toBe(200);
    const gone = client.completions.create({ model: 'chatty', prompt: 'Hi', max_tokens: 2 });
    await expect(gone).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('reports errors in OpenAI shape with rbee codes, before any stream starts', async () => {
    const bad = client.chat.completions.create({
      model: 'ftp://host/x.gguf',
      messages: [{ role: 'user', content: 'x' }],
      stream: true,
    });
    await expect(bad).rejects.toMatchObject({ status: 400, code: 'MODEL_REF_INVALID', param: 'model' });
    const missing = client.chat.completions.create({
      model: '/no/such/model.gguf',
      messages: [{ role: 'user', content: 'x' }],
    });
    await expect(missing).rejects.toMatchObject({ status: 404, code: 'model_not_found' });
    const invalid = client.chat.completions.create({ model: 'demo', messages: [] });
    await expect(invalid).rejects.toMatchObject({ status: 400, code: 'BAD_REQUEST' });
  });

  it('answers an unknown model with 404 model_not_found, as OpenAI does', async () => {
    const unknown = client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'x' }],
    });
    await expect(unknown).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(unknown).rejects.toMatchObject({
      status: 404,
      code: 'model_not_found',
      param: 'model',
      type: 'invalid_request_error',
    });
    await expect(client.embeddings.create({ model: 'gpt-4o', input: 'x' })).rejects.toBeInstanceOf(
      OpenAI.NotFoundError,
    );
    await expect(client.models.retrieve('gpt-4o')).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('answers malformed JSON and unknown routes in the same shape', async () => {
    const bad = client.post('/chat/completions', {
      body: '{"model": "demo", ',
      headers: { 'content-type': 'application/json' },
    });
    await expect(bad).rejects.toBeInstanceOf(OpenAI.BadRequestError);
    await expect(bad).rejects.toMatchObject({ code: 'BAD_REQUEST', type: 'invalid_request_error' });
    const route = client.get('/no/such/route');
    await expect(route).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(route).rejects.toMatchObject({ code: 'NOT_FOUND', type: 'invalid_request_error' });
  });

  it('cancels the job when the client goes away mid-stream', async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'demo', messages: [{ role: 'user', content: 'Go on' }], max_tokens: 100_000, stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    try {
      for await (const _chunk of stream) {
        if (++chunks === 3) controller.abort();
      }
    } catch {
      // the SDK may end the loop quietly or throw an abort error: either is the client leaving
    }
    expect(chunks).toBeGreaterThanOrEqual(3);
    const jobs = async (): Promise<{ jobs: { state: string }[] }> =>
      (await fetch(`${node.url}/v1/jobs`)).json() as Promise<{ jobs: { state: string }[] }>;
    await waitFor(async () => (await jobs()).jobs.some((j) => j.state === 'cancelled'), {
      what: 'the job to be cancelled',
    });
    expect((await jobs()).jobs.filter((j) => j.state === 'running')).toEqual([]);
  });
});

describe('OpenAI-compatible API of a node that wants a key from every client', () => {
  it('answers a client without a valid key with 401 AuthenticationError', async () => {
    const keyed = await startTestNode('rbee-openai-auth-', {}, { auth: 'always' });
    try {
      const noKey = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: 'rbee_not-a-key', maxRetries: 0 });
      const refused = noKey.models.list();
      await expect(refused).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
      await expect(refused).rejects.toMatchObject({
        status: 401,
        code: 'UNAUTHORIZED',
        type: 'authentication_error',
      });
    } finally {
      await keyed.stop();
    }
  });
});
