import { fork } from 'node:child_process';
import { copyFile, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { detectDevices, physicalCores } from '../../src/engine/hardware.js';
import { parseCpuinfoCores } from '../../src/engine/hardware.js';
import type {
  GenerateChunk,
  GenerateRequest,
  WorkerHandle,
  WorkerHeartbeat,
  WorkerInit,
} from '../../src/engine/types.js';
import { spawnWorker } from '../../src/engine/worker/client.js';
import {
  childMessageSchema,
  parseChildMessage,
  parseParentMessage,
  WORKER_INIT_ENV,
  type ChildInit,
} from '../../src/engine/worker/protocol.js';
import { RbeeError } from '../../src/shared/errors.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';

let modelPath: string;
let tempDir: string;

beforeAll(async () => {
  modelPath = await tinyModelPath();
  tempDir = await mkdtemp(join(tmpdir(), 'rbee-worker-test-'));
});

afterAll(async () => {
  await rm(tempDir, { recursive: true, force: true });
});

/** Every worker a test starts, so that afterEach/afterAll can make sure none outlives it. */
const started: WorkerHandle[] = [];

async function start(init: Partial<WorkerInit> = {}): Promise<WorkerHandle> {
  // threads: 1 unless a test says otherwise: on a 2-core box two spin-waiting threads are far slower.
  const worker = await spawnWorker({ modelPath, threads: 1, ...init });
  started.push(worker);
  return worker;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw error;
  }
}

async function killStarted(): Promise<void> {
  for (const worker of started.splice(0)) {
    if (isAlive(worker.info.pid)) process.kill(worker.info.pid, 'SIGKILL');
    await worker.exited;
    expect(isAlive(worker.info.pid)).toBe(false);
  }
}

/** Live (non-zombie) processes whose environment mentions `needle`. */
function pidsWithEnvContaining(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'latin1');
      if (stat.split(') ')[1]?.startsWith('Z') === true) continue;
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(needle)) pids.push(Number(entry));
    } catch {
      // ended while we looked
    }
  }
  return pids;
}

interface Collected {
  text: string;
  tokens: number;
  done: Extract<GenerateChunk, { type: 'done' }>;
}

async function collect(
  worker: WorkerHandle,
  request: GenerateRequest,
  signal?: AbortSignal,
): Promise<Collected> {
  let text = '';
  let tokens = 0;
  for await (const chunk of worker.generate(request, signal === undefined ? {} : { signal })) {
    if (chunk.type === 'token') {
      text += chunk.text;
      tokens += 1;
    } else {
      return { text, tokens, done: chunk };
    }
  }
  throw new Error('stream ended without done');
}

async function expectRbeeError(promise: Promise<unknown>, code: RbeeError['code']): Promise<RbeeError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(RbeeError);
  expect((error as RbeeError).code).toBe(code);
  return error as RbeeError;
}

/** A request that would run for minutes if nothing stopped it. */
const endless: GenerateRequest = { prompt: 'Once upon a time', maxTokens: 1_000_000 };

describe('protocol', () => {
  it('accepts well-formed messages and rejects malformed ones', () => {
    expect(parseParentMessage({ type: 'generate', requestId: 'a', request: { prompt: 'hi' } })).toBeDefined();
    expect(parseParentMessage({ type: 'generate', requestId: 'a', request: {} })).toBeUndefined();
    expect(
      parseParentMessage({ type: 'generate', requestId: 'a', request: { prompt: 'x', messages: [] } }),
    ).toBeUndefined();
    expect(parseParentMessage({ type: 'cancel' })).toBeUndefined();
    expect(parseParentMessage('shutdown')).toBeUndefined();
    expect(parseParentMessage({ type: 'shutdown' })).toEqual({ type: 'shutdown' });
    expect(parseChildMessage({ type: 'token', requestId: 'a', text: 'x', tokens: [7] })).toBeDefined();
    expect(parseChildMessage({ type: 'token', requestId: 'a', text: 'x' })).toBeUndefined();
    expect(parseChildMessage({ type: 'token', requestId: 'a', text: 7 })).toBeUndefined();
    expect(parseChildMessage({ type: 'error', error: { code: 'NOPE', message: 'x' } })).toBeUndefined();
    expect(parseChildMessage(null)).toBeUndefined();
  });

  it('reads token messages exactly as the schema does (the hand-checked fast path included)', () => {
    const field = fc.oneof(
      fc.constant(undefined),
      fc.string({ maxLength: 3 }),
      fc.string({ minLength: 127, maxLength: 130 }),
      fc.integer({ min: -2, max: 5 }),
      fc.double(),
      fc.array(fc.oneof(fc.integer({ min: -1, max: 9 }), fc.double(), fc.string({ maxLength: 1 }))),
      fc.constant(null),
    );
    const message = fc.record(
      {
        type: fc.oneof(fc.constant('token'), fc.constant('done'), field),
        requestId: field,
        text: field,
        tokens: field,
        extra: field,
      },
      { requiredKeys: ['type'] },
    );
    fc.assert(
      fc.property(message, (raw) => {
        const schema = childMessageSchema.safeParse(raw);
        expect(parseChildMessage(raw)).toEqual(schema.success ? schema.data : undefined);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('hardware', () => {
  it('counts physical cores from /proc/cpuinfo, not hyper-threads', () => {
    const block = (physical: number, core: number): string =>
      `processor : x\nphysical id : ${physical}\ncore id : ${core}\n`;
    expect(parseCpuinfoCores([block(0, 0), block(0, 1), block(0, 0), block(0, 1)].join('\n'))).toBe(2);
    expect(parseCpuinfoCores([block(0, 0), block(1, 0)].join('\n'))).toBe(2);
    expect(parseCpuinfoCores('processor : 0\nBogoMIPS : 50\n')).toBeUndefined();
    expect(physicalCores()).toBeGreaterThanOrEqual(1);
  });

  it('describes the machine, reporting no GPU without throwing', async () => {
    const info = await detectDevices();
    expect(info.cpu.physicalCores).toBe(physicalCores());
    expect(info.cpu.logicalCores).toBeGreaterThanOrEqual(info.cpu.physicalCores);
    expect(info.memory.totalBytes).toBeGreaterThan(info.memory.freeBytes);
    expect(info.backends).toContain('cpu');
    // The machines these tests run on have no GPU; a GPU machine reports its devices here.
    if (info.backends.length === 1) expect(info.gpus).toEqual([]);
  });
});

describe('worker with two slots', () => {
  let worker: WorkerHandle;
  const heartbeats: WorkerHeartbeat[] = [];

  beforeAll(async () => {
    worker = await start({ slots: 2, heartbeatIntervalMs: 200, onHeartbeat: (h) => heartbeats.push(h) });
  });
  afterAll(killStarted);

  it('reports ready with its info and sends heartbeats', async () => {
    expect(worker.info.pid).toBeGreaterThan(0);
    expect(isAlive(worker.info.pid)).toBe(true);
    expect(worker.info).toMatchObject({ slots: 2, threads: 1, backend: 'cpu', modelPath, state: 'idle' });
    expect(worker.info.contextSize).toBeGreaterThan(0);
    expect(worker.info.memoryBytes).toBeGreaterThan(0);
    expect(worker.info.loadMs).toBeGreaterThan(0);
    await waitFor(() => heartbeats.length > 0, { what: 'a heartbeat' });
    expect(heartbeats[0]).toMatchObject({ slotsTotal: 2, invalidMessages: 0 });
    expect(worker.lastHeartbeat).toBeDefined();
  });

  it('streams a chat answer and ends with done and usage', async () => {
    const result = await collect(worker, {
      messages: [{ role: 'user', content: 'Hello there' }],
      maxTokens: 12,
    });
    expect(result.tokens).toBeGreaterThan(0);
    expect(result.text.length).toBeGreaterThan(0);
    expect(result.done.finishReason).toBe('length');
    expect(result.done.usage.completionTokens).toBe(12);
    // The ChatML template wraps the message, so the prompt is longer than the message itself.
    expect(result.done.usage.promptTokens).toBeGreaterThan(5);
    expect(result.done.timeToFirstTokenMs).toBeGreaterThan(0);
    expect(result.done.tokensPerSecond).toBeGreaterThan(0);
  });

  it("sends the prompt's size with the first token, as done's usage will report it", async () => {
    const request: GenerateRequest = { messages: [{ role: 'user', content: 'Size me up' }], maxTokens: 6 };
    for (let turn = 0; turn < 2; turn++) {
      const chunks = [];
      for await (const chunk of worker.generate(request)) chunks.push(chunk);
      const tokens = chunks.filter((c) => c.type === 'token');
      const done = chunks.at(-1);
      if (done?.type !== 'done') throw new Error('no done');
      expect(tokens[0]).toMatchObject({
        promptTokens: done.usage.promptTokens,
        cachedPromptTokens: done.usage.cachedPromptTokens,
      });
      expect(tokens.slice(1).every((t) => t.promptTokens === undefined)).toBe(true);
      // the second time the slot's cache holds the prompt, and the first token says so
      if (turn === 1) expect(tokens[0]!.cachedPromptTokens).toBeGreaterThan(0);
    }
  });

  it('completes a raw prompt', async () => {
    const result = await collect(worker, { prompt: 'Once upon a time', maxTokens: 10 });
    expect(result.text.length).toBeGreaterThan(0);
    expect(result.done.usage.promptTokens).toBeGreaterThan(1);
    expect(result.done.usage.completionTokens).toBe(10);
  });

  it('is deterministic with temperature 0 and with a fixed seed', async () => {
    const greedy = { prompt: 'The weather today', maxTokens: 24, temperature: 0, seed: 7 };
    const a = await collect(worker, greedy);
    const b = await collect(worker, greedy);
    expect(a.text).toBe(b.text);
    const sampled = { prompt: 'The weather today', maxTokens: 24, temperature: 1, seed: 7 };
    const c = await collect(worker, sampled);
    const d = await collect(worker, sampled);
    expect(c.text).toBe(d.text);
  });

  it('stops at maxTokens with finishReason length', async () => {
    const result = await collect(worker, { prompt: 'Count with me', maxTokens: 7 });
    expect(result.done.finishReason).toBe('length');
    expect(result.done.usage.completionTokens).toBe(7);
  });

  it('stops at a stop sequence, leaving it out of the text and naming it', async () => {
    const request = { prompt: 'Once upon a time', maxTokens: 40, temperature: 0 };
    const first = await collect(worker, request);
    expect(first.done.stopSequence).toBeUndefined();
    // A piece from the middle of the greedy output: the same run must stop right before it.
    const stop = first.text.slice(20, 24);
    expect(stop.trim().length).toBeGreaterThan(0);
    const index = first.text.indexOf(stop);
    const second = await collect(worker, { ...request, stop: [stop] });
    expect(second.done.finishReason).toBe('stop');
    expect(second.done.stopSequence).toBe(stop);
    expect(second.text).toBe(first.text.slice(0, index));
    expect(second.text.includes(stop)).toBe(false);
  });

  it("counts a chat's prompt tokens, template and tools included, as its generation reports them", async () => {
    const messages = [
      { role: 'system' as const, content: 'Be brief.' },
      { role: 'user' as const, content: 'What is the weather in Paris?' },
    ];
    const tools = [
      {
        name: 'get_weather',
        description: 'The weather in a city',
        parameters: { type: 'object', properties: { city: { type: 'string' } } },
      },
    ];
    const counted = await worker.countTokens({ messages, tools });
    const generated = await collect(worker, { messages, tools, maxTokens: 2 });
    expect(counted).toBe(generated.done.usage.promptTokens);
    expect(await worker.countTokens({ messages })).toBeLessThan(counted);
    await expectRbeeError(worker.countTokens({}), 'BAD_REQUEST');
  });

  it('streams two requests at once on two slots', async () => {
    const order: string[] = [];
    const run = async (label: string): Promise<Collected> => {
      let tokens = 0;
      for await (const chunk of worker.generate({ prompt: `Story ${label}`, maxTokens: 60 })) {
        if (chunk.type === 'token') {
          tokens += 1;
          order.push(label);
        } else return { text: '', tokens, done: chunk };
      }
      throw new Error('no done');
    };
    const [a, b] = await Promise.all([run('a'), run('b')]);
    expect(a.done.finishReason).toBe('length');
    expect(b.done.finishReason).toBe('length');
    // Interleaved: each stream produced tokens while the other was still producing.
    expect(order.indexOf('b')).toBeLessThan(order.lastIndexOf('a'));
    expect(order.indexOf('a')).toBeLessThan(order.lastIndexOf('b'));
  });

  it('refuses a request with neither prompt nor messages', async () => {
    await expectRbeeError(collect(worker, { maxTokens: 3 }), 'BAD_REQUEST');
  });
});

describe('worker with one slot and a queue of one', () => {
  let worker: WorkerHandle;

  beforeAll(async () => {
    worker = await start({ slots: 1, maxQueue: 1, heartbeatIntervalMs: 100 });
  });
  afterAll(killStarted);

  it('cancels mid-stream with JOB_CANCELLED and frees the slot at once', async () => {
    const controller = new AbortController();
    let tokens = 0;
    const stream = (async () => {
      for await (const chunk of worker.generate(endless, { signal: controller.signal })) {
        if (chunk.type === 'token' && ++tokens === 3) controller.abort();
      }
    })();
    await expectRbeeError(stream, 'JOB_CANCELLED');
    expect(tokens).toBe(3);
    // With one slot, this only completes if the endless request really released it.
    const next = await collect(worker, { prompt: 'Again', maxTokens: 5 });
    expect(next.done.finishReason).toBe('length');
    await waitFor(() => worker.lastHeartbeat?.slotsBusy === 0 && worker.info.state === 'idle', {
      what: 'idle',
    });
  });

  it('frees the slot when the consumer stops reading', async () => {
    let tokens = 0;
    for await (const chunk of worker.generate(endless)) {
      if (chunk.type === 'token' && ++tokens === 2) break;
    }
    const next = await collect(worker, { prompt: 'Again', maxTokens: 5 });
    expect(next.done.usage.completionTokens).toBe(5);
  });

  it('queues beyond the slots and refuses beyond the queue with WORKER_BUSY', async () => {
    const running = new AbortController();
    const queued = new AbortController();
    const first = worker.generate(endless, { signal: running.signal })[Symbol.asyncIterator]();
    expect((await first.next()).value).toMatchObject({ type: 'token' });
    const second = worker.generate(endless, { signal: queued.signal })[Symbol.asyncIterator]();
    const secondNext = second.next();
    await waitFor(() => worker.lastHeartbeat?.queueDepth === 1, { what: 'a queued request' });
    await expectRbeeError(collect(worker, { prompt: 'one too many', maxTokens: 3 }), 'WORKER_BUSY');
    queued.abort();
    await expectRbeeError(secondNext, 'JOB_CANCELLED');
    running.abort();
    await expectRbeeError(first.next(), 'JOB_CANCELLED');
    await waitFor(() => worker.lastHeartbeat?.slotsBusy === 0 && worker.lastHeartbeat.queueDepth === 0, {
      what: 'an empty worker',
    });
  });
});

describe('worker lifecycle', () => {
  afterEach(killStarted);

  it('starts with physical cores less one as threads and stop() ends the process', async () => {
    const logFile = join(tempDir, 'logs', 'worker.log');
    const worker = await start({ threads: undefined, logFile });
    expect(worker.info.threads).toBe(Math.max(1, physicalCores() - 1));
    expect(worker.info.slots).toBe(1);
    const pid = worker.info.pid;
    expect(isAlive(pid)).toBe(true);
    await worker.stop();
    expect(isAlive(pid)).toBe(false);
    expect(worker.info.state).toBe('exited');
    expect(await worker.exited).toEqual({ code: 0, signal: null });
    await expectRbeeError(collect(worker, { prompt: 'x' }), 'WORKER_CRASHED');
    await readFile(logFile); // exists, even when llama.cpp had nothing to say
  });

  it('throws WORKER_CRASHED when the worker is killed mid-stream', async () => {
    const worker = await start();
    let tokens = 0;
    const stream = (async () => {
      for await (const chunk of worker.generate(endless)) {
        if (chunk.type === 'token' && ++tokens === 2) process.kill(worker.info.pid, 'SIGKILL');
      }
    })();
    await expectRbeeError(stream, 'WORKER_CRASHED');
    expect(await worker.exited).toEqual({ code: null, signal: 'SIGKILL' });
    expect(worker.info.state).toBe('exited');
  });

  it('fails a non-GGUF file with MODEL_INVALID and leaves no process', async () => {
    const bad = join(tempDir, 'not-a-model.gguf');
    await writeFile(bad, 'this is plainly not a GGUF file\n'.repeat(100));
    const error = await expectRbeeError(spawnWorker({ modelPath: bad, threads: 1 }), 'MODEL_INVALID');
    expect(error.message).toContain('GGUF');
    expect(pidsWithEnvContaining(bad)).toEqual([]);
  });

  it('fails a truncated GGUF with a clear start error and leaves no process', async () => {
    const truncated = join(tempDir, 'truncated.gguf');
    await copyFile(modelPath, truncated);
    const file = await open(truncated, 'r+');
    await file.truncate(4096);
    await file.close();
    const error = await expectRbeeError(spawnWorker({ modelPath: truncated, threads: 1 }), 'MODEL_INVALID');
    expect(error.details?.stderrTail).toBeTypeOf('string');
    expect(pidsWithEnvContaining(truncated)).toEqual([]);
  });

  it('fails a missing file with MODEL_NOT_FOUND', async () => {
    const missing = join(tempDir, 'missing.gguf');
    await expectRbeeError(spawnWorker({ modelPath: missing, threads: 1 }), 'MODEL_NOT_FOUND');
    expect(pidsWithEnvContaining(missing)).toEqual([]);
  });

  it('kills a worker that is not ready in time and says so', async () => {
    const slow = join(tempDir, 'ready-timeout.gguf');
    await copyFile(modelPath, slow);
    const error = await expectRbeeError(
      spawnWorker({ modelPath: slow, threads: 1, readyTimeoutMs: 50 }),
      'WORKER_START_FAILED',
    );
    expect(error.message).toContain('not ready');
    // llama.cpp's binary check may have a short-lived child of its own: wait for it, not for a timer.
    await waitFor(() => pidsWithEnvContaining(slow).length === 0, { what: 'no process left' });
  });

  it('cancels a start when its signal aborts', async () => {
    const controller = new AbortController();
    const spawning = spawnWorker({ modelPath, threads: 1, signal: controller.signal });
    controller.abort();
    await expectRbeeError(spawning, 'JOB_CANCELLED');
  });

  it('fails an unavailable GPU backend with WORKER_START_FAILED', async () => {
    const devices = await detectDevices();
    if (devices.backends.includes('vulkan')) return; // this machine has one: nothing to refuse
    await expectRbeeError(spawnWorker({ modelPath, threads: 1, backend: 'vulkan' }), 'WORKER_START_FAILED');
  });

  it('drops invalid messages, counts them, and exits when its parent goes away', async () => {
    // Forked by hand, as client.ts does, to send it what a buggy parent might.
    const init: ChildInit = {
      id: 'raw',
      modelPath,
      slots: 1,
      threads: 1,
      backend: 'cpu',
      device: 0,
      maxQueue: 2,
      heartbeatIntervalMs: 100,
    };
    const child = fork(fileURLToPath(new URL('../../src/engine/worker/entry.ts', import.meta.url)), [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, [WORKER_INIT_ENV]: JSON.stringify(init) },
      stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      const messages: unknown[] = [];
      child.on('message', (m) => messages.push(m));
      await waitFor(() => messages.some((m) => parseChildMessage(m)?.type === 'ready'), { what: 'ready' });
      child.send({ type: 'generate', requestId: 'x' });
      child.send('garbage');
      child.send({ type: 'launch-missiles' });
      await waitFor(
        () =>
          messages.some((m) => {
            const parsed = parseChildMessage(m);
            return parsed?.type === 'heartbeat' && parsed.invalidMessages === 3;
          }),
        { what: 'a heartbeat counting 3 invalid messages' },
      );
      child.disconnect();
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
