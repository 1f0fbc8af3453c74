/**
 * Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`) over the same
 * chat jobs as the OpenAI routes: one mapping from the Messages shape to rbee's job request and
 * back. `system`, the turns and their content blocks become the chat's messages; `tools` and
 * `tool_choice` become the chat route's tool plan (openai-tools.ts), so calls are constrained or
 * recognized exactly as there, and come back as `tool_use` blocks. Streaming sends Anthropic's typed
 * events (message_start, ping, content_block_start/delta/stop, message_delta, message_stop), each
 * as `event: TYPE` and `data: JSON`. Errors leave in Anthropic's shape (error-body.ts picks it by
 * route). Images and documents are refused by name; `thinking` is accepted and the answer comes
 * without thinking blocks, as from a model that does not think.
 */
import { z } from 'zod';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { ChatMessage, DoneEvent, JobRequest, PromptSize } from '../../shared/wire.js';
import type { JobManager } from '../jobs/index.js';
import type { WorkerPool } from '../hive/index.js';
import type { ModelRef, Provisioner } from '../models/index.js';
import type { ApiClient } from './auth.js';
import { anthropicErrorBody, sendErrorBody } from './error-body.js';
import { submitFollowed } from './job-events.js';
import type { ModelAccessCheck } from './model-access.js';
import { checkChatToolMessages, toolJobFields, toolPlan, ToolStream, type ToolPlan } from './openai-tools.js';
import { sseEvent, type OpenSse, type SseStream } from './sse.js';
import { compiled } from '../../shared/compiled-schema.js';

export interface AnthropicInit {
  jobs: JobManager;
  /** Refuses refs the client may not name, and names of no model (MODEL_NOT_FOUND). */
  checkModel: ModelAccessCheck;
  /** Counts a request that runs a model against the client's key limits (key-limits.ts). */
  admit: (client: ApiClient) => () => void;
  openSse: OpenSse;
  /** For count_tokens, which bypasses the job queue: make the model usable, lease its worker. */
  provisioner: Provisioner;
  workers: WorkerPool;
  parseModelRef: (input: string) => ModelRef;
}

/** Accepted on any block: prompt caching is the worker's own (its slot's KV cache). */
const cacheControl = { cache_control: z.unknown().optional() };
const textBlock = z.object({ type: z.literal('text'), text: z.string(), ...cacheControl });
const toolUseBlock = z.object({
  type: z.literal('tool_use'),
  id: z.string().min(1).max(256),
  name: z.string().min(1).max(256),
  input: z.record(z.string(), z.unknown()),
  ...cacheControl,
});
const toolResultBlock = z.object({
  type: z.literal('tool_result'),
  tool_use_id: z.string().min(1).max(256),
  content: z.union([z.string(), z.array(textBlock)]).optional(),
  is_error: z.boolean().optional(),
  ...cacheControl,
});
/** Earlier answers' thinking, as clients send it back: left out of the chat. */
const thinkingBlock = z.object({ type: z.enum(['thinking', 'redacted_thinking']) }).loose();
const contentBlock = z.union([textBlock, toolUseBlock, toolResultBlock, thinkingBlock]);

const messageSchema = z.object({
  role: z.enum(['user', 'assistant']),
  content: z.union([z.string(), z.array(contentBlock)]),
});

const toolSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a tool name is 1 to 64 of a-z, A-Z, 0-9, _ and -'),
  description: z.string().optional(),
  input_schema: z.record(z.string(), z.unknown()),
  type: z.literal('custom').optional(),
  ...cacheControl,
});

const disableParallel = { disable_parallel_tool_use: z.boolean().optional() };
const toolChoiceSchema = z.union([
  z.object({ type: z.literal('auto'), ...disableParallel }),
  z.object({ type: z.literal('any'), ...disableParallel }),
  z.object({ type: z.literal('tool'), name: z.string().min(1), ...disableParallel }),
  z.object({ type: z.literal('none') }),
]);

const chatFields = {
  model: z.string().min(1),
  messages: z.array(messageSchema).min(1),
  system: z.union([z.string(), z.array(textBlock)]).optional(),
  tools: z.array(toolSchema).max(128).optional(),
  tool_choice: toolChoiceSchema.optional(),
};

export const messagesSchema = z.object({
  ...chatFields,
  /** Required, as Anthropic requires it. */
  max_tokens: z.number().int().positive(),
  stream: z.boolean().optional(),
  stop_sequences: z.array(z.string().min(1)).max(16).optional(),
  temperature: z.number().min(0).max(1).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  top_k: z.number().int().min(0).optional(),
  /** An end-user id for abuse tracking: accepted, not used. */
  metadata: z.object({ user_id: z.string().max(256).nullable().optional() }).optional(),
});
export type MessagesBody = z.infer<typeof messagesSchema>;

export const countTokensSchema = z.object(chatFields);
type ChatBody = z.infer<typeof countTokensSchema>;

/** Refuses what rbee cannot honour, by name, before the schema's own checks. */
function refuseUnsupported(body: unknown): void {
  if (typeof body !== 'object' || body === null) return;
  const record = body as Record<string, unknown>;
  const messages = Array.isArray(record.messages) ? (record.messages as unknown[]) : [];
  for (const message of messages) {
    const content = (message as { content?: unknown } | null)?.content;
    if (!Array.isArray(content)) continue;
    for (const block of content as Array<{ type?: unknown } | null>) {
      if (block?.type === 'image' || block?.type === 'document')
        throw new RbeeError('BAD_REQUEST', `\`${String(block.type)}\` content blocks are not supported`);
    }
  }
}

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  refuseUnsupported(body);
  const parsed = compiled(schema).safeParse(body);
  if (!parsed.success) throw new RbeeError('BAD_REQUEST', z.prettifyError(parsed.error));
  return parsed.data;
}

const textOf = (content: string | Array<{ text: string }> | undefined): string =>
  typeof content === 'string' ? content : (content ?? []).map((b) => b.text).join('');

/**
 * The chat's messages: `system` first; a user turn's tool results become tool messages (before its
 * text, since they answer the calls of the turn before); an assistant turn's tool_use blocks become
 * its calls.
 */
export function toChatMessages(body: Pick<ChatBody, 'system' | 'messages'>): ChatMessage[] {
  const messages: ChatMessage[] = [];
  const system = textOf(body.system);
  if (system !== '') messages.push({ role: 'system', content: system });
  for (const m of body.messages) {
    if (typeof m.content === 'string') {
      messages.push({ role: m.role, content: m.content });
      continue;
    }
    const text = m.content.flatMap((b) => (b.type === 'text' ? [b.text] : [])).join('');
    if (m.role === 'assistant') {
      const calls = m.content.flatMap((b) =>
        b.type === 'tool_use' ? [{ id: b.id, name: b.name, arguments: JSON.stringify(b.input) }] : [],
      );
      messages.push({
        role: 'assistant',
        content: text,
        ...(calls.length === 0 ? {} : { toolCalls: calls }),
      });
      continue;
    }
    let asked = false;
    for (const b of m.content) {
      if (b.type !== 'tool_result') continue;
      const result = textOf(b.content);
      messages.push({
        role: 'tool',
        content: b.is_error === true ? `Error: ${result}` : result,
        toolCallId: b.tool_use_id,
      });
      asked = true;
    }
    if (text !== '' || !asked) messages.push({ role: 'user', content: text });
  }
  return messages;
}

/** The request's tool plan (openai-tools.ts), its tool results checked against the calls. */
export function anthropicToolPlan(
  body: Pick<ChatBody, 'tools' | 'tool_choice'>,
  messages: ChatMessage[],
): ToolPlan | undefined {
  checkChatToolMessages(messages);
  const choice = body.tool_choice;
  return toolPlan({
    tools: (body.tools ?? []).map((t) => ({
      type: 'function' as const,
      function: {
        name: t.name,
        ...(t.description === undefined ? {} : { description: t.description }),
        parameters: t.input_schema,
      },
    })),
    tool_choice:
      choice === undefined
        ? undefined
        : choice.type === 'any'
          ? 'required'
          : choice.type === 'tool'
            ? { type: 'function', function: { name: choice.name } }
            : choice.type,
    parallel_tool_calls:
      choice !== undefined && 'disable_parallel_tool_use' in choice
        ? !choice.disable_parallel_tool_use
        : true,
  });
}

/** The chat job a Messages request (or a count_tokens request, with maxTokens 1) runs. */
export function messagesJob(
  body: ChatBody &
    Partial<Pick<MessagesBody, 'max_tokens' | 'stop_sequences' | 'temperature' | 'top_p' | 'top_k'>>,
): { job: JobRequest; tools: ToolPlan | undefined } {
  const messages = toChatMessages(body);
  const tools = anthropicToolPlan(body, messages);
  const job: JobRequest = {
    model: body.model,
    messages,
    ...(body.max_tokens === undefined ? {} : { maxTokens: body.max_tokens }),
    ...(body.stop_sequences === undefined || body.stop_sequences.length === 0
      ? {}
      : { stop: body.stop_sequences }),
    ...(body.temperature === undefined ? {} : { temperature: body.temperature }),
    ...(body.top_p === undefined ? {} : { topP: body.top_p }),
    ...(body.top_k === undefined ? {} : { topK: body.top_k }),
    ...(tools === undefined ? {} : toolJobFields(tools)),
  };
  return { job, tools };
}

type Json = Record<string, unknown>;

/** Anthropic's usage: the prompt's tokens found in the worker's KV cache count as cache reads. */
function usageOf(usage: PromptSize & { completionTokens?: number }): Json {
  const cached = usage.cachedPromptTokens ?? 0;
  return {
    input_tokens: Math.max(0, (usage.promptTokens ?? 0) - cached),
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: cached,
    output_tokens: usage.completionTokens ?? 0,
  };
}

function stopOf(done: DoneEvent, calledTools: boolean, stops: readonly string[]): Json {
  if (done.finishReason === 'length') return { stop_reason: 'max_tokens', stop_sequence: null };
  if (calledTools) return { stop_reason: 'tool_use', stop_sequence: null };
  const sequence = done.stopSequence;
  if (sequence !== undefined && stops.includes(sequence))
    return { stop_reason: 'stop_sequence', stop_sequence: sequence };
  return { stop_reason: 'end_turn', stop_sequence: null };
}

const parseInput = (args: string): Json => {
  try {
    const input = JSON.parse(args) as unknown;
    return typeof input === 'object' && input !== null && !Array.isArray(input) ? (input as Json) : {};
  } catch {
    return {};
  }
};

/**
 * One answer's content blocks as they stream: text pieces extend a text block, each call is a
 * tool_use block whose input arrives as input_json_delta pieces.
 */
class Blocks {
  private readonly stream: ToolStream | undefined;
  private open: { index: number; type: 'text' | 'tool_use' } | undefined;
  private count = 0;
  readonly content: Json[] = [];
  private readonly args: string[] = [];
  calledTools = false;

  constructor(plan: ToolPlan | undefined) {
    if (plan !== undefined) this.stream = new ToolStream(plan);
  }

  feed(text: string): Json[] {
    return this.events(this.stream === undefined ? [{ type: 'text', text }] : this.stream.feed(text));
  }

  /** The last events, once the answer is complete; the content blocks are final after it. */
  end(): Json[] {
    const events = this.events(this.stream?.end() ?? []);
    this.close(events);
    this.content.forEach((block, i) => {
      if (block.type === 'tool_use') block.input = parseInput(this.args[i] ?? '');
    });
    return events;
  }

  private close(events: Json[]): void {
    if (this.open === undefined) return;
    events.push({ type: 'content_block_stop', index: this.open.index });
    this.open = undefined;
  }

  private start(events: Json[], block: Json): number {
    this.close(events);
    const index = this.count++;
    this.open = { index, type: block.type as 'text' | 'tool_use' };
    this.content.push(block);
    events.push({ type: 'content_block_start', index, content_block: { ...block } });
    return index;
  }

  private events(pieces: ReturnType<ToolStream['feed']>): Json[] {
    const events: Json[] = [];
    for (const piece of pieces) {
      if (piece.type === 'text') {
        if (piece.text === '') continue;
        if (this.open?.type !== 'text') this.start(events, { type: 'text', text: '' });
        const index = this.open!.index;
        (this.content[index] as { text: string }).text += piece.text;
        events.push({ type: 'content_block_delta', index, delta: { type: 'text_delta', text: piece.text } });
      } else if (piece.type === 'call') {
        this.calledTools = true;
        const index = this.start(events, { type: 'tool_use', id: piece.id, name: piece.name, input: {} });
        this.args[index] = '';
      } else if (this.open?.type === 'tool_use') {
        const index = this.open.index;
        this.args[index] += piece.fragment;
        events.push({
          type: 'content_block_delta',
          index,
          delta: { type: 'input_json_delta', partial_json: piece.fragment },
        });
      }
    }
    return events;
  }
}

function sendError(reply: FastifyReply, error: unknown): void {
  sendErrorBody(reply, toRbeeError(error));
}

const streamedError = (error: RbeeError): string => sseEvent('error', anthropicErrorBody(error));

/** Runs a Messages request's job and answers it, whole or as Anthropic's event stream. */
async function serve(
  init: AnthropicInit,
  client: ApiClient,
  reply: FastifyReply,
  body: MessagesBody,
  job: JobRequest,
  plan: ToolPlan | undefined,
  release: () => void,
): Promise<void> {
  let followed: ReturnType<typeof submitFollowed>;
  try {
    followed = submitFollowed(init.jobs, job, client.owner, reply, release);
  } catch (error) {
    return sendError(reply, error);
  }
  const { id, events, leave } = followed;

  const message = (content: Json[], stop: Json, usage: PromptSize & { completionTokens?: number }): Json => ({
    id: `msg_${id}`,
    type: 'message',
    role: 'assistant',
    model: body.model,
    content,
    ...stop,
    usage: usageOf(usage),
  });
  /**
   * The prompt's size for message_start: the worker sends it with the first token (no extra round
   * trip); an answer without any token has it from its end.
   */
  let promptSize: PromptSize = {};
  const blocks = new Blocks(plan);
  const stream = body.stream === true;
  let sse: SseStream | undefined;
  /** Headers wait for the first token (or the end), so failures before it are proper HTTP errors. */
  const send = async (data: Json[]): Promise<void> => {
    if (sse === undefined) {
      sse = init.openSse(reply, streamedError);
      sse.write(
        sseEvent('message_start', {
          type: 'message_start',
          message: message([], { stop_reason: null, stop_sequence: null }, promptSize),
        }),
      );
      sse.write(sseEvent('ping', { type: 'ping' }));
    }
    for (const event of data) {
      // the job waits for a slow reader (its tokens are kept anyway) instead of filling the socket
      if (!sse.write(sseEvent(event.type as string, event))) await sse.drained();
    }
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
      if (event.promptTokens !== undefined) promptSize = event;
      const pieces = blocks.feed(event.text);
      if (stream && pieces.length > 0) await send(pieces);
      continue;
    }
    if (event.finishReason === 'cancelled' || event.finishReason === 'error') {
      const rbee = new RbeeError('JOB_CANCELLED', `the job ended without an answer (${event.finishReason})`);
      if (sse === undefined) return sendError(reply, rbee);
      return sse.end(streamedError(rbee));
    }
    const last = blocks.end();
    const stop = stopOf(event, blocks.calledTools, body.stop_sequences ?? []);
    if (!stream) return void reply.send(message(blocks.content, stop, event.usage));
    if (promptSize.promptTokens === undefined) promptSize = event.usage;
    await send([
      ...last,
      { type: 'message_delta', delta: stop, usage: usageOf(event.usage) },
      { type: 'message_stop' },
    ]);
    sse?.end();
    return;
  }
}

/**
 * The prompt's tokens as a generation would count them (chat template and tools included), by a
 * worker of the model on this node, as embeddings are computed: nothing is generated or queued.
 */
async function countTokens(init: AnthropicInit, job: JobRequest): Promise<number> {
  const { model } = await init.provisioner.ensure(init.parseModelRef(job.model));
  const lease = await init.workers.acquire(model);
  try {
    return await lease.countTokens({
      messages: job.messages ?? [],
      ...(job.tools === undefined ? {} : { tools: job.tools }),
    });
  } finally {
    lease.release();
  }
}

export function registerAnthropicRoutes(app: FastifyInstance, init: AnthropicInit): void {
  app.post('/v1/messages', async (request, reply) => {
    let body: MessagesBody;
    let job: JobRequest;
    let plan: ToolPlan | undefined;
    let release: () => void;
    try {
      body = parse(messagesSchema, request.body);
      ({ job, tools: plan } = messagesJob(body));
      init.checkModel(body.model, request.apiClient);
      release = init.admit(request.apiClient);
    } catch (error) {
      return sendError(reply, error);
    }
    await serve(init, request.apiClient, reply, body, job, plan, release);
  });

  app.post('/v1/messages/count_tokens', async (request, reply) => {
    let release: (() => void) | undefined;
    try {
      const body = parse(countTokensSchema, request.body);
      const { job } = messagesJob(body);
      init.checkModel(body.model, request.apiClient);
      release = init.admit(request.apiClient);
      return await reply.send({ input_tokens: await countTokens(init, job) });
    } catch (error) {
      return sendError(reply, error);
    } finally {
      release?.();
    }
  });
}
