/**
 * `rbee place` as a user runs it: the built CLI against a real node (woken for it, as any command
 * does), the scheduler's table for the demo model before and after it runs, and its errors with
 * their codes in --json too. Nothing loads: no worker starts for a preview.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeClient } from '../../src/node/client/index.js';
import { placePreviewSchema, type PlacePreview } from '../../src/shared/view.js';
import { createSandbox, ndjson, runCli, type Sandbox } from '../helpers/cli.js';

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

async function place(...args: string[]): Promise<PlacePreview> {
  const result = await runCli(['place', ...args, '--json'], { env: box.env });
  expect(result.code, result.stderr).toBe(0);
  return placePreviewSchema.parse(JSON.parse(result.stdout));
}

const workers = async (): Promise<unknown[]> => createNodeClient({ url: box.url }).workers();

describe('rbee place', () => {
  it('lists the node’s hive for a model not on disk yet: fetched there first, size unknown', async () => {
    const table = await place('demo');
    expect(table.options).toHaveLength(1);
    const [hive] = table.options;
    expect(hive).toMatchObject({ kind: 'provision', device: { backend: 'cpu', index: -1 } });
    expect(hive?.needed).toBeUndefined();
    expect(hive?.devices.find((d) => d.chosen)).toMatchObject({ name: 'the CPU', fits: true });
    expect(hive?.expected).toEqual({});
    expect(table.placement?.reason).toMatch(/model not on disk, fetched there first; room on CPU/);
    expect(await workers()).toEqual([]);
  });

  it('on disk: the estimate it needs and what is free; after a job: the warm worker, observed, and past figures', async () => {
    const pull = await runCli(['models', 'pull', 'demo', '--json'], { env: box.env });
    expect(pull.code, pull.stderr).toBe(0);
    const onDisk = (await place('demo')).options[0]!;
    expect(onDisk.kind).toBe('on-disk');
    expect(onDisk.needed?.basis).toBe('estimated');
    expect(onDisk.needed!.bytes).toBeGreaterThan(0);
    expect(onDisk.freeBytes).toBeGreaterThan(0);
    expect(await workers()).toEqual([]);

    // long enough to be timed: the jobs table keeps milliseconds, and 8 tiny-model tokens on the
    // native token loop can all come within one (then no tokens-per-second figure is given)
    const infer = await runCli(['infer', '-m', 'demo', 'Hello', '--max-tokens', '64', '--json'], {
      env: box.env,
    });
    expect(infer.code, infer.stderr).toBe(0);
    const warm = (await place('demo')).options[0]!;
    expect(warm.kind).toBe('warm');
    expect(warm.needed?.basis).toBe('observed');
    expect(warm.expected.timeToFirstTokenMs).toMatchObject({ basis: 'jobs', jobs: 1 });
    expect(warm.expected.tokensPerSecond).toMatchObject({ basis: 'jobs', jobs: 1 });
    expect(warm.expected.tokensPerSecond!.value).toBeGreaterThan(0);
    // a job that asks for more context than the warm worker has would reload it (said, nothing loads)
    const wider = await place('demo', '--context-size', '8192');
    expect(wider.placement).toMatchObject({ kind: 'on-disk' });
    expect(wider.placement?.reason).toMatch(
      /after unloading idle worker \S+ \(2048 tokens of context, reloaded with 8192\)/,
    );
    expect(await workers()).toHaveLength(1);

    // the plain table says the same for a person
    const plain = await runCli(['place', 'demo'], { env: box.env });
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(/a job would run on hive \S+ \(warm\)/);
    expect(plain.stdout).toMatch(/\twarm\tneeds \d+ MiB \(observed\)/);
    expect(plain.stdout).toMatch(/first token \d+ ms \(median of 1 past job\)/);
    expect(plain.stdout).toMatch(/→ the CPU/);
  });

  it('refuses what it cannot place with codes, in --json too', async () => {
    const cases: [string[], string, number][] = [
      [['no-such-model'], 'MODEL_NOT_FOUND', 3],
      [['/nowhere/model.gguf'], 'MODEL_NOT_FOUND', 3],
      [['hf:'], 'MODEL_REF_INVALID', 2],
      [['demo', '--on', 'zeta'], 'NOT_FOUND', 3],
    ];
    for (const [args, code, exit] of cases) {
      const result = await runCli(['place', ...args, '--json'], { env: box.env });
      expect(ndjson(result.stdout), args.join(' ')).toEqual([
        expect.objectContaining({ type: 'error', error: expect.objectContaining({ code }) as unknown }),
      ]);
      expect(result.code, args.join(' ')).toBe(exit);
    }
  });
});
