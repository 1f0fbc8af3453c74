/**
 * Models by name and `rbee --json` as a user runs them: the built CLI against a real node. A model
 * is run by the name `rbee models ls` shows and by an alias; `rbee --json` prints one snapshot of
 * what the dashboard shows, and `rbee --json --watch` streams NDJSON updates until Ctrl-C.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statusSnapshotSchema } from '../../src/shared/view.js';
import { createSandbox, ndjson, runCli, startCli, type Sandbox } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait-for.js';

let box: Sandbox;
beforeAll(async () => {
  box = await createSandbox();
  const start = await runCli(['node', 'start', '--json'], { env: box.env });
  expect(start.code, start.stderr).toBe(0);
  const pull = await runCli(['models', 'pull', 'demo', '--json'], { env: box.env });
  expect(pull.code, pull.stderr).toBe(0);
});
afterAll(async () => {
  await runCli(['node', 'stop', '--json'], { env: box.env });
  await box.cleanup();
});

async function json(args: string[]): Promise<unknown> {
  const result = await runCli(args, { env: box.env });
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout);
}

describe('models by name', () => {
  it('runs a model by the name `rbee models ls` lists, and by an alias, with --json before the command', async () => {
    const models = (await json(['--json', 'models', 'ls'])) as { id: string; name: string }[];
    expect(models).toHaveLength(1);
    const name = models[0]!.id;
    expect(name).toMatch(/^tiny:/);

    const infer = await runCli(['--json', 'infer', '-m', name, 'Hello', '--max-tokens', '2'], {
      env: box.env,
    });
    expect(infer.code, infer.stderr).toBe(0);
    expect(ndjson(infer.stdout).at(-1)).toMatchObject({ type: 'done' });

    expect(await json(['models', 'alias', 'smoke', name, '--json'])).toMatchObject({
      name: 'smoke',
      ref: 'demo:tiny',
    });
    const byAlias = await runCli(['infer', '-m', 'smoke', 'Hi', '--max-tokens', '2', '--json'], {
      env: box.env,
    });
    expect(byAlias.code, byAlias.stderr).toBe(0);
    expect(await json(['models', 'ls', '--json'])).toMatchObject([{ aliases: ['smoke'] }]);
    expect(await json(['--json', 'models', 'alias', 'rm', 'smoke'])).toEqual({ removed: 'smoke' });

    const gone = await runCli(['infer', '-m', 'smoke', 'Hi', '--json'], { env: box.env });
    expect(gone.code).toBe(3);
    expect(ndjson(gone.stdout).at(-1)).toMatchObject({
      type: 'error',
      error: { code: 'MODEL_NOT_FOUND' },
    });
  });
});

describe('rbee --json', () => {
  it('prints one snapshot of what the dashboard shows', async () => {
    const result = await runCli(['--json'], { env: box.env });
    expect(result.code, result.stderr).toBe(0);
    const lines = ndjson(result.stdout);
    expect(lines).toHaveLength(1);
    const snapshot = statusSnapshotSchema.parse(lines[0]);
    expect(snapshot.hives).toHaveLength(1);
    expect(snapshot.queen?.name).toBe(snapshot.hives[0]!.name);
    expect(snapshot.models.map((m) => m.ref)).toEqual(['demo:tiny']);
    expect(snapshot.health.state).toBe('ready');
  });

  it('with --watch, streams updates as NDJSON until Ctrl-C', async () => {
    const run = startCli(['--json', '--watch'], { env: box.env });
    await waitFor(() => run.stdout().split('\n').length > 1, { what: 'the snapshot line' });
    // a job on the node: its jobs section changes
    const infer = await runCli(['infer', '-m', 'demo', 'Hi', '--max-tokens', '2', '--json'], {
      env: box.env,
    });
    expect(infer.code, infer.stderr).toBe(0);
    await waitFor(() => ndjson(run.stdout()).some((e) => e.type === 'jobs'), {
      what: 'a jobs update',
      timeoutMs: 30_000,
    });
    run.child.kill('SIGINT');
    const result = await run.result;
    expect(result.code, result.stderr).toBe(0);
    const [first, ...rest] = ndjson(result.stdout);
    expect(statusSnapshotSchema.parse(first).type).toBe('snapshot');
    for (const update of rest) expect(typeof update.ts, JSON.stringify(update)).toBe('number');
  });
});
