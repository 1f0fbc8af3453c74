/**
 * The dashboard as a person uses it: `rbee` in a real terminal (tmux), against a real node with
 * the demo model. Open, switch views, chat and watch tokens stream, quit, terminal restored.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { afterEach, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { CLI, createSandbox, runCli, type Sandbox } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait-for.js';

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

let box: Sandbox;
let session: string;

const tmux = (...args: string[]): string => execFileSync('tmux', args, { encoding: 'utf8' });
const screen = (): string => tmux('capture-pane', '-t', session, '-p');
/** One key or one piece of text at a time, as a person types (a chunk with Enter reads as a paste). */
const press = (...keys: string[]): void => {
  for (const key of keys) tmux('send-keys', '-t', session, key);
};
const type = (text: string): void => void tmux('send-keys', '-t', session, '-l', text);

beforeEach(async () => {
  box = await createSandbox();
  session = `rbee-test-${process.pid}-${Date.now()}`;
});
afterEach(async () => {
  spawnSync('tmux', ['kill-session', '-t', session]);
  await box.cleanup();
});

describe.skipIf(!hasTmux)('rbee dashboard in a terminal', () => {
  it('opens, switches views, streams a chat answer, and restores the terminal on quit', async () => {
    let last = '';
    const look = (): string => (last = screen());
    onTestFailed(() => console.log(`the terminal showed:\n${last}`));
    // a tmux server started elsewhere keeps its own environment: pass the node's settings explicitly
    const vars = {
      RBEE_HOME: box.home,
      RBEE_PORT: String(box.port),
      RBEE_MDNS: box.env.RBEE_MDNS ?? '0',
      RBEE_MDNS_REQUIRE_NETNS: '1',
      RBEE_CLUSTER_LISTEN: box.env.RBEE_CLUSTER_LISTEN ?? '',
    };
    tmux(
      'new-session',
      '-d',
      '-s',
      session,
      '-x',
      '100',
      '-y',
      '30',
      ...Object.entries(vars).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
      // Ink draws only the last frame when CI is set at all (even empty); a person's terminal has none.
      `env -u CI '${process.execPath}' '${CLI}'; echo "EXIT=$?"; sleep 30`,
    );
    await waitFor(() => look().includes('● live'), { what: 'the dashboard to connect', timeoutMs: 60_000 });
    expect(screen()).toMatch(/1 Cluster/);
    expect(screen()).toContain('(this node)');

    press('6');
    await waitFor(() => look().includes('node is awake'), { what: 'the log view with the wake narration' });

    press('5');
    await waitFor(() => look().includes('Enter send'), { what: 'the chat input' });
    // Esc and the next key must arrive apart, or the terminal reads them as one Alt+key.
    press('Escape');
    await waitFor(() => look().includes('m types a ref'), { what: 'the model picker' });
    press('m');
    await waitFor(() => look().includes('Chat with model'), { what: 'the model prompt' });
    type('demo');
    press('Enter');
    await waitFor(() => look().includes('model demo'), { what: 'the model to be chosen' });
    type('Hello there');
    press('Enter');
    await waitFor(() => /tokens · [\d.]+ tok\/s/.test(look()), {
      what: 'the answer and its summary',
      timeoutMs: 90_000,
    });

    press('Escape');
    await waitFor(() => look().includes('m types a ref'), { what: 'leaving the chat input' });
    press('2');
    await waitFor(() => /idle\s+0\/1/.test(look()), { what: 'the worker in the workers view' });

    press('q');
    await waitFor(() => look().includes('EXIT=0'), { what: 'the dashboard to exit' });
    // The alternate screen is gone: nothing of the dashboard is left on the terminal.
    expect(screen()).not.toContain('Cluster');
    // Quitting the dashboard leaves the node running, for the cluster.
    const status = await runCli(['node', 'status', '--json'], { env: box.env });
    expect(JSON.parse(status.stdout)).toMatchObject({ state: 'ready' });
  }, 240_000);
});
