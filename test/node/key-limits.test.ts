/**
 * Per-key limits on a real node with a real worker (the tiny model): a key over its requests per
 * minute or its jobs at once is refused 429 RATE_LIMITED with a Retry-After, on rbee's own routes,
 * on the OpenAI ones (in their error shape, through the official client) and in `rbee --json`; the
 * node's defaults cover keys without their own limits; clients on the node's machine without a key
 * are never limited.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect } from '../helpers/wait-for.js';
import { loneNodeEnv, runCli } from '../helpers/cli.js';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { createNodeClient } from '../../src/node/client/index.js';

let test: TestNode;
let model: string;
let admin: string;

beforeAll(async () => {
  model = await tinyModelPath();
  // every client shows a key (`always`), so plain HTTP on loopback is a keyed client's
  test = await startTestNode(
    'rbee-limits-',
    {},
    { auth: 'always', cluster: { enabled: false }, threads: 1, keyLimits: { rpm: 3 } },
  );
  admin = (await createKey({ name: 'admin' }, undefined)).key;
});
afterAll(async () => {
  await test?.stop();
});

async function call(
  path: string,
  key: string | undefined,
  init: { method?: string; body?: unknown } = {},
): Promise<Response> {
  return fetch(`${test.url}${path}`, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: {
      ...(key === undefined ? {} : { authorization: `Bearer ${key}` }),
      ...(init.body === undefined ? { 'x-rbee-client': '1' } : { 'content-type': 'application/json' }),
    },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
}

async function createKey(
  body: { name: string; maxConcurrent?: number; rpm?: number },
  key: string | undefined = admin,
): Promise<{ id: string; key: string }> {
  const response = await call('/v1/keys', key, { body });
  expect(response.status, await response.clone().text()).toBe(201);
  return (await response.json()) as { id: string; key: string };
}

const job = (maxTokens = 1): Record<string, unknown> => ({ model, prompt: 'Hello', maxTokens, seed: 1 });

/** Follows a job to its end, with the key that submitted it. */
async function finished(key: string, id: string): Promise<void> {
  const events = await collect(createNodeClient({ url: test.url, apiKey: key }).jobEvents(id));
  expect(['done', 'error']).toContain(events.at(-1)?.type);
}

async function refusal(response: Response): Promise<{ status: number; retryAfter: number; error: unknown }> {
  return {
    status: response.status,
    retryAfter: Number(response.headers.get('retry-after')),
    error: ((await response.json()) as { error: unknown }).error,
  };
}

describe('a key over its requests per minute', () => {
  it('is refused 429 RATE_LIMITED with a Retry-After, on every route that runs a model and in `rbee --json`', async () => {
    const { key } = await createKey({ name: 'editor', rpm: 2 });
    const accepted: string[] = [];
    for (let i = 0; i < 2; i++) {
      const response = await call('/v1/jobs', key, { body: job() });
      expect(response.status).toBe(202);
      accepted.push(((await response.json()) as { id: string }).id);
    }
    const refused = await refusal(await call('/v1/jobs', key, { body: job() }));
    expect(refused).toMatchObject({
      status: 429,
      error: { code: 'RATE_LIMITED', details: { limit: 'rpm', max: 2 } },
    });
    expect(refused.retryAfter).toBeGreaterThanOrEqual(1);
    expect(refused.retryAfter).toBeLessThanOrEqual(60);

    // the OpenAI routes, through the official client: its RateLimitError, with rbee's code
    const openai = new OpenAI({ baseURL: `${test.url}/v1`, apiKey: key, maxRetries: 0 });
    const error = await openai.chat.completions
      .create({ model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    expect(error).toMatchObject({ status: 429, code: 'RATE_LIMITED', type: 'rate_limit_error' });
    expect(
      Number((error as InstanceType<typeof OpenAI.RateLimitError>).headers.get('retry-after')),
    ).toBeGreaterThan(0);
    // reads are not model requests: the key still lists models
    expect((await openai.models.list()).object).toBe('list');

    // `rbee` with that key: the code in --json, and the exit code of a busy worker
    const cli = await runCli(['infer', '-m', model, 'Hi', '--max-tokens', '1', '--json'], {
      env: { ...loneNodeEnv(test.home, Number(new URL(test.url).port)), RBEE_API_KEY: key },
    });
    expect(cli.code, cli.stderr).toBe(7);
    expect(JSON.parse(cli.stdout.trim().split('\n').at(-1)!)).toMatchObject({
      type: 'error',
      error: { code: 'RATE_LIMITED' },
    });
    await Promise.all(accepted.map((id) => finished(key, id)));
  });

  it('comes from the node defaults for a key created without its own', async () => {
    const { key } = await createKey({ name: 'no limits of its own' });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const response = await call('/v1/jobs', key, { body: job() });
      expect(response.status).toBe(202);
      ids.push(((await response.json()) as { id: string }).id);
    }
    expect(await refusal(await call('/v1/jobs', key, { body: job() }))).toMatchObject({
      status: 429,
      error: { code: 'RATE_LIMITED', details: { limit: 'rpm', max: 3 } },
    });
    // another key has its own count
    const other = await createKey({ name: 'other' });
    const response = await call('/v1/jobs', other.key, { body: job() });
    expect(response.status).toBe(202);
    ids.push(((await response.json()) as { id: string }).id);
    await Promise.all(ids.slice(0, 3).map((id) => finished(key, id)));
    await finished(other.key, ids[3]!);
  });
});

describe('a key over its jobs at once', () => {
  it('is refused a second job while its first runs, and accepted again once that one ends', async () => {
    const { key } = await createKey({ name: 'agent', maxConcurrent: 1, rpm: 100 });
    const first = await call('/v1/jobs', key, { body: job(2000) });
    expect(first.status).toBe(202);
    const { id } = (await first.json()) as { id: string };
    const refused = await refusal(await call('/v1/jobs', key, { body: job() }));
    expect(refused).toMatchObject({
      status: 429,
      retryAfter: 1,
      error: { code: 'RATE_LIMITED', details: { limit: 'maxConcurrent', max: 1 } },
    });
    // the OpenAI shape for the same refusal
    const chat = await call('/v1/chat/completions', key, {
      body: { model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 1 },
    });
    expect(chat.status).toBe(429);
    expect(await chat.json()).toEqual({
      error: {
        message: expect.stringMatching(/job\(s\) running/) as unknown,
        type: 'rate_limit_error',
        code: 'RATE_LIMITED',
        param: null,
        details: { limit: 'maxConcurrent', max: 1, retryAfterS: expect.any(Number) as unknown },
      },
    });

    expect((await call(`/v1/jobs/${id}`, key, { method: 'DELETE' })).status).toBe(202);
    await finished(key, id);
    const again = await call('/v1/jobs', key, { body: job() });
    expect(again.status).toBe(202);
    await finished(key, ((await again.json()) as { id: string }).id);
  });
});

describe('clients on the node’s machine without a key', () => {
  it('are not limited, while a client on another machine with a key is', async () => {
    const node = await startTestNode(
      'rbee-limits-remote-',
      {},
      { cluster: { enabled: false }, threads: 1, keyLimits: { rpm: 1, maxConcurrent: 1 } },
    );
    try {
      const host = new URL(node.url).host;
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const response = await node.node.inject({
          method: 'POST',
          url: '/v1/jobs',
          headers: { host },
          payload: job(),
        });
        expect(response.statusCode).toBe(202);
        ids.push(response.json<{ id: string }>().id);
      }
      const client = createNodeClient({ url: node.url });
      await Promise.all(ids.map(async (id) => collect(client.jobEvents(id))));
      const { key } = (
        await node.node.inject({ method: 'POST', url: '/v1/keys', headers: { host }, payload: {} })
      ).json<{ key: string }>();
      const catalogId = (await client.models())[0]!.id;
      const remote = (): Promise<{ statusCode: number; headers: Record<string, unknown> }> =>
        node.node.inject({
          method: 'POST',
          url: '/v1/jobs',
          remoteAddress: '10.0.0.5',
          headers: { host, authorization: `Bearer ${key}` },
          // the catalog's model (a path is for clients on the machine itself)
          payload: { ...job(), model: catalogId },
        });
      const ok = await remote();
      expect(ok.statusCode).toBe(202);
      const limited = await remote();
      expect(limited.statusCode).toBe(429);
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    } finally {
      await node.stop();
    }
  });
});
