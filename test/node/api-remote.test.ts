/**
 * What clients on other machines may do, on a real node: requests go through the node's real
 * routes and hooks in-process (`inject` with a LAN `remoteAddress`), so no packet leaves this
 * machine. Such a client names no URLs or paths as models, and sees only its own jobs.
 */
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterView } from '../../src/shared/view.js';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { tinyModelPath } from '../helpers/tiny-model.js';

const LAN = '10.0.0.5';

let test: TestNode;
let host: string;
let keyA: { id: string; key: string };
let keyB: { id: string; key: string };

beforeAll(async () => {
  test = await startTestNode('rbee-remote-');
  host = new URL(test.url).host;
  keyA = (await local({ method: 'POST', url: '/v1/keys', payload: { name: 'a' } })).json();
  keyB = (await local({ method: 'POST', url: '/v1/keys', payload: { name: 'b' } })).json();
});
afterAll(async () => {
  await test.stop();
});

/** A request from this machine without a key. */
function local(options: InjectOptions): Promise<LightMyRequestResponse> {
  return test.node.inject({ ...options, headers: { host, 'x-rbee-client': '1', ...options.headers } });
}

/** A request from another machine with an API key. */
function remote(key: { key: string }, options: InjectOptions): Promise<LightMyRequestResponse> {
  return test.node.inject({
    ...options,
    remoteAddress: LAN,
    headers: { host, 'x-rbee-client': '1', authorization: `Bearer ${key.key}`, ...options.headers },
  });
}

const errorOf = (response: LightMyRequestResponse): { status: number; code: unknown } => ({
  status: response.statusCode,
  code: response.json<{ error?: { code?: unknown } }>().error?.code,
});

describe('model refs from clients on other machines', () => {
  it('refuses URLs and paths on every route that takes a model, before fetching anything', async () => {
    // nothing listens on port 9: had the node tried, the job would have failed later instead
    const url = 'http://127.0.0.1:9/models/x.gguf';
    const path = '/etc/rbee-test/none.gguf';
    const messages = [{ role: 'user', content: 'hi' }];
    const attempts: [string, Record<string, unknown>][] = [
      ['/v1/jobs', { model: url, prompt: 'hi' }],
      ['/v1/jobs', { model: path, prompt: 'hi' }],
      ['/v1/models/pull', { model: `file:${path}` }],
      ['/v1/workers', { model: path }],
      ['/v1/chat/completions', { model: url, messages }],
      ['/v1/completions', { model: path, prompt: 'hi' }],
      ['/v1/embeddings', { model: url, input: 'hi' }],
    ];
    for (const [route, payload] of attempts) {
      const response = await remote(keyA, { method: 'POST', url: route, payload });
      expect({ route, ...errorOf(response) }).toEqual({ route, status: 403, code: 'MODEL_REF_FORBIDDEN' });
    }
    expect((await local({ url: '/v1/jobs' })).json<{ jobs: unknown[] }>().jobs).toEqual([]);
  });

  it('lets them use demo and what the catalog holds, even a model added from a path', async () => {
    const file = await tinyModelPath();
    // the machine's own user may add a model from a path
    const added = await local({ method: 'POST', url: '/v1/models/pull', payload: { model: file } });
    expect(added.body).toContain('"type":"done"');
    const pulled = await remote(keyA, { method: 'POST', url: '/v1/models/pull', payload: { model: file } });
    expect(pulled.statusCode).toBe(200);
    expect(pulled.body).toContain('"cached":true');
    const demo = await remote(keyA, { method: 'POST', url: '/v1/models/pull', payload: { model: 'demo' } });
    expect(demo.body).toContain('"type":"done"');
  });
});

describe('jobs of other clients', () => {
  let jobA: string;

  beforeAll(async () => {
    // a job that fails at once (its keep-alive does not parse): it is kept, but no worker starts
    const accepted = await remote(keyA, {
      method: 'POST',
      url: '/v1/jobs',
      payload: { model: 'demo', prompt: 'hi', keepAlive: 'forever' },
    });
    expect(accepted.statusCode).toBe(202);
    jobA = accepted.json<{ id: string }>().id;
    // its events end with the error, so the whole stream is the answer
    const events = await remote(keyA, { url: `/v1/jobs/${jobA}/events` });
    expect(events.body).toContain('BAD_REQUEST');
  });

  it('are not found for another key: events, state, cancel', async () => {
    for (const [method, url] of [
      ['GET', `/v1/jobs/${jobA}/events`],
      ['GET', `/v1/jobs/${jobA}`],
      ['DELETE', `/v1/jobs/${jobA}`],
    ] as const) {
      const response = await remote(keyB, { method, url });
      expect({ url, ...errorOf(response) }).toEqual({ url, status: 404, code: 'JOB_NOT_FOUND' });
    }
  });

  it('are left out of its list, and shown to the owner and to the machine', async () => {
    const ids = async (response: Promise<LightMyRequestResponse>): Promise<string[]> =>
      (await response).json<{ jobs: { id: string }[] }>().jobs.map((j) => j.id);
    expect(await ids(remote(keyB, { url: '/v1/jobs' }))).toEqual([]);
    expect(await ids(remote(keyA, { url: '/v1/jobs' }))).toEqual([jobA]);
    expect(await ids(local({ url: '/v1/jobs' }))).toContain(jobA);
    const own = await remote(keyA, { url: `/v1/jobs/${jobA}` });
    expect(own.json()).toMatchObject({ id: jobA, owner: `key:${keyA.id}`, state: 'failed' });
    expect((await remote(keyA, { method: 'DELETE', url: `/v1/jobs/${jobA}` })).statusCode).toBe(202);
  });

  it("are left out of another key's live view", async () => {
    const snapshotFor = async (key: { key: string }): Promise<ClusterView> => {
      const response = await remote(key, { url: '/v1/events', payloadAsStream: true });
      const stream = response.stream();
      let text = '';
      for await (const chunk of stream) {
        text += String(chunk);
        if (text.includes('\n\n')) break;
      }
      // the client goes away: the node stops sending
      response.raw.res.destroy();
      const data = text.split('\n').find((line) => line.startsWith('data: '));
      return (JSON.parse(data!.slice(6)) as { view: ClusterView }).view;
    };
    expect((await snapshotFor(keyB)).jobs.map((j) => j.id)).toEqual([]);
    expect((await snapshotFor(keyA)).jobs.map((j) => j.id)).toEqual([jobA]);
  });
});
