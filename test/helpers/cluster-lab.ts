/**
 * Real `rbee node` processes on a private LAN of network namespaces (netns.ts), one per host, with
 * mDNS on: what the cluster tests and `npm run bench:cluster` drive. Each node's HTTP API listens on
 * the loopback of its own namespace and is read with curl run inside that namespace.
 */
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ClusterStatus } from '../../src/shared/view.js';
import { CLI, runCli, type CliResult, type CliRun } from './cli.js';
import { createNetLab, type LabHost, type NetLab } from './netns.js';
import { waitFor } from './wait-for.js';

export interface LabNode {
  host: LabHost;
  home: string;
  /** The running process, if any. */
  child: ChildProcess | undefined;
  /** Known once the node has started once. */
  peerId: string | undefined;
}

export interface ClusterLab {
  net: NetLab;
  nodes: LabNode[];
  /**
   * Adds a host and its data directory; `key: 'own'` gives it a cluster key of its own, `config`
   * is written as its config.json (e.g. `{ nodeName: 'n1' }`).
   */
  addNode(options?: { key?: 'shared' | 'own'; config?: Record<string, unknown> }): Promise<LabNode>;
  /** Starts (or restarts) a node and waits until its cluster layer runs; `env` adds settings. */
  start(node: LabNode, env?: NodeJS.ProcessEnv): Promise<void>;
  kill(node: LabNode): Promise<void>;
  status(node: LabNode): Promise<ClusterStatus>;
  /** Runs `rbee ARGS` inside a node's namespace as a client of that node (its data directory, its API). */
  cli(node: LabNode, args: string[]): CliRun;
  /** The node's log so far: pino's JSON lines, parsed (lines cut short by a kill are skipped). */
  log(node: LabNode): Record<string, unknown>[];
  /**
   * The queen every one of `nodes` agrees on, each seeing all the others live; undefined when they
   * do not (yet) agree, or a node does not answer.
   */
  agreedQueen(nodes: LabNode[]): Promise<string | undefined>;
  destroy(): Promise<void>;
}

const API = 'http://127.0.0.1:7833';

export async function createClusterLab(count: number): Promise<ClusterLab> {
  const net = await createNetLab(0);
  const nodes: LabNode[] = [];
  let code: string | undefined;

  const envOf = (node: LabNode): NodeJS.ProcessEnv => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RBEE_HOME: node.home,
      RBEE_PORT: '7833',
      RBEE_LOG_LEVEL: 'debug',
      RBEE_MDNS: '1',
      // the guard stays on: a node that somehow ran outside its namespace would refuse mDNS
      RBEE_MDNS_REQUIRE_NETNS: '1',
      RBEE_CLUSTER_LISTEN: `/ip4/${node.host.ip}/tcp/7834`,
      RBEE_ENGINE_BUILD: 'off',
    };
    delete env.NODE_OPTIONS;
    return env;
  };

  const lab: ClusterLab = {
    net,
    nodes,
    async addNode(options = {}) {
      const host = await net.addHost();
      const home = mkdtempSync(join(tmpdir(), 'rbee-lab-'));
      const node: LabNode = { host, home, child: undefined, peerId: undefined };
      nodes.push(node);
      // keys are files: `rbee cluster code` and `rbee join` need no network
      const env = { ...envOf(node), RBEE_MDNS: '0' };
      if (options.key === 'own' || code === undefined) {
        const made = await runCli(['cluster', 'code', '--json'], { env });
        if (made.code !== 0) throw new Error(`rbee cluster code failed: ${made.stderr}`);
        if (options.key !== 'own') code = (JSON.parse(made.stdout) as { code: string }).code;
      } else {
        const joined = await runCli(['join', code, '--json'], { env });
        if (joined.code !== 0) throw new Error(`rbee join failed: ${joined.stderr}`);
      }
      if (options.config !== undefined) {
        writeFileSync(join(home, 'config.json'), JSON.stringify(options.config));
      }
      return node;
    },
    async start(node, env = {}) {
      const child = net.spawn(node.host, [process.execPath, CLI, 'node'], { ...envOf(node), ...env });
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.stdout?.resume();
      node.child = child;
      await waitFor(
        async () => {
          if (child.exitCode !== null) throw new Error(`node in ${node.host.ns} exited: ${stderr}`);
          const status = await lab.status(node).catch(() => undefined);
          if (status?.state === 'failed') throw new Error(`cluster layer failed: ${status.error?.message}`);
          if (status?.state !== 'running') return false;
          node.peerId = status.self.id;
          return true;
        },
        { what: `the node in ${node.host.ns} to start`, intervalMs: 100 },
      );
    },
    async kill(node) {
      const child = node.child;
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
      node.child = undefined;
    },
    async status(node) {
      const text = await net.exec(node.host, ['curl', '-sf', '--max-time', '2', `${API}/v1/cluster`]);
      return JSON.parse(text) as ClusterStatus;
    },
    cli(node, args) {
      const child = net.spawn(node.host, [process.execPath, CLI, ...args], {
        ...envOf(node),
        RBEE_MDNS: '0',
      });
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const result = new Promise<CliResult>((resolve) => {
        child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
      });
      return { child, stdout: () => stdout, stderr: () => stderr, result };
    },
    log(node) {
      let text: string;
      try {
        text = readFileSync(join(node.home, 'logs', 'node.log'), 'utf8');
      } catch {
        return [];
      }
      return text.split('\n').flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return [];
        }
      });
    },
    async agreedQueen(group) {
      const all = await Promise.all(group.map((n) => lab.status(n).catch(() => undefined)));
      const ids = new Set(group.map((n) => n.peerId));
      let queen: string | undefined;
      for (const status of all) {
        if (status?.queen == null) return undefined;
        const live = status.members.filter((m) => m.live).map((m) => m.id);
        if (live.length !== group.length - 1 || !live.every((id) => ids.has(id))) return undefined;
        if (queen !== undefined && status.queen.id !== queen) return undefined;
        queen = status.queen.id;
      }
      return queen;
    },
    async destroy() {
      await Promise.all(nodes.map((n) => lab.kill(n)));
      await net.destroy();
      for (const node of nodes) rmSync(node.home, { recursive: true, force: true });
    },
  };
  try {
    for (let i = 0; i < count; i++) await lab.addNode();
  } catch (error) {
    await lab.destroy();
    throw error;
  }
  return lab;
}
