/**
 * Shapes that cross a process boundary between the keeper (CLI/TUI) and a node's HTTP API.
 * The same events are the SSE stream, the NDJSON of `--json`, and what the TUI renders.
 */
import { z } from 'zod';
import { ERROR_CODES, type ErrorCode } from './errors.js';

export const chatMessageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant']),
  content: z.string(),
});
export type ChatMessage = z.infer<typeof chatMessageSchema>;

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
});
export type Sampling = z.infer<typeof samplingSchema>;

export const jobRequestSchema = samplingSchema
  .extend({
    model: z.string().min(1).max(2048),
    /** A user message, rendered with the model's chat template; with `raw`, evaluated as is. */
    prompt: z.string().optional(),
    raw: z.boolean().optional(),
    /** How long the worker stays loaded after this job: seconds or "5m"; 0 unloads at once, -1 never. */
    keepAlive: z.union([z.number(), z.string().max(32)]).optional(),
    messages: z.array(chatMessageSchema).min(1).optional(),
    system: z.string().optional(),
    /** Run on this hive (its name or id) instead of where the queen would place the job. */
    hive: z.string().min(1).max(256).optional(),
    /** Interactive jobs (the default) go before batch jobs in the queen's queue. */
    priority: z.enum(['interactive', 'batch']).optional(),
  })
  .refine((r) => r.prompt !== undefined || r.messages !== undefined, {
    message: 'either prompt or messages is required',
  });
export type JobRequest = z.infer<typeof jobRequestSchema>;

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
});
export type Timings = z.infer<typeof timingsSchema>;

const errorCodeSchema = z.custom<ErrorCode>((v) => typeof v === 'string' && Object.hasOwn(ERROR_CODES, v));
export const errorJsonSchema = z.object({
  code: errorCodeSchema,
  message: z.string(),
  details: z.record(z.string(), z.unknown()).optional(),
});

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
  z.object({ ...base, type: z.literal('token'), text: z.string() }),
  z.object({
    ...base,
    type: z.literal('done'),
    finishReason: finishReasonSchema,
    usage: usageSchema,
    timings: timingsSchema,
    model: z.string(),
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
