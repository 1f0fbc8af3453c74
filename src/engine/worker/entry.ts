/**
 * The worker process: one model, N slots (context sequences), driven by its parent hive over the
 * IPC channel. Everything native lives here so that a crash or an OOM in llama.cpp takes down this
 * process only. Started by client.ts with its init as JSON in RBEE_WORKER_INIT (or argv[2]).
 */
import '../../shared/polyfill.js';
import { open } from 'node:fs/promises';
import type { Llama, LlamaContext, LlamaModel } from 'node-llama-cpp';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { defaultThreads } from '../hardware.js';
import type { WorkerInfo, WorkerState } from '../types.js';
import type { SlotPool } from './slot-pool.js';
import {
  childInitSchema,
  parseParentMessage,
  WORKER_INIT_ENV,
  type ChildInit,
  type ChildMessage,
} from './protocol.js';

const startedAt = performance.now();
let invalidMessages = 0;
let state: WorkerState = 'loading';
let pool: SlotPool | undefined;
let resources: { llama: Llama; model: LlamaModel; context: LlamaContext } | undefined;
let heartbeatTimer: NodeJS.Timeout | undefined;
let pendingSends: Promise<void> = Promise.resolve();

function send(message: ChildMessage): void {
  if (!process.connected || process.send === undefined) return;
  const sent = new Promise<void>((resolve) => {
    try {
      process.send?.(message, undefined, {}, () => resolve());
    } catch {
      // The channel closed between the check and the send: the parent is gone, 'disconnect' exits.
      resolve();
    }
  });
  pendingSends = pendingSends.then(() => sent);
}

function log(text: string): void {
  process.stderr.write(`[rbee-worker ${process.pid}] ${text}\n`);
}

async function exit(code: number): Promise<never> {
  // Let queued IPC messages (a final error or done) reach the parent before the process ends.
  await pendingSends;
  process.exit(code);
}

function readInit(): ChildInit {
  const raw = process.env[WORKER_INIT_ENV] ?? process.argv[2];
  if (raw === undefined)
    throw new RbeeError('WORKER_START_FAILED', `worker init missing: set ${WORKER_INIT_ENV}`);
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (error) {
    throw new RbeeError('WORKER_START_FAILED', 'worker init is not valid JSON', { cause: error });
  }
  const parsed = childInitSchema.safeParse(json);
  if (!parsed.success) {
    throw new RbeeError('WORKER_START_FAILED', `worker init invalid: ${parsed.error.message}`);
  }
  return parsed.data;
}

/** Refuses a missing or non-GGUF file before llama.cpp sees it, with an error a person can act on. */
async function checkModelFile(path: string): Promise<void> {
  let file;
  try {
    file = await open(path, 'r');
  } catch (error) {
    throw new RbeeError('MODEL_NOT_FOUND', `model file cannot be opened: ${path}`, { cause: error });
  }
  try {
    const magic = Buffer.alloc(4);
    const { bytesRead } = await file.read(magic, 0, 4, 0);
    if (bytesRead < 4 || magic.toString('latin1') !== 'GGUF') {
      throw new RbeeError('MODEL_INVALID', `not a GGUF file (bad magic): ${path}`);
    }
  } finally {
    await file.close();
  }
}

async function load(init: ChildInit): Promise<WorkerInfo> {
  await checkModelFile(init.modelPath);
  // Loaded only now (≈1–2 s): a bad model path or init fails fast, before any native code loads.
  const { getLlama, InsufficientMemoryError, LlamaLogLevel } = await import('node-llama-cpp');
  const { createSlotPool } = await import('./slot-pool.js');
  const threads = init.threads ?? defaultThreads();
  let llama: Llama;
  try {
    llama = await getLlama({
      gpu: init.backend === 'cpu' ? false : init.backend,
      // Never compile llama.cpp inside a worker: use an installed binary or fail now.
      build: 'never',
      // The library's default (at least 4) makes spin-waiting threads fight over fewer cores.
      maxThreads: threads,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => log(`llama ${level}: ${message.trimEnd()}`),
    });
  } catch (error) {
    throw new RbeeError(
      'WORKER_START_FAILED',
      `backend ${init.backend} is not available: ${messageOf(error)}`,
      {
        cause: error,
      },
    );
  }
  if (init.backend !== 'cpu' && llama.gpu !== init.backend) {
    await llama.dispose();
    throw new RbeeError(
      'WORKER_START_FAILED',
      `backend ${init.backend} is not available (got ${String(llama.gpu)})`,
    );
  }
  let model: LlamaModel;
  try {
    model = await llama.loadModel({
      modelPath: init.modelPath,
      gpuLayers: init.backend === 'cpu' ? 0 : 'auto',
    });
  } catch (error) {
    await llama.dispose();
    const code = error instanceof InsufficientMemoryError ? 'WORKER_START_FAILED' : 'MODEL_INVALID';
    throw new RbeeError(code, `model failed to load: ${messageOf(error)}`, { cause: error });
  }
  const contextSize = init.contextSize ?? Math.min(model.trainContextSize, 4096);
  let context: LlamaContext;
  try {
    context = await model.createContext({ sequences: init.slots, contextSize, threads });
  } catch (error) {
    await model.dispose();
    await llama.dispose();
    throw new RbeeError('WORKER_START_FAILED', `context creation failed: ${messageOf(error)}`, {
      cause: error,
    });
  }
  resources = { llama, model, context };
  pool = createSlotPool({
    context,
    maxQueue: init.maxQueue,
    send,
    onStateChange: () => {
      if (state === 'idle' || state === 'busy') state = pool?.busy === 0 ? 'idle' : 'busy';
    },
  });
  state = 'idle';
  return {
    id: init.id,
    pid: process.pid,
    modelPath: init.modelPath,
    backend: init.backend,
    device: init.device,
    slots: init.slots,
    contextSize: context.contextSize,
    threads,
    state,
    memoryBytes: process.memoryUsage.rss(),
    loadMs: performance.now() - startedAt,
  };
}

function startHeartbeat(intervalMs: number): void {
  let last = performance.now();
  heartbeatTimer = setInterval(() => {
    const now = performance.now();
    const tokens = pool?.takeTokenCount() ?? 0;
    send({
      type: 'heartbeat',
      state,
      slotsBusy: pool?.busy ?? 0,
      slotsTotal: pool?.total ?? 0,
      queueDepth: pool?.queued ?? 0,
      memoryBytes: process.memoryUsage.rss(),
      tokensPerSecond: now > last ? (tokens * 1000) / (now - last) : 0,
      invalidMessages,
    });
    last = now;
  }, intervalMs);
}

async function shutdown(): Promise<never> {
  if (state !== 'stopping') {
    state = 'stopping';
    try {
      await pool?.close();
      clearInterval(heartbeatTimer);
      // Dispose in reverse order of creation: the context holds the model, the model the backend.
      await resources?.context.dispose();
      await resources?.model.dispose();
      await resources?.llama.dispose();
    } catch (error) {
      log(`shutdown: ${messageOf(error)}`);
    }
  }
  return exit(0);
}

function onMessage(raw: unknown): void {
  const message = parseParentMessage(raw);
  if (message === undefined) {
    invalidMessages += 1;
    log(`dropped an invalid message (${invalidMessages} so far)`);
    return;
  }
  switch (message.type) {
    case 'shutdown':
      void shutdown();
      return;
    case 'cancel':
      pool?.cancel(message.requestId);
      return;
    case 'generate':
      if (pool === undefined || state === 'stopping') {
        const reason = state === 'stopping' ? 'worker is stopping' : 'worker is still loading';
        send({
          type: 'error',
          requestId: message.requestId,
          error: { code: 'WORKER_BUSY', message: reason },
        });
        return;
      }
      pool.submit(message.requestId, message.request);
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function main(): Promise<void> {
  if (process.send === undefined) {
    log('must be started by rbee with an IPC channel (child_process.fork)');
    process.exit(2);
  }
  // The parent died or closed the channel: nobody can use this process any more, so no orphans.
  process.on('disconnect', () => process.exit(0));
  process.on('message', onMessage);
  try {
    const init = readInit();
    const info = await load(init);
    startHeartbeat(init.heartbeatIntervalMs);
    send({ type: 'ready', info });
  } catch (error) {
    const rbeeError = toRbeeError(error, 'WORKER_START_FAILED');
    log(`start failed: ${rbeeError.code}: ${rbeeError.message}`);
    send({ type: 'error', error: { code: rbeeError.code, message: rbeeError.message } });
    await exit(1);
  }
}

await main();
