/**
 * Real `rbee node` processes in one cluster on loopback, with static peers (mDNS off): start one,
 * read its join code, and wait until a set of them agrees on one queen.
 */
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { createNodeClient, type NodeClient } from '../../src/node/client/index.js';
import type { ClusterStatus } from '../../src/shared/view.js';
import { createSandbox, freePort, runCli, startCli, type CliResult, type Sandbox } from './cli.js';
import { tinyModelPath } from './tiny-model.js';
import { waitFor } from './wait-for.js';

export interface ClusterNodeProcess {
  sandbox: Sandbox;
  p2pPort: number;
  addr: string;
  status(): Promise<ClusterStatus>;
  stop(): Promise<void>;
  /** kill -9: the node dies as a machine losing power would (its workers end with it). */
  kill(): void;
  /** Resolves when the process has exited, however it was stopped. */
  exited: Promise<CliResult>;
}

export async function startClusterNode(
  sandbox: Sandbox,
  options: { peers?: string[]; p2pPort?: number } = {},
): Promise<ClusterNodeProcess> {
  const p2pPort = options.p2pPort ?? (await freePort());
  const addr = `/ip4/127.0.0.1/tcp/${p2pPort}`;
  const args = ['node', '--cluster-listen', addr, ...(options.peers ?? []).flatMap((p) => ['--peer', p])];
  const run = startCli(args, { env: sandbox.env });
  const client = createNodeClient({ url: sandbox.url });
  await waitFor(
    async () => {
      if (run.child.exitCode !== null) throw new Error(`node exited: ${run.stderr()}`);
      const status = await client.cluster().catch(() => undefined);
      return status?.state === 'running';
    },
    { what: 'the node to join its cluster layer' },
  );
  return {
    sandbox,
    p2pPort,
    addr,
    status: () => client.cluster(),
    exited: run.result,
    kill: () => void run.child.kill('SIGKILL'),
    async stop() {
      const result = await runCli(['node', 'stop', '--json'], { env: sandbox.env });
      expect(result.code, result.stderr).toBe(0);
      await run.result;
    },
  };
}

export async function joinCode(sandbox: Sandbox): Promise<string> {
  const result = await runCli(['cluster', 'code', '--json'], { env: sandbox.env });
  expect(result.code, result.stderr).toBe(0);
  const { code } = JSON.parse(result.stdout) as { code: string };
  expect(code).toMatch(/^rbee-[A-Za-z0-9_-]+$/);
  return code;
}

/** Both nodes list each other as live and agree on one queen. */
export async function agreed(nodes: ClusterNodeProcess[]): Promise<ClusterStatus[] | false> {
  const all = await Promise.all(nodes.map((n) => n.status()));
  const queens = new Set(all.map((s) => s.queen?.id ?? 'none'));
  const full = all.every((s) => s.members.filter((m) => m.live).length === nodes.length - 1);
  return full && queens.size === 1 && !queens.has('none') ? all : false;
}

export interface NamedNode {
  name: string;
  node: ClusterNodeProcess;
  client: NodeClient;
  /** Its peer id: its hive's id in the cluster. */
  id: string;
}

/**
 * One cluster of `names.length` nodes, each in its own sandbox with `nodeName` and one thread (plus
 * `config`): the first starts and prints its code, the others join with it and peer with the first;
 * resolves once all agree on one queen. The sandboxes go into `sandboxes` for cleanup.
 */
export async function startNamedCluster(
  names: readonly string[],
  sandboxes: Sandbox[],
  config: Record<string, unknown> = {},
): Promise<NamedNode[]> {
  const sandboxFor = async (name: string): Promise<Sandbox> => {
    const sandbox = await createSandbox();
    sandboxes.push(sandbox);
    writeFileSync(
      join(sandbox.home, 'config.json'),
      JSON.stringify({ nodeName: name, threads: 1, ...config }),
    );
    return sandbox;
  };
  const first = await startClusterNode(await sandboxFor(names[0]!));
  const code = await joinCode(first.sandbox);
  const others = await Promise.all(
    names.slice(1).map(async (name) => {
      const sandbox = await sandboxFor(name);
      const joined = await runCli(['join', code, '--json'], { env: sandbox.env });
      expect(joined.code, joined.stderr).toBe(0);
      return startClusterNode(sandbox, { peers: [first.addr] });
    }),
  );
  const all = [first, ...others];
  await waitFor(() => agreed(all), { what: `one queen for ${all.length} nodes` });
  return Promise.all(
    all.map(async (node, i) => ({
      name: names[i]!,
      node,
      client: createNodeClient({ url: node.sandbox.url }),
      id: (await node.status()).self.id,
    })),
  );
}

/** Nodes alpha and beta in one cluster (see startNamedCluster), as their processes. */
export async function startPair(sandboxes: Sandbox[]): Promise<[ClusterNodeProcess, ClusterNodeProcess]> {
  const [alpha, beta] = await startNamedCluster(['alpha', 'beta'], sandboxes);
  return [alpha!.node, beta!.node];
}

/**
 * A model file only `node`'s machine has: the tiny model copied into its home as `fileName` and
 * pulled into its catalog there. Returns the file's path.
 */
export async function pullModelOnlyOn(node: ClusterNodeProcess, fileName: string): Promise<string> {
  const file = join(node.sandbox.home, fileName);
  copyFileSync(await tinyModelPath(), file);
  const pull = await runCli(['models', 'pull', file, '--json'], { env: node.sandbox.env });
  expect(pull.code, pull.stderr).toBe(0);
  return file;
}

/**
 * Runs `start` with these environment variables set (the nodes it starts inherit them), then puts
 * the previous values back.
 */
export async function withEnv<T>(vars: Record<string, string>, start: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((name) => [name, process.env[name]]));
  Object.assign(process.env, vars);
  try {
    return await start();
  } finally {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
}
