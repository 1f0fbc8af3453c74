/**
 * Shapes that cross a process boundary between the keeper (CLI/TUI) and a node's HTTP API.
 * The same events are the SSE stream, the NDJSON of `--json`, and what the TUI renders.
 */
import { z } from 'zod';
import { ERROR_CODES, type ErrorCode } from './errors.js';

/** A function call an assistant message made: its arguments as the JSON text the model wrote. */
export const toolCallSchema = z.object({
  id: z.string().min(1).max(256),
  name: z.string().min(1).max(256),
  arguments: z.string().max(1_000_000),
});
export type ToolCall = z.infer<typeof toolCallSchema>;

export const chatMessageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string(),
  /** An assistant message's function calls; their results follow as `tool` messages. */
  toolCalls: z.array(toolCallSchema).max(128).optional(),
  /** A `tool` message's answer to the call with this id. */
  toolCallId: z.string().min(1).max(256).optional(),
});
export type ChatMessage = z.infer<typeof chatMessageSchema>;

/** A function the model may call: its parameters as a JSON schema (an object's). */
export const toolSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  description: z.string().max(10_000).optional(),
  parameters: z.record(z.string(), z.unknown()).optional(),
});
export type Tool = z.infer<typeof toolSchema>;

/** Sampling and limits shared by the job API, the engine and (later) the OpenAI API. */
export const samplingSchema = z.object({
  maxTokens: z.number().int().positive().max(1_000_000).optional(),
  temperature: z.number().min(0).max(5).optional(),
  topP: z.number().gt(0).max(1).optional(),
  topK: z.number().int().min(0).optional(),
  minP: z.number().min(0).max(1).optional(),
  seed: z.number().int().min(0).optional(),
  stop: z.array(z.string().min(1)).max(16).optional(),
  /** Multiplies down recently generated tokens: 1 is off (the default), 1.1 is typical. */
  repeatPenalty: z.number().gt(0).max(2).optional(),
  /** OpenAI's ranges: subtracted once for a token seen recently (presence), or per time seen (frequency). */
  presencePenalty: z.number().min(-2).max(2).optional(),
  frequencyPenalty: z.number().min(-2).max(2).optional(),
  /**
   * OpenAI's logit_bias: token id → a bias from -100 to 100 added to its logit before sampling
   * (-100 bans the token). Ids are the model's own.
   */
  logitBias: z
    .record(z.string().regex(/^\d{1,9}$/), z.number().min(-100).max(100))
    .refine((bias) => Object.keys(bias).length <= 1024, { message: 'at most 1024 biased tokens' })
    .optional(),
  /** A GBNF grammar that the output must match. At most one of grammar and jsonSchema. */
  grammar: z.string().min(1).max(100_000).optional(),
  /** A JSON schema that the output must match, enforced by a grammar built from it. */
  jsonSchema: z.record(z.string(), z.unknown()).optional(),
  /**
   * The answer so far, as token ids, to be continued token for token: a job whose worker died
   * mid-stream goes on elsewhere from its prompt plus the tokens already sent (set by the router).
   */
  continueTokens: z.array(z.number().int().min(0)).max(1_000_000).optional(),
  /**
   * Report each generated token's log probability, with this many of the most likely tokens at its
   * place (0–20). Absent: no log probabilities, and token events carry none.
   */
  logprobs: z.number().int().min(0).max(20).optional(),
});
export type Sampling = z.infer<typeof samplingSchema>;

/** Bounds of a job's `contextSize`: below 64 tokens a chat template leaves no room for a prompt. */
export const MIN_CONTEXT_SIZE = 64;
export const MAX_CONTEXT_SIZE = 1_048_576;

export const jobRequestSchema = samplingSchema
  .extend({
    model: z.string().min(1).max(2048),
    /** A user message, rendered with the model's chat template; with `raw`, evaluated as is. */
    prompt: z.string().optional(),
    raw: z.boolean().optional(),
    /** How long the worker stays loaded after this job: seconds or "5m"; 0 unloads at once, -1 never. */
    keepAlive: z.union([z.number(), z.string().max(32)]).optional(),
    /**
     * The least context, in tokens per slot, the job's worker must have (Ollama's `num_ctx`). A
     * worker of the model with less is reloaded with this much once its running jobs are done; one
     * with more serves the job as it is. Absent: whatever context the worker has.
     */
    contextSize: z.number().int().min(MIN_CONTEXT_SIZE).max(MAX_CONTEXT_SIZE).optional(),
    messages: z.array(chatMessageSchema).min(1).optional(),
    system: z.string().optional(),
    /**
     * Functions the chat template presents to the model. A job with tools is retried on another
     * worker before its first token only: a call cut mid-stream is not continued.
     */
    tools: z.array(toolSchema).min(1).max(128).optional(),
    /** Run on this hive (its name or id) instead of where the queen would place the job. */
    hive: z.string().min(1).max(256).optional(),
    /** Interactive jobs (the default) go before batch jobs in the queen's queue. */
    priority: z.enum(['interactive', 'batch']).optional(),
    /**
     * An embedding job: these texts' vectors instead of a generation (no prompt or messages). Its
     * `done` carries them; it has no tokens. Bounds as the worker's (MAX_EMBED_TEXTS and chars).
     */
    embed: z.array(z.string().min(1).max(1_000_000)).min(1).max(2048).optional(),
    /**
     * A ranking job: each document's relevance to the query (a reranker's scores) instead of a
     * generation. Its `done` carries them as `scores`; it has no tokens. Bounds as embed's.
     */
    rank: z
      .object({
        query: z.string().min(1).max(1_000_000),
        documents: z.array(z.string().min(1).max(1_000_000)).min(1).max(2048),
      })
      .optional(),
  })
  .refine(
    (r) =>
      [
        r.prompt !== undefined || r.messages !== undefined,
        r.embed !== undefined,
        r.rank !== undefined,
      ].filter(Boolean).length === 1,
    {
      message:
        'either prompt or messages is required, or embed (texts) alone for an embedding job, or rank (query, documents) alone for a ranking job',
    },
  );
export type JobRequest = z.infer<typeof jobRequestSchema>;

/** A token as its text, and the log of its probability (see TokenLogprob). */
export const tokenChoiceSchema = z.object({ token: z.string(), logprob: z.number() });
/**
 * One generated token's log probability and, when asked for, the most likely tokens at its place,
 * most likely first. The probabilities are those the sampler drew from: the model's distribution
 * after logit bias, penalties, top-k/top-p/min-p and temperature (at temperature 0, the model's
 * own softmax, whose most likely token is the one picked).
 */
export const tokenLogprobSchema = tokenChoiceSchema.extend({
  top: z.array(tokenChoiceSchema).max(20).optional(),
});
export type TokenLogprob = z.infer<typeof tokenLogprobSchema>;

export const narrationSourceSchema = z.enum(['keeper', 'queen', 'hive', 'worker']);
export type NarrationSource = z.infer<typeof narrationSourceSchema>;

export const progressSchema = z.object({
  bytes: z.number(),
  totalBytes: z.number().optional(),
  bytesPerSecond: z.number().optional(),
  etaSeconds: z.number().optional(),
});
export type Progress = z.infer<typeof progressSchema>;

export const finishReasonSchema = z.enum(['stop', 'length', 'cancelled', 'error']);
export type FinishReason = z.infer<typeof finishReasonSchema>;

export const usageSchema = z.object({
  /** The whole prompt, whether or not part of it was cached. */
  promptTokens: z.number().int(),
  completionTokens: z.number().int(),
  /**
   * The prompt's first tokens that the worker found in its slot's KV cache (a previous request
   * left them there) and did not evaluate again; absent where nothing reports it.
   */
  cachedPromptTokens: z.number().int().min(0).optional(),
});
export type Usage = z.infer<typeof usageSchema>;

export const timingsSchema = z.object({
  /** From the job's acceptance to its first token, including load and download. */
  timeToFirstTokenMs: z.number(),
  /** Completion tokens per second, measured from the first token to the last. */
  tokensPerSecond: z.number(),
  totalMs: z.number(),
  /**
   * The part of it the job waited for a worker to load its model (absent when one was loaded):
   * Ollama's load_duration.
   */
  loadMs: z.number().min(0).optional(),
});
export type Timings = z.infer<typeof timingsSchema>;

const errorCodeSchema = z.custom<ErrorCode>((v) => typeof v === 'string' && Object.hasOwn(ERROR_CODES, v));
export const errorJsonSchema = z.object({
  code: errorCodeSchema,
  message: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});

/**
 * On a generation's first token only: the prompt's size, known before that token (as `done`'s
 * usage.promptTokens and usage.cachedPromptTokens will say), for APIs that report it at the start.
 */
export const promptSizeFields = {
  promptTokens: z.number().int().min(0).optional(),
  cachedPromptTokens: z.number().int().min(0).optional(),
};
export interface PromptSize {
  promptTokens?: number;
  cachedPromptTokens?: number;
}

const base = { ts: z.number(), jobId: z.string() };

export const jobEventSchema = z.discriminatedUnion('type', [
  z.object({
    ...base,
    type: z.literal('narration'),
    source: narrationSourceSchema,
    node: z.string(),
    text: z.string(),
    progress: progressSchema.optional(),
  }),
  z.object({
    ...base,
    type: z.literal('token'),
    text: z.string(),
    /** Only when the job asked for `logprobs`: one entry per token the text covers. */
    logprobs: z.array(tokenLogprobSchema).optional(),
    ...promptSizeFields,
  }),
  z.object({
    ...base,
    type: z.literal('done'),
    finishReason: finishReasonSchema,
    /** Which of the request's `stop` strings ended the answer, when one did. */
    stopSequence: z.string().optional(),
    usage: usageSchema,
    timings: timingsSchema,
    model: z.string(),
    /** An embedding job's vectors: one per text, in the texts' order (see `embed`). */
    embeddings: z.array(z.array(z.number())).optional(),
    /** A ranking job's scores, 0 to 1: one per document, in the documents' order (see `rank`). */
    scores: z.array(z.number()).optional(),
  }),
  z.object({ ...base, type: z.literal('error'), error: errorJsonSchema }),
]);
export type JobEvent = z.infer<typeof jobEventSchema>;
/** An event as a job emits it, before the entry node stamps `ts` and `jobId`. */
export type JobEventInput = JobEvent extends infer E
  ? E extends JobEvent
    ? Omit<E, 'ts' | 'jobId'>
    : never
  : never;
export type NarrationEvent = Extract<JobEvent, { type: 'narration' }>;
export type DoneEvent = Extract<JobEvent, { type: 'done' }>;

export function isTerminal(event: JobEvent): boolean {
  return event.type === 'done' || event.type === 'error';
}

export const healthSchema = z.object({
  state: z.enum(['starting', 'ready', 'degraded']),
  uptimeS: z.number(),
  version: z.string(),
  node: z.string(),
  pid: z.number().int(),
});
export type Health = z.infer<typeof healthSchema>;

export const jobAcceptedSchema = z.object({ id: z.string(), events: z.string() });
export type JobAccepted = z.infer<typeof jobAcceptedSchema>;

/**
 * A model as `GET /v1/models` (an OpenAI list) and `GET /v1/models/:id` show it: OpenAI's fields,
 * then rbee's (src/node/api/model-list.ts), without local paths.
 */
export const modelRowSchema = z.looseObject({
  id: z.string(),
  object: z.literal('model'),
  created: z.number(),
  owned_by: z.string(),
  name: z.string(),
  model_id: z.string(),
  aliases: z.array(z.string()),
  hives: z.array(z.string()),
  ref: z.string().optional(),
  description: z.string(),
  context_length: z.number(),
  architecture: z.string(),
  quantization: z.string(),
  bytes: z.number(),
  source: z.string(),
});
export type ModelRow = z.infer<typeof modelRowSchema>;
export const modelListSchema = z.object({ data: z.array(modelRowSchema) });

/** A worker process of the node (`GET /v1/workers`, `POST /v1/workers`). */
export const workerInfoSchema = z.looseObject({
  id: z.string(),
  pid: z.number().int(),
  model: z.string(),
  state: z.string(),
  slots: z.number().int(),
  slotsBusy: z.number().int(),
  memoryBytes: z.number(),
  tokensPerSecond: z.number(),
});
export type WorkerInfo = z.infer<typeof workerInfoSchema>;
export const workerListSchema = z.object({ workers: z.array(workerInfoSchema) });
export const spawnedWorkerSchema = z.object({ worker: workerInfoSchema });
export const workerStoppedSchema = z.object({
  stopped: z.string(),
  forced: z.boolean(),
  hive: z.string().optional(),
});

/**
 * A worker this hive started, as its worker catalog recorded it (`GET /v1/workers/history`): the
 * llama.cpp binary it ran and why, when it was ready and when it exited (absent while it runs, and
 * for a worker the node stopped with before it could record the exit).
 */
export const workerRecordSchema = z.object({
  id: z.string(),
  model: z.string(),
  backend: z.string(),
  /** The GPU's index; -1 on the CPU. */
  device: z.number().int(),
  pid: z.number().int(),
  binary: z
    .object({ kind: z.enum(['native', 'prebuilt', 'localBuild']), label: z.string(), why: z.string() })
    .optional(),
  readyAt: z.number(),
  exitedAt: z.number().optional(),
  /** Whether it runs now. */
  running: z.boolean(),
});
export type WorkerRecord = z.infer<typeof workerRecordSchema>;
export const workerHistorySchema = z.object({ workers: z.array(workerRecordSchema) });

/** A llama.cpp backend this machine can run (`GET /v1/backends`). */
export const backendInfoSchema = z.looseObject({
  name: z.string(),
  available: z.boolean(),
  binary: z.object({ package: z.string(), version: z.string() }).optional(),
  devices: z.array(z.string()),
  build: z.looseObject({ engineVersion: z.string() }),
  /** CPU only: the llama.cpp binary its workers load now (`rbee doctor --fix` decides), and why. */
  workersLoad: z.object({ binary: z.enum(['native', 'prebuilt']), why: z.string() }).optional(),
});
export type BackendInfoView = z.infer<typeof backendInfoSchema>;
export const backendListSchema = z.object({ backends: z.array(backendInfoSchema) });

/** API keys (`/v1/keys`): the key itself only in the answer that created it. */
export const apiKeyInfoSchema = z.looseObject({
  id: z.string(),
  name: z.string(),
  createdAt: z.number(),
  lastUsedAt: z.number().optional(),
  maxConcurrent: z.number().int().optional(),
  rpm: z.number().int().optional(),
});
export type ApiKeyView = z.infer<typeof apiKeyInfoSchema>;
export const apiKeyListSchema = z.object({ keys: z.array(apiKeyInfoSchema) });
/** How a key change went through the cluster: every hive has it, or this node only for now. */
export const keyReplicationSchema = z.union([
  z.object({ queen: z.string(), term: z.number(), version: z.number(), hives: z.number() }),
  z.object({ pending: z.string() }),
]);
export type KeyReplicationView = z.infer<typeof keyReplicationSchema>;
export const createdApiKeySchema = apiKeyInfoSchema.extend({
  key: z.string(),
  cluster: keyReplicationSchema.optional(),
});
export type CreatedApiKey = z.infer<typeof createdApiKeySchema>;
export const removedApiKeySchema = z.object({
  removed: z.string(),
  cluster: keyReplicationSchema.optional(),
});

/** What a DELETE of a model or a key answers. */
export const removedSchema = z.object({ removed: z.string() });
