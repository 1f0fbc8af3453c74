/**
 * Admission by memory, with a real node: a model that does not fit is refused with numbers
 * before any worker starts, and once a worker has run, its observed memory replaces the estimate.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { testNodeConfig } from '../helpers/test-node.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';
import { createNodeClient } from '../../src/node/client/index.js';
import { pidsWithEnv } from '../helpers/processes.js';
import { collect, waitFor } from '../helpers/wait-for.js';

let home: string;
let node: RunningNode | undefined;

async function start(config: Record<string, unknown>): Promise<ReturnType<typeof createNodeClient>> {
  home = mkdtempSync(join(tmpdir(), 'rbee-memory-'));
  writeFileSync(join(home, 'config.json'), JSON.stringify({ threads: 1, ...config }));
  node = await startNode(testNodeConfig(home));
  return createNodeClient({ url: node.url });
}

afterEach(async () => {
  await node?.close('test done');
  node = undefined;
  rmSync(home, { recursive: true, force: true });
});

describe('memory admission', () => {
  it('refuses a model that does not fit, with the numbers, and starts no worker', async () => {
    const client = await start({ minFreeRamBytes: 2 ** 50 });
    const { id } = await client.submitJob({ model: 'demo', prompt: 'hi', maxTokens: 2 });
    const events = await collect(client.jobEvents(id));
    const last = events.at(-1);
    expect(last).toMatchObject({ type: 'error', error: { code: 'INSUFFICIENT_MEMORY' } });
    expect(last?.type === 'error' && last.error.message).toMatch(
      /needs \d+ MiB \(estimated\) but \d+ MiB of \d+ MiB RAM is free/,
    );
    expect(pidsWithEnv('RBEE_HOME', home)).toEqual([]);
    expect(await client.workers()).toEqual([]);
  });

  it('uses the estimate first, then what the worker was seen to use', async () => {
    const client = await start({ keepAliveS: 0 });
    const narration = async (id: string): Promise<string[]> =>
      (await collect(client.jobEvents(id))).flatMap((e) => (e.type === 'narration' ? [e.text] : []));
    const first = await client.submitJob({ model: 'demo', prompt: 'one', maxTokens: 2 });
    expect((await narration(first.id)).some((t) => /fits: needs \d+ MiB \(estimated\)/.test(t))).toBe(true);
    await waitFor(async () => (await client.workers()).length === 0, {
      what: 'the worker to unload (keep-alive 0)',
    });
    const second = await client.submitJob({ model: 'demo', prompt: 'two', maxTokens: 2 });
    expect((await narration(second.id)).some((t) => /fits: needs \d+ MiB \(observed\)/.test(t))).toBe(true);
  });
});
