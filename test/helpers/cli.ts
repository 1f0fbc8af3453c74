import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { killAll, pidsWithEnv } from './processes.js';
import { waitFor } from './wait-for.js';

export const REPO = resolve(import.meta.dirname, '../..');
/** The built CLI: tests exercise what users run (`npm test` builds first). */
export const CLI = join(REPO, 'dist', 'main.js');

/**
 * The environment of a node that runs alone on this machine: no multicast discovery, peers on
 * loopback only. mDNS runs nowhere but inside network namespaces a test made (test/cluster).
 */
export function loneNodeEnv(home: string, port: number, logLevel = 'debug'): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    RBEE_HOME: home,
    RBEE_PORT: String(port),
    RBEE_LOG_LEVEL: logLevel,
    RBEE_MDNS: '0',
    RBEE_CLUSTER_LISTEN: '/ip4/127.0.0.1/tcp/0',
    // no native build at an idle moment: it would take both cores for the better part of an hour
    RBEE_ENGINE_BUILD: 'off',
  };
  delete env.NODE_OPTIONS;
  return env;
}

/**
 * A port free on 127.0.0.1 now, below Linux's ephemeral range (32768 on): a port the kernel hands
 * out for `listen(0)` (every node's cluster listener in the tests) or an outgoing connection can
 * otherwise be taken between this check and the node's bind (seen in CI: PORT_IN_USE).
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise<boolean>((res) => {
      const server = createServer();
      server.once('error', () => res(false));
      server.listen(port, '127.0.0.1', () => server.close(() => res(true)));
    });
    if (free) return port;
    if (attempt >= 50) throw new Error('no free port found below the ephemeral range');
  }
}

/** A temporary RBEE_HOME and port, with cleanup that ends every process started under them. */
export interface Sandbox {
  home: string;
  port: number;
  env: NodeJS.ProcessEnv;
  url: string;
  pids(): number[];
  cleanup(): Promise<void>;
}

export async function createSandbox(): Promise<Sandbox> {
  const home = mkdtempSync(join(tmpdir(), 'rbee-test-'));
  const port = await freePort();
  const env = loneNodeEnv(home, port);
  return {
    home,
    port,
    env,
    url: `http://127.0.0.1:${port}`,
    pids: () => pidsWithEnv('RBEE_HOME', home),
    async cleanup() {
      killAll(pidsWithEnv('RBEE_HOME', home));
      await waitFor(() => pidsWithEnv('RBEE_HOME', home).length === 0, { what: 'sandbox processes to end' });
      rmSync(home, { recursive: true, force: true });
    },
  };
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliRun {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  result: Promise<CliResult>;
}

export function startCli(args: string[], options: { env: NodeJS.ProcessEnv; input?: string }): CliRun {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: options.env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.end(options.input ?? '');
  const result = new Promise<CliResult>((res) => {
    child.once('close', (code, signal) => res({ code, signal, stdout, stderr }));
  });
  return { child, stdout: () => stdout, stderr: () => stderr, result };
}

export async function runCli(
  args: string[],
  options: { env: NodeJS.ProcessEnv; input?: string },
): Promise<CliResult> {
  return startCli(args, options).result;
}

/** Parses NDJSON output, failing on any line that is not JSON. */
export function ndjson(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}
