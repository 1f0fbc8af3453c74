/**
 * What every keeper subcommand shares: where the local node is, how to wake it, and how to print.
 */
import { InvalidArgumentError } from 'commander';
import { dataPaths, DEFAULT_HOST, DEFAULT_PORT, resolveDataDir, type DataPaths } from '../../shared/paths.js';
import {
  createNodeClient,
  ensureNodeAwake,
  stopNode,
  type Awake,
  type NodeClient,
} from '../../node/client/index.js';
import { createOutput, type Output } from './output.js';
import type { LiveStatus } from './live-status.js';

export interface CommonOptions {
  json?: boolean;
  port?: number;
}

export interface Keeper {
  /** The rbee entry script, run as `node <script> node` to wake a node. */
  mainScript: string;
  client(options: CommonOptions): NodeClient;
  output(options: CommonOptions, kind?: { stream?: boolean; live?: LiveStatus }): Output;
  /** The environment a woken node runs with: the keeper's own, with its --port carried over. */
  nodeEnv(options: CommonOptions): NodeJS.ProcessEnv;
  nodeLog(): string;
  /** The local data directory's files (keys, logs). */
  paths(): DataPaths;
  /** Wakes the local node if it is asleep (narrated); says whether this call woke it. */
  wake(options: CommonOptions, client: NodeClient, output: Output): Promise<Awake>;
  /** Runs `fn` against the local node, waking it first and putting it back to sleep if this call woke it. */
  withNode<T>(
    options: CommonOptions,
    fn: (client: NodeClient, output: Output) => Promise<T>,
    kind?: { stream?: boolean; live?: LiveStatus | undefined },
  ): Promise<T>;
}

export function createKeeper(init: { mainScript: string; env: NodeJS.ProcessEnv }): Keeper {
  const { env } = init;
  const url = (options: CommonOptions): string => {
    const port = options.port ?? (env.RBEE_PORT ? Number(env.RBEE_PORT) : DEFAULT_PORT);
    return `http://${env.RBEE_HOST ?? DEFAULT_HOST}:${port}`;
  };
  const keeper: Keeper = {
    mainScript: init.mainScript,
    client: (options) => createNodeClient({ url: url(options), apiKey: env.RBEE_API_KEY }),
    output: (options, kind = {}) =>
      createOutput({
        json: options.json === true,
        stream: kind.stream ?? false,
        live: kind.live,
        stdout: process.stdout,
        stderr: process.stderr,
      }),
    nodeEnv: (options) =>
      options.port === undefined ? { ...env } : { ...env, RBEE_PORT: String(options.port) },
    nodeLog: () => dataPaths(resolveDataDir(env)).nodeLog,
    paths: () => dataPaths(resolveDataDir(env)),
    wake: (options, client, output) =>
      ensureNodeAwake({
        client,
        mainScript: init.mainScript,
        env: keeper.nodeEnv(options),
        nodeLog: keeper.nodeLog(),
        narrate: (text) => output.narrate('keeper', text),
      }),
    async withNode(options, fn, kind = {}) {
      const client = keeper.client(options);
      const output = keeper.output(options, kind);
      const awake = await keeper.wake(options, client, output);
      try {
        return await fn(client, output);
      } finally {
        if (awake.woke) await stopNode(client, awake.health.pid);
      }
    },
  };
  return keeper;
}

export function intArg(name: string, min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min)
      throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}`);
    return n;
  };
}

export function floatArg(name: string, min: number, max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be a number between ${min} and ${max}`);
    }
    return n;
  };
}
