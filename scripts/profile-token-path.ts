/**
 * `tsx scripts/profile-token-path.ts`: where a generated token's time goes outside llama.cpp's
 * kernels, in one process, on the tiny model (where per-token costs show), 1 thread, greedy.
 * Needs `npm run build` first (it drives the compiled worker code).
 *
 *   (evaluate)   node-llama-cpp's lowest generation API: `LlamaContextSequence.evaluate`, one
 *                token out per step, nothing else — the floor of any path through node-llama-cpp
 *   (completion) `LlamaCompletion.generateCompletionWithMeta` with onToken and onTextChunk, as
 *                rbee's worker calls it (stop triggers, incremental detokenising, text segmentation)
 *   (slot pool)  rbee's own slot pool (src/engine/worker/slot-pool.ts, run-generation.ts) in this
 *                process: the worker's generation path short of its IPC channel — for this plain
 *                request on a one-sequence context, rbee's own token loop (token-loop.ts), its
 *                steps in JavaScript
 *   (slot pool, native loop)  the same with rbee's native loop (native-loop.ts) under the token
 *                loop: decode and sample on a thread of its own (built first if need be)
 *
 * For each: wall time per token, and the CPU the main thread spends per token (from
 * /proc/self/task/<pid>/schedstat). Generation is serial — JS prepares a batch, a libuv thread
 * decodes it, JS again, another libuv thread samples, JS again — so main-thread CPU per token adds
 * to every token's time whatever the machine's load; it is the figure to compare. The rest of the
 * process's CPU (decoding and sampling on libuv's threads, or the native loop's own thread) is
 * printed beside it.
 *
 * Env: PROFILE_REPEATS (default 7), PROFILE_TOKENS (512), PROFILE_MODEL (tiny|small, tiny).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { getLlama, LlamaCompletion, LlamaLogLevel, type Token } from 'node-llama-cpp';
import type * as NativeLoopModule from '../src/engine/worker/native-loop.js';
import type * as SlotPoolModule from '../src/engine/worker/slot-pool.js';
import type { ChildMessage } from '../src/engine/worker/protocol.js';
import { ensureModel, median, PROMPT, REPO, type Preset } from './bench-paths.js';

const REPEATS = Number(process.env.PROFILE_REPEATS ?? 7);
const TOKENS = Number(process.env.PROFILE_TOKENS ?? 512);
const PRESET = (process.env.PROFILE_MODEL ?? 'tiny') as Preset;
const { createSlotPool } = (await import(
  join(REPO, 'dist', 'engine', 'worker', 'slot-pool.js')
)) as typeof SlotPoolModule;
const nativeLoop = (await import(
  join(REPO, 'dist', 'engine', 'worker', 'native-loop.js')
)) as typeof NativeLoopModule;

const cpuUsOf = (task: string): number => {
  try {
    return Number(readFileSync(`/proc/self/task/${task}/schedstat`, 'utf8').split(' ')[0]) / 1000;
  } catch {
    return 0; // a thread that ended between the listing and the read
  }
};
const mainThreadCpuUs = (): number => cpuUsOf(String(process.pid));
/** All threads', ended ones included (the native loop's thread ends with its generation). */
const processCpuUs = (): number => {
  const { user, system } = process.cpuUsage();
  return user + system;
};

const llama = await getLlama({ gpu: false, build: 'never', maxThreads: 1, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: await ensureModel(PRESET) });
// as a CPU worker creates its context (src/engine/worker/entry.ts)
const contextOptions = { sequences: 1, contextSize: 2048, threads: 1, flashAttention: false } as const;
const context = await model.createContext(contextOptions);
const sequence = context.getSequence();
const promptTokens = model.tokenize(PROMPT, false);

/** Arrival times of the tokens of one generation. */
type Times = number[];

async function evaluate(): Promise<Times> {
  await sequence.clearHistory();
  const times: Times = [];
  for await (const token of sequence.evaluate(promptTokens, { temperature: 0 })) {
    void (token satisfies Token);
    times.push(performance.now());
    if (times.length >= TOKENS) break;
  }
  return times;
}

async function completion(): Promise<Times> {
  await sequence.clearHistory();
  const times: Times = [];
  const generator = new LlamaCompletion({ contextSequence: sequence });
  try {
    await generator.generateCompletionWithMeta(PROMPT, {
      maxTokens: TOKENS,
      temperature: 0,
      // as the worker passes it for a request without penalties (run-generation.ts)
      repeatPenalty: false,
      onToken: () => times.push(performance.now()),
      onTextChunk: () => undefined,
    });
  } finally {
    generator.dispose({ disposeSequence: false });
  }
  return times;
}

const poolTimes: Times = [];
let poolDone: (() => void) | undefined;
const pool = createSlotPool({
  context: await model.createContext(contextOptions),
  maxQueue: 1,
  prefixReuse: false,
  onStateChange: () => undefined,
  send: (message: ChildMessage) => {
    if (message.type === 'token') {
      // a text chunk carries the tokens it covers (usually one)
      const now = performance.now();
      for (let i = 0; i < message.tokens.length; i++) poolTimes.push(now);
    } else if (message.type === 'done' || message.type === 'error') poolDone?.();
  },
});
let requests = 0;
async function slotPool(): Promise<Times> {
  poolTimes.length = 0;
  const done = new Promise<void>((resolve) => (poolDone = resolve));
  pool.submit(String(++requests), { prompt: PROMPT, maxTokens: TOKENS, temperature: 0 });
  await done;
  return [...poolTimes];
}

await nativeLoop.prepareNativeLoop({ log: (text) => console.error(text) });
const withNativeLoop = (on: boolean) => async (): Promise<Times> => {
  nativeLoop.useNativeLoop(on);
  return slotPool();
};
const PATHS = {
  evaluate,
  completion,
  'slot pool': withNativeLoop(false),
  ...(nativeLoop.nativeLoopAddon() === undefined ? {} : { 'slot pool, native loop': withNativeLoop(true) }),
} as const;
type PathName = keyof typeof PATHS;
const samples = new Map<PathName, { wallUs: number[]; mainUs: number[]; otherUs: number[] }>();
for (const name of Object.keys(PATHS) as PathName[])
  samples.set(name, { wallUs: [], mainUs: [], otherUs: [] });

// interleaved, the first round a warm-up
for (let r = 0; r <= REPEATS; r++) {
  for (const [name, run] of Object.entries(PATHS) as [PathName, () => Promise<Times>][]) {
    const main0 = mainThreadCpuUs();
    const all0 = processCpuUs();
    const times = await run();
    const mainUs = mainThreadCpuUs() - main0;
    const otherUs = processCpuUs() - all0 - mainUs;
    if (r === 0) continue;
    const s = samples.get(name)!;
    // from the first token to the last: the prompt is not the per-token path
    s.wallUs.push(((times.at(-1)! - times[0]!) * 1000) / (times.length - 1));
    s.mainUs.push(mainUs / times.length);
    s.otherUs.push(otherUs / times.length);
  }
}
await pool.close();

const out = (line: string): void => void process.stdout.write(`${line}\n`);
out(`# token path, ${PRESET} model, ${TOKENS} tokens, 1 thread, ${REPEATS} repeats (medians)\n`);
out('| path | µs per token (wall) | main thread CPU µs/token | other threads CPU µs/token |');
out('|---|---|---|---|');
for (const [name, s] of samples) {
  out(
    `| ${name} | ${median(s.wallUs).toFixed(0)} | ${median(s.mainUs).toFixed(0)} | ${median(s.otherUs).toFixed(0)} |`,
  );
}
await context.dispose();
await model.dispose();
await llama.dispose();
