/**
 * The hive's side of a worker process: fork it, wait until it has loaded its model, stream
 * generations from it, and make sure it is gone when asked (or when it dies by itself).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RbeeError } from '../../shared/errors.js';
import { rotateIfLarge } from '../../shared/log-files.js';
import type {
  EmbedResult,
  GenerateChunk,
  GenerateRequest,
  RankResult,
  WorkerHandle,
  WorkerHeartbeat,
  WorkerInfo,
  WorkerInit,
} from '../types.js';
import { createChannel, type Channel } from './channel.js';
import {
  embedTextsSchema,
  generateRequestSchema,
  parseChildMessage,
  rankRequestSchema,
  WORKER_INIT_ENV,
  type ChildInit,
  type ChildMessage,
  type ParentMessage,
} from './protocol.js';
import { compiled } from '../../shared/compiled-schema.js';

const DEFAULT_READY_TIMEOUT_MS = 60_000;
const DEFAULT_STOP_TIMEOUT_MS = 5_000;
const STDERR_TAIL_BYTES = 8 * 1024;

type ExitInfo = { code: number | null; signal: NodeJS.Signals | null };

/**
 * Where the worker's entry point is and how to run it: compiled `entry.js` next to this file in
 * dist/, or `entry.ts` through tsx when this module itself runs from sources (vitest, tsx).
 */
function resolveEntry(): { path: string; execArgv: string[] } {
  const self = fileURLToPath(import.meta.url);
  if (self.endsWith('.ts')) {
    return {
      path: fileURLToPath(new URL('./entry.ts', import.meta.url)),
      execArgv: ['--import', resolveTsx()],
    };
  }
  return { path: fileURLToPath(new URL('./entry.js', import.meta.url)), execArgv: [] };
}

function resolveTsx(): string {
  // An absolute URL works whatever the hive's working directory is; the bare name is the fallback.
  try {
    return import.meta.resolve('tsx');
  } catch {
    return 'tsx';
  }
}

/** One line a person can read: `path: message` per issue (custom issues already name their field). */
function describeIssues(issues: readonly { code: string; path: PropertyKey[]; message: string }[]): string {
  return issues
    .map((issue) =>
      issue.code === 'custom' || issue.path.length === 0
        ? issue.message
        : `${issue.path.map(String).join('.')}: ${issue.message}`,
    )
    .join('; ');
}

function toChildInit(init: WorkerInit): ChildInit {
  const slots = init.slots ?? 1;
  if (!Number.isInteger(slots) || slots < 1)
    throw new RbeeError('CONFIG_INVALID', `slots must be ≥ 1, got ${slots}`);
  const child: ChildInit = {
    id: randomUUID(),
    modelPath: init.modelPath,
    slots,
    backend: init.backend ?? 'cpu',
    device: init.device ?? 0,
    maxQueue: init.maxQueue ?? 2 * slots,
    heartbeatIntervalMs: init.heartbeatIntervalMs ?? 1000,
  };
  if (init.contextSize !== undefined) child.contextSize = init.contextSize;
  if (init.threads !== undefined) child.threads = init.threads;
  if (init.prefixReuse !== undefined) child.prefixReuse = init.prefixReuse;
  if (init.flashAttention !== undefined) child.flashAttention = init.flashAttention;
  if (init.binary !== undefined && child.backend === 'cpu') {
    child.binary = init.binary.binary;
    child.binaryWhy = init.binary.why;
  }
  return child;
}

/** Starts a worker process and resolves once its model is loaded and its slots are ready. */
export async function spawnWorker(init: WorkerInit): Promise<WorkerHandle> {
  if (init.signal?.aborted === true) {
    throw new RbeeError('JOB_CANCELLED', 'worker start cancelled', { cause: init.signal.reason });
  }
  const childInit = toChildInit(init);
  const env: NodeJS.ProcessEnv = { ...process.env, [WORKER_INIT_ENV]: JSON.stringify(childInit) };
  // llama.cpp has no device index option: the GPU runtimes' own visibility variables select one.
  if (childInit.backend === 'cuda') env.CUDA_VISIBLE_DEVICES = String(childInit.device);
  if (childInit.backend === 'vulkan') env.GGML_VK_VISIBLE_DEVICES = String(childInit.device);
  const entry = resolveEntry();
  const child = fork(entry.path, [], {
    execArgv: entry.execArgv,
    env,
    stdio: ['ignore', init.logFile === undefined ? 'ignore' : 'pipe', 'pipe', 'ipc'],
    serialization: 'json',
  });

  let stderrTail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (text: string) => {
    stderrTail = (stderrTail + text).slice(-STDERR_TAIL_BYTES);
  });
  const logStream = openLog(init.logFile);
  if (logStream !== undefined) {
    child.stdout?.pipe(logStream, { end: false });
    child.stderr?.pipe(logStream, { end: false });
  }

  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('close', (code, signal) => {
      logStream?.end();
      resolve({ code, signal });
    });
  });
  // A failed spawn (no node binary, EAGAIN) still ends in 'close'; this only keeps it from throwing.
  child.on('error', () => undefined);

  try {
    const info = await waitForReady(child, init, exited, () => stderrTail);
    return createHandle(child, info, init, exited);
  } catch (error) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
    throw error;
  }
}

function openLog(path: string | undefined): WriteStream | undefined {
  if (path === undefined) return undefined;
  mkdirSync(dirname(path), { recursive: true });
  // a worker's log is appended to at each start: rotated by size then (llama.cpp says most at load)
  rotateIfLarge(path);
  const stream = createWriteStream(path, { flags: 'a' });
  // A broken log file must not take the hive down; the worker keeps running without it.
  stream.on('error', () => undefined);
  return stream;
}

async function waitForReady(
  child: ChildProcess,
  init: WorkerInit,
  exited: Promise<ExitInfo>,
  stderrTail: () => string,
): Promise<WorkerInfo> {
  const timeoutMs = init.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const signals = [AbortSignal.timeout(timeoutMs), ...(init.signal === undefined ? [] : [init.signal])];
  const signal = AbortSignal.any(signals);
  const { promise, resolve, reject } = Promise.withResolvers<WorkerInfo>();
  let reported: RbeeError | undefined;
  const onMessage = (raw: unknown): void => {
    const message = parseChildMessage(raw);
    if (message?.type === 'ready') resolve(message.info);
    // The worker says why it could not start; it exits right after, and the exit rejects below.
    if (message?.type === 'error' && message.requestId === undefined) {
      reported = new RbeeError(message.error.code, message.error.message);
    }
  };
  const onAbort = (): void => {
    if (init.signal?.aborted === true) {
      reject(new RbeeError('JOB_CANCELLED', 'worker start cancelled', { cause: init.signal.reason }));
    } else {
      reject(failure('WORKER_START_FAILED', `worker not ready after ${timeoutMs} ms`, stderrTail()));
    }
  };
  child.on('message', onMessage);
  signal.addEventListener('abort', onAbort, { once: true });
  void exited.then(({ code, signal: sig }) => {
    const how = sig === null ? `code ${code}` : `signal ${sig}`;
    reject(
      reported === undefined
        ? failure(
            'WORKER_START_FAILED',
            `worker exited before ready (${how})${lastLine(stderrTail())}`,
            stderrTail(),
          )
        : failure(reported.code, reported.message, stderrTail()),
    );
  });
  try {
    return await promise;
  } finally {
    child.off('message', onMessage);
    signal.removeEventListener('abort', onAbort);
  }
}

/** The last line the worker wrote, for a start error a person can act on without opening a log. */
function lastLine(text: string): string {
  const line = text.trimEnd().split('\n').at(-1)?.trim();
  return line === undefined || line === '' ? '' : `: ${line.slice(0, 300)}`;
}

function failure(code: RbeeError['code'], message: string, stderrTail: string): RbeeError {
  return new RbeeError(code, message, { details: { stderrTail } });
}

function createHandle(
  child: ChildProcess,
  readyInfo: WorkerInfo,
  init: WorkerInit,
  exited: Promise<ExitInfo>,
): WorkerHandle {
  const info: WorkerInfo = { ...readyInfo };
  const pending = new Map<string, Channel>();
  const pendingEmbeds = new Map<
    string,
    { resolve: (result: EmbedResult) => void; reject: (error: RbeeError) => void }
  >();
  const pendingRanks = new Map<
    string,
    { resolve: (result: RankResult) => void; reject: (error: RbeeError) => void }
  >();
  const pendingCounts = new Map<
    string,
    { resolve: (promptTokens: number) => void; reject: (error: RbeeError) => void }
  >();
  let lastHeartbeat: WorkerHeartbeat | undefined;
  let invalidMessages = 0;
  let exitInfo: ExitInfo | undefined;
  let stopping = false;

  const sendSafe = (message: ParentMessage): void => {
    if (!child.connected) return;
    // The callback swallows EPIPE-style errors: the 'close' handler reports the death instead.
    child.send(message, () => undefined);
  };

  const refreshState = (): void => {
    if (exitInfo !== undefined) info.state = 'exited';
    else if (stopping) info.state = 'stopping';
    else info.state = pending.size > 0 ? 'busy' : 'idle';
  };

  const onMessage = (raw: unknown): void => {
    const message = parseChildMessage(raw);
    if (message === undefined) {
      invalidMessages += 1;
      return;
    }
    handleMessage(message);
  };

  function handleMessage(message: ChildMessage): void {
    switch (message.type) {
      case 'token': {
        if (message.logprobs === undefined && message.promptTokens === undefined) {
          pending.get(message.requestId)?.push({ type: 'token', text: message.text, tokens: message.tokens });
          return;
        }
        // a first token (with the prompt's size) or one with logprobs: every field it has
        const { type: _type, requestId, ...token } = message;
        pending.get(requestId)?.push({ type: 'token', ...token });
        return;
      }
      case 'done': {
        const { type: _type, requestId, ...rest } = message;
        pending.get(requestId)?.push({ type: 'done', ...rest });
        return;
      }
      case 'prompt_tokens':
        pendingCounts.get(message.requestId)?.resolve(message.promptTokens);
        return;
      case 'embeddings':
        pendingEmbeds.get(message.requestId)?.resolve({
          embeddings: message.embeddings,
          promptTokens: message.promptTokens,
        });
        return;
      case 'ranking':
        pendingRanks.get(message.requestId)?.resolve({
          scores: message.scores,
          promptTokens: message.promptTokens,
        });
        return;
      case 'error':
        if (message.requestId !== undefined) {
          const error = new RbeeError(message.error.code, message.error.message);
          pending.get(message.requestId)?.fail(error);
          pendingEmbeds.get(message.requestId)?.reject(error);
          pendingRanks.get(message.requestId)?.reject(error);
          pendingCounts.get(message.requestId)?.reject(error);
        }
        return;
      case 'heartbeat': {
        const { type: _type, ...heartbeat } = message;
        lastHeartbeat = heartbeat;
        info.memoryBytes = heartbeat.memoryBytes;
        if (!stopping && exitInfo === undefined) info.state = heartbeat.state;
        init.onHeartbeat?.(heartbeat);
        return;
      }
      case 'ready':
        return;
    }
  }

  child.on('message', onMessage);
  void exited.then((result) => {
    exitInfo = result;
    child.off('message', onMessage);
    init.signal?.removeEventListener('abort', onLifetimeAbort);
    const how = result.signal === null ? `code ${result.code}` : `signal ${result.signal}`;
    for (const channel of pending.values()) {
      channel.fail(new RbeeError('WORKER_CRASHED', `worker ${info.pid} exited mid-stream (${how})`));
    }
    pending.clear();
    for (const waiter of pendingEmbeds.values()) {
      waiter.reject(new RbeeError('WORKER_CRASHED', `worker ${info.pid} exited during embedding (${how})`));
    }
    pendingEmbeds.clear();
    for (const waiter of pendingRanks.values()) {
      waiter.reject(new RbeeError('WORKER_CRASHED', `worker ${info.pid} exited during ranking (${how})`));
    }
    pendingRanks.clear();
    for (const waiter of pendingCounts.values()) {
      waiter.reject(
        new RbeeError('WORKER_CRASHED', `worker ${info.pid} exited while counting tokens (${how})`),
      );
    }
    pendingCounts.clear();
    refreshState();
  });

  async function* generate(
    request: GenerateRequest,
    options: { signal?: AbortSignal } = {},
  ): AsyncGenerator<GenerateChunk, void, undefined> {
    const parsed = compiled(generateRequestSchema).safeParse(request);
    if (!parsed.success) throw new RbeeError('BAD_REQUEST', describeIssues(parsed.error.issues));
    const { signal } = options;
    if (signal?.aborted === true) throw new RbeeError('JOB_CANCELLED', 'cancelled', { cause: signal.reason });
    if (exitInfo !== undefined) throw new RbeeError('WORKER_CRASHED', `worker ${info.pid} has exited`);
    if (stopping) throw new RbeeError('WORKER_BUSY', `worker ${info.pid} is stopping`);
    const requestId = randomUUID();
    const channel = createChannel();
    let settled = false;
    const onAbort = (): void => {
      settled = true;
      sendSafe({ type: 'cancel', requestId });
      pending.delete(requestId);
      channel.fail(new RbeeError('JOB_CANCELLED', 'cancelled', { cause: signal?.reason }));
      refreshState();
    };
    pending.set(requestId, channel);
    signal?.addEventListener('abort', onAbort, { once: true });
    refreshState();
    try {
      sendSafe({ type: 'generate', requestId, request: parsed.data });
      for (;;) {
        const chunk = await channel.next();
        if (chunk.type === 'done') settled = true;
        yield chunk;
        if (chunk.type === 'done') return;
      }
    } catch (error) {
      settled = true;
      throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      pending.delete(requestId);
      // The consumer stopped reading early (break, return): free the slot in the worker too.
      if (!settled) sendSafe({ type: 'cancel', requestId });
      refreshState();
    }
  }

  async function embed(texts: string[], options: { signal?: AbortSignal } = {}): Promise<EmbedResult> {
    const parsed = embedTextsSchema.safeParse(texts);
    if (!parsed.success) {
      throw new RbeeError('BAD_REQUEST', `invalid texts to embed: ${describeIssues(parsed.error.issues)}`);
    }
    const { signal } = options;
    if (signal?.aborted === true) throw new RbeeError('JOB_CANCELLED', 'cancelled', { cause: signal.reason });
    if (exitInfo !== undefined) throw new RbeeError('WORKER_CRASHED', `worker ${info.pid} has exited`);
    if (stopping) throw new RbeeError('WORKER_BUSY', `worker ${info.pid} is stopping`);
    const requestId = randomUUID();
    const { promise, resolve, reject } = Promise.withResolvers<EmbedResult>();
    const onAbort = (): void => {
      sendSafe({ type: 'cancel', requestId });
      reject(new RbeeError('JOB_CANCELLED', 'cancelled', { cause: signal?.reason }));
    };
    pendingEmbeds.set(requestId, { resolve, reject });
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      sendSafe({ type: 'embed', requestId, texts: parsed.data });
      return await promise;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      pendingEmbeds.delete(requestId);
    }
  }

  async function rank(
    query: string,
    documents: string[],
    options: { signal?: AbortSignal } = {},
  ): Promise<RankResult> {
    const parsed = rankRequestSchema.safeParse({ query, documents });
    if (!parsed.success) {
      throw new RbeeError('BAD_REQUEST', `invalid rank request: ${describeIssues(parsed.error.issues)}`);
    }
    const { signal } = options;
    if (signal?.aborted === true) throw new RbeeError('JOB_CANCELLED', 'cancelled', { cause: signal.reason });
    if (exitInfo !== undefined) throw new RbeeError('WORKER_CRASHED', `worker ${info.pid} has exited`);
    if (stopping) throw new RbeeError('WORKER_BUSY', `worker ${info.pid} is stopping`);
    const requestId = randomUUID();
    const { promise, resolve, reject } = Promise.withResolvers<RankResult>();
    const onAbort = (): void => {
      sendSafe({ type: 'cancel', requestId });
      reject(new RbeeError('JOB_CANCELLED', 'cancelled', { cause: signal?.reason }));
    };
    pendingRanks.set(requestId, { resolve, reject });
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      sendSafe({ type: 'rank', requestId, ...parsed.data });
      return await promise;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      pendingRanks.delete(requestId);
    }
  }

  async function countTokens(request: GenerateRequest): Promise<number> {
    const parsed = compiled(generateRequestSchema).safeParse(request);
    if (!parsed.success) throw new RbeeError('BAD_REQUEST', describeIssues(parsed.error.issues));
    if (exitInfo !== undefined) throw new RbeeError('WORKER_CRASHED', `worker ${info.pid} has exited`);
    if (stopping) throw new RbeeError('WORKER_BUSY', `worker ${info.pid} is stopping`);
    const requestId = randomUUID();
    const { promise, resolve, reject } = Promise.withResolvers<number>();
    pendingCounts.set(requestId, { resolve, reject });
    try {
      sendSafe({ type: 'count_tokens', requestId, request: parsed.data });
      return await promise;
    } finally {
      pendingCounts.delete(requestId);
    }
  }

  async function stop(options: { timeoutMs?: number } = {}): Promise<void> {
    if (exitInfo === undefined) {
      stopping = true;
      refreshState();
      if (child.connected) sendSafe({ type: 'shutdown' });
      else child.kill('SIGKILL');
      const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    }
  }

  function onLifetimeAbort(): void {
    void stop();
  }
  init.signal?.addEventListener('abort', onLifetimeAbort, { once: true });

  return {
    info,
    exited,
    generate,
    embed,
    rank,
    countTokens,
    stop,
    get lastHeartbeat() {
      return lastHeartbeat;
    },
    get invalidMessages() {
      return invalidMessages;
    },
  };
}
