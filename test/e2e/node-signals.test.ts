/**
 * Stopping a node with a signal, as a service manager (`systemctl stop`), Ctrl-C or a closed
 * terminal (SIGHUP) does: the node shuts down in order — its workers stopped, its pid file removed — and
 * exits 0, whichever libraries in the process also listen for the signal.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSandbox, runCli, startCli, type CliRun, type Sandbox } from '../helpers/cli.js';
import { isAlive } from '../helpers/processes.js';
import { waitFor } from '../helpers/wait-for.js';

let box: Sandbox;
let node: CliRun;

beforeEach(async () => {
  box = await createSandbox();
  node = startCli(['node'], { env: box.env });
  await waitFor(async () => (await fetch(`${box.url}/health`).catch(() => undefined))?.ok === true, {
    what: 'the node',
    timeoutMs: 60_000,
  });
});
afterEach(async () => {
  await box.cleanup();
});

describe('a node stopped by a signal', () => {
  it.each(['SIGTERM', 'SIGINT', 'SIGHUP'] as const)(
    'on %s stops its workers, removes its pid file and exits 0',
    async (signal) => {
      const spawned = await runCli(['workers', 'spawn', 'demo', '--json'], { env: box.env });
      expect(spawned.code, spawned.stderr).toBe(0);
      const worker = (JSON.parse(spawned.stdout) as { pid: number }).pid;
      expect(isAlive(worker)).toBe(true);
      const pidFile = join(box.home, 'node.pid');
      expect(existsSync(pidFile)).toBe(true);

      node.child.kill(signal);
      const result = await node.result;
      expect({ code: result.code, signal: result.signal }).toEqual({ code: 0, signal: null });
      expect(existsSync(pidFile)).toBe(false);
      expect(isAlive(worker)).toBe(false);
      const log = readFileSync(join(box.home, 'logs', 'node.log'), 'utf8');
      expect(log).toContain('"msg":"node stopped"');
    },
  );
});
