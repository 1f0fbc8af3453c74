/**
 * `npm run bench:engine`: what rbee adds on top of llama.cpp, measured in one run, on the tiny model
 * (512 tokens: over a thousand tokens a second, where every per-token cost shows) and the small one
 * (128 tokens).
 *
 *   (a) node-llama-cpp in a process of its own that does nothing else, no rbee — the floor
 *   (b) an rbee worker process through the hive's local path (spawnWorker + IPC)
 *   (c) the full path: a real `rbee node`, `POST /v1/jobs` and its SSE events, this script as client
 *   (d) the same node's OpenAI route: `POST /v1/completions` with `stream: true`
 *
 * Same generated model, same threads, greedy raw completion of the same prompt; variants are
 * interleaved (a, b, c, d, a, …) so machine noise spreads evenly; medians. Every variant times
 * generation the same way — (completion tokens − 1) over the time from the first token's arrival
 * to the last's — and counts the prompt as the worker does (its own usage figure, BOS included).
 * The clients of (c) and (d) read with node:http and parse only what they must, so that the
 * client's own cost does not stand in for the node's. For (c) and (d) the node's CPU time per
 * streamed token (all its threads, from /proc, less what it spends idle over the same time) is
 * printed beside the CPU one bare node:http server
 * spends per event written, measured in the same run: the floor of one write per token. TTFT is
 * given twice: at the start of each long run (after the other paths' runs) and for 1-token
 * requests sent one after another, as a client that keeps asking sees it. Then aggregate tok/s for
 * 1, 2 and 4 concurrent requests on one 4-slot worker (small model).
 *
 * Env: BENCH_REPEATS (default 5), BENCH_PRESETS (tiny,small), BENCH_TOKENS (per preset: 512 tiny,
 *      128 small), BENCH_THREADS (engine default), BENCH_SKIP_CONCURRENCY=1, BENCH_BINARY (native or
 *      prebuilt; by default what this machine's CPU workers load, see bench-paths.ts benchBinary).
 */
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import { cpus, totalmem } from 'node:os';
import { performance } from 'node:perf_hooks';
import {
  createFloorProcess,
  createNode,
  createWorkerPath,
  dataOf,
  engine,
  ensureModel,
  median,
  readEventStream,
  sampleOf,
  type Preset,
  type Run,
  type Sample,
  benchSettings,
  benchBinary,
} from './bench-paths.js';

const {
  repeats: REPEATS,
  presets: PRESETS,
  tokensFor,
  threads: THREADS,
} = benchSettings(engine.defaultThreads());
const BINARY = benchBinary();

/**
 * The floor of the node's CPU per token: a bare node:http server (a child process doing nothing
 * else) writes token-sized SSE events, one write each, to this process; its CPU per event.
 */
async function httpWriteFloorUs(events: number): Promise<number> {
  const child = fork(import.meta.filename, [], {
    execArgv: process.execArgv,
    env: { ...process.env, BENCH_CHILD: 'http-floor', BENCH_EVENTS: String(events) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise<number>((res) => child.once('message', (m) => res(m as number)));
  const cpus: number[] = [];
  for (let i = 0; i < 3; i++) {
    let result = 0;
    await readEventStream(`http://127.0.0.1:${port}/`, { method: 'GET' }, (block) => {
      if (block.startsWith('event: done')) result = Number(dataOf(block));
    });
    cpus.push(result / events);
  }
  child.kill();
  return median(cpus);
}

function httpFloorChild(): void {
  const events = Number(process.env.BENCH_EVENTS);
  const event = (i: number): string =>
    `id: ${i}\nevent: token\ndata: ${JSON.stringify({ type: 'token', text: ' word', ts: Date.now(), jobId: '0f8d3c1e-5b7a-4c2e-9d3f-1a2b3c4d5e6f' })}\n\n`;
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const before = process.cpuUsage();
    let i = 0;
    // one event per turn of the loop, as tokens arrive one by one from a worker
    const step = (): void => {
      if (i < events) {
        res.write(event(i++));
        setImmediate(step);
        return;
      }
      const used = process.cpuUsage(before);
      res.end(`event: done\ndata: ${used.user + used.system}\n\n`);
    };
    step();
  });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.send?.(typeof address === 'object' && address !== null ? address.port : 0);
  });
}

async function concurrency(modelPath: string, tokens: number): Promise<Map<number, number>> {
  const path = await createWorkerPath(modelPath, tokens, THREADS, 4, BINARY);
  const result = new Map<number, number>();
  try {
    await path.run(); // warm-up
    // levels interleaved round by round (1, 2, 4, 1, 2, 4, …), so that drift in the machine's speed
    // during the run falls on all of them alike
    const rates = new Map<number, number[]>([1, 2, 4].map((k) => [k, []]));
    for (let r = 0; r < Math.max(5, REPEATS); r++) {
      for (const [k, list] of rates) {
        const start = performance.now();
        const runs = await Promise.all(Array.from({ length: k }, () => path.run()));
        const seconds = (performance.now() - start) / 1000;
        list.push(runs.reduce((n, x) => n + x.tokens, 0) / seconds);
      }
    }
    for (const [k, list] of rates) result.set(k, median(list));
  } finally {
    await path.worker.stop();
  }
  return result;
}

const fmt = (n: number, digits = 1): string => n.toFixed(digits);
/** 1-token requests per path per round for the back-to-back TTFT. */
const SHORT_REQUESTS = 10;
const VARIANTS = ['a', 'b', 'c', 'd'] as const;
type Variant = (typeof VARIANTS)[number];
const LABELS: Record<Variant, string> = {
  a: '(a) node-llama-cpp, a process of its own',
  b: '(b) rbee worker (IPC)',
  c: '(c) rbee node, /v1/jobs + SSE',
  d: '(d) rbee node, /v1/completions stream',
};

async function benchPreset(preset: Preset, floorUs: number): Promise<void> {
  const tokens = tokensFor(preset);
  const modelPath = await ensureModel(preset);
  const floor = await createFloorProcess(modelPath, tokens, THREADS, BINARY.binary);
  const worker = await createWorkerPath(modelPath, tokens, THREADS, 1, BINARY);
  const node = await createNode(modelPath, tokens, THREADS, BINARY);
  // the prompt as the worker counts it (BOS included), the same figure for every variant
  const { promptTokens } = await worker.run();
  const runs: Record<Variant, (maxTokens?: number) => Promise<Run>> = {
    a: floor.run,
    b: worker.run,
    c: node.jobs,
    d: node.openai,
  };
  const samples: Record<Variant, Sample[]> = { a: [], b: [], c: [], d: [] };
  const shortTtft: Record<Variant, number[]> = { a: [], b: [], c: [], d: [] };
  try {
    for (const v of VARIANTS) await runs[v](); // warm-up: loads, caches, JIT
    for (let r = 0; r < REPEATS; r++) {
      for (const v of VARIANTS) samples[v].push(sampleOf(await runs[v](), promptTokens));
    }
    // TTFT as a client asking one thing after another waits for it: 1-token requests in a row, the
    // paths interleaved round by round. Above, each run follows the other paths' long runs, which
    // leave each process's caches cold — more so for a path of three processes than for one.
    for (let r = 0; r < REPEATS; r++) {
      for (const v of VARIANTS) {
        await runs[v](1);
        for (let i = 0; i < SHORT_REQUESTS; i++) {
          const run = await runs[v](1);
          shortTtft[v].push(run.first - run.start);
        }
      }
    }
  } finally {
    await worker.worker.stop();
    await node.dispose();
    await floor.dispose();
  }
  const med = (v: Variant, key: keyof Sample): number => median(samples[v].map((s) => s[key] ?? NaN));
  console.log(`\n## ${preset} model, ${tokens} tokens\n`);
  console.log(
    `(the node idle: ${fmt(node.idleUsPerMs)} ms of CPU per second, taken off its per-token figures)\n`,
  );
  console.log('| path | generation tok/s | ratio to (a) | prompt tok/s | TTFT (ms) | node CPU µs/token |');
  console.log('|---|---|---|---|---|---|');
  for (const v of VARIANTS) {
    const cpu = v === 'c' || v === 'd' ? fmt(med(v, 'nodeCpuUsPerToken')) : '—';
    console.log(
      `| ${LABELS[v]} | ${fmt(med(v, 'genTokS'))} | ${fmt(med(v, 'genTokS') / med('a', 'genTokS'), 3)} | ` +
        `${fmt(med(v, 'promptTokS'))} | ${fmt(med(v, 'ttftMs'))} | ${cpu} |`,
    );
  }
  console.log(
    `\n${preset}: generation c/a ${fmt(med('c', 'genTokS') / med('a', 'genTokS'), 3)}, d/a ${fmt(
      med('d', 'genTokS') / med('a', 'genTokS'),
      3,
    )}, b/a ${fmt(med('b', 'genTokS') / med('a', 'genTokS'), 3)}; TTFT added over (a): (c) ${fmt(
      med('c', 'ttftMs') - med('a', 'ttftMs'),
    )} ms, (d) ${fmt(med('d', 'ttftMs') - med('a', 'ttftMs'))} ms; node CPU per token (c) ${fmt(
      med('c', 'nodeCpuUsPerToken'),
    )} µs, (d) ${fmt(med('d', 'nodeCpuUsPerToken'))} µs against ${fmt(floorUs)} µs for one bare HTTP write`,
  );
  const short = (v: Variant): number => median(shortTtft[v]);
  console.log(
    `${preset}: TTFT of 1-token requests in a row (${SHORT_REQUESTS} per path per round, medians): ` +
      VARIANTS.map((v) => `(${v}) ${fmt(short(v), 2)} ms`).join(', ') +
      `; added over (a): (b) ${fmt(short('b') - short('a'), 2)} ms, (c) ${fmt(short('c') - short('a'), 2)} ms, ` +
      `(d) ${fmt(short('d') - short('a'), 2)} ms`,
  );
}

async function main(): Promise<void> {
  console.log(
    `# bench:engine — ${PRESETS.join(' and ')}, ${THREADS} thread(s), ${REPEATS} repeats, ` +
      `${cpus()[0]?.model ?? 'cpu'} ×${cpus().length}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`,
  );
  console.log(`(a)–(d) run the ${BINARY.binary} binary: ${BINARY.why}`);
  const floorUs = await httpWriteFloorUs(2000);
  console.log(`\nfloor: a bare node:http server spends ${fmt(floorUs)} µs of CPU per SSE event it writes`);
  for (const preset of PRESETS) await benchPreset(preset, floorUs);
  console.log(
    '\ntargets: c/a and d/a ≥ 0.95 (tiny), ≥ 0.98 (small); node CPU ≤ 30 µs/token; TTFT added ≤ 5 ms',
  );
  if (process.env.BENCH_SKIP_CONCURRENCY !== '1') {
    const agg = await concurrency(await ensureModel('small'), tokensFor('small'));
    const one = agg.get(1) ?? 1;
    console.log('\n| concurrent requests (one 4-slot worker, small model) | aggregate tok/s | vs 1 |');
    console.log('|---|---|---|');
    for (const [k, rate] of agg) console.log(`| ${k} | ${fmt(rate)} | ${fmt(rate / one, 2)} |`);
  }
}

if (process.env.BENCH_CHILD === 'http-floor') httpFloorChild();
else await main();
