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
 * spends per event written, measured in the same run: the floor of one write per token. Then
 * aggregate tok/s for 1, 2 and 4 concurrent requests on one 4-slot worker (small model).
 *
 * Env: BENCH_REPEATS (default 5), BENCH_PRESETS (tiny,small), BENCH_TOKENS (per preset: 512 tiny,
 *      128 small), BENCH_THREADS (engine default), BENCH_SKIP_CONCURRENCY=1.
 */
import '../src/shared/polyfill.js';
import { fork, spawn, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { request as httpRequest, createServer, type IncomingMessage } from 'node:http';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { getLlama, LlamaCompletion } from 'node-llama-cpp';
import type * as Engine from '../src/engine/index.js';
import { loneNodeEnv } from '../test/helpers/cli.js';

const REPO = resolve(import.meta.dirname, '..');
const DIST = join(REPO, 'dist');
if (!existsSync(join(DIST, 'main.js'))) throw new Error('build first: npm run build');
// The benchmark measures what users run: the compiled engine and CLI.
const engine = (await import(join(DIST, 'engine', 'index.js'))) as typeof Engine;

type Preset = 'tiny' | 'small';
const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const PRESETS = (process.env.BENCH_PRESETS ?? 'tiny,small').split(',') as Preset[];
const tokensFor = (preset: Preset): number =>
  Number(process.env.BENCH_TOKENS ?? (preset === 'tiny' ? 512 : 128));
const THREADS = Number(process.env.BENCH_THREADS ?? engine.defaultThreads());
const PROMPT =
  'The history of computing is a story of machines that became smaller, faster and cheaper, ' +
  'until every desk and every pocket held one. Tell the story from the beginning:';

/** One run as a client saw it: when it asked, when the first and last token arrived, how many. */
interface Run {
  start: number;
  first: number;
  last: number;
  tokens: number;
  /** CPU the node spent on this run, in µs (the node's variants only). */
  nodeCpuUs?: number;
}

interface Sample {
  ttftMs: number;
  genTokS: number;
  promptTokS: number;
  nodeCpuUsPerToken?: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function sampleOf(run: Run, promptTokens: number): Sample {
  const ttftMs = run.first - run.start;
  return {
    ttftMs,
    genTokS: run.tokens > 1 ? ((run.tokens - 1) * 1000) / (run.last - run.first) : 0,
    promptTokS: (promptTokens * 1000) / ttftMs,
    ...(run.nodeCpuUs === undefined ? {} : { nodeCpuUsPerToken: run.nodeCpuUs / run.tokens }),
  };
}

async function ensureModel(preset: Preset): Promise<string> {
  const path = join(REPO, '.cache', 'models', `${preset}-seed1.gguf`);
  if (!existsSync(path)) {
    mkdirSync(join(REPO, '.cache', 'models'), { recursive: true });
    console.error(`generating the ${preset} model…`);
    await engine.generateTestModel({ path, preset, seed: 1 });
  }
  return path;
}

/** CPU time of a process, all its threads, in µs (scheduler figures: nanosecond resolution). */
function processCpuUs(pid: number): number {
  let ns = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // a thread that ended between the listing and the read
    }
  }
  return ns / 1000;
}

// (a) node-llama-cpp alone, in a child process of its own (this script again, see floorChild).
async function createFloor(modelPath: string, tokens: number) {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  const model = await llama.loadModel({ modelPath });
  // as a CPU worker runs it: flash attention off (src/engine/worker/entry.ts says why)
  const context = await model.createContext({
    sequences: 1,
    contextSize: 2048,
    threads: THREADS,
    flashAttention: false,
  });
  const sequence = context.getSequence();
  const completion = new LlamaCompletion({ contextSequence: sequence });
  return {
    async run(): Promise<Run> {
      await sequence.clearHistory();
      const run: Run = { start: performance.now(), first: 0, last: 0, tokens: 0 };
      await completion.generateCompletion(PROMPT, {
        maxTokens: tokens,
        temperature: 0,
        onToken: (generated) => {
          run.last = performance.now();
          if (run.first === 0) run.first = run.last;
          run.tokens += generated.length;
        },
      });
      // times as the parent sees them: relative to the start
      return { ...run, first: run.first - run.start, last: run.last - run.start, start: 0 };
    },
    async dispose() {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}

/**
 * The floor in a process that does nothing else: the benchmark process also hosts the clients of
 * (b), (c) and (d) and a worker's heartbeats (a floor beside them measured 26 tok/s once against 41
 * alone: shown in session 3, see docs/benchmarks.md).
 */
async function createFloorProcess(
  preset: Preset,
): Promise<{ run(): Promise<Run>; dispose(): Promise<void> }> {
  const child: ChildProcess = fork(import.meta.filename, [], {
    execArgv: process.execArgv,
    env: { ...process.env, BENCH_CHILD: 'floor', BENCH_CHILD_PRESET: preset },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = (): Promise<unknown> =>
    new Promise((resolveMessage, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`the floor process exited (${code})`));
      child.once('exit', onExit);
      child.once('message', (message) => {
        child.off('exit', onExit);
        resolveMessage(message);
      });
    });
  await next(); // ready
  return {
    async run() {
      const reply = next();
      const start = performance.now();
      child.send('run');
      const run = (await reply) as Run;
      return { ...run, start, first: start + run.first, last: start + run.last };
    },
    async dispose() {
      const exited = new Promise((res) => child.once('exit', res));
      child.send('exit');
      await exited;
    },
  };
}

async function floorChild(): Promise<void> {
  const preset = process.env.BENCH_CHILD_PRESET as Preset;
  const floor = await createFloor(await ensureModel(preset), tokensFor(preset));
  process.on('message', (message) => {
    if (message === 'run') void floor.run().then((run) => process.send?.(run));
    else void floor.dispose().then(() => process.disconnect());
  });
  process.send?.('ready');
}

// (b) an rbee worker through the hive's local path.
async function createWorkerPath(modelPath: string, tokens: number, slots = 1) {
  // every run evaluates its whole prompt, as the floor does: a kept prefix would skip it
  const worker = await engine.spawnWorker({
    modelPath,
    threads: THREADS,
    slots,
    contextSize: 2048,
    prefixReuse: false,
  });
  return {
    worker,
    async run(): Promise<Run & { promptTokens: number }> {
      const run = { start: performance.now(), first: 0, last: 0, tokens: 0, promptTokens: 0 };
      for await (const chunk of worker.generate({ prompt: PROMPT, maxTokens: tokens, temperature: 0 })) {
        if (chunk.type === 'token') {
          run.last = performance.now();
          if (run.first === 0) run.first = run.last;
        } else {
          run.tokens = chunk.usage.completionTokens;
          run.promptTokens = chunk.usage.promptTokens;
          return run;
        }
      }
      throw new Error('the worker stream ended without done');
    },
  };
}

/**
 * Reads an event stream with node:http, block by block (`\n\n`-separated), handing each to
 * `onBlock`; resolves when the response ends.
 */
function readEventStream(
  url: string,
  init: { method: 'GET' | 'POST'; body?: string },
  onBlock: (block: string) => void,
): Promise<void> {
  return new Promise((resolveRead, reject) => {
    const req = httpRequest(
      url,
      { method: init.method, headers: init.body === undefined ? {} : { 'content-type': 'application/json' } },
      (res: IncomingMessage) => {
        if (res.statusCode !== 200) {
          reject(new Error(`${url}: HTTP ${res.statusCode}`));
          res.resume();
          return;
        }
        res.setEncoding('utf8');
        let buffer = '';
        res.on('data', (text: string) => {
          buffer += text;
          let end: number;
          while ((end = buffer.indexOf('\n\n')) !== -1) {
            onBlock(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        });
        res.on('end', () => resolveRead());
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(init.body);
  });
}

const dataOf = (block: string): string => block.slice(block.indexOf('data: ') + 6);

// (c) and (d): a real node; this process is the client.
async function createNode(modelPath: string, tokens: number) {
  const home = mkdtempSync(join(tmpdir(), 'rbee-bench-'));
  writeFileSync(
    join(home, 'config.json'),
    JSON.stringify({ threads: THREADS, slots: 1, keepAliveS: -1, prefixReuse: false }),
  );
  const port = 20000 + Math.floor(Math.random() * 20000);
  const url = `http://127.0.0.1:${port}`;
  const node = spawn(process.execPath, [join(DIST, 'main.js'), 'node'], {
    env: loneNodeEnv(home, port, 'warn'),
    stdio: 'ignore',
  });
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      if (i > 300) throw new Error('the node did not start');
      await sleep(100);
    }
  }
  const pid = node.pid as number;
  // what the node spends with nothing to do (heartbeats, timers, its cluster layer), per ms: taken
  // off each run's figure, so that the per-token cost is the token path's alone
  await sleep(2000);
  const idleFrom = processCpuUs(pid);
  const idleStart = performance.now();
  await sleep(5000);
  const idleUsPerMs = (processCpuUs(pid) - idleFrom) / (performance.now() - idleStart);
  const tokenPathCpu = (from: number, start: number): number =>
    processCpuUs(pid) - from - idleUsPerMs * (performance.now() - start);

  async function jobs(): Promise<Run> {
    const cpu = processCpuUs(pid);
    const run: Run = { start: performance.now(), first: 0, last: 0, tokens: 0 };
    const accepted = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: modelPath,
        prompt: PROMPT,
        raw: true,
        maxTokens: tokens,
        temperature: 0,
      }),
    });
    const { id } = (await accepted.json()) as { id: string };
    await readEventStream(`${url}/v1/jobs/${id}/events`, { method: 'GET' }, (block) => {
      if (block.includes('\nevent: token\n')) {
        run.last = performance.now();
        if (run.first === 0) run.first = run.last;
        return;
      }
      const event = JSON.parse(dataOf(block)) as {
        type: string;
        usage?: { completionTokens: number };
        error?: { code: string; message: string };
      };
      if (event.type === 'done') run.tokens = event.usage?.completionTokens ?? 0;
      if (event.type === 'error') throw new Error(`${event.error?.code}: ${event.error?.message}`);
    });
    run.nodeCpuUs = tokenPathCpu(cpu, run.start);
    return run;
  }

  async function openai(): Promise<Run> {
    const cpu = processCpuUs(pid);
    const run: Run = { start: performance.now(), first: 0, last: 0, tokens: 0 };
    const body = JSON.stringify({
      model: modelPath,
      prompt: PROMPT,
      max_tokens: tokens,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    await readEventStream(`${url}/v1/completions`, { method: 'POST', body }, (block) => {
      // a chunk with text in flight says so: `"finish_reason":null` (the last one names its reason)
      if (block.includes('"finish_reason":null')) {
        run.last = performance.now();
        if (run.first === 0) run.first = run.last;
        return;
      }
      const data = dataOf(block);
      if (data === '[DONE]') return;
      const chunk = JSON.parse(data) as { usage?: { completion_tokens: number }; error?: unknown };
      if (chunk.error !== undefined) throw new Error(JSON.stringify(chunk.error));
      if (chunk.usage != null) run.tokens = chunk.usage.completion_tokens;
    });
    run.nodeCpuUs = tokenPathCpu(cpu, run.start);
    return run;
  }

  return {
    jobs,
    openai,
    idleUsPerMs,
    async dispose() {
      await fetch(`${url}/v1/shutdown`, { method: 'POST', headers: { 'x-rbee-client': '1' } }).catch(
        () => undefined,
      );
      await new Promise((res) => node.once('exit', res));
      rmSync(home, { recursive: true, force: true });
    },
  };
}

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
  const path = await createWorkerPath(modelPath, tokens, 4);
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
  const floor = await createFloorProcess(preset);
  const worker = await createWorkerPath(modelPath, tokens);
  const node = await createNode(modelPath, tokens);
  // the prompt as the worker counts it (BOS included), the same figure for every variant
  const { promptTokens } = await worker.run();
  const runs: Record<Variant, () => Promise<Run>> = {
    a: floor.run,
    b: worker.run,
    c: node.jobs,
    d: node.openai,
  };
  const samples: Record<Variant, Sample[]> = { a: [], b: [], c: [], d: [] };
  try {
    for (const v of VARIANTS) await runs[v](); // warm-up: loads, caches, JIT
    for (let r = 0; r < REPEATS; r++) {
      for (const v of VARIANTS) samples[v].push(sampleOf(await runs[v](), promptTokens));
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
}

async function main(): Promise<void> {
  console.log(
    `# bench:engine — ${PRESETS.join(' and ')}, ${THREADS} thread(s), ${REPEATS} repeats, ` +
      `${cpus()[0]?.model ?? 'cpu'} ×${cpus().length}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`,
  );
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

if (process.env.BENCH_CHILD === 'floor') await floorChild();
else if (process.env.BENCH_CHILD === 'http-floor') httpFloorChild();
else await main();
