/**
 * Web pages cannot drive a node: real HTTP requests on 127.0.0.1 with the headers a browser would
 * send (a cross-site form post, a DNS-rebinding page), against a real node; what rbee's own client
 * and the official OpenAI client send keeps working.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNodeConfig } from '../../src/node/config.js';
import { createNodeClient } from '../../src/node/client/index.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';
import { startTestNode, testNodeConfig, type TestNode } from '../helpers/test-node.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One request with exactly these headers (fetch will not send a Host of our choosing). */
function send(
  port: number,
  options: { method?: string; path: string; headers: Record<string, string>; body?: string },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path,
        headers: options.headers,
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.once('error', reject);
    req.end(options.body);
  });
}

const codeOf = (answer: Answer): unknown =>
  (JSON.parse(answer.body) as { error?: { code?: unknown } }).error?.code;

describe('a node on loopback', () => {
  let test: TestNode;
  let port: number;
  let own: string;

  beforeAll(async () => {
    test = await startTestNode('rbee-origin-');
    port = Number(new URL(test.url).port);
    own = `127.0.0.1:${port}`;
  });
  afterAll(async () => {
    await test.stop();
  });

  it('refuses a cross-site POST /v1/shutdown and keeps running', async () => {
    // what a form on https://evil.example sends: its Origin, no JSON
    const crossSite = await send(port, {
      method: 'POST',
      path: '/v1/shutdown',
      headers: { host: own, origin: 'https://evil.example' },
    });
    expect({ status: crossSite.status, code: codeOf(crossSite) }).toEqual({
      status: 403,
      code: 'FORBIDDEN_ORIGIN',
    });
    // and what a no-cors fetch can send: a simple content type, even if the Origin were missing
    const plain = await send(port, {
      method: 'POST',
      path: '/v1/shutdown',
      headers: { host: own, 'content-type': 'text/plain' },
      body: '{}',
    });
    expect({ status: plain.status, code: codeOf(plain) }).toEqual({ status: 403, code: 'FORBIDDEN_ORIGIN' });
    // an allowed-looking JSON body does not help a page whose origin is not allowed
    const json = await send(port, {
      method: 'POST',
      path: '/v1/shutdown',
      headers: { host: own, origin: 'https://evil.example', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(json.status).toBe(403);
    expect(await createNodeClient({ url: test.url }).health()).toMatchObject({ state: 'ready' });
  });

  it('refuses a Host that is not the node, as a DNS-rebinding page sends', async () => {
    for (const host of ['evil.example', `evil.example:${port}`, `localhost:${port + 1}`, 'not a host']) {
      const answer = await send(port, { path: '/v1/models', headers: { host } });
      expect({ host, status: answer.status, code: codeOf(answer) }).toEqual({
        host,
        status: 403,
        code: 'FORBIDDEN_ORIGIN',
      });
    }
  });

  it('answers its own names, with or without its port, and /health to anyone', async () => {
    for (const host of [own, `localhost:${port}`, 'localhost', '127.0.0.1', `[::1]:${port}`, 'LOCALHOST']) {
      const answer = await send(port, { path: '/v1/models', headers: { host } });
      expect({ host, status: answer.status }).toEqual({ host, status: 200 });
    }
    const probe = await send(port, { path: '/health', headers: { host: 'probe.example' } });
    expect(probe.status).toBe(200);
  });

  it('serves the official OpenAI client', async () => {
    const openai = new OpenAI({ baseURL: `${test.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    expect((await openai.models.list()).data).toEqual([]);
    const completion = await openai.chat.completions.create({
      model: 'demo',
      messages: [{ role: 'user', content: 'Hi' }],
      max_tokens: 2,
    });
    expect(completion.usage).toMatchObject({ completion_tokens: 2 });
  });

  it("stops when rbee's client asks, with a bodyless POST", async () => {
    await createNodeClient({ url: test.url }).shutdown();
    await test.node.closed;
  });
});

describe('a node with allowedHosts and allowedOrigins in config.json', () => {
  let home: string;
  let node: RunningNode;
  let port: number;

  beforeAll(async () => {
    home = mkdtempSync(join(tmpdir(), 'rbee-origin-config-'));
    writeFileSync(
      join(home, 'config.json'),
      JSON.stringify({ allowedHosts: ['rbee.lan'], allowedOrigins: ['https://app.example'] }),
    );
    node = await startNode(testNodeConfig(home));
    port = Number(new URL(node.url).port);
  });
  afterAll(async () => {
    await node.close('test done');
    rmSync(home, { recursive: true, force: true });
  });

  it('answers a configured host name', async () => {
    expect((await send(port, { path: '/v1/models', headers: { host: `rbee.lan:${port}` } })).status).toBe(
      200,
    );
    expect((await send(port, { path: '/v1/models', headers: { host: `other.lan:${port}` } })).status).toBe(
      403,
    );
  });

  it('lets pages of an allowed origin call it, with CORS headers to read the answer', async () => {
    const headers = { host: `127.0.0.1:${port}`, origin: 'https://app.example' };
    const read = await send(port, { path: '/v1/models', headers });
    expect(read.status).toBe(200);
    expect(read.headers['access-control-allow-origin']).toBe('https://app.example');
    const preflight = await send(port, {
      method: 'OPTIONS',
      path: '/v1/jobs',
      headers: { ...headers, 'access-control-request-method': 'POST' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers['access-control-allow-headers']).toContain('content-type');
    // past the origin check, the route itself answers (here: a job without a prompt)
    const post = await send(port, {
      method: 'POST',
      path: '/v1/jobs',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo' }),
    });
    expect({ status: post.status, code: codeOf(post) }).toEqual({ status: 400, code: 'BAD_REQUEST' });
    const other = await send(port, {
      path: '/v1/models',
      headers: { ...headers, origin: 'https://evil.example' },
    });
    expect(other.status).toBe(403);
  });
});

describe('allowed hosts and origins settings', () => {
  const home = join(tmpdir(), 'rbee-origin-settings-never-created');
  const env = { RBEE_CLUSTER: '0' };

  it('reads RBEE_ALLOWED_HOSTS as a comma list, lower-cased', () => {
    const config = loadNodeConfig(
      { dataDir: home },
      { ...env, RBEE_ALLOWED_HOSTS: 'Rbee.LAN, gpu-box,[fe80::1]' },
    );
    expect(config.allowedHosts).toEqual(['rbee.lan', 'gpu-box', 'fe80::1']);
    expect(config.allowedOrigins).toEqual([]);
  });

  it('refuses a host with a port or a path, and an origin with a path', () => {
    for (const bad of ['rbee.lan:7833', 'http://rbee.lan', 'under_score.lan']) {
      expect(() => loadNodeConfig({ dataDir: home }, { ...env, RBEE_ALLOWED_HOSTS: bad })).toThrow(
        expect.objectContaining({ code: 'CONFIG_INVALID' }) as Error,
      );
    }
    const dir = mkdtempSync(join(tmpdir(), 'rbee-origin-settings-'));
    try {
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ allowedOrigins: ['https://app.example/ui'] }));
      expect(() => loadNodeConfig({ dataDir: dir }, env)).toThrow(
        expect.objectContaining({ code: 'CONFIG_INVALID' }) as Error,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
