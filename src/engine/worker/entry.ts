/**
 * The worker process: one model, N slots (context sequences), driven by its parent hive over the
 * IPC channel. Everything native lives here so that a crash or an OOM in llama.cpp takes down this
 * process only. Started by client.ts with its init as JSON in RBEE_WORKER_INIT (or argv[2]).
 */
import '../../shared/polyfill.js';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import type { Llama, LlamaContext, LlamaModel } from 'node-llama-cpp';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { defaultThreads } from '../hardware.js';
import { NATIVE_CMAKE_OPTIONS } from '../native-build.js';
import type { GenerateRequest, WorkerBinary, WorkerInfo, WorkerState } from '../types.js';
import type { Embedder } from './embedder.js';
import type { Ranker } from './ranker.js';
import type { SlotPool } from './slot-pool.js';
import type { RequestConstraints } from './grammar.js';
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
let resources:
  | {
      llama: Llama;
      model: LlamaModel;
      context: LlamaContext;
      embedder: Embedder;
      ranker: Ranker;
      /** The request's grammar or jsonSchema, built; throws BAD_REQUEST (see grammar.ts). */
      grammarFor: (request: GenerateRequest) => RequestConstraints;
    }
  | undefined;
/**
 * Embed and rank requests in progress, by request id, so that a cancel can stop them between texts
 * (or documents).
 */
const embeds = new Map<string, AbortController>();
/** The same requests' runs, so that shutdown can wait for them before disposing their contexts. */
const embedRuns = new Set<Promise<void>>();
let heartbeatTimer: NodeJS.Timeout | undefined;
/** Messages handed to the channel and not yet written; `exit` waits for them. */
let unsent = 0;
let allSent: (() => void) | undefined;
const onSent = (): void => {
  if (--unsent === 0) allSent?.();
};

/** No promise per message: a token is one, at up to thousands a second, on generation's own thread. */
function send(message: ChildMessage): void {
  if (!process.connected || process.send === undefined) return;
  unsent++;
  try {
    process.send(message, undefined, {}, onSent);
  } catch {
    // The channel closed between the check and the send: the parent is gone, 'disconnect' exits.
    onSent();
  }
}

function log(text: string): void {
  process.stderr.write(`[rbee-worker ${process.pid}] ${text}\n`);
}

async function exit(code: number): Promise<never> {
  // Let queued IPC messages (a final error or done) reach the parent before the process ends.
  if (unsent > 0) await new Promise<void>((resolve) => (allSent = resolve));
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
  const { InsufficientMemoryError } = await import('node-llama-cpp');
  const { createSlotPool } = await import('./slot-pool.js');
  const { createEmbedder } = await import('./embedder.js');
  const { createRanker } = await import('./ranker.js');
  const { createRequestGrammar } = await import('./grammar.js');
  const { defaultContextSize, estimateFromInsights } = await import('../memory.js');
  const threads = init.threads ?? defaultThreads();
  const { llama, binary } = await loadLlama(init, threads);
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
  const contextSize = init.contextSize ?? defaultContextSize(model.trainContextSize);
  let context: LlamaContext;
  try {
    context = await model.createContext({
      sequences: init.slots,
      contextSize,
      threads,
      // Off on the CPU unless asked for: llama.cpp's CPU flash attention sums a batch of under 64
      // tokens differently from a larger one, so the same tokens evaluated in other splits (a slot's
      // kept prefix, a stream continued on another worker) give other logits, and seeded greedy
      // output stops being reproducible. Off, every split gives the same logits (docs/benchmarks.md).
      flashAttention: init.flashAttention ?? (init.backend === 'cpu' ? false : 'auto'),
    });
  } catch (error) {
    await model.dispose();
    await llama.dispose();
    throw new RbeeError('WORKER_START_FAILED', `context creation failed: ${messageOf(error)}`, {
      cause: error,
    });
  }
  // Lazily: the embedding context is created by the first embed request, never at load.
  const embedder = createEmbedder({ model, contextSize: context.contextSize, threads });
  // As lazily: the ranking context is created by the first rank request.
  const ranker = createRanker({ model, contextSize: context.contextSize, threads });
  resources = {
    llama,
    model,
    context,
    embedder,
    ranker,
    grammarFor: (request) => createRequestGrammar(llama, request),
  };
  // From the model's own insights, with the layers and context it really got; before the first
  // request, so what the GGUF promised can be compared with memoryBytes (what the OS sees).
  const estimate = estimateFromInsights(model.fileInsights, {
    contextSize: context.contextSize,
    slots: init.slots,
    gpuLayers: model.gpuLayers,
    flashAttention: context.flashAttention === true,
  });
  if (init.slots === 1) {
    // rbee's native token loop serves a one-sequence context: loaded, or built first, in the
    // background; until it is there (or where it cannot be) the token loop steps in JavaScript
    const { prepareNativeLoop } = await import('./native-loop.js');
    void prepareNativeLoop({ log });
  }
  pool = createSlotPool({
    context,
    maxQueue: init.maxQueue,
    prefixReuse: init.prefixReuse ?? true,
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
    estimatedBytes: estimate.totalBytes,
    loadMs: performance.now() - startedAt,
    binary,
    flashAttention: context.flashAttention === true,
  };
}

/**
 * Loads llama.cpp: on the CPU the binary the hive chose (the native build, or the prebuilt one),
 * on a GPU its backend's prebuilt binary. A native build that does not load (gone, broken, built
 * for another CPU) falls back to the prebuilt binary with a warning: the worker still starts.
 */
async function loadLlama(init: ChildInit, threads: number): Promise<{ llama: Llama; binary: WorkerBinary }> {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const common = {
    // Never compile llama.cpp inside a worker: use an installed binary or fail now.
    build: 'never' as const,
    // The library's default (at least 4) makes spin-waiting threads fight over fewer cores.
    maxThreads: threads,
    logLevel: LlamaLogLevel.warn,
    logger: (level: string, message: string) => log(`llama ${level}: ${message.trimEnd()}`),
  };
  let why =
    init.binaryWhy ??
    (init.backend === 'cpu' ? 'the default' : `the ${init.backend} backend's prebuilt binary`);
  if (init.backend === 'cpu' && init.binary === 'native') {
    try {
      const llama = await getLlama({
        ...common,
        gpu: false,
        // exactly the native build's folder, never a prebuilt binary in its place
        usePrebuiltBinaries: false,
        cmakeOptions: { ...NATIVE_CMAKE_OPTIONS },
        progressLogs: false,
      });
      return {
        llama,
        binary: { kind: 'native', label: `native build ${llama.llamaCppRelease.release}`, why },
      };
    } catch (error) {
      why = `the native build did not load (${messageOf(error)}): the prebuilt binary instead`;
      log(`warning: ${why}`);
    }
  }
  let llama: Llama;
  try {
    llama = await getLlama({ ...common, gpu: init.backend === 'cpu' ? false : init.backend });
  } catch (error) {
    throw new RbeeError(
      'WORKER_START_FAILED',
      `backend ${init.backend} is not available: ${messageOf(error)}`,
      {
        cause: error,
      },
    );
  }
  return { llama, binary: { kind: llama.buildType, label: binaryLabel(llama, init.backend), why } };
}

/** "prebuilt cpu (haswell variant)", "prebuilt cuda", "local build v0.5.0". */
function binaryLabel(llama: Llama, backend: string): string {
  if (llama.buildType === 'localBuild') return `local build ${llama.llamaCppRelease.release}`;
  if (backend !== 'cpu') return `prebuilt ${backend}`;
  const variant = loadedCpuVariant();
  return variant === undefined ? 'prebuilt cpu' : `prebuilt cpu (${variant} variant)`;
}

/**
 * The CPU variant llama.cpp picked among the prebuilt package's (libggml-cpu-haswell.so, …): the
 * one mapped into this process (Linux; elsewhere unknown).
 */
function loadedCpuVariant(): string | undefined {
  try {
    return /libggml-cpu-([A-Za-z0-9_]+)\.(?:so|dylib)/.exec(readFileSync('/proc/self/maps', 'utf8'))?.[1];
  } catch {
    return undefined;
  }
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
      slotCache: pool?.cache() ?? [],
    });
    last = now;
  }, intervalMs);
}

async function shutdown(): Promise<never> {
  if (state !== 'stopping') {
    state = 'stopping';
    try {
      for (const controller of embeds.values()) controller.abort();
      // An embed stops between texts; the text in progress must finish before its context goes.
      await Promise.allSettled([...embedRuns]);
      await pool?.close();
      clearInterval(heartbeatTimer);
      // Dispose in reverse order of creation: the contexts hold the model, the model the backend.
      await resources?.embedder.dispose();
      await resources?.ranker.dispose();
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
      embeds.get(message.requestId)?.abort();
      return;
    case 'generate': {
      if (pool === undefined || resources === undefined || state === 'stopping') {
        refuseBusy(message.requestId);
        return;
      }
      let constraints;
      try {
        constraints = resources.grammarFor(message.request);
      } catch (error) {
        sendError(message.requestId, error);
        return;
      }
      pool.submit(message.requestId, message.request, constraints);
      return;
    }
    case 'count_tokens':
      if (pool === undefined || state === 'stopping') refuseBusy(message.requestId);
      else {
        try {
          send({
            type: 'prompt_tokens',
            requestId: message.requestId,
            promptTokens: pool.promptTokens(message.request),
          });
        } catch (error) {
          sendError(message.requestId, error);
        }
      }
      return;
    case 'embed':
      if (resources === undefined || state === 'stopping') refuseBusy(message.requestId);
      else {
        const { embedder } = resources;
        runCancellable(message.requestId, async (signal) => {
          const result = await embedder.embed(message.texts, { signal });
          return { type: 'embeddings', requestId: message.requestId, ...result };
        });
      }
      return;
    case 'rank':
      if (resources === undefined || state === 'stopping') refuseBusy(message.requestId);
      else {
        const { ranker } = resources;
        runCancellable(message.requestId, async (signal) => {
          const result = await ranker.rank(message.query, message.documents, { signal });
          return { type: 'ranking', requestId: message.requestId, ...result };
        });
      }
  }
}

/** Runs an embed or rank request: its answer or its error sent, a cancel aborting its signal. */
function runCancellable(requestId: string, work: (signal: AbortSignal) => Promise<ChildMessage>): void {
  if (embeds.has(requestId)) {
    send({ type: 'error', requestId, error: { code: 'BAD_REQUEST', message: 'duplicate request id' } });
    return;
  }
  const controller = new AbortController();
  embeds.set(requestId, controller);
  const run = work(controller.signal)
    .then(send, (error: unknown) => sendError(requestId, error))
    .finally(() => {
      embeds.delete(requestId);
      embedRuns.delete(run);
    });
  embedRuns.add(run);
}

function refuseBusy(requestId: string): void {
  const reason = state === 'stopping' ? 'worker is stopping' : 'worker is still loading';
  send({ type: 'error', requestId, error: { code: 'WORKER_BUSY', message: reason } });
}

function sendError(requestId: string, error: unknown): void {
  const rbeeError = toRbeeError(error);
  send({ type: 'error', requestId, error: { code: rbeeError.code, message: rbeeError.message } });
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
