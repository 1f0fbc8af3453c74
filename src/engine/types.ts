/**
 * The engine's public contract: what a hive needs from a worker process, whatever runs inside it.
 */
import type { ChatMessage, FinishReason, Sampling, Usage } from '../shared/wire.js';

export type WorkerState = 'loading' | 'idle' | 'busy' | 'stopping' | 'exited';

export interface WorkerInit {
  /** Absolute path of the GGUF file to load. */
  modelPath: string;
  /** Concurrent sequences (slots). Defaults to 1. */
  slots?: number;
  /** Context size per slot, in tokens. Defaults to min(model's context length, 4096). */
  contextSize?: number;
  /** CPU threads. Defaults to the number of physical cores, never the library default. */
  threads?: number;
  /** 'cpu' (default) or a GPU backend name; a GPU that is not available is an error. */
  backend?: 'cpu' | 'cuda' | 'vulkan' | 'metal';
  /** Device index for GPU backends. Defaults to 0. */
  device?: number;
  /** How long to wait for the worker to report ready. Defaults to 60 s. */
  readyTimeoutMs?: number;
  /** Where the worker's own stderr goes (llama.cpp logs). Defaults to the parent's log stream being discarded. */
  logFile?: string;
  signal?: AbortSignal;
}

export interface GenerateRequest extends Sampling {
  /** Raw completion: the prompt is evaluated as is, no chat template. */
  prompt?: string;
  /** Chat: rendered with the model's own chat template. */
  messages?: ChatMessage[];
}

export type GenerateChunk =
  | { type: 'token'; text: string }
  | {
      type: 'done';
      finishReason: FinishReason;
      usage: Usage;
      /** Measured inside the worker: first token after the request arrived, and generation speed. */
      timeToFirstTokenMs: number;
      tokensPerSecond: number;
    };

export interface WorkerInfo {
  id: string;
  pid: number;
  modelPath: string;
  backend: string;
  device: number;
  slots: number;
  contextSize: number;
  threads: number;
  state: WorkerState;
  /** Resident memory of the worker process after loading, in bytes. */
  memoryBytes: number;
  loadMs: number;
}

export interface WorkerHandle {
  readonly info: WorkerInfo;
  /**
   * Streams one generation. Ends after a `done` chunk. Throws RbeeError WORKER_CRASHED if the
   * process dies mid-stream, JOB_CANCELLED if `signal` aborts (the slot is freed at once).
   */
  generate(request: GenerateRequest, options?: { signal?: AbortSignal }): AsyncIterable<GenerateChunk>;
  /** Asks the worker to exit; SIGKILL after `timeoutMs` (default 5 s). Resolves once the process is gone. */
  stop(options?: { timeoutMs?: number }): Promise<void>;
  /** Resolves when the process has exited, for whatever reason. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}
