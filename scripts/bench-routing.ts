/**
 * `npm run bench:routing`: what the cluster's token path costs. Two real nodes, A and C, on
 * loopback (static peers, mDNS off); C runs the worker. The same seeded job is streamed by a client
 * of C itself (local: the baseline) and by a client of A pinned to C (routed: A asks the queen,
 * opens a hive.run stream to C and relays every token). Variants are interleaved, BENCH_REPEATS
 * times each (default 5), on the tiny model (512 tokens: per-token costs show) and the small one
 * (128 tokens). Measured at the client: generation tok/s from the first token event to `done`, and
 * time to first token from submitting. Prints medians and routed/local ratios.
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
import { createNodeClient, type NodeClient } from '../src/node/client/index.js';
import type { JobRequest } from '../src/shared/wire.js';
import { CLI, freePort, loneNodeEnv, runCli } from '../test/helpers/cli.js';
import { waitFor } from '../test/helpers/wait-for.js';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const MODELS = [
  { name: 'tiny', ref: 'demo', maxTokens: 512 },
  { name: 'small', ref: 'demo:small', maxTokens: 128 },
] as const;

interface BenchNode {
  name: string;
  home: string;
  p2p: string;
  client: NodeClient;
  child: ChildProcess;
}

async function startNode(name: string, code: string | undefined, peers: string[]): Promise<BenchNode> {
  const home = mkdtempSync(join(tmpdir(), `rbee-bench-routing-${name}-`));
  writeFileSync(join(home, 'config.json'), JSON.stringify({ nodeName: name, threads: 1, keepAliveS: -1 }));
  const port = await freePort();
  const p2p = `/ip4/127.0.0.1/tcp/${await freePort()}`;
  const env = loneNodeEnv(home, port, 'warn');
  if (code !== undefined) {
    const joined = await runCli(['join', code, '--json'], { env });
    if (joined.code !== 0) throw new Error(`rbee join failed: ${joined.stderr}`);
  }
  const args = [CLI, 'node', '--cluster-listen', p2p, ...peers.flatMap((p) => ['--peer', p])];
  const child = spawn(process.execPath, args, { env, stdio: 'ignore' });
  const client = createNodeClient({ url: `http://127.0.0.1:${port}` });
  await waitFor(async () => (await client.cluster().catch(() => undefined))?.state === 'running', {
    what: `node ${name} to start`,
  });
  return { name, home, p2p, client, child };
}

interface Sample {
  tokensPerSecond: number;
  ttftMs: number;
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

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

const nodes: BenchNode[] = [];
try {
  console.log(`bench:routing — ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores, ${REPEATS} repeats`);
  const c = await startNode('c', undefined, []);
  nodes.push(c);
  const made = await runCli(['cluster', 'code', '--json'], { env: loneNodeEnv(c.home, 0) });
  const code = (JSON.parse(made.stdout) as { code: string }).code;
  const a = await startNode('a', code, [c.p2p]);
  nodes.push(a);
  // a's key changed when it joined: it started after the join, so both share the key
  await waitFor(async () => (await a.client.cluster()).members.some((m) => m.live), { what: 'a to see c' });

  const rows: string[] = [];
  for (const model of MODELS) {
    await c.client.spawnWorker(model.ref);
    const job: JobRequest = {
      model: model.ref,
      prompt: 'The cluster streams tokens',
      maxTokens: model.maxTokens,
      temperature: 0,
      seed: 1,
      hive: 'c',
    };
    // warm both paths (the routed one also warms a's view of c's worker)
    await stream(c.client, job);
    await stream(a.client, job);
    const local: Sample[] = [];
    const routed: Sample[] = [];
    for (let i = 0; i < REPEATS; i++) {
      local.push(await stream(c.client, job));
      routed.push(await stream(a.client, job));
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
  for (const node of nodes.reverse()) {
    node.child.kill('SIGTERM');
    await waitFor(() => node.child.exitCode !== null || node.child.signalCode !== null, {
      what: `node ${node.name} to stop`,
      timeoutMs: 20_000,
    }).catch(() => node.child.kill('SIGKILL'));
    rmSync(node.home, { recursive: true, force: true });
  }
}
