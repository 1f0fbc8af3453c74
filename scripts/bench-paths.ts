/**
 * The paths a generation can take, as benchmarks drive them (`bench:engine`, `bench:limit`): one
 * greedy raw completion of PROMPT, timed as a client sees it.
 *
 *   - the floor: node-llama-cpp in a process of its own that does nothing else, no rbee
 *     (`createFloorProcess`; this module is that process's entry too)
 *   - an rbee worker process through the hive's local path (`createWorkerPath`)
 *   - the full path: a real `rbee node`, its `/v1/jobs` + SSE and `/v1/completions` routes
 *     (`createNode`), with the node's CPU time per run read from /proc
 *
 * Every path times generation the same way — (completion tokens − 1) over the time from the first
 * token's arrival to the last's (`sampleOf`).
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
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { getLlama, LlamaCompletion } from 'node-llama-cpp';
import type * as Engine from '../src/engine/index.js';
import { dataPaths, resolveDataDir } from '../src/shared/paths.js';
import { loneNodeEnv } from '../test/helpers/cli.js';

export const REPO = resolve(import.meta.dirname, '..');
const DIST = join(REPO, 'dist');
if (!existsSync(join(DIST, 'main.js'))) throw new Error('build first: npm run build');
// Benchmarks measure what users run: the compiled engine and CLI.
export const engine = (await import(join(DIST, 'engine', 'index.js'))) as typeof Engine;

export type Preset = 'tiny' | 'small';
export const PROMPT =
  'The history of computing is a story of machines that became smaller, faster and cheaper, ' +
  'until every desk and every pocket held one. Tell the story from the beginning:';

export interface Run {
  start: number;
  first: number;
  last: number;
  tokens: number;
  /** CPU the node spent on this run, in µs (the node's variants only). */
  nodeCpuUs?: number;
}

export interface Sample {
  ttftMs: number;
  genTokS: number;
  promptTokS: number;
  nodeCpuUsPerToken?: number;
}

/**
 * BENCH_FLASH_ATTENTION=1: every path runs with flash attention (a node with `flashAttention: true`
 * in its config); by default none does, as a CPU worker runs by default.
 */
export const FLASH_ATTENTION = process.env.BENCH_FLASH_ATTENTION === '1';

/**
 * What every token-path benchmark reads from the environment: BENCH_REPEATS (default 5),
 * BENCH_PRESETS (tiny,small), BENCH_TOKENS (per preset: 512 tiny, 128 small), BENCH_THREADS.
 */
export function benchSettings(defaultThreads: number): {
  repeats: number;
  presets: Preset[];
  tokensFor: (preset: Preset) => number;
  threads: number;
} {
  return {
    repeats: Number(process.env.BENCH_REPEATS ?? 5),
    presets: (process.env.BENCH_PRESETS ?? 'tiny,small').split(',') as Preset[],
    tokensFor: (preset) => Number(process.env.BENCH_TOKENS ?? (preset === 'tiny' ? 512 : 128)),
    threads: Number(process.env.BENCH_THREADS ?? defaultThreads),
  };
}

/** The llama.cpp binary the paths run on the CPU, and why; `decision` is what a node is given. */
export interface BenchBinary {
  binary: 'native' | 'prebuilt';
  why: string;
  decision?: Engine.BinaryDecision;
}

/**
 * What this machine's CPU workers load — the decision `rbee doctor --fix` keeps in the data
 * directory (RBEE_HOME), and its native build — unless BENCH_BINARY says `prebuilt` or `native`
 * (the native build `rbee doctor --fix` built and measured, even where it chose the prebuilt one).
 */
export function benchBinary(): BenchBinary {
  const wanted = process.env.BENCH_BINARY;
  if (wanted !== undefined && wanted !== 'native' && wanted !== 'prebuilt') {
    throw new Error(`BENCH_BINARY is native or prebuilt, not ${wanted}`);
  }
  const decision = engine.readBinaryDecision(dataPaths(resolveDataDir()).binaryDecision);
  const build = engine.findNativeBuild();
  const mine = engine.chooseCpuBinary(decision, build);
  if (wanted === 'prebuilt') return { binary: 'prebuilt', why: 'BENCH_BINARY=prebuilt' };
  if (wanted === undefined && mine.binary === 'prebuilt') return mine;
  if (decision === undefined || build === undefined || decision.build.folder !== build.folder) {
    throw new Error('BENCH_BINARY=native: no measured native build here (`rbee doctor --fix` makes one)');
  }
  const why = wanted === undefined ? mine.why : `BENCH_BINARY=native (rbee doctor --fix: ${decision.why})`;
  return { binary: 'native', why, decision: { ...decision, choice: 'native', why } };
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export function sampleOf(run: Run, promptTokens: number): Sample {
  const ttftMs = run.first - run.start;
  return {
    ttftMs,
    genTokS: run.tokens > 1 ? ((run.tokens - 1) * 1000) / (run.last - run.first) : 0,
    promptTokS: (promptTokens * 1000) / ttftMs,
    ...(run.nodeCpuUs === undefined ? {} : { nodeCpuUsPerToken: run.nodeCpuUs / run.tokens }),
  };
}

export async function ensureModel(preset: Preset): Promise<string> {
  const path = join(REPO, '.cache', 'models', `${preset}-seed1.gguf`);
  if (!existsSync(path)) {
    mkdirSync(join(REPO, '.cache', 'models'), { recursive: true });
    console.error(`generating the ${preset} model…`);
    await engine.generateTestModel({ path, preset, seed: 1 });
  }
  return path;
}

/** CPU time of a process, all its threads, in µs (scheduler figures: nanosecond resolution). */
export function processCpuUs(pid: number): number {
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

// The floor: node-llama-cpp alone, in a child process of its own (this module, see floorChild).
async function createFloor(
  modelPath: string,
  tokens: number,
  threads: number,
  binary: BenchBinary['binary'],
) {
  // the native build's folder exactly, as a worker loads it (src/engine/worker/entry.ts)
  const native = {
    usePrebuiltBinaries: false,
    cmakeOptions: { ...engine.NATIVE_CMAKE_OPTIONS },
    progressLogs: false,
  };
  const llama = await getLlama({
    gpu: false,
    build: 'never',
    logLevel: 'error' as never,
    ...(binary === 'native' ? native : {}),
  });
  const model = await llama.loadModel({ modelPath });
  // as a CPU worker runs it: flash attention off (src/engine/worker/entry.ts says why) unless asked
  const context = await model.createContext({
    sequences: 1,
    contextSize: 2048,
    threads,
    flashAttention: FLASH_ATTENTION,
  });
  const sequence = context.getSequence();
  const completion = new LlamaCompletion({ contextSequence: sequence });
  return {
    async run(maxTokens = tokens): Promise<Run> {
      await sequence.clearHistory();
      const run: Run = { start: performance.now(), first: 0, last: 0, tokens: 0 };
      await completion.generateCompletion(PROMPT, {
        maxTokens,
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
 * the other paths and a worker's heartbeats (a floor beside them measured 26 tok/s once against 41
 * alone: shown in session 3, see docs/benchmarks.md).
 */
export async function createFloorProcess(
  modelPath: string,
  tokens: number,
  threads: number,
  binary: BenchBinary['binary'] = 'prebuilt',
): Promise<{ run(maxTokens?: number): Promise<Run>; dispose(): Promise<void> }> {
  const child: ChildProcess = fork(import.meta.filename, [], {
    execArgv: process.execArgv,
    env: {
      ...process.env,
      BENCH_CHILD: 'floor',
      BENCH_CHILD_FLOOR: JSON.stringify({ modelPath, tokens, threads, binary }),
    },
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
    async run(maxTokens = tokens) {
      const reply = next();
      const start = performance.now();
      child.send({ run: maxTokens });
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
  const { modelPath, tokens, threads, binary } = JSON.parse(process.env.BENCH_CHILD_FLOOR ?? '{}') as {
    modelPath: string;
    tokens: number;
    threads: number;
    binary: BenchBinary['binary'];
  };
  const floor = await createFloor(modelPath, tokens, threads, binary);
  process.on('message', (message) => {
    if (typeof message === 'object' && message !== null && 'run' in message) {
      void floor.run(Number(message.run)).then((run) => process.send?.(run));
    } else void floor.dispose().then(() => process.disconnect());
  });
  process.send?.('ready');
}

// An rbee worker through the hive's local path.
export async function createWorkerPath(
  modelPath: string,
  tokens: number,
  threads: number,
  slots = 1,
  binary?: BenchBinary,
) {
  // every run evaluates its whole prompt, as the floor does: a kept prefix would skip it
  const worker = await engine.spawnWorker({
    modelPath,
    threads,
    slots,
    contextSize: 2048,
    prefixReuse: false,
    flashAttention: FLASH_ATTENTION,
    ...(binary === undefined ? {} : { binary: { binary: binary.binary, why: binary.why } }),
  });
  return {
    worker,
    async run(maxTokens = tokens): Promise<Run & { promptTokens: number }> {
      const run = { start: performance.now(), first: 0, last: 0, tokens: 0, promptTokens: 0 };
      for await (const chunk of worker.generate({ prompt: PROMPT, maxTokens, temperature: 0 })) {
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
export function readEventStream(
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

export const dataOf = (block: string): string => block.slice(block.indexOf('data: ') + 6);

// The full path: a real node; this process is the client.
export async function createNode(modelPath: string, tokens: number, threads: number, binary?: BenchBinary) {
  const home = mkdtempSync(join(tmpdir(), 'rbee-bench-'));
  // the node's workers load what the benchmark's other paths load
  if (binary?.decision !== undefined) {
    engine.writeBinaryDecision(dataPaths(home).binaryDecision, binary.decision);
  }
  writeFileSync(
    join(home, 'config.json'),
    JSON.stringify({
      threads,
      slots: 1,
      keepAliveS: -1,
      prefixReuse: false,
      flashAttention: FLASH_ATTENTION,
    }),
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

  async function jobs(maxTokens = tokens): Promise<Run> {
    const cpu = processCpuUs(pid);
    const run: Run = { start: performance.now(), first: 0, last: 0, tokens: 0 };
    const accepted = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: modelPath,
        prompt: PROMPT,
        raw: true,
        maxTokens,
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

  async function openai(maxTokens = tokens): Promise<Run> {
    const cpu = processCpuUs(pid);
    const run: Run = { start: performance.now(), first: 0, last: 0, tokens: 0 };
    const body = JSON.stringify({
      model: modelPath,
      prompt: PROMPT,
      max_tokens: maxTokens,
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
    url,
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

if (process.env.BENCH_CHILD === 'floor' && process.argv[1] === import.meta.filename) await floorChild();
