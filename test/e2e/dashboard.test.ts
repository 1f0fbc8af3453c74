/**
 * rbee as a person uses it in a real terminal (tmux), against a real node. The dashboard with the
 * demo model: open, switch views, chat and watch tokens stream, see where a job for the model would
 * run, quit, terminal restored. And `rbee models pull` from a slow local server: a progress bar
 * while it downloads, cleared after.
 */
import { createReadStream, statSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, onTestFailed } from 'vitest';
import { startServer, type TestServer } from '../node/gguf-http-server.js';
import { CLI, createSandbox, runCli, type Sandbox } from '../helpers/cli.js';
import { hasTmux, openTerminal, type Terminal } from '../helpers/tmux.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';

let box: Sandbox;
let terminal: Terminal | undefined;

beforeEach(async () => {
  box = await createSandbox();
});
afterEach(async () => {
  terminal?.kill();
  terminal = undefined;
  await box.cleanup();
});

/** Opens `rbee ARGS` in a terminal; the test's failure message shows what the terminal last showed. */
function open(args: string): { look: () => string; t: Terminal } {
  const t = openTerminal(box, `'${process.execPath}' '${CLI}' ${args}`);
  terminal = t;
  let last = '';
  onTestFailed(() => console.log(`the terminal showed:\n${last}`));
  return { look: () => (last = t.screen()), t };
}

describe.skipIf(!hasTmux)('rbee dashboard in a terminal', () => {
  it('opens, switches views, streams a chat answer, and restores the terminal on quit', async () => {
    const { look, t } = open('');
    const { screen, press, type } = t;
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

    // where a job for the model would run: the node's own table (GET /v1/place), a row for its hive
    press('3');
    await waitFor(() => /QUANT/.test(look()), { what: 'the models view' });
    press('w');
    await waitFor(() => /Where a job for .+ would run/.test(look()), {
      what: 'the placement preview',
    });
    await waitFor(() => /▸ \S+\s+warm\s+needs [\d.]+ [KMG]B \(observed\)/.test(look()), {
      what: 'the hive’s row: the warm worker',
    });
    expect(screen()).toMatch(/→ the CPU\s+[\d.]+ [KMG]B free\s+fits/);
    press('Escape');
    await waitFor(() => /QUANT/.test(look()), { what: 'the models view again' });

    press('q');
    await waitFor(() => look().includes('EXIT=0'), { what: 'the dashboard to exit' });
    // The alternate screen is gone: nothing of the dashboard is left on the terminal.
    expect(screen()).not.toContain('Cluster');
    // Quitting the dashboard leaves the node it woke running, for the cluster, and says so.
    expect(screen()).toContain('the node keeps running (rbee node stop to stop it)');
    const status = await runCli(['node', 'status', '--json'], { env: box.env });
    expect(JSON.parse(status.stdout)).toMatchObject({ state: 'ready' });
  }, 240_000);
});

describe.skipIf(!hasTmux)('rbee models pull in a terminal', () => {
  let server: TestServer;
  beforeEach(async () => {
    server = await startServer();
  });
  afterEach(() => server.close());

  it('draws a progress bar while it downloads, then leaves only the narration and the result', async () => {
    const model = await tinyModelPath();
    const size = statSync(model).size;
    // ~1 MB in ~2.5 s: long enough for several frames of the bar.
    server.route('/slow.gguf', async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
      for await (const chunk of createReadStream(model, { highWaterMark: 20_000 })) {
        res.write(chunk);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      res.end();
    });
    const { look } = open(`models pull ${server.origin}/slow.gguf`);
    await waitFor(() => /░+\s+\d+%\s+[\d.]+ [KM]B \/ 1\.0 MB\s+[\d.]+ [KM]B\/s/.test(look()), {
      what: 'the progress bar',
      timeoutMs: 60_000,
    });
    await waitFor(() => look().includes('EXIT=0'), { what: 'the pull to finish', timeoutMs: 60_000 });
    const end = look();
    expect(end).toContain('[keeper] node is asleep, waking it');
    expect(end).toContain('[hive] downloading slow.gguf');
    expect(end).toMatch(/pulled: \S+slow\.gguf\S* \(1\.0 MiB\)/);
    // The spinner and the bar are cleared, not left behind.
    expect(end).not.toMatch(/[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]|░|MB\/s/);
  }, 120_000);
});
