/**
 * `npm run bench:prefix`: what a worker's kept KV cache saves a multi-turn chat, measured in one
 * run against a baseline that evaluates every prompt from scratch.
 *
 * Per model (the generated `tiny` and `small` presets): two rbee workers with one slot each, one
 * with prefix reuse (the default) and one with `prefixReuse: false`. A chat of BENCH_TURNS turns
 * starts with a system prompt of about BENCH_SYSTEM_TOKENS tokens; each turn adds the answer it got
 * and a new question. Every turn is asked of both workers, in alternating order, with the same
 * messages (the history carries the reusing worker's answers, as a client would send them back).
 * Each repeat is a new chat with a system prompt of its own, so nothing carries over from the
 * previous one. Printed per turn: prompt size, tokens found cached, median time to first token
 * (client side, from the request to the first token) for both, and their ratio.
 *
 * Env: BENCH_PRESETS (tiny,small), BENCH_TURNS (6), BENCH_SYSTEM_TOKENS (1000),
 *      BENCH_ANSWER_TOKENS (32), BENCH_REPEATS_TINY (5), BENCH_REPEATS_SMALL (1),
 *      BENCH_THREADS (engine default), BENCH_FLASH_ATTENTION (unset: llama.cpp's choice; 0 or 1).
 *
 * It also counts the turns whose answers came out token-identical with and without reuse: with
 * flash attention on the CPU, a prompt evaluated partly from the cache can tip a near-tie of these
 * random weights the other way (see WorkerInit.flashAttention); BENCH_FLASH_ATTENTION=0 shows it.
 */
import '../src/shared/polyfill.js';
import { existsSync, mkdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { getLlama, type LlamaModel } from 'node-llama-cpp';
import type * as Engine from '../src/engine/index.js';
import type { ChatMessage } from '../src/shared/wire.js';

const REPO = resolve(import.meta.dirname, '..');
const DIST = join(REPO, 'dist');
if (!existsSync(join(DIST, 'main.js'))) throw new Error('build first: npm run build');
// The benchmark measures what users run: the compiled engine.
const engine = (await import(join(DIST, 'engine', 'index.js'))) as typeof Engine;

const PRESETS = (process.env.BENCH_PRESETS ?? 'tiny,small').split(',') as ('tiny' | 'small')[];
const TURNS = Number(process.env.BENCH_TURNS ?? 6);
const SYSTEM_TOKENS = Number(process.env.BENCH_SYSTEM_TOKENS ?? 1000);
const ANSWER_TOKENS = Number(process.env.BENCH_ANSWER_TOKENS ?? 32);
const REPEATS = {
  tiny: Number(process.env.BENCH_REPEATS_TINY ?? 5),
  small: Number(process.env.BENCH_REPEATS_SMALL ?? 1),
};
const THREADS = Number(process.env.BENCH_THREADS ?? engine.defaultThreads());
const FLASH_ATTENTION =
  process.env.BENCH_FLASH_ATTENTION === undefined ? undefined : process.env.BENCH_FLASH_ATTENTION === '1';

const SENTENCE =
  'You are the librarian of a small town and answer questions about the books on the shelves, ' +
  'the opening hours, the reading room and the events of the week, briefly and politely. ';
const QUESTIONS = [
  'Which shelf has the atlases?',
  'When do you open on Sunday?',
  'Is the reading room quiet in the morning?',
  'Can I borrow three books at once?',
  'Do you have newspapers from last year?',
  'Who reads to the children on Friday?',
  'Where can I leave my bicycle?',
  'How long may I keep a novel?',
];

interface Turn {
  ttftMs: number;
  promptTokens: number;
  cachedPromptTokens: number;
  answer: string;
  tokens: number[];
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (n: number, digits = 1): string => n.toFixed(digits);

async function ensureModel(preset: 'tiny' | 'small'): Promise<string> {
  const path = join(REPO, '.cache', 'models', `${preset}-seed1.gguf`);
  if (!existsSync(path)) {
    mkdirSync(join(REPO, '.cache', 'models'), { recursive: true });
    console.error(`generating the ${preset} model…`);
    await engine.generateTestModel({ path, preset, seed: 1 });
  }
  return path;
}

/** A system prompt of about SYSTEM_TOKENS tokens for this model's vocabulary, unique to `chat`. */
function systemPrompt(vocab: LlamaModel, chat: number): string {
  const head = `Chat number ${chat}. `;
  const perSentence = vocab.tokenize(SENTENCE).length;
  return head + SENTENCE.repeat(Math.max(1, Math.round(SYSTEM_TOKENS / perSentence)));
}

async function ask(worker: Engine.WorkerHandle, messages: ChatMessage[]): Promise<Turn> {
  const start = performance.now();
  let first: number | undefined;
  let answer = '';
  const tokens: number[] = [];
  for await (const chunk of worker.generate({ messages, maxTokens: ANSWER_TOKENS, temperature: 0 })) {
    if (chunk.type === 'token') {
      first ??= performance.now();
      answer += chunk.text;
      tokens.push(...chunk.tokens);
      continue;
    }
    return {
      ttftMs: (first ?? performance.now()) - start,
      promptTokens: chunk.usage.promptTokens,
      cachedPromptTokens: chunk.usage.cachedPromptTokens ?? 0,
      answer,
      tokens,
    };
  }
  throw new Error('the worker stream ended without done');
}

async function benchModel(preset: 'tiny' | 'small'): Promise<void> {
  const modelPath = await ensureModel(preset);
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' as never });
  const vocab = await llama.loadModel({ modelPath, vocabOnly: true });
  const init = {
    modelPath,
    threads: THREADS,
    slots: 1,
    contextSize: 2048,
    ...(FLASH_ATTENTION === undefined ? {} : { flashAttention: FLASH_ATTENTION }),
  };
  const reuse = await engine.spawnWorker(init);
  const scratch = await engine.spawnWorker({ ...init, prefixReuse: false });
  const on: Turn[][] = Array.from({ length: TURNS }, () => []);
  const off: Turn[][] = Array.from({ length: TURNS }, () => []);
  let same = 0;
  const started = performance.now();
  try {
    // warm-up: loads, caches, JIT; a chat of its own that the first repeat shares nothing with
    await ask(reuse, [{ role: 'user', content: 'warm up' }]);
    await ask(scratch, [{ role: 'user', content: 'warm up' }]);
    for (let r = 0; r < REPEATS[preset]; r++) {
      const messages: ChatMessage[] = [{ role: 'system', content: systemPrompt(vocab, r) }];
      for (let t = 0; t < TURNS; t++) {
        messages.push({ role: 'user', content: QUESTIONS[t % QUESTIONS.length]! });
        // alternating order, so that drift in the machine's speed falls on both alike
        const first = (t + r) % 2 === 0;
        const a = first ? await ask(reuse, messages) : undefined;
        const b = await ask(scratch, messages);
        const c = a ?? (await ask(reuse, messages));
        on[t]!.push(c);
        off[t]!.push(b);
        if (c.tokens.join() === b.tokens.join()) same++;
        messages.push({ role: 'assistant', content: c.answer });
      }
    }
  } finally {
    await reuse.stop();
    await scratch.stop();
    await vocab.dispose();
    await llama.dispose();
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `\n## ${preset} model — ${TURNS} turns, ${REPEATS[preset]} chat(s), ${ANSWER_TOKENS}-token answers, ` +
      `${THREADS} thread(s), flash attention ${FLASH_ATTENTION === undefined ? "llama.cpp's choice" : FLASH_ATTENTION ? 'on' : 'off'}, ` +
      `${fmt(seconds, 0)} s\n`,
  );
  console.log(
    '| turn | prompt tokens | cached (reuse) | TTFT reuse off (ms) | TTFT reuse on (ms) | off / on |',
  );
  console.log('|---|---|---|---|---|---|');
  let offLater = 0;
  let onLater = 0;
  for (let t = 0; t < TURNS; t++) {
    const offMs = median(off[t]!.map((x) => x.ttftMs));
    const onMs = median(on[t]!.map((x) => x.ttftMs));
    if (t > 0) {
      offLater += offMs;
      onLater += onMs;
    }
    console.log(
      `| ${t + 1} | ${fmt(median(on[t]!.map((x) => x.promptTokens)), 0)} | ${fmt(median(on[t]!.map((x) => x.cachedPromptTokens)), 0)} | ` +
        `${fmt(offMs)} | ${fmt(onMs)} | ${fmt(offMs / onMs, 2)} |`,
    );
  }
  console.log(
    `\nturns 2–${TURNS}: TTFT ${fmt(offLater / (TURNS - 1))} ms without reuse, ${fmt(onLater / (TURNS - 1))} ms with it ` +
      `(mean of the medians), ratio ${fmt(offLater / onLater, 2)}; answers token-identical in ${same} of ` +
      `${TURNS * REPEATS[preset]} turns`,
  );
}

console.log(
  `# bench:prefix — ${cpus()[0]?.model ?? 'cpu'} ×${cpus().length}, ${Math.round(totalmem() / 2 ** 30)} GiB, ` +
    `node ${process.version}, system prompt ≈${SYSTEM_TOKENS} tokens`,
);
for (const preset of PRESETS) await benchModel(preset);
