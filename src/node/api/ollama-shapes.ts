/**
 * Ollama's request and answer shapes, and how they map to rbee's: its chat messages (tool calls
 * with arguments as objects, tool results named by `tool_name`), its `options` and `format`, its
 * model rows (`/api/tags`, `/api/ps`, `/api/show`) and its timings in nanoseconds. Requests become
 * the same job request the OpenAI routes build; the routes are in ollama.ts.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { RbeeError } from '../../shared/errors.js';
import { parseKeepAlive } from '../../shared/duration.js';
import {
  jobRequestSchema,
  MAX_CONTEXT_SIZE,
  MIN_CONTEXT_SIZE,
  type ChatMessage,
  type DoneEvent,
  type JobRequest,
} from '../../shared/wire.js';
import { toolFields } from './openai-tools.js';
import type { OpenAiModel } from './model-list.js';
import { compiled } from '../../shared/compiled-schema.js';

/** A duration as Ollama's API takes it: seconds, or a text such as "5m", "1h30m", "-1". */
const keepAliveSchema = z.union([z.number(), z.string().max(32)]).optional();

/**
 * Ollama's `options`. Those rbee acts on are typed; the others (num_thread, mirostat, …) are
 * accepted and left alone, as Ollama itself leaves options a runner does not know.
 */
const optionsSchema = z
  .looseObject({
    num_ctx: z.number().int().min(MIN_CONTEXT_SIZE).max(MAX_CONTEXT_SIZE).optional(),
    num_predict: z.number().int().optional(),
    temperature: z.number().optional(),
    top_p: z.number().optional(),
    top_k: z.number().int().optional(),
    min_p: z.number().optional(),
    seed: z.number().int().optional(),
    stop: z.union([z.string(), z.array(z.string())]).optional(),
    repeat_penalty: z.number().optional(),
    presence_penalty: z.number().optional(),
    frequency_penalty: z.number().optional(),
  })
  .nullable()
  .optional();

/** `"json"`, or a JSON schema the output must match; `""` asks for nothing. */
const formatSchema = z
  .union([z.string(), z.record(z.string(), z.unknown())])
  .nullable()
  .optional();

const ollamaToolCallSchema = z.object({
  id: z.string().optional(),
  function: z.object({
    index: z.number().optional(),
    name: z.string().min(1).max(256),
    arguments: z.union([z.record(z.string(), z.unknown()), z.string()]).optional(),
  }),
});

const messageSchema = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string().nullable().optional(),
  images: z.array(z.string()).nullable().optional(),
  thinking: z.string().optional(),
  tool_calls: z.array(ollamaToolCallSchema).max(128).nullable().optional(),
  /** A tool result names the function it answers. */
  tool_name: z.string().optional(),
  tool_call_id: z.string().optional(),
});

const common = {
  model: z.string().min(1).max(2048),
  stream: z.boolean().optional(),
  format: formatSchema,
  options: optionsSchema,
  keep_alive: keepAliveSchema,
  /** Accepted: rbee's models answer without a separate thinking part. */
  think: z.union([z.boolean(), z.enum(['high', 'medium', 'low'])]).optional(),
};

export const chatSchema = z.object({
  ...common,
  messages: z.array(messageSchema).max(100_000).optional(),
  tools: toolFields.tools,
});
export type ChatBody = z.infer<typeof chatSchema>;

export const generateSchema = z.object({
  ...common,
  prompt: z.string().optional(),
  system: z.string().optional(),
  raw: z.boolean().optional(),
  images: z.array(z.string()).nullable().optional(),
  /** Ollama's old way to continue a conversation (token ids): accepted, not used. */
  context: z.array(z.number()).optional(),
  /** Text after the insertion point (fill-in-the-middle): not supported. */
  suffix: z.string().optional(),
  /** A Go template to render the prompt with: not supported (the model's own template is used). */
  template: z.string().optional(),
});
export type GenerateBody = z.infer<typeof generateSchema>;

export const embedSchema = z.object({
  model: z.string().min(1).max(2048),
  input: z.union([z.string(), z.array(z.string()).min(1).max(2048)]),
  truncate: z.boolean().optional(),
  dimensions: z.number().int().positive().optional(),
  keep_alive: keepAliveSchema,
  options: optionsSchema,
});

/** The legacy `/api/embeddings`: one text as `prompt`. */
export const embeddingsSchema = z.object({
  model: z.string().min(1).max(2048),
  prompt: z.string(),
  keep_alive: keepAliveSchema,
  options: optionsSchema,
});

/** `/api/show` and `/api/pull` name their model as `model`, older clients as `name`. */
export const namedSchema = z
  .looseObject({
    model: z.string().min(1).max(2048).optional(),
    name: z.string().min(1).max(2048).optional(),
  })
  .refine((b) => b.model !== undefined || b.name !== undefined, { message: 'model is required' });

export const pullSchema = z.intersection(
  namedSchema,
  z.object({ stream: z.boolean().optional(), insecure: z.boolean().optional() }),
);

/** `/api/copy`: a new name for a model. */
export const copySchema = z.object({
  source: z.string().min(1).max(2048),
  destination: z.string().min(1).max(256),
});

export function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = compiled(schema).safeParse(body ?? {});
  if (!parsed.success) throw new RbeeError('BAD_REQUEST', z.prettifyError(parsed.error));
  return parsed.data;
}

/** The job fields of Ollama's options, format and keep_alive (checked against the job schema later). */
export function samplingOf(body: {
  options?: z.infer<typeof optionsSchema>;
  format?: z.infer<typeof formatSchema>;
  keep_alive?: number | string | undefined;
}): Omit<JobRequest, 'model'> {
  const o = body.options ?? {};
  const stop = (typeof o.stop === 'string' ? [o.stop] : (o.stop ?? [])).filter((s) => s !== '');
  const format = body.format;
  if (typeof format === 'string' && format !== '' && format !== 'json') {
    throw new RbeeError(
      'BAD_REQUEST',
      `format must be "json" or a JSON schema, not ${JSON.stringify(format)}`,
    );
  }
  if (body.keep_alive !== undefined) parseKeepAlive(body.keep_alive); // a malformed one is refused now
  return {
    // num_predict -1 (or -2, fill the context) is no limit; rbee stops at the end of the context
    ...(o.num_predict !== undefined && o.num_predict > 0 ? { maxTokens: o.num_predict } : {}),
    // the least context the worker must have: one with less is reloaded (see the job's contextSize)
    ...(o.num_ctx === undefined ? {} : { contextSize: o.num_ctx }),
    ...(o.temperature === undefined ? {} : { temperature: o.temperature }),
    ...(o.top_p === undefined ? {} : { topP: o.top_p }),
    ...(o.top_k === undefined ? {} : { topK: o.top_k }),
    ...(o.min_p === undefined ? {} : { minP: o.min_p }),
    // a negative seed is Ollama's "random"
    ...(o.seed === undefined || o.seed < 0 ? {} : { seed: o.seed }),
    ...(stop.length === 0 ? {} : { stop }),
    ...(o.repeat_penalty === undefined ? {} : { repeatPenalty: o.repeat_penalty }),
    ...(o.presence_penalty === undefined ? {} : { presencePenalty: o.presence_penalty }),
    ...(o.frequency_penalty === undefined ? {} : { frequencyPenalty: o.frequency_penalty }),
    ...(format === 'json' ? { jsonSchema: { type: 'object' } } : {}),
    ...(typeof format === 'object' && format !== null ? { jsonSchema: format } : {}),
    ...(body.keep_alive === undefined ? {} : { keepAlive: body.keep_alive }),
  };
}

/** The job request, refused as a bad request when a value is out of rbee's ranges. */
export function checkedJob(job: JobRequest): JobRequest {
  const parsed = compiled(jobRequestSchema).safeParse(job);
  if (!parsed.success) throw new RbeeError('BAD_REQUEST', z.prettifyError(parsed.error));
  return job;
}

/** What no route here can do, refused with a clear message rather than ignored. */
export function refuseImages(images: readonly string[] | null | undefined): void {
  if (images != null && images.length > 0)
    throw new RbeeError('BAD_REQUEST', 'images are not supported: rbee serves text models');
}

/**
 * Ollama's messages as rbee's. Ollama's calls have no ids (or ids of their own) and its tool
 * results name the function they answer, so each call gets an id here and each result the id of
 * the first call before it with that function's name that no result answered yet (else the next
 * unanswered call).
 */
export function toMessages(messages: NonNullable<ChatBody['messages']>): ChatMessage[] {
  let open: { id: string; name: string }[] = [];
  return messages.map((m, i): ChatMessage => {
    refuseImages(m.images);
    const content = m.content ?? '';
    if (m.role === 'assistant' && m.tool_calls != null && m.tool_calls.length > 0) {
      const calls = m.tool_calls.map((c, j) => ({
        id: c.id ?? `call_${i}_${j}`,
        name: c.function.name,
        arguments:
          typeof c.function.arguments === 'string'
            ? c.function.arguments
            : JSON.stringify(c.function.arguments ?? {}),
      }));
      open = calls.map((c) => ({ id: c.id, name: c.name }));
      return { role: 'assistant', content, toolCalls: calls };
    }
    if (m.role === 'tool') {
      const at = Math.max(
        0,
        open.findIndex(
          (c) => c.id === m.tool_call_id || (m.tool_call_id === undefined && c.name === m.tool_name),
        ),
      );
      const call = open[at];
      if (call === undefined) return { role: 'tool', content };
      open.splice(at, 1);
      return { role: 'tool', content, toolCallId: call.id };
    }
    open = [];
    return { role: m.role, content };
  });
}

const NS_PER_MS = 1_000_000;

/** The closing fields of a chat or generate answer: why it ended, counts, durations in nanoseconds. */
export function doneFields(done: DoneEvent): Record<string, unknown> {
  const { totalMs, timeToFirstTokenMs } = done.timings;
  const firstToken = Math.min(timeToFirstTokenMs, totalMs);
  // the wait for a worker to load the model, when the job had one (the rest of the time to the
  // first token, fetching the model and queueing included, is reported as the prompt's evaluation)
  const load = Math.min(done.timings.loadMs ?? 0, firstToken);
  return {
    done: true,
    done_reason: done.finishReason === 'length' ? 'length' : 'stop',
    total_duration: Math.round(totalMs * NS_PER_MS),
    load_duration: Math.round(load * NS_PER_MS),
    prompt_eval_count: done.usage.promptTokens,
    prompt_eval_duration: Math.round((firstToken - load) * NS_PER_MS),
    eval_count: done.usage.completionTokens,
    eval_duration: Math.round((totalMs - firstToken) * NS_PER_MS),
  };
}

export const sha256Hex = (text: string): string => createHash('sha256').update(text).digest('hex');

/** Ollama's digest of a model: the file's sha256 where it is known, else a hash of its catalog id. */
export function digestOf(model: OpenAiModel, sha256: string | null | undefined): string {
  return sha256 ?? sha256Hex(model.model_id);
}

/** "135.00M", "7.6B": Ollama's way of writing a parameter count. */
export function parameterSize(count: number | undefined): string {
  if (count === undefined || count <= 0) return '';
  if (count >= 1e9) return `${(count / 1e9).toFixed(1)}B`;
  if (count >= 1e6) return `${(count / 1e6).toFixed(2)}M`;
  return `${(count / 1e3).toFixed(2)}K`;
}

export interface ModelFacts {
  digest: string;
  parameterCount?: number;
  chatTemplate?: string;
}

export function detailsOf(model: OpenAiModel, facts: ModelFacts): Record<string, unknown> {
  return {
    parent_model: '',
    format: 'gguf',
    family: model.architecture,
    families: [model.architecture],
    parameter_size: parameterSize(facts.parameterCount),
    quantization_level: model.quantization.toUpperCase(),
  };
}

/** One row of `/api/tags`, under `name` (the model's own name, or an alias of it). */
export function tagRow(model: OpenAiModel, name: string, facts: ModelFacts): Record<string, unknown> {
  return {
    name,
    model: name,
    modified_at: new Date(model.created * 1000).toISOString(),
    size: model.bytes,
    digest: facts.digest,
    details: detailsOf(model, facts),
  };
}
