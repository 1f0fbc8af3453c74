/**
 * OpenAI's Responses API (`POST /v1/responses`) over the same chat jobs: `input` (a string or
 * messages) and `instructions` become the chat, the answer one `message` output item with one
 * `output_text` part. Streaming sends the typed event sequence (response.created … response.completed),
 * each as `event: TYPE` and `data: JSON` with its sequence_number. The node remembers each
 * answered conversation for a while (ResponseMemory: 10 minutes, the last 1000, 16 MiB of text)
 * unless `store: false`, so that `previous_response_id` continues it: the earlier turns come first,
 * then the new input; `instructions` apply to the request that names them only, as OpenAI's do.
 *
 * Function tools work as on the chat route (openai-tools.ts: forced calls are grammar-constrained,
 * `auto` recognizes calls in a free answer): each call is a `function_call` output item, streamed as
 * `response.function_call_arguments.delta` events, and its result comes back as a
 * `function_call_output` input item (with `previous_response_id`, or the call repeated in `input`).
 * Built-in tools (web search, files, computer use) and non-text output formats are refused.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { RbeeError } from '../../shared/errors.js';
import type { ChatMessage, DoneEvent, JobRequest } from '../../shared/wire.js';
import {
  checkChatToolMessages,
  toolFields,
  toolJobFields,
  toolPlan,
  ToolStream,
  type ToolPlan,
  type ToolStreamEvent,
} from './openai-tools.js';

const inputPart = z.object({ type: z.enum(['input_text', 'output_text']), text: z.string() });
const inputMessage = z.object({
  type: z.literal('message').optional(),
  id: z.string().optional(),
  status: z.string().optional(),
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string(), z.array(inputPart)]),
});
/** A call an earlier answer made, repeated in the input (as clients do without previous_response_id). */
const functionCallItem = z.object({
  type: z.literal('function_call'),
  id: z.string().optional(),
  status: z.string().optional(),
  call_id: z.string().min(1).max(256),
  name: z.string().min(1).max(256),
  arguments: z.string().max(1_000_000),
});
/** The result of a call, for the model to answer from. */
const functionCallOutputItem = z.object({
  type: z.literal('function_call_output'),
  id: z.string().optional(),
  status: z.string().optional(),
  call_id: z.string().min(1).max(256),
  output: z.string().max(1_000_000),
});
const inputItem = z.union([inputMessage, functionCallItem, functionCallOutputItem]);
const functionTool = z.object({
  type: z.literal('function'),
  name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a function name is 1 to 64 of a-z, A-Z, 0-9, _ and -'),
  description: z.string().nullable().optional(),
  parameters: z.record(z.string(), z.unknown()).nullable().optional(),
  strict: z.boolean().nullable().optional(),
});

export const responsesSchema = z.object({
  model: z.string().min(1),
  input: z.union([z.string(), z.array(inputItem).min(1)]),
  tools: z.array(functionTool).max(128).nullable().optional(),
  tool_choice: z
    .union([
      z.enum(['none', 'auto', 'required']),
      z.object({ type: z.literal('function'), name: z.string() }),
    ])
    .nullable()
    .optional(),
  parallel_tool_calls: toolFields.parallel_tool_calls,
  instructions: z.string().nullable().optional(),
  stream: z.boolean().nullable().optional(),
  max_output_tokens: z.number().int().positive().nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  /** False: this conversation is not remembered for a later `previous_response_id`. */
  store: z.boolean().nullable().optional(),
  previous_response_id: z.string().min(1).max(200).nullable().optional(),
  metadata: z.record(z.string(), z.string()).nullable().optional(),
  text: z
    .object({ format: z.object({ type: z.literal('text') }).optional() })
    .nullable()
    .optional(),
  /** llama.cpp's and rbee's extensions, as on the chat route. */
  seed: z.number().int().min(0).optional(),
  keep_alive: z.union([z.number(), z.string().max(32)]).optional(),
});
export type ResponsesBody = z.infer<typeof responsesSchema>;

/** Refuses what this route cannot honour, by name, before the schema's own checks. */
export function refuseUnsupported(body: unknown): void {
  if (typeof body !== 'object' || body === null) return;
  const record = body as Record<string, unknown>;
  for (const key of ['reasoning', 'conversation', 'background']) {
    if (record[key] != null && !(Array.isArray(record[key]) && record[key].length === 0)) {
      throw new RbeeError('BAD_REQUEST', `\`${key}\` is not supported on /v1/responses yet`);
    }
  }
  if (Array.isArray(record.tools)) {
    for (const tool of record.tools as unknown[]) {
      const type = (tool as { type?: unknown } | null)?.type;
      if (type !== 'function') {
        throw new RbeeError(
          'BAD_REQUEST',
          `tools of type ${String(type)} are not supported on /v1/responses: only function tools are`,
        );
      }
    }
  }
  if (record.top_logprobs != null && record.top_logprobs !== 0)
    throw new RbeeError('BAD_REQUEST', '`top_logprobs` is not supported on /v1/responses yet');
}

/** Conversations answered on this node, by response id, for `previous_response_id`. */
export interface ResponseMemory {
  remember(id: string, conversation: ChatMessage[]): void;
  /** The turns of that response and those before it; undefined once forgotten (or never stored). */
  recall(id: string): ChatMessage[] | undefined;
}

export function createResponseMemory(
  init: { maxResponses?: number; maxChars?: number; retainMs?: number; now?: () => number } = {},
): ResponseMemory {
  const maxResponses = init.maxResponses ?? 1000;
  const maxChars = init.maxChars ?? 8 * 2 ** 20; // 16 MiB as UTF-16
  const retainMs = init.retainMs ?? 10 * 60_000;
  const now = init.now ?? Date.now;
  // insertion order is age order: the first entry is the oldest
  const kept = new Map<string, { conversation: ChatMessage[]; chars: number; at: number }>();
  let chars = 0;
  const forgetOld = (): void => {
    for (const [id, entry] of kept) {
      if (kept.size <= maxResponses && chars <= maxChars && entry.at + retainMs > now()) return;
      kept.delete(id);
      chars -= entry.chars;
    }
  };
  return {
    remember(id, conversation) {
      const size = conversation.reduce(
        (n, m) => n + m.content.length + (m.toolCalls ?? []).reduce((k, c) => k + c.arguments.length, 0),
        0,
      );
      kept.set(id, { conversation, chars: size, at: now() });
      chars += size;
      forgetOld();
    },
    recall(id) {
      forgetOld();
      return kept.get(id)?.conversation;
    },
  };
}

/** How the request uses function tools (as the chat route would), or undefined for a text answer. */
export function responsesToolPlan(body: ResponsesBody): ToolPlan | undefined {
  const choice = body.tool_choice;
  return toolPlan({
    tools: (body.tools ?? []).map((t) => ({
      type: 'function' as const,
      function: {
        name: t.name,
        ...(t.description == null ? {} : { description: t.description }),
        ...(t.parameters == null ? {} : { parameters: t.parameters }),
      },
    })),
    tool_choice:
      choice == null || typeof choice === 'string'
        ? choice
        : { type: 'function', function: { name: choice.name } },
    parallel_tool_calls: body.parallel_tool_calls,
  });
}

/** The request's turns after any earlier response's: what the answer continues (without instructions). */
export function conversationOf(body: ResponsesBody, memory: ResponseMemory): ChatMessage[] {
  const conversation = turnsOf(body, memory);
  // every function_call_output answers a call of the assistant turn before it
  checkChatToolMessages(conversation);
  return conversation;
}

function turnsOf(body: ResponsesBody, memory: ResponseMemory): ChatMessage[] {
  const earlier: ChatMessage[] = [];
  if (body.previous_response_id != null) {
    const recalled = memory.recall(body.previous_response_id);
    if (recalled === undefined) {
      throw new RbeeError(
        'NOT_FOUND',
        `previous response ${body.previous_response_id} not found: this node keeps responses for 10 minutes (not those sent with store: false)`,
      );
    }
    earlier.push(...recalled);
  }
  if (typeof body.input === 'string') return [...earlier, { role: 'user', content: body.input }];
  const turns = [...earlier];
  for (const item of body.input) {
    if (item.type === 'function_call') {
      // calls in a row are one assistant turn, as the model answered them
      const call = { id: item.call_id, name: item.name, arguments: item.arguments };
      const last = turns.at(-1);
      if (last?.role === 'assistant' && last.toolCalls !== undefined) last.toolCalls.push(call);
      else turns.push({ role: 'assistant', content: '', toolCalls: [call] });
    } else if (item.type === 'function_call_output') {
      turns.push({ role: 'tool', content: item.output, toolCallId: item.call_id });
    } else {
      turns.push({
        role: item.role === 'developer' ? 'system' : item.role,
        content: typeof item.content === 'string' ? item.content : item.content.map((p) => p.text).join(''),
      });
    }
  }
  return turns;
}

/** The chat job a Responses request runs: its instructions, then the conversation. */
export function responsesJob(body: ResponsesBody, conversation: ChatMessage[], plan?: ToolPlan): JobRequest {
  const messages: ChatMessage[] = [];
  if (body.instructions != null) messages.push({ role: 'system', content: body.instructions });
  messages.push(...conversation);
  return {
    model: body.model,
    messages,
    ...(body.max_output_tokens == null ? {} : { maxTokens: body.max_output_tokens }),
    ...(body.temperature == null ? {} : { temperature: body.temperature }),
    ...(body.top_p == null ? {} : { topP: body.top_p }),
    ...(body.seed === undefined ? {} : { seed: body.seed }),
    ...(body.keep_alive === undefined ? {} : { keepAlive: body.keep_alive }),
    ...(plan === undefined ? {} : toolJobFields(plan)),
  };
}

type Json = Record<string, unknown>;

type OutputItem =
  | { type: 'message'; id: string; text: string }
  | { type: 'function_call'; id: string; callId: string; name: string; arguments: string };

/**
 * The response object and its streamed events, for one job: a text answer is one `message` item; with
 * tools, text and calls become `message` and `function_call` items in the order the answer has them.
 */
export function responsesShape(
  body: ResponsesBody,
  jobId: string,
  created: number,
  /** Called once with the answer (its text and calls), when the response completes. */
  onAnswer?: (responseId: string, answer: ChatMessage) => void,
  plan?: ToolPlan,
): {
  chunk(text: string | undefined, finish: string | null, first: boolean, done?: DoneEvent): Json[];
  whole(text: string, done: DoneEvent): Json;
} {
  const id = `resp_${jobId}`;
  const tools = plan === undefined ? undefined : new ToolStream(plan);
  const items: OutputItem[] = [];
  let open: OutputItem | undefined;
  let sequence = 0;
  const event = (type: string, fields: Json): Json => ({ type, sequence_number: sequence++, ...fields });
  const part = (t: string): Json => ({ type: 'output_text', text: t, annotations: [], logprobs: [] });
  const itemJson = (item: OutputItem, status: string): Json =>
    item.type === 'message'
      ? {
          id: item.id,
          type: 'message',
          status,
          role: 'assistant',
          content: status === 'in_progress' ? [] : [part(item.text)],
        }
      : {
          id: item.id,
          type: 'function_call',
          status,
          call_id: item.callId,
          name: item.name,
          arguments: status === 'in_progress' ? '' : item.arguments,
        };
  const indexOf = (item: OutputItem): number => items.indexOf(item);

  const response = (status: string, output: Json[], done?: DoneEvent): Json => ({
    id,
    object: 'response',
    created_at: created,
    status,
    model: body.model,
    output,
    previous_response_id: body.previous_response_id ?? null,
    store: body.store !== false,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    temperature: body.temperature ?? null,
    top_p: body.top_p ?? null,
    metadata: body.metadata ?? {},
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    tool_choice: body.tool_choice ?? (plan === undefined ? 'none' : 'auto'),
    tools: (body.tools ?? []).map((t) => ({
      type: 'function',
      name: t.name,
      description: t.description ?? null,
      parameters: t.parameters ?? null,
      strict: t.strict ?? false,
    })),
    text: { format: { type: 'text' } },
    error: null,
    incomplete_details: done?.finishReason === 'length' ? { reason: 'max_output_tokens' } : null,
    usage:
      done === undefined
        ? null
        : {
            input_tokens: done.usage.promptTokens,
            input_tokens_details: { cached_tokens: done.usage.cachedPromptTokens ?? 0 },
            output_tokens: done.usage.completionTokens,
            output_tokens_details: { reasoning_tokens: 0 },
            total_tokens: done.usage.promptTokens + done.usage.completionTokens,
          },
  });

  const close = (status: string): Json[] => {
    const item = open;
    if (item === undefined) return [];
    open = undefined;
    const at = indexOf(item);
    if (item.type === 'message') {
      const where = { item_id: item.id, output_index: at, content_index: 0 };
      return [
        event('response.output_text.done', { ...where, text: item.text, logprobs: [] }),
        event('response.content_part.done', { ...where, part: part(item.text) }),
        event('response.output_item.done', { output_index: at, item: itemJson(item, status) }),
      ];
    }
    return [
      event('response.function_call_arguments.done', {
        item_id: item.id,
        output_index: at,
        name: item.name,
        arguments: item.arguments,
      }),
      event('response.output_item.done', { output_index: at, item: itemJson(item, status) }),
    ];
  };
  const openItem = (item: OutputItem): Json[] => {
    const closed = close('completed');
    items.push(item);
    open = item;
    const at = indexOf(item);
    const added = event('response.output_item.added', {
      output_index: at,
      item: itemJson(item, 'in_progress'),
    });
    if (item.type !== 'message') return [...closed, added];
    return [
      ...closed,
      added,
      event('response.content_part.added', {
        item_id: item.id,
        output_index: at,
        content_index: 0,
        part: part(''),
      }),
    ];
  };
  const newId = (prefix: string): string => `${prefix}_${randomUUID().replaceAll('-', '')}`;
  const apply = (pieces: ToolStreamEvent[]): Json[] =>
    pieces.flatMap((piece): Json[] => {
      if (piece.type === 'text') {
        const events =
          open?.type === 'message' ? [] : openItem({ type: 'message', id: newId('msg'), text: '' });
        const item = open as Extract<OutputItem, { type: 'message' }>;
        item.text += piece.text;
        const where = { item_id: item.id, output_index: indexOf(item), content_index: 0 };
        return [
          ...events,
          event('response.output_text.delta', { ...where, delta: piece.text, logprobs: [] }),
        ];
      }
      if (piece.type === 'call') {
        return openItem({
          type: 'function_call',
          id: newId('fc'),
          callId: piece.id,
          name: piece.name,
          arguments: '',
        });
      }
      if (open?.type !== 'function_call') return [];
      open.arguments += piece.fragment;
      return [
        event('response.function_call_arguments.delta', {
          item_id: open.id,
          output_index: indexOf(open),
          delta: piece.fragment,
        }),
      ];
    });
  const status = (done: DoneEvent): string => (done.finishReason === 'length' ? 'incomplete' : 'completed');
  /** The last events: open items closed, the answer remembered. */
  const finish = (done: DoneEvent): { events: Json[]; output: Json[]; end: string } => {
    const end = status(done);
    const events = [...(tools === undefined ? [] : apply(tools.end())), ...close(end)];
    const calls = items.flatMap((item) =>
      item.type === 'function_call' ? [{ id: item.callId, name: item.name, arguments: item.arguments }] : [],
    );
    const text = items.map((item) => (item.type === 'message' ? item.text : '')).join('');
    onAnswer?.(id, { role: 'assistant', content: text, ...(calls.length === 0 ? {} : { toolCalls: calls }) });
    return { events, output: items.map((item) => itemJson(item, end)), end };
  };
  const pieces = (text: string): ToolStreamEvent[] =>
    tools === undefined ? [{ type: 'text', text }] : tools.feed(text);

  return {
    chunk(piece, finishReason, first, done) {
      const events: Json[] = [];
      if (first) {
        events.push(
          event('response.created', { response: response('in_progress', []) }),
          event('response.in_progress', { response: response('in_progress', []) }),
        );
        // a text answer's one item opens at once; with tools, the first piece decides what opens
        if (tools === undefined) events.push(...openItem({ type: 'message', id: newId('msg'), text: '' }));
      }
      if (piece !== undefined) events.push(...apply(pieces(piece)));
      if (finishReason === null || done === undefined) return events;
      const last = finish(done);
      return [
        ...events,
        ...last.events,
        event(`response.${last.end}`, { response: response(last.end, last.output, done) }),
      ];
    },
    whole: (whole, done) => {
      if (tools === undefined) openItem({ type: 'message', id: newId('msg'), text: '' });
      apply(pieces(whole));
      const last = finish(done);
      return response(last.end, last.output, done);
    },
  };
}
