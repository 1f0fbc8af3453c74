/**
 * Messages between a hive (parent) and its worker process (child) over the child process's IPC
 * channel. Both sides validate everything they receive: a malformed message is dropped and
 * counted, never trusted and never a crash.
 */
import { z } from 'zod';
import {
  chatMessageSchema,
  errorJsonSchema,
  finishReasonSchema,
  promptSizeFields,
  samplingSchema,
  tokenLogprobSchema,
  toolSchema,
  usageSchema,
} from '../../shared/wire.js';
import { prefixKeySchema } from '../../shared/prefix.js';
import { gbnfProblem, prepareJsonSchema } from './constraints.js';
import { compiled } from '../../shared/compiled-schema.js';

/** Name of the environment variable that carries the child's init as JSON. */
export const WORKER_INIT_ENV = 'RBEE_WORKER_INIT';

const backendSchema = z.enum(['cpu', 'cuda', 'vulkan', 'metal']);
const stateSchema = z.enum(['loading', 'idle', 'busy', 'stopping', 'exited']);

/** What the child needs to start: the serialisable part of WorkerInit, with defaults resolved. */
export const childInitSchema = z.object({
  id: z.string().min(1),
  modelPath: z.string().min(1),
  slots: z.number().int().min(1).max(256),
  contextSize: z.number().int().positive().optional(),
  threads: z.number().int().positive().optional(),
  backend: backendSchema,
  device: z.number().int().min(0),
  maxQueue: z.number().int().min(0),
  /** Defaults to true (see WorkerInit). */
  prefixReuse: z.boolean().optional(),
  /** Absent: llama.cpp decides (see WorkerInit). */
  flashAttention: z.boolean().optional(),
  /** The CPU binary to load (absent: the prebuilt one) and why (see WorkerInit). */
  binary: z.enum(['native', 'prebuilt']).optional(),
  binaryWhy: z.string().max(2000).optional(),
  heartbeatIntervalMs: z.number().int().positive(),
});
export type ChildInit = z.infer<typeof childInitSchema>;

export const generateRequestSchema = samplingSchema
  .extend({
    prompt: z.string().optional(),
    messages: z.array(chatMessageSchema).min(1).optional(),
    tools: z.array(toolSchema).min(1).max(128).optional(),
    repeatLastTokens: z.number().int().min(0).max(65_536).optional(),
  })
  .superRefine((r, ctx) => {
    if ((r.prompt === undefined) === (r.messages === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'exactly one of prompt or messages is required' });
    }
    if (r.grammar !== undefined && r.jsonSchema !== undefined) {
      ctx.addIssue({ code: 'custom', message: 'at most one of grammar and jsonSchema', path: ['grammar'] });
    }
    const grammarProblem = r.grammar === undefined ? undefined : gbnfProblem(r.grammar);
    if (grammarProblem !== undefined) {
      ctx.addIssue({ code: 'custom', message: `invalid grammar: ${grammarProblem}`, path: ['grammar'] });
    }
    const schema = r.jsonSchema === undefined ? undefined : prepareJsonSchema(r.jsonSchema);
    if (schema?.ok === false) {
      ctx.addIssue({
        code: 'custom',
        message: `invalid jsonSchema: ${schema.problem}`,
        path: ['jsonSchema'],
      });
    }
  });

/** Texts per embed request, and characters per text: bounds on one IPC message, not on the model. */
export const MAX_EMBED_TEXTS = 2048;
export const MAX_EMBED_TEXT_CHARS = 1_000_000;
export const embedTextsSchema = z
  .array(z.string().min(1).max(MAX_EMBED_TEXT_CHARS))
  .min(1)
  .max(MAX_EMBED_TEXTS);

/** A rank request: its documents bounded as embed's texts (one IPC message). */
export const rankRequestSchema = z.object({
  query: z.string().min(1).max(MAX_EMBED_TEXT_CHARS),
  documents: embedTextsSchema,
});

const requestId = z.string().min(1).max(128);

export const parentMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('generate'), requestId, request: generateRequestSchema }),
  z.object({ type: z.literal('embed'), requestId, texts: embedTextsSchema }),
  z.object({ type: z.literal('rank'), requestId, ...rankRequestSchema.shape }),
  /** Tokenizes the request's prompt as `generate` would, and generates nothing. */
  z.object({ type: z.literal('count_tokens'), requestId, request: generateRequestSchema }),
  z.object({ type: z.literal('cancel'), requestId }),
  z.object({ type: z.literal('shutdown') }),
]);
export type ParentMessage = z.infer<typeof parentMessageSchema>;

export const workerInfoSchema = z.object({
  id: z.string(),
  pid: z.number().int(),
  modelPath: z.string(),
  backend: z.string(),
  device: z.number().int(),
  slots: z.number().int(),
  contextSize: z.number().int(),
  threads: z.number().int(),
  state: stateSchema,
  memoryBytes: z.number(),
  estimatedBytes: z.number(),
  loadMs: z.number(),
  binary: z
    .object({ kind: z.enum(['native', 'prebuilt', 'localBuild']), label: z.string(), why: z.string() })
    .optional(),
  flashAttention: z.boolean().optional(),
});

export const heartbeatSchema = z.object({
  state: stateSchema,
  slotsBusy: z.number().int().min(0),
  slotsTotal: z.number().int().min(0),
  queueDepth: z.number().int().min(0),
  memoryBytes: z.number().min(0),
  tokensPerSecond: z.number().min(0),
  invalidMessages: z.number().int().min(0),
  slotCache: z
    .array(
      z.object({
        busy: z.boolean(),
        tokens: z.number().int().min(0),
        prefixes: z.array(prefixKeySchema).max(8),
      }),
    )
    .max(256),
});

export const childMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready'), info: workerInfoSchema }),
  /**
   * `tokens`: the generated tokens this text covers (text can trail its tokens); `logprobs`, one
   * per token, only when the request asked for them.
   */
  z.object({
    type: z.literal('token'),
    requestId,
    text: z.string(),
    tokens: z.array(z.number().int().min(0)),
    logprobs: z.array(tokenLogprobSchema).optional(),
    ...promptSizeFields,
  }),
  z.object({
    type: z.literal('done'),
    requestId,
    finishReason: finishReasonSchema,
    usage: usageSchema,
    timeToFirstTokenMs: z.number(),
    tokensPerSecond: z.number(),
    stopSequence: z.string().optional(),
  }),
  z.object({ type: z.literal('prompt_tokens'), requestId, promptTokens: z.number().int().min(0) }),
  z.object({
    type: z.literal('embeddings'),
    requestId,
    embeddings: z.array(z.array(z.number())),
    promptTokens: z.number().int().min(0),
  }),
  z.object({
    type: z.literal('ranking'),
    requestId,
    scores: z.array(z.number()),
    promptTokens: z.number().int().min(0),
  }),
  // Without a requestId the error is about the worker itself (a failed start).
  z.object({ type: z.literal('error'), requestId: requestId.optional(), error: errorJsonSchema }),
  z.object({ type: z.literal('heartbeat'), ...heartbeatSchema.shape }),
]);
export type ChildMessage = z.infer<typeof childMessageSchema>;

/** Parses one message; undefined for anything invalid (the caller counts it). */
export function parseParentMessage(raw: unknown): ParentMessage | undefined {
  const parsed = compiled(parentMessageSchema).safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

export function parseChildMessage(raw: unknown): ChildMessage | undefined {
  const token = plainToken(raw);
  if (token !== undefined) return token;
  const parsed = compiled(childMessageSchema).safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}

/**
 * A token message with exactly the four fields of the schema, checked by hand: nearly every message
 * is one, at up to thousands a second, and the general validation cost ~25 µs each. Anything else
 * (a field more or less, a wrong type) is left to the schema, which accepts or refuses it the same.
 */
function plainToken(raw: unknown): ChildMessage | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const m = raw as { type?: unknown; requestId?: unknown; text?: unknown; tokens?: unknown };
  if (m.type !== 'token' || typeof m.text !== 'string' || !Array.isArray(m.tokens)) return undefined;
  const id = m.requestId;
  if (typeof id !== 'string' || id.length === 0 || id.length > 128) return undefined;
  for (const t of m.tokens as unknown[]) if (!Number.isInteger(t) || (t as number) < 0) return undefined;
  let fields = 0;
  for (const _ in m) fields++;
  return fields === 4 ? (m as ChildMessage) : undefined;
}
