/**
 * `rbee workers history`: the workers a node started, from its worker catalog, as a user reads it —
 * the llama.cpp binary each ran and why, whether it runs, how long it ran — with the built CLI
 * against a real node and a real worker.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workerHistorySchema } from '../../src/shared/wire.js';
import { createSandbox, runCli, type Sandbox } from '../helpers/cli.js';

let box: Sandbox;
beforeAll(async () => {
  box = await createSandbox();
  const start = await runCli(['node', 'start', '--json'], { env: box.env });
  expect(start.code, start.stderr).toBe(0);
});
afterAll(async () => {
  await runCli(['node', 'stop', '--json'], { env: box.env });
  await box.cleanup();
});

async function history(...args: string[]) {
  const result = await runCli(['workers', 'history', '--json', ...args], { env: box.env });
  expect(result.code, result.stderr).toBe(0);
  return workerHistorySchema.shape.workers.parse(JSON.parse(result.stdout));
}

describe('rbee workers history', () => {
  it('lists each worker with its binary and why, running, then how long it ran', async () => {
    expect(await history()).toEqual([]);
    const spawned = await runCli(['workers', 'spawn', 'demo', '--json'], { env: box.env });
    expect(spawned.code, spawned.stderr).toBe(0);
    const worker = (JSON.parse(spawned.stdout) as { id: string; pid: number }).id;

    const [running, ...others] = await history();
    expect(others).toEqual([]);
    expect(running).toMatchObject({ id: worker, backend: 'cpu', device: -1, running: true });
    expect(running!.exitedAt).toBeUndefined();
    // the binary a CPU worker loads here, and the reason the node gave it
    expect(running!.binary?.kind).toMatch(/^(prebuilt|native|localBuild)$/);
    expect(running!.binary?.why.length).toBeGreaterThan(10);

    const stopped = await runCli(['workers', 'stop', worker, '--json'], { env: box.env });
    expect(stopped.code, stopped.stderr).toBe(0);
    const [ended] = await history();
    expect(ended).toMatchObject({ id: worker, running: false });
    expect(ended!.exitedAt).toBeGreaterThanOrEqual(ended!.readyAt);

    const plain = await runCli(['workers', 'history'], { env: box.env });
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toContain(worker);
    expect(plain.stdout).toMatch(/\tran \d+s\n/);
    expect(plain.stdout).toContain(`${ended!.binary!.label}: ${ended!.binary!.why}`);
  });

  it('refuses a limit it cannot serve, with a stable code', async () => {
    const result = await runCli(['workers', 'history', '--limit', '0', '--json'], { env: box.env });
    expect(result.code).not.toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ error: { code: 'BAD_REQUEST' } });
    const response = await fetch(`${box.url}/v1/workers/history?limit=5000`, {
      headers: { 'x-rbee-client': '1' },
    });
    expect(response.status).toBe(400);
  });
});
