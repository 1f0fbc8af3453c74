/**
 * `npm run bench:routing`: what the cluster's token path costs. Two real nodes, A and C; C runs the
 * worker. The same seeded job is streamed by a client of C itself (local: the baseline) and by a
 * client of A pinned to C (routed: A asks the queen, opens a hive.run stream to C and relays every
 * token). Variants are interleaved, BENCH_REPEATS times each (default 5), on the tiny model (512
 * tokens: per-token costs show) and the small one (128 tokens). Measured at the client: generation
 * tok/s from the first token event to `done`, and time to first token from submitting. Prints
 * medians and routed/local ratios.
 *
 * The nodes run on a private LAN of network namespaces (test/helpers/netns.ts: one namespace per
 * host, mDNS as discovery), each client inside its node's namespace, when this process may make
 * namespaces (root); otherwise on loopback with static peers, and the output says so.
 *
 * Both nodes share this machine's cores with the worker, so the routed path's relay work competes
 * with generation: the ratio is a worst case for a LAN where A is another machine.
 */
import '../src/shared/polyfill.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { createNodeClient, type NodeClient } from '../src/node/client/index.js';
import type { JobRequest } from '../src/shared/wire.js';
import { CLI, freePort, loneNodeEnv, runCli } from '../test/helpers/cli.js';
import { createClusterLab, type ClusterLab } from '../test/helpers/cluster-lab.js';
import { netnsSupport } from '../test/helpers/netns.js';
import { waitFor } from '../test/helpers/wait-for.js';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const MODELS = [
  { name: 'tiny', ref: 'demo', maxTokens: 512 },
  { name: 'small', ref: 'demo:small', maxTokens: 128 },
] as const;
/** Every node: one llama.cpp thread, workers never unloaded between runs. */
const NODE_CONFIG = { threads: 1, keepAliveS: -1 };

interface Sample {
  tokensPerSecond: number;
  ttftMs: number;
}

/** A client of one node: wherever it runs, it streams a job and reports what it saw. */
interface BenchClient {
  stream(job: JobRequest): Promise<Sample>;
  spawnWorker(ref: string): Promise<void>;
}

async function stream(client: NodeClient, request: JobRequest): Promise<Sample> {
  const submitted = performance.now();
  const { id } = await client.submitJob(request);
  let first: number | undefined;
  let tokens = 0;
  for await (const event of client.jobEvents(id)) {
    if (event.type === 'token') {
      first ??= performance.now();
      tokens++;
    } else if (event.type === 'error') {
      throw new Error(`${event.error.code}: ${event.error.message}`);
    } else if (event.type === 'done') {
      const end = performance.now();
      if (first === undefined) throw new Error('no token');
      // the first token's interval is not generation: count the tokens after it
      return { tokensPerSecond: ((tokens - 1) * 1000) / (end - first), ttftMs: first - submitted };
    }
  }
  throw new Error('the stream ended without done');
}

const direct = (client: NodeClient): BenchClient => ({
  stream: (job) => stream(client, job),
  spawnWorker: async (ref) => void (await client.spawnWorker(ref)),
});

/**
 * This script again, inside a host's namespace, as a client of the node there (API on that
 * namespace's loopback): one JSON command a line on stdin, one JSON answer a line on stdout.
 */
function clientChild(): void {
  const client = createNodeClient({ url: 'http://127.0.0.1:7833' });
  const lines = createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    const command = JSON.parse(line) as { stream?: JobRequest; spawn?: string };
    const work =
      command.stream !== undefined
        ? stream(client, command.stream)
        : client.spawnWorker(command.spawn ?? '').then(() => ({}));
    void work.then(
      (result) => process.stdout.write(`${JSON.stringify({ ok: result })}\n`),
      (error: unknown) => process.stdout.write(`${JSON.stringify({ error: String(error) })}\n`),
    );
  });
}

function namespaceClient(ns: string, children: ChildProcess[]): BenchClient {
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, process.execPath, ...process.execArgv, import.meta.filename],
    {
      env: { ...process.env, BENCH_ROLE: 'client' },
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  children.push(child);
  const answers = createInterface({ input: child.stdout });
  const waiting: Array<(line: string) => void> = [];
  answers.on('line', (line) => waiting.shift()?.(line));
  const ask = async <T>(command: object): Promise<T> => {
    const answer = new Promise<string>((resolve) => waiting.push(resolve));
    child.stdin.write(`${JSON.stringify(command)}\n`);
    const parsed = JSON.parse(await answer) as { ok?: T; error?: string };
    if (parsed.error !== undefined) throw new Error(parsed.error);
    return parsed.ok as T;
  };
  return {
    stream: (job) => ask<Sample>({ stream: job }),
    spawnWorker: async (ref) => void (await ask({ spawn: ref })),
  };
}

interface Pair {
  net: string;
  a: BenchClient;
  c: BenchClient;
  /** How a job names hive C. */
  pinC: string;
  stop(): Promise<void>;
}

/** A and C on a namespace LAN, mDNS finding each other, each client in its node's namespace. */
async function namespacePair(): Promise<Pair> {
  const lab: ClusterLab = await createClusterLab(2);
  const children: ChildProcess[] = [];
  try {
    const [c, a] = lab.nodes as [ClusterLab['nodes'][number], ClusterLab['nodes'][number]];
    for (const node of [c, a]) writeFileSync(join(node.home, 'config.json'), JSON.stringify(NODE_CONFIG));
    await lab.start(c, { RBEE_LOG_LEVEL: 'warn' });
    await lab.start(a, { RBEE_LOG_LEVEL: 'warn' });
    await waitFor(async () => (await lab.agreedQueen([a, c])) !== undefined, {
      what: 'a and c to find each other over mDNS',
      timeoutMs: 60_000,
    });
    return {
      net: `network namespaces (a private LAN: ${a.host.ip} → ${c.host.ip}, mDNS discovery)`,
      a: namespaceClient(a.host.ns, children),
      c: namespaceClient(c.host.ns, children),
      pinC: c.peerId as string,
      async stop() {
        for (const child of children) child.kill();
        await lab.destroy();
      },
    };
  } catch (error) {
    for (const child of children) child.kill();
    await lab.destroy();
    throw error;
  }
}

interface LoopbackNode {
  home: string;
  p2p: string;
  client: NodeClient;
  child: ChildProcess;
}

/** A and C on 127.0.0.1 with static peers and mDNS off: where namespaces cannot be made. */
async function loopbackPair(): Promise<Pair> {
  const nodes: LoopbackNode[] = [];
  const start = async (name: string, code: string | undefined, peers: string[]): Promise<LoopbackNode> => {
    const home = mkdtempSync(join(tmpdir(), `rbee-bench-routing-${name}-`));
    writeFileSync(join(home, 'config.json'), JSON.stringify({ ...NODE_CONFIG, nodeName: name }));
    const port = await freePort();
    const p2p = `/ip4/127.0.0.1/tcp/${await freePort()}`;
    const env = loneNodeEnv(home, port, 'warn');
    if (code !== undefined) {
      const joined = await runCli(['join', code, '--json'], { env });
      if (joined.code !== 0) throw new Error(`rbee join failed: ${joined.stderr}`);
    }
    const args = [CLI, 'node', '--cluster-listen', p2p, ...peers.flatMap((p) => ['--peer', p])];
    const child = spawn(process.execPath, args, { env, stdio: 'ignore' });
    const node = { home, p2p, client: createNodeClient({ url: `http://127.0.0.1:${port}` }), child };
    nodes.push(node);
    await waitFor(async () => (await node.client.cluster().catch(() => undefined))?.state === 'running', {
      what: `node ${name} to start`,
    });
    return node;
  };
  const stop = async (): Promise<void> => {
    for (const node of nodes.reverse()) {
      node.child.kill('SIGTERM');
      await waitFor(() => node.child.exitCode !== null || node.child.signalCode !== null, {
        what: 'a node to stop',
        timeoutMs: 20_000,
      }).catch(() => node.child.kill('SIGKILL'));
      rmSync(node.home, { recursive: true, force: true });
    }
  };
  try {
    const c = await start('c', undefined, []);
    const made = await runCli(['cluster', 'code', '--json'], { env: loneNodeEnv(c.home, 0) });
    const code = (JSON.parse(made.stdout) as { code: string }).code;
    const a = await start('a', code, [c.p2p]);
    // a's key changed when it joined: it started after the join, so both share the key
    await waitFor(async () => (await a.client.cluster()).members.some((m) => m.live), {
      what: 'a to see c',
    });
    return {
      net: 'loopback (127.0.0.1, static peers)',
      a: direct(a.client),
      c: direct(c.client),
      pinC: 'c',
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

async function main(): Promise<void> {
  const support = netnsSupport();
  const pair =
    support.ok && process.env.BENCH_NET !== 'loopback' ? await namespacePair() : await loopbackPair();
  try {
    console.log(
      `bench:routing — ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores, ${REPEATS} repeats, ` +
        `${pair.net}${support.ok ? '' : ` (no namespaces: ${support.reason})`}`,
    );
    const rows: string[] = [];
    for (const model of MODELS) {
      await pair.c.spawnWorker(model.ref);
      const job: JobRequest = {
        model: model.ref,
        prompt: 'The cluster streams tokens',
        maxTokens: model.maxTokens,
        temperature: 0,
        seed: 1,
        hive: pair.pinC,
      };
      // warm both paths (the routed one also warms a's view of c's worker)
      await pair.c.stream(job);
      await pair.a.stream(job);
      const local: Sample[] = [];
      const routed: Sample[] = [];
      for (let i = 0; i < REPEATS; i++) {
        local.push(await pair.c.stream(job));
        routed.push(await pair.a.stream(job));
      }
      const l = median(local.map((s) => s.tokensPerSecond));
      const r = median(routed.map((s) => s.tokensPerSecond));
      const lt = median(local.map((s) => s.ttftMs));
      const rt = median(routed.map((s) => s.ttftMs));
      rows.push(
        `| ${model.name} (${model.maxTokens} tokens) | ${l.toFixed(1)} | ${r.toFixed(1)} | **${(r / l).toFixed(3)}** | ${lt.toFixed(1)} | ${rt.toFixed(1)} | **${(rt - lt).toFixed(1)}** |`,
      );
      console.log(
        `${model.name}: local ${l.toFixed(1)} tok/s, routed ${r.toFixed(1)} tok/s (ratio ${(r / l).toFixed(3)}); ` +
          `TTFT local ${lt.toFixed(1)} ms, routed ${rt.toFixed(1)} ms (added ${(rt - lt).toFixed(1)} ms)`,
      );
    }
    console.log(
      '\n| model | local tok/s | routed tok/s | routed/local | local TTFT ms | routed TTFT ms | added TTFT ms |',
    );
    console.log('| --- | --- | --- | --- | --- | --- | --- |');
    for (const row of rows) console.log(row);
    console.log('\ntargets: routed/local ≥ 0.97 on both models; added TTFT ≤ 15 ms');
  } finally {
    await pair.stop();
  }
}

if (process.env.BENCH_ROLE === 'client') clientChild();
else await main();
