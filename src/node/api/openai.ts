/**
 * The OpenAI-compatible API over the same job pipeline as `rbee infer`: any model ref works as
 * `model` (fetched if it is not on disk yet), and the stream is the job's token stream.
 * Every id `/v1/models` lists is a name that works as `model` (model-list.ts). Errors use OpenAI's
 * shape, `{error: {message, type, param, code}}`, with rbee's stable code as `code`, or OpenAI's
 * where its clients know one (`model_not_found`).
 */
import { errorBody, sendErrorBody } from './error-body.js';
import type { ModelList } from './model-list.js';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { z } from 'zod';
import { randomInt } from 'node:crypto';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { ChatMessage, DoneEvent, JobRequest, TokenLogprob } from '../../shared/wire.js';
import type { JobManager } from '../jobs/index.js';
import { embedAsJob, followJob, submitFollowed } from './job-events.js';
import { releaseWhenDone } from './key-limits.js';
import type { OpenSse, SseStream } from './sse.js';
import type { ModelCatalog } from '../store/index.js';
import type { ApiClient } from './auth.js';
import type { ModelAccessCheck } from './model-access.js';
import {
  checkToolMessages,
  toolChatShape,
  toolFields,
  toolJobFields,
  toolMessage,
  toolMessageFields,
  toolPlan,
  type ToolPlan,
} from './openai-tools.js';
import {
  conversationOf,
  createResponseMemory,
  refuseUnsupported,
  responsesJob,
  responsesSchema,
  responsesShape,
  responsesToolPlan,
} from './openai-responses.js';
import { compiled } from '../../shared/compiled-schema.js';

export interface OpenAiInit {
  jobs: JobManager;
  catalog: ModelCatalog;
  /** The models of every hive, by the names clients use (model-list.ts). */
  models: ModelList;
  /** Refuses refs the client may not name (MODEL_REF_FORBIDDEN). */
  checkModel: ModelAccessCheck;
  /** Counts a request that runs a model against the client's key limits (key-limits.ts). */
  admit: (client: ApiClient) => () => void;
  /** The most choices (`n`) one request may ask for: the slots of the largest worker a hive starts. */
  maxChoices: () => number;
  openSse: OpenSse;
}

const textPartSchema = z.object({ type: z.literal('text'), text: z.string() });
const messageSchema = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z
    .union([z.string(), z.array(textPartSchema)])
    .nullable()
    .optional(),
  ...toolMessageFields,
});

const samplingFields = {
  model: z.string().min(1),
  stream: z.boolean().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
  max_tokens: z.number().int().positive().nullable().optional(),
  max_completion_tokens: z.number().int().positive().nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  top_k: z.number().int().min(0).optional(),
  min_p: z.number().min(0).max(1).optional(),
  seed: z.number().int().min(0).nullable().optional(),
  stop: z
    .union([z.string(), z.array(z.string()).max(16)])
    .nullable()
    .optional(),
  /** Choices: one job each (see choiceJobs). */
  n: z.number().int().min(1).max(128).nullable().optional(),
  /** Chat: true or false, with top_logprobs; completions: how many top alternatives (0–20). */
  logprobs: z
    .union([z.boolean(), z.number().int().min(0).max(20)])
    .nullable()
    .optional(),
  top_logprobs: z.number().int().min(0).max(20).nullable().optional(),
  logit_bias: z
    .record(z.string().regex(/^\d{1,9}$/, 'logit_bias keys are token ids'), z.number().min(-100).max(100))
    .nullable()
    .optional(),
  /** An end-user id for abuse tracking: accepted, not used. */
  user: z.string().max(256).optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  /** llama.cpp's extensions. */
  repeat_penalty: z.number().gt(0).max(2).optional(),
  grammar: z.string().min(1).optional(),
  response_format: z
    .union([
      z.object({ type: z.literal('text') }),
      z.object({ type: z.literal('json_object') }),
      z.object({
        type: z.literal('json_schema'),
        json_schema: z.object({ name: z.string().optional(), schema: z.record(z.string(), z.unknown()) }),
      }),
    ])
    .optional(),
  /** Ollama's extension: how long the model stays loaded after this request. */
  keep_alive: z.union([z.number(), z.string().max(32)]).optional(),
};

const embeddingsSchema = z.object({
  model: z.string().min(1),
  input: z.union([z.string(), z.array(z.string()).min(1).max(2048)]),
  /** The official clients ask for base64 (little-endian float32) and decode it themselves. */
  encoding_format: z.enum(['float', 'base64']).optional(),
});

const chatSchema = z.object({ ...samplingFields, ...toolFields, messages: z.array(messageSchema).min(1) });
const completionSchema = z.object({
  ...samplingFields,
  prompt: z.union([z.string(), z.array(z.string()).length(1)]),
});
type SamplingBody = z.infer<typeof chatSchema> | z.infer<typeof completionSchema>;

/** OpenAI parameters rbee refuses with a clear message. */
function unsupportedParameter(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as Record<string, unknown>;
  // `tools` are served (openai-tools.ts); the legacy `functions` are not
  if (b.functions != null) return '`functions` is not supported: use `tools`';
  return undefined;
}

/**
 * The jobs of a request with `n` choices: the same request n times, each with its own seed so
 * that sampled choices differ. A request's `seed` gives choice i the seed `seed + i` (the same
 * choices again for the same request); without one each choice draws a random seed. Greedy
 * decoding (temperature 0) ignores seeds: its choices are all the same answer.
 */
function choiceJobs(job: JobRequest, n: number): JobRequest[] {
  if (n === 1) return [job];
  return Array.from({ length: n }, (_, i) => ({
    ...job,
    seed: job.seed === undefined ? randomInt(0, 2 ** 31) : job.seed + i,
  }));
}

/**
 * Checks `n` against what one worker runs at once, and counts each choice against the client's
 * key limits (each is a job); the releases, one per choice.
 */
function admitChoices(init: OpenAiInit, client: ApiClient, n: number): (() => void)[] {
  const max = init.maxChoices();
  if (n > max) {
    throw new RbeeError(
      'TOO_MANY_CHOICES',
      `n = ${n} choices, but a worker runs at most ${max} at once (its slots): ask for ${max} or fewer, or start workers with more slots`,
      { details: { n, max } },
    );
  }
  const releases: (() => void)[] = [];
  try {
    for (let i = 0; i < n; i++) releases.push(init.admit(client));
  } catch (error) {
    for (const release of releases) release();
    throw error;
  }
  return releases;
}

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const unsupported = unsupportedParameter(body);
  if (unsupported !== undefined) throw new RbeeError('BAD_REQUEST', unsupported);
  const parsed = compiled(schema).safeParse(body);
  if (!parsed.success) throw new RbeeError('BAD_REQUEST', z.prettifyError(parsed.error));
  return parsed.data;
}

function sampling(body: SamplingBody): Omit<JobRequest, 'model'> {
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  const stop = typeof body.stop === 'string' ? [body.stop] : body.stop;
  return {
    ...(maxTokens == null ? {} : { maxTokens }),
    ...(body.temperature == null ? {} : { temperature: body.temperature }),
    ...(body.top_p == null ? {} : { topP: body.top_p }),
    ...(body.top_k === undefined ? {} : { topK: body.top_k }),
    ...(body.min_p === undefined ? {} : { minP: body.min_p }),
    ...(body.seed == null ? {} : { seed: body.seed }),
    ...(stop == null || stop.length === 0 ? {} : { stop }),
    ...(body.keep_alive === undefined ? {} : { keepAlive: body.keep_alive }),
    ...(body.presence_penalty == null ? {} : { presencePenalty: body.presence_penalty }),
    ...(body.frequency_penalty == null ? {} : { frequencyPenalty: body.frequency_penalty }),
    ...(body.repeat_penalty === undefined ? {} : { repeatPenalty: body.repeat_penalty }),
    ...(body.grammar === undefined ? {} : { grammar: body.grammar }),
    ...(body.logit_bias == null || Object.keys(body.logit_bias).length === 0
      ? {}
      : { logitBias: body.logit_bias }),
    ...(body.response_format?.type === 'json_schema'
      ? { jsonSchema: body.response_format.json_schema.schema }
      : {}),
    ...(body.response_format?.type === 'json_object' ? { jsonSchema: { type: 'object' } } : {}),
  };
}

/** How many top alternatives a chat request asks for per token; undefined: no logprobs at all. */
function chatLogprobsOf(body: z.infer<typeof chatSchema>): number | undefined {
  const top = body.top_logprobs ?? 0;
  if (body.logprobs !== true) {
    if (top > 0) throw new RbeeError('BAD_REQUEST', '`top_logprobs` needs `logprobs: true`');
    if (typeof body.logprobs === 'number')
      throw new RbeeError('BAD_REQUEST', '`logprobs` is true or false on chat completions');
    return undefined;
  }
  return top;
}

/** A completions request's `logprobs`: an integer, how many top alternatives (0 or more). */
function completionLogprobsOf(body: z.infer<typeof completionSchema>): number | undefined {
  if (body.top_logprobs != null)
    throw new RbeeError('BAD_REQUEST', '`top_logprobs` is for chat: completions take `logprobs: N`');
  if (body.logprobs == null || body.logprobs === false) return undefined;
  if (body.logprobs === true)
    throw new RbeeError('BAD_REQUEST', '`logprobs` on completions is the number of top alternatives');
  return body.logprobs;
}

/** A token's text as OpenAI's `bytes`: its UTF-8. */
const bytesOf = (token: string): number[] => [...Buffer.from(token, 'utf8')];

/** Chat's `choices[].logprobs` for these tokens. */
function chatLogprobs(entries: readonly TokenLogprob[]): Record<string, unknown> {
  return {
    content: entries.map((e) => ({
      token: e.token,
      logprob: e.logprob,
      bytes: bytesOf(e.token),
      top_logprobs: (e.top ?? []).map((t) => ({
        token: t.token,
        logprob: t.logprob,
        bytes: bytesOf(t.token),
      })),
    })),
    refusal: null,
  };
}

/** Completions' `choices[].logprobs` for these tokens, the first starting at `offset` of the text. */
function completionLogprobs(entries: readonly TokenLogprob[], offset: number): Record<string, unknown> {
  const textOffset: number[] = [];
  let at = offset;
  for (const e of entries) {
    textOffset.push(at);
    at += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries((e.top ?? []).map((t) => [t.token, t.logprob]))),
    text_offset: textOffset,
  };
}

function toMessages(messages: z.infer<typeof messageSchema>[]): ChatMessage[] {
  return messages.map((m) => {
    const content = typeof m.content === 'string' ? m.content : (m.content ?? []).map((p) => p.text).join('');
    return {
      role: m.role === 'developer' ? 'system' : m.role,
      content,
      ...toolMessage({ ...m, content }),
    };
  });
}

function sendError(reply: FastifyReply, error: unknown): void {
  sendErrorBody(reply, toRbeeError(error), { openAiCodes: true });
}

const finishReason = (done: DoneEvent): string => (done.finishReason === 'length' ? 'length' : 'stop');
const usage = (done: DoneEvent): Record<string, unknown> => ({
  prompt_tokens: done.usage.promptTokens,
  completion_tokens: done.usage.completionTokens,
  total_tokens: done.usage.promptTokens + done.usage.completionTokens,
  // OpenAI's field for the prompt's tokens served from a cache (the worker slot's KV cache here)
  ...(done.usage.cachedPromptTokens === undefined
    ? {}
    : { prompt_tokens_details: { cached_tokens: done.usage.cachedPromptTokens } }),
});

export interface Shape {
  /**
   * One streamed piece of text (or the final piece, with a finish reason): one chunk, or several.
   * `logprobs`: the piece's tokens', when the request asked for them.
   */
  chunk(
    text: string | undefined,
    finish: string | null,
    first: boolean,
    done?: DoneEvent,
    logprobs?: TokenLogprob[],
  ): Record<string, unknown> | Record<string, unknown>[];
  /** Whether the stream ends with `data: [DONE]` (the Responses API's does not). Defaults to true. */
  doneMarker?: boolean;
  /** The whole answer, when not streaming; `logprobs`: all its tokens', when asked for. */
  whole(text: string, done: DoneEvent, logprobs?: TokenLogprob[]): Record<string, unknown>;
}

async function serve(
  init: OpenAiInit,
  client: ApiClient,
  reply: FastifyReply,
  job: JobRequest,
  stream: boolean,
  includeUsage: boolean,
  shape: (jobId: string, model: string, created: number) => Shape,
  release: () => void,
): Promise<void> {
  const { id, events, leave } = submitFollowed(init.jobs, job, client.owner, reply, release);
  const created = Math.floor(Date.now() / 1000);
  const s = shape(id, job.model, created);

  let text = '';
  /** Every token's, for a whole answer that asked for them. */
  const logprobs: TokenLogprob[] | undefined = job.logprobs === undefined || stream ? undefined : [];
  let sse: SseStream | undefined;
  /** Headers wait for the first token (or the end), so failures before it are proper HTTP errors. */
  const send = async (data: unknown): Promise<void> => {
    sse ??= init.openSse(reply, (error) => streamedError(error));
    // the job waits for a slow reader (its tokens are kept anyway) instead of filling the socket
    if (!sse.write(`${eventLine(data)}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`))
      await sse.drained();
  };
  for await (const event of events) {
    if (event.type === 'narration') continue;
    if (sse !== undefined && !sse.open) return leave();
    if (event.type === 'error') {
      const rbee = RbeeError.fromJSON(event.error);
      if (sse === undefined) return sendError(reply, rbee);
      // Headers are out: the error travels in the stream, then the stream ends.
      sse.end(streamedError(rbee));
      return;
    }
    if (event.type === 'token') {
      if (stream)
        for (const chunk of [s.chunk(event.text, null, text === '', undefined, event.logprobs)].flat())
          await send(chunk);
      else if (event.logprobs !== undefined) logprobs?.push(...event.logprobs);
      text += event.text;
      continue;
    }
    if (!stream) return void reply.send(s.whole(text, event, logprobs));
    for (const chunk of [s.chunk(undefined, finishReason(event), text === '', event)].flat())
      await send(chunk);
    if (includeUsage) {
      const base = [s.chunk(undefined, null, false)].flat()[0] ?? {};
      await send({ ...base, choices: [], usage: usage(event) });
    }
    if (s.doneMarker !== false) await send('[DONE]');
    sse?.end();
    return;
  }
}

/** A chunk of choice `index` (a shape writes every chunk as choice 0). */
function withIndex(chunk: Record<string, unknown>, index: number): Record<string, unknown> {
  const choices = chunk.choices;
  if (!Array.isArray(choices)) return chunk;
  return { ...chunk, choices: choices.map((c: Record<string, unknown>) => ({ ...c, index })) };
}

/**
 * A request with n > 1 choices: its jobs (choiceJobs) run at once and answer as one, each choice
 * with its index. Streamed, the choices' chunks interleave as their tokens come; usage counts the
 * prompt once and every choice's completion tokens. A client that leaves cancels every job; a
 * job that fails fails the request and cancels the others.
 */
async function serveChoices(
  init: OpenAiInit,
  client: ApiClient,
  reply: FastifyReply,
  jobs: JobRequest[],
  stream: boolean,
  includeUsage: boolean,
  shape: (jobId: string, model: string, created: number) => Shape,
  releases: (() => void)[],
): Promise<void> {
  const ids: string[] = [];
  try {
    for (const [i, job] of jobs.entries()) {
      const { id } = init.jobs.submit(job, { owner: client.owner });
      ids.push(id);
      releaseWhenDone(init.jobs, id, releases[i]!);
    }
  } catch (error) {
    for (const id of ids) init.jobs.cancel(id);
    for (const release of releases.slice(ids.length)) release();
    throw error;
  }
  const created = Math.floor(Date.now() / 1000);
  const model = jobs[0]!.model;
  // one response: every choice under the first job's id
  const shapes = ids.map(() => shape(ids[0]!, model, created));
  const followers = ids.map((id) => followJob(init.jobs, id));
  let finished = false;
  const stopAll = (): void => {
    for (const follower of followers) follower.stop();
    if (finished) return;
    finished = true;
    for (const id of ids) init.jobs.cancel(id);
  };
  reply.raw.once('close', stopAll);

  const texts = ids.map(() => '');
  const logprobs = jobs.map((j) => (j.logprobs === undefined || stream ? undefined : ([] as TokenLogprob[])));
  const dones: (DoneEvent | undefined)[] = ids.map(() => undefined);
  let failed = false;
  let sse: SseStream | undefined;
  const send = async (data: unknown): Promise<void> => {
    sse ??= init.openSse(reply, (error) => streamedError(error));
    if (!sse.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`))
      await sse.drained();
  };
  const fail = (error: RbeeError): void => {
    failed = true;
    stopAll();
    if (sse === undefined) sendError(reply, error);
    else sse.end(streamedError(error));
  };
  const consume = async (i: number): Promise<void> => {
    const s = shapes[i]!;
    for await (const event of followers[i]!) {
      if (failed) return;
      if (event.type === 'narration') continue;
      if (sse !== undefined && !sse.open) return stopAll();
      if (event.type === 'error') return fail(RbeeError.fromJSON(event.error));
      if (event.type === 'token') {
        if (stream) {
          const chunks = [s.chunk(event.text, null, texts[i] === '', undefined, event.logprobs)].flat();
          for (const chunk of chunks) await send(withIndex(chunk, i));
        } else if (event.logprobs !== undefined) logprobs[i]?.push(...event.logprobs);
        texts[i] += event.text;
        continue;
      }
      dones[i] = event;
      if (stream) {
        const chunks = [s.chunk(undefined, finishReason(event), texts[i] === '', event)].flat();
        for (const chunk of chunks) await send(withIndex(chunk, i));
      }
      return;
    }
  };
  await Promise.all(ids.map((_, i) => consume(i)));
  if (failed || !dones.every((d) => d !== undefined)) return;
  finished = true;
  const first = dones[0]!;
  const total: DoneEvent = {
    ...first,
    usage: {
      ...first.usage,
      completionTokens: dones.reduce((sum, d) => sum + d.usage.completionTokens, 0),
    },
  };
  if (!stream) {
    const wholes = dones.map((done, i) => shapes[i]!.whole(texts[i]!, done, logprobs[i]));
    const choices = wholes.flatMap((whole, i) =>
      (whole.choices as Record<string, unknown>[]).map((c) => ({ ...c, index: i })),
    );
    return void reply.send({ ...wholes[0], choices, usage: usage(total) });
  }
  if (includeUsage) {
    const base = [shapes[0]!.chunk(undefined, null, false)].flat()[0] ?? {};
    await send({ ...base, choices: [], usage: usage(total) });
  }
  await send('[DONE]');
  sse?.end();
}

/** The Responses API names each event's type in an `event:` line too; chat chunks have none. */
function eventLine(data: unknown): string {
  const type = typeof data === 'object' && data !== null ? (data as { type?: unknown }).type : undefined;
  return typeof type === 'string' && type.startsWith('response.') ? `event: ${type}\n` : '';
}

function streamedError(error: RbeeError): string {
  return `data: ${JSON.stringify(errorBody(error, { openAiCodes: true }))}\n\n`;
}

/** The chat request's tool plan (see openai-tools.ts), its tool messages checked. */
function chatTools(body: z.infer<typeof chatSchema>): ToolPlan | undefined {
  checkToolMessages(
    body.messages.map((m) => ({
      role: m.role,
      content: '',
      tool_calls: m.tool_calls,
      ...(m.tool_call_id === undefined ? {} : { tool_call_id: m.tool_call_id }),
    })),
  );
  return toolPlan(body);
}

/** Chat completion chunks and answer of a request with tools. */
function toolCompletionShape(plan: ToolPlan, id: string, model: string, created: number): Shape {
  const tools = toolChatShape(plan, (delta, finish) => ({
    id: `chatcmpl-${id}`,
    object: 'chat.completion.chunk',
    created,
    model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  }));
  return {
    chunk: (text, finish) => tools.chunk(text, finish),
    whole: (text, done) => {
      const { message, finish } = tools.message(text, finishReason(done));
      return {
        id: `chatcmpl-${id}`,
        object: 'chat.completion',
        created,
        model,
        choices: [{ index: 0, message, finish_reason: finish }],
        usage: usage(done),
      };
    },
  };
}

export function registerOpenAiRoutes(app: FastifyInstance, init: OpenAiInit): void {
  const responses = createResponseMemory();
  app.get('/v1/models', () => ({ object: 'list', data: init.models.list() }));

  app.get<{ Params: { id: string } }>('/v1/models/:id', (request, reply) => {
    const model = init.models.find(request.params.id);
    if (model === undefined) {
      return sendError(
        reply,
        new RbeeError('MODEL_NOT_FOUND', `no hive has a model ${request.params.id}`, {
          details: { model: request.params.id },
        }),
      );
    }
    return reply.send(model);
  });

  app.post('/v1/embeddings', async (request, reply) => {
    let body: z.infer<typeof embeddingsSchema>;
    let release: () => void;
    try {
      body = parse(embeddingsSchema, request.body);
      init.checkModel(body.model, request.apiClient);
      release = init.admit(request.apiClient);
    } catch (error) {
      return sendError(reply, error);
    }
    // a job like any other: queued and placed, in the jobs table and /metrics, cancellable
    const texts = typeof body.input === 'string' ? [body.input] : body.input;
    let result: { embeddings: number[][]; promptTokens: number };
    try {
      result = await embedAsJob(
        init.jobs,
        { model: body.model, texts },
        request.apiClient.owner,
        reply,
        release,
      );
    } catch (error) {
      return sendError(reply, error);
    }
    return reply.send({
      object: 'list',
      model: body.model,
      data: result.embeddings.map((vector, index) => ({
        object: 'embedding',
        index,
        embedding:
          body.encoding_format === 'base64'
            ? Buffer.from(new Float32Array(vector).buffer).toString('base64')
            : vector,
      })),
      usage: { prompt_tokens: result.promptTokens, total_tokens: result.promptTokens },
    });
  });

  app.post('/v1/chat/completions', async (request, reply) => {
    let body: z.infer<typeof chatSchema>;
    let tools: ToolPlan | undefined;
    let logprobs: number | undefined;
    let releases: (() => void)[];
    try {
      body = parse(chatSchema, request.body);
      tools = chatTools(body);
      logprobs = chatLogprobsOf(body);
      if (logprobs !== undefined && tools !== undefined)
        throw new RbeeError('BAD_REQUEST', '`logprobs` with `tools` is not supported');
      init.checkModel(body.model, request.apiClient);
      releases = admitChoices(init, request.apiClient, body.n ?? 1);
    } catch (error) {
      return sendError(reply, error);
    }
    const job: JobRequest = {
      model: body.model,
      messages: toMessages(body.messages),
      ...sampling(body),
      ...(tools === undefined ? {} : toolJobFields(tools)),
      ...(logprobs === undefined ? {} : { logprobs }),
    };
    const chatShape = (id: string, model: string, created: number): Shape =>
      tools !== undefined
        ? toolCompletionShape(tools, id, model, created)
        : {
            chunk: (text, finish, first, _done, entries) => ({
              id: `chatcmpl-${id}`,
              object: 'chat.completion.chunk',
              created,
              model,
              choices: [
                {
                  index: 0,
                  delta:
                    text === undefined
                      ? {}
                      : first
                        ? { role: 'assistant', content: text }
                        : { content: text },
                  ...(logprobs === undefined
                    ? {}
                    : { logprobs: entries === undefined ? null : chatLogprobs(entries) }),
                  finish_reason: finish,
                },
              ],
            }),
            whole: (text, done, entries) => ({
              id: `chatcmpl-${id}`,
              object: 'chat.completion',
              created,
              model,
              choices: [
                {
                  index: 0,
                  message: { role: 'assistant', content: text },
                  ...(entries === undefined ? {} : { logprobs: chatLogprobs(entries) }),
                  finish_reason: finishReason(done),
                },
              ],
              usage: usage(done),
            }),
          };
    await serveAll(init, request.apiClient, reply, choiceJobs(job, body.n ?? 1), body, chatShape, releases);
  });

  app.post('/v1/responses', async (request, reply) => {
    let body: z.infer<typeof responsesSchema>;
    let conversation: ChatMessage[];
    let tools: ToolPlan | undefined;
    let release: () => void;
    try {
      refuseUnsupported(request.body);
      body = parse(responsesSchema, request.body);
      tools = responsesToolPlan(body);
      conversation = conversationOf(body, responses);
      init.checkModel(body.model, request.apiClient);
      release = init.admit(request.apiClient);
    } catch (error) {
      return sendError(reply, error);
    }
    // the answer joins the conversation, for a later request's previous_response_id
    const remember = (id: string, answer: ChatMessage): void => {
      if (body.store !== false) responses.remember(id, [...conversation, answer]);
    };
    await serve(
      init,
      request.apiClient,
      reply,
      responsesJob(body, conversation, tools),
      body.stream === true,
      false,
      (id, _model, created) => ({
        ...responsesShape(body, id, created, remember, tools),
        doneMarker: false,
      }),
      release,
    );
  });

  app.post('/v1/completions', async (request, reply) => {
    let body: z.infer<typeof completionSchema>;
    let logprobs: number | undefined;
    let releases: (() => void)[];
    try {
      body = parse(completionSchema, request.body);
      logprobs = completionLogprobsOf(body);
      init.checkModel(body.model, request.apiClient);
      releases = admitChoices(init, request.apiClient, body.n ?? 1);
    } catch (error) {
      return sendError(reply, error);
    }
    const prompt = typeof body.prompt === 'string' ? body.prompt : (body.prompt[0] ?? '');
    const job: JobRequest = {
      model: body.model,
      prompt,
      raw: true,
      ...sampling(body),
      ...(logprobs === undefined ? {} : { logprobs }),
    };
    const completionShape = (id: string, model: string, created: number): Shape => {
      /** Where the next streamed piece starts in the answer (its tokens' `text_offset`). */
      let offset = 0;
      return {
        chunk: (text, finish, _first, _done, entries) => {
          const chunkLogprobs = entries === undefined ? null : completionLogprobs(entries, offset);
          offset += text?.length ?? 0;
          return {
            id: `cmpl-${id}`,
            object: 'text_completion',
            created,
            model,
            choices: [{ index: 0, text: text ?? '', finish_reason: finish, logprobs: chunkLogprobs }],
          };
        },
        whole: (text, done, entries) => ({
          id: `cmpl-${id}`,
          object: 'text_completion',
          created,
          model,
          choices: [
            {
              index: 0,
              text,
              finish_reason: finishReason(done),
              logprobs: entries === undefined ? null : completionLogprobs(entries, 0),
            },
          ],
          usage: usage(done),
        }),
      };
    };
    await serveAll(
      init,
      request.apiClient,
      reply,
      choiceJobs(job, body.n ?? 1),
      body,
      completionShape,
      releases,
    );
  });
}

/** One job through serve, or several (n > 1) through serveChoices. */
async function serveAll(
  init: OpenAiInit,
  client: ApiClient,
  reply: FastifyReply,
  jobs: JobRequest[],
  body: SamplingBody,
  shape: (jobId: string, model: string, created: number) => Shape,
  releases: (() => void)[],
): Promise<void> {
  const stream = body.stream === true;
  const includeUsage = body.stream_options?.include_usage === true;
  if (jobs.length === 1)
    return serve(init, client, reply, jobs[0]!, stream, includeUsage, shape, releases[0]!);
  return serveChoices(init, client, reply, jobs, stream, includeUsage, shape, releases);
}
