/**
 * API keys against a real `rbee node` with `auth: always` (tests reach it on loopback only, and a
 * loopback client is exempt in the default mode): refused without a key, served with one through
 * the official OpenAI client and through `rbee` itself, revoked keys refused, keys stored hashed.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSandbox, runCli, startCli, type CliRun, type Sandbox } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait-for.js';

let box: Sandbox;
let node: CliRun;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  box = await createSandbox();
  env = { ...box.env, RBEE_AUTH: 'always' };
  node = startCli(['node'], { env });
  await waitFor(async () => (await fetch(`${box.url}/health`).catch(() => undefined))?.ok === true, {
    what: 'the node',
    timeoutMs: 60_000,
  });
});
afterAll(async () => {
  node.child.kill('SIGTERM');
  await node.result;
  await box.cleanup();
});

const errorOf = async (response: Response): Promise<{ status: number; code: unknown }> => ({
  status: response.status,
  code: ((await response.json()) as { error?: { code?: unknown } }).error?.code,
});

describe('API keys', () => {
  let key: string;
  let id: string;

  it('refuses every route but /health without a key', async () => {
    expect((await fetch(`${box.url}/health`)).status).toBe(200);
    expect(await errorOf(await fetch(`${box.url}/v1/models`))).toEqual({ status: 401, code: 'UNAUTHORIZED' });
    expect(await errorOf(await fetch(`${box.url}/metrics`))).toEqual({ status: 401, code: 'UNAUTHORIZED' });
    const cli = await runCli(['models', 'ls', '--json'], { env });
    expect(cli.code).toBe(2);
    expect(JSON.parse(cli.stdout)).toMatchObject({ type: 'error', error: { code: 'UNAUTHORIZED' } });
  });

  it('creates the first key without one, shows it once, and stores only its hash', async () => {
    const created = await runCli(['keys', 'create', '--name', 'editor', '--json'], { env });
    expect(created.code, created.stderr).toBe(0);
    ({ key, id } = JSON.parse(created.stdout) as { key: string; id: string });
    expect(key).toMatch(/^rbee_[\w-]{43}$/);
    const db = readFileSync(join(box.home, 'rbee.db'));
    const walPath = join(box.home, 'rbee.db-wal');
    const wal = existsSync(walPath) ? readFileSync(walPath) : Buffer.alloc(0);
    expect(db.includes(key) || wal.includes(key)).toBe(false);
    // the next key takes a key
    const second = await runCli(['keys', 'create', '--json'], { env });
    expect(second.code).toBe(2);
  });

  it('serves the OpenAI client and rbee with the key, and refuses a wrong one', async () => {
    const openai = new OpenAI({ baseURL: `${box.url}/v1`, apiKey: key, maxRetries: 0 });
    const models = await openai.models.list();
    expect(Array.isArray(models.data)).toBe(true);
    const wrong = new OpenAI({ baseURL: `${box.url}/v1`, apiKey: `${key.slice(0, -1)}x`, maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toMatchObject({ status: 401 });

    const withKey = { ...env, RBEE_API_KEY: key };
    const infer = await runCli(['infer', '-m', 'demo', 'Hi', '--max-tokens', '4', '--json'], {
      env: withKey,
    });
    expect(infer.code, infer.stderr).toBe(0);
    expect(infer.stdout).toContain('"type":"done"');
    const listed = await runCli(['keys', 'ls', '--json'], { env: withKey });
    expect(JSON.parse(listed.stdout)).toEqual([
      expect.objectContaining({ id, name: 'editor', lastUsedAt: expect.any(Number) as number }) as unknown,
    ]);
    expect(listed.stdout).not.toContain(key);
  });

  it('refuses a revoked key from the next request', async () => {
    const withKey = { ...env, RBEE_API_KEY: key };
    const removed = await runCli(['keys', 'rm', id, '--json'], { env: withKey });
    expect(removed.code, removed.stderr).toBe(0);
    const after = await fetch(`${box.url}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    expect(await errorOf(after)).toEqual({ status: 401, code: 'UNAUTHORIZED' });
  });
});
