/**
 * The happy flow as a user runs it: the built `rbee` CLI as a real process, a real node it wakes,
 * a real worker on the generated demo model, and nothing left running afterwards.
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSandbox, ndjson, runCli, startCli, type Sandbox } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait-for.js';

let box: Sandbox;
beforeEach(async () => {
  box = await createSandbox();
});
afterEach(async () => {
  await box.cleanup();
});

const greedy = ['--temperature', '0', '--seed', '1'];

describe('rbee infer with no node running', () => {
  it('wakes the node, streams tokens, prints a summary, and puts the node back to sleep', async () => {
    const result = await runCli(['infer', '-m', 'demo', 'Hello there', '--max-tokens', '12', ...greedy], {
      env: box.env,
    });
    expect(result.stderr).toContain('node is asleep, waking it');
    expect(result.stderr).toMatch(/node is awake \(pid \d+/);
    expect(result.stderr).toMatch(/worker \S+ ready in \d+ ms \(pid \d+/);
    expect(result.stderr).toMatch(/12 tokens, [\d.]+ tok\/s, first token after \d+ ms/);
    expect(result.stderr).toContain('node stopped');
    expect(result.stdout.trim().length).toBeGreaterThan(0);
    expect(result.code).toBe(0);
    // The node, then its worker: nothing is left, and the pid file is gone.
    await waitFor(() => box.pids().length === 0, { what: 'node and worker to exit' });
    expect(existsSync(join(box.home, 'node.pid'))).toBe(false);
  });

  it('writes only NDJSON events with --json, and is deterministic with seed and temperature 0', async () => {
    const args = ['infer', '-m', 'demo', 'Tell me a story', '--max-tokens', '10', ...greedy, '--json'];
    const first = await runCli(args, { env: box.env });
    expect(first.code).toBe(0);
    const events = ndjson(first.stdout);
    const types = new Set(events.map((e) => e.type));
    expect(types).toEqual(new Set(['narration', 'token', 'done']));
    for (const event of events) expect(typeof event.ts).toBe('number');
    const done = events.find((e) => e.type === 'done') as {
      usage: { completionTokens: number };
      finishReason: string;
    };
    expect(done.usage.completionTokens).toBe(10);
    expect(done.finishReason).toBe('length');
    const text = events
      .filter((e) => e.type === 'token')
      .map((e) => e.text)
      .join('');
    expect(first.stderr).toBe('');

    const second = await runCli(args, { env: box.env });
    const text2 = ndjson(second.stdout)
      .filter((e) => e.type === 'token')
      .map((e) => e.text)
      .join('');
    expect(text2).toBe(text);
  });

  it('reads the prompt from standard input with -', async () => {
    const result = await runCli(['infer', '-m', 'demo', '-', '--max-tokens', '4', ...greedy], {
      env: box.env,
      input: 'a prompt from a pipe\n',
    });
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/4 tokens/);
  });

  it('cancels the job on Ctrl-C and still cleans up', async () => {
    const run = startCli(['infer', '-m', 'demo', 'go on forever', '--max-tokens', '100000', ...greedy], {
      env: box.env,
    });
    await waitFor(() => run.stdout().length > 0, { what: 'the first token', timeoutMs: 60_000 });
    run.child.kill('SIGINT');
    const result = await run.result;
    expect(result.code).toBe(130);
    expect(result.stderr).toContain('JOB_CANCELLED');
    expect(result.stderr).toContain('node stopped');
    await waitFor(() => box.pids().length === 0, { what: 'node and worker to exit' });
  });
});

describe('rbee infer with a node already running', () => {
  it('uses the running node and leaves it up', async () => {
    const start = await runCli(['node', 'start', '--json'], { env: box.env });
    expect(start.code).toBe(0);
    const started = ndjson(start.stdout).at(-1) as { pid: number; started: boolean };
    expect(started.started).toBe(true);

    const result = await runCli(['infer', '-m', 'demo', 'hi', '--max-tokens', '3', ...greedy], {
      env: box.env,
    });
    expect(result.code).toBe(0);
    expect(result.stderr).not.toContain('waking');
    expect(result.stderr).not.toContain('node stopped');
    const status = await runCli(['node', 'status', '--json'], { env: box.env });
    expect(JSON.parse(status.stdout)).toMatchObject({ state: 'ready', pid: started.pid });
    // The worker stays loaded for the next job (keep-alive).
    const workers = (await (await fetch(`${box.url}/v1/workers`)).json()) as { workers: { pid: number }[] };
    expect(workers.workers).toHaveLength(1);

    const stop = await runCli(['node', 'stop'], { env: box.env });
    expect(stop.code).toBe(0);
    await waitFor(() => box.pids().length === 0, { what: 'node and worker to exit' });
  });
});

describe('a node killed with SIGKILL', () => {
  it('leaves no orphaned worker behind', async () => {
    expect((await runCli(['node', 'start'], { env: box.env })).code).toBe(0);
    const spawned = await runCli(['workers', 'spawn', 'demo', '--json'], { env: box.env });
    expect(spawned.code).toBe(0);
    const worker = JSON.parse(spawned.stdout) as { pid: number };
    const status = JSON.parse((await runCli(['node', 'status', '--json'], { env: box.env })).stdout) as {
      pid: number;
    };
    expect(box.pids().sort()).toEqual([status.pid, worker.pid].sort());
    process.kill(status.pid, 'SIGKILL');
    await waitFor(() => box.pids().length === 0, { what: 'the worker to notice its hive died and exit' });
  });
});

describe('bad input gives a stable code and a non-zero exit, and leaves nothing behind', () => {
  const cases: [string, string[], string, number][] = [
    ['an unknown ref scheme', ['-m', 'ftp://host/x.gguf'], 'MODEL_REF_INVALID', 2],
    ['a name of no model', ['-m', 'no-such-model:q4_0'], 'MODEL_NOT_FOUND', 3],
    ['a ref escaping the models dir', ['-m', 'hf:org/../../etc/x.gguf'], 'MODEL_REF_INVALID', 2],
    ['a missing file', ['-m', '/nonexistent/model.gguf'], 'MODEL_NOT_FOUND', 3],
  ];
  it.each(cases)('%s', async (_name, args, code, exit) => {
    const result = await runCli(['infer', ...args, 'hello', '--json'], { env: box.env });
    expect(result.code).toBe(exit);
    const codes = ndjson(result.stdout).flatMap((e) =>
      e.type === 'error' ? [(e.error as { code: string }).code] : [],
    );
    expect(codes).toEqual([code]);
    await waitFor(() => box.pids().length === 0, { what: 'node to exit' });
  });

  it('a file that is not GGUF', async () => {
    const path = join(box.home, 'not-a-model.gguf');
    writeFileSync(path, 'this is not a gguf file at all'.repeat(100));
    const result = await runCli(['infer', '-m', path, 'hello', '--json'], { env: box.env });
    expect(result.code).toBe(4);
    const codes = ndjson(result.stdout).flatMap((e) =>
      e.type === 'error' ? [(e.error as { code: string }).code] : [],
    );
    expect(codes).toEqual(['MODEL_INVALID']);
    // Nothing was copied or half-written into the models directory, and no catalog row was made.
    expect(readdirSync(join(box.home, 'models'))).toEqual([]);
    const ls = await runCli(['models', 'ls', '--json'], { env: box.env });
    expect(JSON.parse(ls.stdout)).toEqual([]);
  });

  it('a prompt on a closed, empty standard input', async () => {
    const result = await runCli(['infer', '-m', 'demo', '-', '--json'], { env: box.env, input: '' });
    expect(result.code).toBe(2);
    expect(ndjson(result.stdout).at(-1)).toMatchObject({ error: { code: 'PROMPT_MISSING' } });
  });

  it('an invalid option value', async () => {
    const result = await runCli(['infer', '-m', 'demo', 'x', '--max-tokens', 'lots', '--json'], {
      env: box.env,
    });
    expect(result.code).toBe(2);
    expect(ndjson(result.stdout).at(-1)).toMatchObject({ error: { code: 'BAD_REQUEST' } });
  });

  it('a port already in use', async () => {
    const { createServer } = await import('node:net');
    const blocker = createServer();
    await new Promise<void>((res) => blocker.listen(box.port, '127.0.0.1', res));
    try {
      const result = await runCli(['node', '--log-level', 'silent'], { env: box.env });
      expect(result.code).toBe(6);
      expect(result.stderr).toContain('PORT_IN_USE');
    } finally {
      await new Promise((res) => blocker.close(res));
    }
  });
});
