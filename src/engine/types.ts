/**
 * The engine's public contract: what a hive needs from a worker process, whatever runs inside it.
 */
import type { PrefixKey } from '../shared/prefix.js';
import type {
  ChatMessage,
  FinishReason,
  PromptSize,
  Sampling,
  TokenLogprob,
  Tool,
  Usage,
} from '../shared/wire.js';

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
  backend?: Backend;
  /** Device index for GPU backends. Defaults to 0. */
  device?: number;
  /** How long to wait for the worker to report ready. Defaults to 60 s. */
  readyTimeoutMs?: number;
  /** Where the worker's own stderr goes (llama.cpp logs). Defaults to the parent's log stream being discarded. */
  logFile?: string;
  /** Requests waiting for a free slot before new ones are refused with WORKER_BUSY. Defaults to 2 × slots. */
  maxQueue?: number;
  /**
   * Keep each slot's tokens (its KV cache) after a request, send a request to the free slot that
   * keeps the longest prefix of its prompt, and evaluate only the rest. Defaults to true; false
   * clears a slot after every request (the baseline that `npm run bench:prefix` compares with).
   */
  prefixReuse?: boolean;
  /**
   * Flash attention on or off. Defaults to off on the CPU and to llama.cpp's choice on a GPU. On the
   * CPU it computes a batch of a few tokens differently from a batch of many, so a prompt evaluated
   * partly from a kept cache (or a stream continued on another worker) can get slightly different
   * logits than the same tokens evaluated whole, and a near-tie can then go the other way; off, the
   * CPU gives the same logits however a prompt is split (see docs/benchmarks.md, bench:prefix).
   */
  flashAttention?: boolean;
  /**
   * The llama.cpp binary a CPU worker loads: the prebuilt one (the default) or the native build,
   * with the reason (binary-choice.ts). A native build that does not load falls back to the
   * prebuilt one with a warning, never a failed start. GPU workers ignore it.
   */
  binary?: { binary: 'native' | 'prebuilt'; why: string };
  /** How often the worker reports its state. Defaults to 1000 ms. */
  heartbeatIntervalMs?: number;
  /** Called with every heartbeat the worker sends. */
  onHeartbeat?: (heartbeat: WorkerHeartbeat) => void;
  /** Aborting it before ready cancels the start; after ready it stops the worker. */
  signal?: AbortSignal;
}

/** What a worker reports about itself about once a second. */
export interface WorkerHeartbeat {
  state: WorkerState;
  slotsBusy: number;
  slotsTotal: number;
  /** Requests waiting for a slot. */
  queueDepth: number;
  /** Resident memory of the worker process, in bytes. */
  memoryBytes: number;
  /** Completion tokens per second over all slots since the previous heartbeat. */
  tokensPerSecond: number;
  /** Messages from the parent that failed validation and were dropped. */
  invalidMessages: number;
  /** What each slot keeps in its KV cache, in slot order: where a prompt's prefix is cached. */
  slotCache: SlotCache[];
}

/**
 * One slot's KV cache as its heartbeat reports it. A scheduler that wants a prompt to land where
 * its first tokens are cached computes the prompt's keys (shared/prefix.ts: `cachedTokensFor`)
 * and prefers the worker, and the free slot, whose `prefixes` match the most tokens.
 */
export interface SlotCache {
  /** A request is running on the slot (its prefixes are then empty until it ends). */
  busy: boolean;
  /** Tokens the slot's cache holds. */
  tokens: number;
  /**
   * Keys of prompts whose start those tokens are, with how many tokens each covers: after a chat,
   * its first message, its messages, and its messages with the answer (the next turn's prefix);
   * after a raw prompt, the prompt and the prompt with the answer. Empty when reuse is off.
   */
  prefixes: PrefixKey[];
}

export interface GenerateRequest extends Sampling {
  /** Raw completion: the prompt is evaluated as is, no chat template. */
  prompt?: string;
  /** Chat: rendered with the model's own chat template. */
  messages?: ChatMessage[];
  /** Functions the chat template presents to the model (chat only). */
  tools?: Tool[];
  /**
   * How many recent tokens repeatPenalty, presencePenalty and frequencyPenalty look at. 0 turns all
   * three off. Defaults to 64 (llama.cpp's and node-llama-cpp's default).
   */
  repeatLastTokens?: number;
}

export type GenerateChunk =
  /**
   * `tokens`: the generated tokens this text covers (their ids); `logprobs`, one per token, only
   * when the request asked for them.
   */
  | ({ type: 'token'; text: string; tokens: number[]; logprobs?: TokenLogprob[] } & PromptSize)
  | {
      type: 'done';
      finishReason: FinishReason;
      usage: Usage;
      /** Measured inside the worker: first token after the request arrived, and generation speed. */
      timeToFirstTokenMs: number;
      tokensPerSecond: number;
      /** The request's stop string that ended the answer, when one did. */
      stopSequence?: string;
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
  /** Resident memory of the worker process after loading, in bytes (updated by every heartbeat). */
  memoryBytes: number;
  /**
   * What the GGUF says this worker needs (weights + KV cache and compute buffers, RAM and VRAM
   * together), from the same estimate as estimateWorkerMemory. Excludes the process's own baseline
   * (Node and the llama.cpp runtime), which memoryBytes includes.
   */
  estimatedBytes: number;
  loadMs: number;
  /** The llama.cpp binary it runs and why (absent from workers of older versions). */
  binary?: WorkerBinary;
  /** Whether its context uses flash attention (absent from workers of older versions). */
  flashAttention?: boolean;
}

/** Which llama.cpp binary a worker loaded, as a person reads it, and why that one. */
export interface WorkerBinary {
  /** `native`: built here for this CPU; `prebuilt`: from npm; `localBuild`: another build made here. */
  kind: 'native' | 'prebuilt' | 'localBuild';
  /** e.g. "prebuilt cpu (haswell variant)", "native build v0.5.0", "prebuilt cuda". */
  label: string;
  why: string;
}

export interface EmbedResult {
  /** One L2-normalised vector per input text, in input order, each of the model's embedding size. */
  embeddings: number[][];
  /** Tokens evaluated over all texts (including the BOS/EOS tokens that embedding adds). */
  promptTokens: number;
}

export interface RankResult {
  /** Each document's relevance to the query, from 0 to 1, in the documents' order. */
  scores: number[];
  /** Tokens evaluated over all (query, document) pairs, with the tokens that join them. */
  promptTokens: number;
}

/** What a worker for a model needs in memory, estimated from the GGUF header alone. */
export interface MemoryEstimate {
  /** Model weights (in RAM on CPU; the offloaded part is in VRAM). */
  weightsBytes: number;
  /** KV cache of all slots plus llama.cpp's compute and output buffers. */
  kvCacheBytes: number;
  /** weightsBytes + kvCacheBytes. */
  totalBytes: number;
  /** The part of totalBytes that lives in GPU memory: 0 when nothing is offloaded. */
  vramBytes: number;
}

export interface WorkerHandle {
  readonly info: WorkerInfo;
  /**
   * Streams one generation. Ends after a `done` chunk. Throws RbeeError WORKER_CRASHED if the
   * process dies mid-stream, JOB_CANCELLED if `signal` aborts (the slot is freed at once).
   */
  generate(request: GenerateRequest, options?: { signal?: AbortSignal }): AsyncIterable<GenerateChunk>;
  /**
   * Embeds texts on a separate embedding context that the worker creates on first use. Throws
   * EMBEDDINGS_UNSUPPORTED when the model cannot embed, BAD_REQUEST for an empty text or one longer
   * than the context, JOB_CANCELLED if `signal` aborts, WORKER_CRASHED if the process dies.
   */
  embed(texts: string[], options?: { signal?: AbortSignal }): Promise<EmbedResult>;
  /**
   * Scores each document's relevance to the query (0 to 1, in the documents' order) on a ranking
   * context that the worker creates on first use. Throws MODEL_CANNOT_RANK when the model is not a
   * reranker, BAD_REQUEST for a pair longer than the context, JOB_CANCELLED if `signal` aborts,
   * WORKER_CRASHED if the process dies.
   */
  rank(query: string, documents: string[], options?: { signal?: AbortSignal }): Promise<RankResult>;
  /**
   * The request's prompt size in tokens (its chat template and tools included), as a generation
   * would report it in usage.promptTokens; nothing is generated. Throws BAD_REQUEST for an invalid
   * request, WORKER_CRASHED if the process dies.
   */
  countTokens(request: GenerateRequest): Promise<number>;
  /** Asks the worker to exit; SIGKILL after `timeoutMs` (default 5 s). Resolves once the process is gone. */
  stop(options?: { timeoutMs?: number }): Promise<void>;
  /** Resolves when the process has exited, for whatever reason. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The most recent heartbeat, if one has arrived. */
  readonly lastHeartbeat: WorkerHeartbeat | undefined;
  /** Messages from the worker that failed validation and were dropped. */
  readonly invalidMessages: number;
}

export type Backend = 'cpu' | 'cuda' | 'vulkan' | 'metal';

export interface GpuDevice {
  index: number;
  name: string;
  backend: Exclude<Backend, 'cpu'>;
  /** Per-device VRAM is only known when the backend sees a single device. */
  vramTotalBytes?: number;
  vramFreeBytes?: number;
}

/** What this machine can run inference on. */
export interface DeviceInfo {
  cpu: { model: string; arch: string; physicalCores: number; logicalCores: number };
  memory: { totalBytes: number; freeBytes: number };
  gpus: GpuDevice[];
  /** VRAM over all devices of the GPU backend in use; absent without a GPU. */
  vram?: { totalBytes: number; freeBytes: number };
  /** Backends a worker can start with here; always includes 'cpu'. */
  backends: Backend[];
  /** Why GPU probing failed, when it did (the machine is then reported as CPU only). */
  gpuProbeError?: string;
}
