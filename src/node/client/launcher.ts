/**
 * Waking and stopping the local node on the keeper's behalf: the node runs detached, logs to its
 * data directory, and is found again through its HTTP API.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { isErrorCode, RbeeError } from '../../shared/errors.js';
import { DEFAULT_HOST } from '../../shared/paths.js';
import type { Health } from '../../shared/wire.js';
import type { ClusterShutdown, NodeClient } from './node-client.js';

export interface WakeInit {
  client: NodeClient;
  /** The rbee entry script to run as `node <script> node`. */
  mainScript: string;
  /** Environment for the node (carries RBEE_HOME, RBEE_PORT…). */
  env: NodeJS.ProcessEnv;
  /** Where the node logs, to explain a failed start. */
  nodeLog: string;
  narrate: (text: string) => void;
  /** Defaults to 30 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Whether `host` names this machine: loopback, the unspecified address, or one of its interfaces. */
export function isThisMachine(host: string, interfaces = networkInterfaces()): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (
    bare === 'localhost' ||
    bare === '0.0.0.0' ||
    bare === '::' ||
    bare === '::1' ||
    bare.startsWith('127.')
  ) {
    return true;
  }
  return Object.values(interfaces).some((list) => (list ?? []).some((i) => i.address.toLowerCase() === bare));
}

export interface Awake {
  health: Health;
  /** True when this call started the node (and so should stop it when done). */
  woke: boolean;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function logTail(path: string, lines = 5): string {
  if (!existsSync(path)) return '';
  const text = readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines);
  const messages = text.map((line) => {
    try {
      const record = JSON.parse(line) as { msg?: string; err?: { message?: string } };
      return record.err?.message ?? record.msg ?? line;
    } catch {
      return line;
    }
  });
  return messages.join('\n');
}

/** Where a node started in the background writes what it prints: beside its log. */
function startOutputPath(nodeLog: string): string {
  return join(dirname(nodeLog), 'node-start.out');
}

/**
 * The error a node printed before it exited (`error CODE: message`, as `rbee node` prints one), with
 * its own code: a config.json it refuses is CONFIG_INVALID, not a start that merely failed.
 */
function startError(printed: string): RbeeError | undefined {
  const match = /^error ([A-Z][A-Z0-9_]*): ([\s\S]*)$/m.exec(printed);
  if (match === null) return undefined;
  const [, code, message] = match;
  return new RbeeError(isErrorCode(code) ? code : 'NODE_START_FAILED', message!.trim());
}

/** The last 4000 characters of a file, '' when there is none. */
function readTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').slice(-4000).trim();
  } catch {
    return '';
  }
}

/** Polls `probe` with backoff (50 ms doubling to 500 ms) until it returns a value or time runs out. */
async function pollUntil<T>(
  probe: () => Promise<T | undefined>,
  options: { timeoutMs: number; signal?: AbortSignal; giveUp?: () => RbeeError | undefined },
): Promise<T | undefined> {
  const deadline = Date.now() + options.timeoutMs;
  let delay = 50;
  while (Date.now() < deadline) {
    options.signal?.throwIfAborted();
    const value = await probe();
    if (value !== undefined) return value;
    const reason = options.giveUp?.();
    if (reason !== undefined) throw reason;
    await sleep(delay, undefined, options.signal === undefined ? {} : { signal: options.signal });
    delay = Math.min(delay * 2, 500);
  }
  return undefined;
}

/** Returns the local node's health, starting the node detached first if nothing answers. */
export async function ensureNodeAwake(init: WakeInit): Promise<Awake> {
  const signalOpt = init.signal === undefined ? {} : { signal: init.signal };
  try {
    return { health: await init.client.health(signalOpt), woke: false };
  } catch (error) {
    if (!(error instanceof RbeeError) || error.code !== 'NODE_UNREACHABLE') throw error;
    // A node on another machine (RBEE_HOST) is not started from here.
    if (!isThisMachine(init.env.RBEE_HOST ?? DEFAULT_HOST)) {
      throw new RbeeError(
        'NODE_UNREACHABLE',
        `${error.message}; a node on another machine is not started from here (run \`rbee node start\` there)`,
        { cause: error },
      );
    }
  }
  init.narrate('node is asleep, waking it');
  const started = Date.now();
  // what the node prints before its own log exists (a config.json it refuses) lands in a file of its
  // logs directory, so that a start that fails can say why
  const output = startOutputPath(init.nodeLog);
  let fd: number | 'ignore' = 'ignore';
  try {
    mkdirSync(dirname(output), { recursive: true });
    fd = openSync(output, 'w');
  } catch {
    // a data directory it cannot write to: the node will say so in its exit code alone
  }
  const child = spawn(process.execPath, [init.mainScript, 'node'], {
    detached: true,
    stdio: ['ignore', fd, fd],
    env: init.env,
  });
  if (typeof fd === 'number') closeSync(fd);
  let exit: RbeeError | undefined;
  child.once('exit', (code, signal) => {
    const printed = readTail(output);
    exit =
      startError(printed) ??
      new RbeeError(
        'NODE_START_FAILED',
        `the node exited during start-up (code ${code ?? '-'}, signal ${signal ?? '-'})\n${printed}\n${logTail(init.nodeLog)}`
          .replace(/\n+/g, '\n')
          .trimEnd(),
      );
  });
  child.once('error', (error) => {
    exit = new RbeeError('NODE_START_FAILED', `could not start the node: ${error.message}`);
  });
  child.unref();

  const health = await pollUntil(
    async () => {
      try {
        const h = await init.client.health(signalOpt);
        return h.state === 'ready' ? h : undefined;
      } catch {
        return undefined;
      }
    },
    {
      timeoutMs: init.timeoutMs ?? 30_000,
      ...signalOpt,
      giveUp: () => exit,
    },
  );
  if (health === undefined) {
    if (child.pid !== undefined && isAlive(child.pid)) process.kill(child.pid, 'SIGTERM');
    throw new RbeeError(
      'NODE_START_FAILED',
      `the node did not become ready within ${init.timeoutMs ?? 30_000} ms`,
    );
  }
  init.narrate(`node is awake (pid ${health.pid}, ${Date.now() - started} ms)`);
  return { health, woke: true };
}

/** Asks the node to stop and waits until its process is gone; SIGKILL after `timeoutMs` (default 15 s). */
export async function stopNode(
  client: NodeClient,
  pid: number,
  options: { timeoutMs?: number; signal?: AbortSignal; cluster?: boolean } = {},
): Promise<{ forced: boolean; cluster?: ClusterShutdown }> {
  const timeoutMs = options.timeoutMs ?? 15_000;
  let cluster: ClusterShutdown | undefined;
  try {
    if (options.cluster === true) cluster = await client.shutdownCluster();
    else await client.shutdown();
  } catch (error) {
    // a cluster stop that the queen refused must not quietly stop this node alone
    if (options.cluster === true) throw error;
    if (!(error instanceof RbeeError) || error.code !== 'NODE_UNREACHABLE') throw error;
    if (isAlive(pid)) process.kill(pid, 'SIGTERM');
  }
  const gone = await pollUntil(async () => Promise.resolve(isAlive(pid) ? undefined : true), {
    timeoutMs,
  });
  const told = cluster === undefined ? {} : { cluster };
  if (gone === true) return { forced: false, ...told };
  process.kill(pid, 'SIGKILL');
  return { forced: true, ...told };
}
