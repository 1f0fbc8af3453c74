/**
 * A job never vanishes: a node killed (-9) while it streams a job finds that job in its jobs table
 * when it comes back, failed with the reason, and the cleanup leaves no process behind.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createNodeClient } from '../../src/node/client/index.js';
import type { JobRecord } from '../../src/shared/view.js';
import { createSandbox, runCli, startCli, type Sandbox } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait-for.js';

let sandbox: Sandbox;
afterAll(async () => {
  await sandbox.cleanup();
});

describe('a node killed while it runs a job', () => {
  it('marks the job failed with NODE_RESTARTED when it starts again', async () => {
    sandbox = await createSandbox();
    writeFileSync(join(sandbox.home, 'config.json'), JSON.stringify({ threads: 1 }));
    const client = createNodeClient({ url: sandbox.url });
    const first = startCli(['node'], { env: sandbox.env });
    await waitFor(
      () =>
        client
          .health()
          .then((h) => h.state === 'ready')
          .catch(() => false),
      {
        what: 'the node to start',
      },
    );
    const { id } = await client.submitJob({ model: 'demo', prompt: 'go', maxTokens: 100_000 });
    let streaming = false;
    const reading = (async () => {
      for await (const event of client.jobEvents(id)) if (event.type === 'token') streaming = true;
    })().catch(() => undefined);
    await waitFor(() => streaming, { what: 'the first token' });
    const running = (await client.jobHistory()).find((j) => j.id === id);
    expect(running).toMatchObject({ state: 'running' });

    first.child.kill('SIGKILL');
    await first.result;
    await reading;
    // the worker saw its parent die and ended itself (no orphan)
    await waitFor(() => sandbox.pids().length === 0, { what: 'the worker to end with its node' });

    const second = startCli(['node'], { env: sandbox.env });
    await waitFor(
      () =>
        client
          .health()
          .then((h) => h.state === 'ready')
          .catch(() => false),
      {
        what: 'the node to start again',
      },
    );
    const listed = await runCli(['jobs', 'show', id.slice(0, 8), '--json'], { env: sandbox.env });
    expect(listed.code, listed.stderr).toBe(0);
    const row = JSON.parse(listed.stdout) as JobRecord;
    expect(row).toMatchObject({ id, state: 'failed', errorCode: 'NODE_RESTARTED' });
    expect(row.finishedAt).toBeGreaterThanOrEqual(row.acceptedAt);
    await runCli(['node', 'stop', '--json'], { env: sandbox.env });
    await second.result;
  });
});
