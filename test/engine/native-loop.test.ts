/**
 * rbee's native token loop (src/engine/worker/native-loop.ts) in a worker, and where it cannot be
 * built: no compiler, a compiler that fails, switched off. The worker must generate the same answer
 * either way, with the steps in JavaScript where it must, and say why once. (In one process,
 * test/engine/token-loop.test.ts holds the native loop to LlamaCompletion token for token.)
 */
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  getLlama,
  LlamaLogLevel,
  resolveChatWrapper,
  type LlamaContext,
  type LlamaModel,
} from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildNativeLoop,
  nativeLoopAddon,
  nativeLoopUnavailable,
  prepareNativeLoop,
} from '../../src/engine/worker/native-loop.js';
import type { GenerateRequest, WorkerHandle } from '../../src/engine/types.js';
import { spawnWorker } from '../../src/engine/worker/client.js';
import { preparePrompt } from '../../src/engine/worker/prompt.js';
import { runGeneration } from '../../src/engine/worker/run-generation.js';
import { tokenLoopFor } from '../../src/engine/worker/token-loop.js';
import { tinyModelPath } from '../helpers/tiny-model.js';

let cache: string;
let model: LlamaModel;
let context: LlamaContext;

beforeAll(async () => {
  // an empty cache: nothing built earlier can stand in for the build these cases break
  cache = mkdtempSync(join(tmpdir(), 'rbee-native-loop-'));
  const llama = await getLlama({ gpu: false, build: 'never', maxThreads: 1, logLevel: LlamaLogLevel.error });
  model = await llama.loadModel({ modelPath: await tinyModelPath() });
  context = await model.createContext({ sequences: 1, contextSize: 256, threads: 1, flashAttention: false });
});

afterAll(async () => {
  await context?.dispose();
  await model?.dispose();
  rmSync(cache, { recursive: true, force: true });
});

describe('building the native token loop', () => {
  it('says which compiler is missing', async () => {
    await expect(
      buildNativeLoop({ compiler: 'rbee-no-such-compiler', env: { RBEE_NATIVE_CACHE: cache } }),
    ).rejects.toThrow(/rbee-no-such-compiler/);
    expect(readdirSync(cache)).toEqual([]);
  });

  it('says that the compiler failed, and does not run it again on the same source', async () => {
    const dir = mkdtempSync(join(cache, 'failing-'));
    // a compiler that counts its runs and fails
    const compiler = join(dir, 'failing-cxx');
    writeFileSync(compiler, `#!/bin/sh\necho run >> ${join(dir, 'runs')}\necho 'error: no' >&2\nexit 1\n`);
    chmodSync(compiler, 0o755);
    const env = { RBEE_NATIVE_CACHE: join(dir, 'cache') };
    await expect(buildNativeLoop({ compiler, env })).rejects.toThrow(
      /failing-cxx failed \(exit 1\): error: no/,
    );
    // no build, only the failure kept
    expect(readdirSync(join(dir, 'cache'))).toEqual([
      expect.stringMatching(/^token-loop-[0-9a-f]{16}\.failed$/),
    ]);
    await expect(buildNativeLoop({ compiler, env })).rejects.toThrow(
      /error: no \(earlier; remove .* to try again\)/,
    );
    expect(readFileSync(join(dir, 'runs'), 'utf8')).toBe('run\n');
    // another compiler is tried
    await expect(buildNativeLoop({ compiler: 'false', env })).rejects.toThrow(/false failed \(exit 1\)/);
  });

  it("keeps the newest three other sources' builds beside its own, and removes older ones", async () => {
    const dir = mkdtempSync(join(cache, 'rebuild-'));
    // five builds of other sources (another rbee sharing the cache, earlier ones), oldest first
    const others = [0, 1, 2, 3, 4].map((i) => `token-loop-${String(i).repeat(16)}.node`);
    others.forEach((name, i) => {
      writeFileSync(join(dir, name), 'a build of another source');
      utimesSync(join(dir, name), 1_000_000 + i, 1_000_000 + i);
    });
    const addon = await buildNativeLoop({ env: { RBEE_NATIVE_CACHE: dir } });
    expect(typeof addon.start).toBe('function');
    const files = readdirSync(dir).sort();
    const own = files.filter((name) => !others.includes(name));
    expect(own).toHaveLength(1);
    expect(own[0]).toMatch(/^token-loop-[0-9a-f]{16}\.node$/);
    expect(files.filter((name) => others.includes(name))).toEqual(others.slice(2));
  });

  it('is not built when switched off', async () => {
    await expect(
      buildNativeLoop({ env: { RBEE_NATIVE_CACHE: cache, RBEE_NATIVE_LOOP: 'off' } }),
    ).rejects.toThrow('RBEE_NATIVE_LOOP=off');
  });

  it('leaves the token loop in JavaScript, which still answers, and says why once', async () => {
    const logs: string[] = [];
    await prepareNativeLoop({
      compiler: 'rbee-no-such-compiler',
      env: { RBEE_NATIVE_CACHE: cache },
      log: (text) => logs.push(text),
    });
    expect(nativeLoopAddon()).toBeUndefined();
    nativeLoopUnavailable('a later reason'); // as the token loop would say it: already said
    expect(logs).toHaveLength(1);
    expect(logs[0]).toMatch(/^the token loop steps in JavaScript: .*rbee-no-such-compiler/);

    const sequence = context.getSequence();
    const request = { prompt: 'The weather today is', maxTokens: 16, temperature: 0 };
    const prompt = preparePrompt(model, resolveChatWrapper(model), context.contextSize, request);
    expect(tokenLoopFor(sequence, request, prompt, false)?.native).toBe(false);
    const tokens: number[] = [];
    let text = '';
    const result = await runGeneration({
      sequence,
      request,
      prompt,
      reuse: false,
      receivedAt: performance.now(),
      signal: new AbortController().signal,
      onText: (chunk) => (text += chunk),
      onTokens: (generated) => tokens.push(...generated),
    });
    expect(result.finishReason).toBe('length');
    expect(tokens).toHaveLength(16);
    expect(text).not.toBe('');
  });
});

describe('a worker', () => {
  const request: GenerateRequest = { prompt: 'Once upon a time', maxTokens: 48, temperature: 0 };

  /** A one-slot worker's answer, under `env` (its log: logOf), and whether it mapped the addon. */
  async function answer(env: Record<string, string>): Promise<{ text: string; mapped: boolean }> {
    const saved = { ...process.env };
    Object.assign(process.env, env);
    const logFile = join(cache, `worker-${Object.keys(env).join('-')}.log`);
    let worker: WorkerHandle;
    try {
      worker = await spawnWorker({ modelPath: await tinyModelPath(), threads: 1, slots: 1, logFile });
    } finally {
      process.env = saved;
    }
    try {
      let text = '';
      for await (const chunk of worker.generate(request)) if (chunk.type === 'token') text += chunk.text;
      const maps = readFileSync(`/proc/${worker.info.pid}/maps`, 'utf8');
      return { text, mapped: /token-loop-[0-9a-f]+\.node/.test(maps) };
    } finally {
      await worker.stop();
    }
  }
  const logOf = (env: Record<string, string>): string =>
    readFileSync(join(cache, `worker-${Object.keys(env).join('-')}.log`), 'utf8');

  it('generates on the native loop once it is built, the same answer as with it off', async () => {
    await buildNativeLoop(); // into the tests' shared cache, where the worker finds it
    const native = await answer({});
    expect(native.mapped).toBe(true);
    const off = await answer({ RBEE_NATIVE_LOOP: 'off' });
    expect(off.mapped).toBe(false);
    expect(native.text).not.toBe('');
    expect(native.text).toBe(off.text);
    expect(logOf({ RBEE_NATIVE_LOOP: 'off' })).toMatch(
      /the token loop steps in JavaScript: RBEE_NATIVE_LOOP=off/,
    );
  });

  it('without a compiler: the same answer, the steps in JavaScript, and why, once', async () => {
    const env = { RBEE_NATIVE_CACHE: mkdtempSync(join(cache, 'empty-')), CXX: 'rbee-no-such-compiler' };
    const fallback = await answer(env);
    expect(fallback.mapped).toBe(false);
    const reference = await answer({ RBEE_NATIVE_LOOP: 'off' });
    expect(fallback.text).toBe(reference.text);
    const lines = logOf(env)
      .split('\n')
      .filter((line) => line.includes('the token loop steps in JavaScript'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/rbee-no-such-compiler/);
  });
});
