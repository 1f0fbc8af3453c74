/**
 * The `flashAttention` setting of config.json, as a user sets it: workers of a node with it on run
 * their contexts with flash attention and still answer; without it a CPU worker runs without. What
 * the worker got is what `rbee workers ls` shows.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createSandbox, runCli, type Sandbox } from '../helpers/cli.js';

const boxes: Sandbox[] = [];
afterEach(async () => {
  for (const box of boxes.splice(0)) {
    await runCli(['node', 'stop', '--json'], { env: box.env });
    await box.cleanup();
  }
});

async function nodeWith(config: Record<string, unknown>): Promise<Sandbox> {
  const box = await createSandbox();
  boxes.push(box);
  writeFileSync(join(box.home, 'config.json'), JSON.stringify(config));
  const start = await runCli(['node', 'start', '--json'], { env: box.env });
  expect(start.code, start.stderr).toBe(0);
  return box;
}

async function workerOf(box: Sandbox): Promise<{ flashAttention?: boolean; id: string }> {
  const spawned = await runCli(['workers', 'spawn', 'demo', '--json'], { env: box.env });
  expect(spawned.code, spawned.stderr).toBe(0);
  const listed = await runCli(['workers', 'ls', '--json'], { env: box.env });
  expect(listed.code, listed.stderr).toBe(0);
  const [worker, ...others] = JSON.parse(listed.stdout) as { flashAttention?: boolean; id: string }[];
  expect(others).toEqual([]);
  return worker!;
}

describe('config flashAttention', () => {
  it('on: the worker runs with flash attention, says so, and answers', async () => {
    const box = await nodeWith({ flashAttention: true, threads: 1 });
    expect(await workerOf(box)).toMatchObject({ flashAttention: true });
    const text = await runCli(['workers', 'ls'], { env: box.env });
    expect(text.stdout).toContain('\tflash attention');

    const response = await fetch(`${box.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 }),
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { usage: { completion_tokens: number } };
    expect(body.usage.completion_tokens).toBeGreaterThan(0);
  });

  it('absent: a CPU worker runs without it', async () => {
    const box = await nodeWith({ threads: 1 });
    expect(await workerOf(box)).toMatchObject({ flashAttention: false });
    const text = await runCli(['workers', 'ls'], { env: box.env });
    expect(text.stdout).not.toContain('flash attention');
  });

  it('refuses a value that is not a boolean: `rbee node start` says why, with a stable code', async () => {
    const box = await createSandbox();
    boxes.push(box);
    writeFileSync(join(box.home, 'config.json'), JSON.stringify({ flashAttention: 'yes' }));
    const start = await runCli(['node', 'start', '--json'], { env: box.env });
    expect(start.code).toBe(2);
    const { error } = JSON.parse(start.stdout) as { error: { code: string; message: string } };
    expect(error.code).toBe('CONFIG_INVALID');
    expect(error.message).toMatch(/config\.json.*expected boolean[\s\S]*flashAttention/);
    const text = await runCli(['node', 'start'], { env: box.env });
    expect(text.stderr).toContain('error CONFIG_INVALID:');
  });
});
