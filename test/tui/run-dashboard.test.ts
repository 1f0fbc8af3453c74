import { afterEach, describe, expect, it } from 'vitest';
import { RbeeError } from '../../src/shared/errors.js';
import {
  ENTER_ALT_SCREEN,
  LEAVE_ALT_SCREEN,
  NODE_KEEPS_RUNNING,
  runDashboard,
} from '../../src/tui/dashboard/index.js';
import type { WakeNode } from '../../src/tui/dashboard/app.js';
import { waitFor } from '../helpers/wait-for.js';
import { oneHive } from '../fixtures/cluster-views.js';
import { FakeTtyIn, FakeTtyOut, createFakeNodeClient, type FakeNodeClient } from './helpers.js';

const awake: WakeNode = () => Promise.resolve();

interface Started {
  client: FakeNodeClient;
  stdout: FakeTtyOut;
  stdin: FakeTtyIn;
  exit: Promise<number>;
}

function startDashboard(wake: WakeNode = awake): Started {
  const client = createFakeNodeClient();
  const stdout = new FakeTtyOut(80, 24);
  const stdin = new FakeTtyIn();
  const exit = runDashboard({
    client,
    wake,
    stdout: stdout as unknown as NodeJS.WriteStream,
    stdin: stdin as unknown as NodeJS.ReadStream,
    env: {},
  });
  return { client, stdout, stdin, exit };
}

/** The node stream opens in an effect after the first render, so input is wired by then. */
async function ready({ client }: Started): Promise<void> {
  await waitFor(() => client.streams.length === 1, { what: 'the dashboard to subscribe' });
  client.streams[0]!.push({ type: 'snapshot', view: oneHive });
}

function expectRestored(stdout: FakeTtyOut): void {
  expect(stdout.written.startsWith(ENTER_ALT_SCREEN)).toBe(true);
  expect(stdout.written.endsWith(LEAVE_ALT_SCREEN)).toBe(true);
  expect(stdout.written.split(LEAVE_ALT_SCREEN)).toHaveLength(2);
}

/** runDashboard's own handlers, by function name (Ink's cursor restorer stays for the process). */
const ours = (): string[] =>
  (['SIGINT', 'SIGTERM', 'exit', 'uncaughtExceptionMonitor'] as const).flatMap((event) =>
    process
      .listeners(event as 'SIGINT')
      .flatMap((l) => (['onSigint', 'onSigterm', 'restore'].includes(l.name) ? [`${event}:${l.name}`] : [])),
  );

afterEach(() => {
  // Every exit path removes the handlers it added.
  expect(ours()).toEqual([]);
});

describe('runDashboard', () => {
  it('enters the alternate screen and leaves it when q quits, with exit code 0', async () => {
    const started = startDashboard();
    await ready(started);
    expect(ours()).toEqual([
      'SIGINT:onSigint',
      'SIGTERM:onSigterm',
      'exit:restore',
      'uncaughtExceptionMonitor:restore',
    ]);
    started.stdin.type('q');
    expect(await started.exit).toBe(0);
    expectRestored(started.stdout);
  });

  it('says the node keeps running, on the normal screen, when it woke the node itself', async () => {
    const started = startDashboard(() =>
      Promise.resolve({
        woke: true,
        health: { state: 'ready', uptimeS: 0, version: '0', node: 'n', pid: 1 },
      }),
    );
    await ready(started);
    started.stdin.type('q');
    expect(await started.exit).toBe(0);
    const [, after] = started.stdout.written.split(LEAVE_ALT_SCREEN);
    expect(after).toBe(`${NODE_KEEPS_RUNNING}\n`);
    expect(NODE_KEEPS_RUNNING).toMatch(/keeps running .*rbee node stop/);
  });

  it('says nothing of the node when it was running already', async () => {
    const started = startDashboard(() => Promise.resolve({ woke: false }));
    await ready(started);
    started.stdin.type('q');
    expect(await started.exit).toBe(0);
    expectRestored(started.stdout);
  });

  it('quits on Ctrl-C typed in the chat input', async () => {
    const started = startDashboard();
    await ready(started);
    started.stdin.type('5');
    started.stdin.type('q');
    started.stdin.type('\x03');
    expect(await started.exit).toBe(0);
    expectRestored(started.stdout);
  });

  it('restores the terminal on SIGTERM and SIGINT', async () => {
    const term = startDashboard();
    await ready(term);
    process.emit('SIGTERM');
    expect(await term.exit).toBe(143);
    expectRestored(term.stdout);

    const int = startDashboard();
    await ready(int);
    process.emit('SIGINT');
    expect(await int.exit).toBe(130);
    expectRestored(int.stdout);
  });

  it('restores the terminal and rethrows when rendering throws', async () => {
    const started = startDashboard();
    await waitFor(() => started.client.streams.length === 1);
    // A malformed snapshot makes a view throw while rendering.
    started.client.streams[0]!.push({ type: 'snapshot', view: { ...oneHive, hives: null } } as never);
    await expect(started.exit).rejects.toBeInstanceOf(RbeeError);
    expectRestored(started.stdout);
  });

  it('leaves with the wake error code when the node could not be woken', async () => {
    let woken = false;
    const started = startDashboard(() => {
      woken = true;
      return Promise.reject(new RbeeError('NODE_START_FAILED', 'no'));
    });
    // Ink attaches its input listener in the same commit that starts the wake.
    await waitFor(() => woken && started.stdin.listenerCount('readable') > 0);
    started.stdin.type('q');
    expect(await started.exit).toBe(6);
    expectRestored(started.stdout);
    expect(started.client.streams).toHaveLength(0);
  });

  it('refuses to start without a terminal', async () => {
    const stdout = new FakeTtyOut();
    stdout.isTTY = false;
    await expect(
      runDashboard({
        client: createFakeNodeClient(),
        wake: awake,
        stdout: stdout as unknown as NodeJS.WriteStream,
      }),
    ).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    expect(stdout.written).toBe('');
  });
});
