/**
 * `npm run bench:engine`: what rbee adds on top of llama.cpp, measured in one run on one model.
 *
 *   (a) node-llama-cpp in a process of its own that does nothing else, no rbee — the floor
 *   (a′) the same in this benchmark process, beside the clients of (b) and (c), for comparison
 *   (b) an rbee worker process through the hive's local path (spawnWorker + IPC)
 *   (c) the full path: a real `rbee node`, the HTTP job API and SSE, this script as the client
 *
 * Same generated model (the `small` preset, Q8_0), same threads, greedy raw completion of the same
 * prompt; variants are interleaved (a, b, c, a, b, c, …) so machine noise spreads evenly, and
 * medians are printed with the ratios b/a and c/a. Then aggregate tok/s for 1, 2 and 4 concurrent
 * requests on one 4-slot worker. Timings here are noisy: trust ratios from one run, not absolutes.
 *
 * Env: BENCH_REPEATS (default 5), BENCH_TOKENS (128), BENCH_THREADS (engine default),
 *      BENCH_PRESET (small), BENCH_SKIP_CONCURRENCY=1.
 */
import '../src/shared/polyfill.js';
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { getLlama, LlamaCompletion } from 'node-llama-cpp';
import type * as Engine from '../src/engine/index.js';
import type { JobEvent } from '../src/shared/wire.js';
import { loneNodeEnv } from '../test/helpers/cli.js';

const REPO = resolve(import.meta.dirname, '..');
const DIST = join(REPO, 'dist');
if (!existsSync(join(DIST, 'main.js'))) throw new Error('build first: npm run build');
// The benchmark measures what users run: the compiled engine and CLI.
const engine = (await import(join(DIST, 'engine', 'index.js'))) as typeof Engine;

const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const TOKENS = Number(process.env.BENCH_TOKENS ?? 128);
const THREADS = Number(process.env.BENCH_THREADS ?? engine.defaultThreads());
const PRESET = (process.env.BENCH_PRESET ?? 'small') as 'tiny' | 'small';
const PROMPT =
  'The history of computing is a story of machines that became smaller, faster and cheaper, ' +
  'until every desk and every pocket held one. Tell the story from the beginning:';

interface Sample {
  ttftMs: number;
  genTokS: number;
  promptTokS: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function sampleFrom(
  start: number,
  first: number,
  last: number,
  tokens: number,
  promptTokens: number,
): Sample {
  const ttftMs = first - start;
  return {
    ttftMs,
    genTokS: tokens > 1 ? ((tokens - 1) * 1000) / (last - first) : 0,
    promptTokS: (promptTokens * 1000) / ttftMs,
  };
}

async function ensureModel(): Promise<string> {
  const path = join(REPO, '.cache', 'models', `${PRESET}-seed1.gguf`);
  if (!existsSync(path)) {
    mkdirSync(join(REPO, '.cache', 'models'), { recursive: true });
    console.error(`generating the ${PRESET} model…`);
    await engine.generateTestModel({ path, preset: PRESET, seed: 1 });
  }
  return path;
}

// (a′) node-llama-cpp in the calling process; (a) runs the same in a child of its own (below).
async function createFloor(modelPath: string): Promise<{ run(): Promise<Sample>; dispose(): Promise<void> }> {
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
  const promptTokens = model.tokenize(PROMPT).length;
  return {
    async run() {
      await sequence.clearHistory();
      let first = 0;
      let last = 0;
      let n = 0;
      const start = performance.now();
      await completion.generateCompletion(PROMPT, {
        maxTokens: TOKENS,
        temperature: 0,
        onToken: (tokens) => {
          last = performance.now();
          if (first === 0) first = last;
          n += tokens.length;
        },
      });
      return sampleFrom(start, first, last, n, promptTokens);
    },
    async dispose() {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}

/**
 * (a) the floor in a process of its own: this script again, as a child that loads the model and
 * generates when asked. The benchmark process also hosts the clients of (b) and (c) (and a worker's
 * heartbeats); a floor alone in its process is the cleaner condition. (a′) keeps the in-process
 * figure beside it: one session-3 run measured 26 tok/s in-process against 41 alone, the next
 * measured both at 39, so sharing the process is shown, not assumed.
 */
async function createFloorProcess(): Promise<{ run(): Promise<Sample>; dispose(): Promise<void> }> {
  const child: ChildProcess = fork(import.meta.filename, [], {
    execArgv: process.execArgv,
    env: { ...process.env, BENCH_FLOOR_CHILD: '1' },
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
      child.send('run');
      return (await reply) as Sample;
    },
    async dispose() {
      const exited = new Promise((res) => child.once('exit', res));
      child.send('exit');
      await exited;
    },
  };
}

async function floorChild(): Promise<void> {
  const floor = await createFloor(await ensureModel());
  process.on('message', (message) => {
    if (message === 'run') void floor.run().then((sample) => process.send?.(sample));
    else void floor.dispose().then(() => process.disconnect());
  });
  process.send?.('ready');
}

// (b) an rbee worker through the hive's local path.
async function createWorkerPath(modelPath: string, slots = 1) {
  const worker = await engine.spawnWorker({ modelPath, threads: THREADS, slots, contextSize: 2048 });
  return {
    worker,
    async run(): Promise<Sample & { tokens: number }> {
      let first = 0;
      let last = 0;
      const start = performance.now();
      for await (const chunk of worker.generate({ prompt: PROMPT, maxTokens: TOKENS, temperature: 0 })) {
        if (chunk.type === 'token') {
          last = performance.now();
          if (first === 0) first = last;
        } else {
          return {
            ...sampleFrom(start, first, last, chunk.usage.completionTokens, chunk.usage.promptTokens),
            tokens: chunk.usage.completionTokens,
          };
        }
      }
      throw new Error('the worker stream ended without done');
    },
  };
}

// (c) the full path: a real node over HTTP and SSE, this process as the client.
async function createFullPath(modelPath: string) {
  const home = mkdtempSync(join(tmpdir(), 'rbee-bench-'));
  writeFileSync(join(home, 'config.json'), JSON.stringify({ threads: THREADS, slots: 1, keepAliveS: -1 }));
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
  async function run(): Promise<Sample> {
    const start = performance.now();
    const accepted = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: modelPath,
        prompt: PROMPT,
        raw: true,
        maxTokens: TOKENS,
        temperature: 0,
      }),
    });
    const { id } = (await accepted.json()) as { id: string };
    const events = await fetch(`${url}/v1/jobs/${id}/events`);
    let first = 0;
    let last = 0;
    let buffer = '';
    const decoder = new TextDecoder();
    for await (const bytes of events.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(bytes, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const data = buffer
          .slice(0, end)
          .split('\n')
          .find((l) => l.startsWith('data:'));
        buffer = buffer.slice(end + 2);
        if (data === undefined) continue;
        const event = JSON.parse(data.slice(5)) as JobEvent;
        if (event.type === 'token') {
          last = performance.now();
          if (first === 0) first = last;
        } else if (event.type === 'done') {
          return sampleFrom(start, first, last, event.usage.completionTokens, event.usage.promptTokens);
        } else if (event.type === 'error') {
          throw new Error(`${event.error.code}: ${event.error.message}`);
        }
      }
    }
    throw new Error('the event stream ended without done');
  }
  return {
    run,
    async dispose() {
      await fetch(`${url}/v1/shutdown`, { method: 'POST', headers: { 'x-rbee-client': '1' } }).catch(
        () => undefined,
      );
      await new Promise((res) => node.once('exit', res));
      rmSync(home, { recursive: true, force: true });
    },
  };
}

async function concurrency(modelPath: string): Promise<Map<number, number>> {
  const path = await createWorkerPath(modelPath, 4);
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

async function main(): Promise<void> {
  const modelPath = await ensureModel();
  console.log(
    `# bench:engine — ${PRESET} model, ${TOKENS} tokens, ${THREADS} thread(s), ${REPEATS} repeats, ` +
      `${cpus()[0]?.model ?? 'cpu'} ×${cpus().length}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}`,
  );
  const floor = await createFloorProcess();
  const shared = await createFloor(modelPath);
  const worker = await createWorkerPath(modelPath);
  const full = await createFullPath(modelPath);
  const variants = { a: floor.run, a2: shared.run, b: worker.run, c: full.run } as const;
  const samples: Record<keyof typeof variants, Sample[]> = { a: [], a2: [], b: [], c: [] };
  try {
    for (const run of Object.values(variants)) await run(); // warm-up: loads, caches, JIT
    for (let r = 0; r < REPEATS; r++) {
      for (const [name, run] of Object.entries(variants) as [
        keyof typeof variants,
        () => Promise<Sample>,
      ][]) {
        samples[name].push(await run());
      }
    }
  } finally {
    await worker.worker.stop();
    await full.dispose();
    await shared.dispose();
    await floor.dispose();
  }
  const med = (name: keyof typeof variants, key: keyof Sample): number =>
    median(samples[name].map((s) => s[key]));
  console.log('\n| path | generation tok/s | prompt tok/s | time to first token (ms) |');
  console.log('|---|---|---|---|');
  const labels = {
    a: '(a) node-llama-cpp, a process of its own',
    a2: '(a′) node-llama-cpp in the benchmark process',
    b: '(b) rbee worker (IPC)',
    c: '(c) rbee node (HTTP + SSE)',
  };
  for (const name of ['a', 'a2', 'b', 'c'] as const) {
    console.log(
      `| ${labels[name]} | ${fmt(med(name, 'genTokS'))} | ${fmt(med(name, 'promptTokS'))} | ${fmt(med(name, 'ttftMs'))} |`,
    );
  }
  console.log(
    `\nratios: generation b/a ${fmt(med('b', 'genTokS') / med('a', 'genTokS'), 3)}, c/a ${fmt(
      med('c', 'genTokS') / med('a', 'genTokS'),
      3,
    )}, a′/a ${fmt(med('a2', 'genTokS') / med('a', 'genTokS'), 3)}; prompt c/a ${fmt(med('c', 'promptTokS') / med('a', 'promptTokS'), 3)}; ` +
      `time to first token added by (c) over (a): ${fmt(med('c', 'ttftMs') - med('a', 'ttftMs'))} ms median`,
  );
  if (process.env.BENCH_SKIP_CONCURRENCY !== '1') {
    const agg = await concurrency(modelPath);
    const one = agg.get(1) ?? 1;
    console.log('\n| concurrent requests (one 4-slot worker) | aggregate tok/s | vs 1 |');
    console.log('|---|---|---|');
    for (const [k, rate] of agg) console.log(`| ${k} | ${fmt(rate)} | ${fmt(rate / one, 2)} |`);
  }
}

if (process.env.BENCH_FLOOR_CHILD === '1') await floorChild();
else await main();
