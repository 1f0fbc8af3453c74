/**
 * OpenAI's Responses API (`POST /v1/responses`) over the same chat jobs: `input` (a string or
 * messages) and `instructions` become the chat, the answer one `message` output item with one
 * `output_text` part. Streaming sends the typed event sequence (response.created … response.completed),
 * each as `event: TYPE` and `data: JSON` with its sequence_number. The node remembers each
 * answered conversation for a while (ResponseMemory: 10 minutes, the last 1000, 16 MiB of text)
 * unless `store: false`, so that `previous_response_id` continues it: the earlier turns come first,
 * then the new input; `instructions` apply to the request that names them only, as OpenAI's do.
 * Tools and non-text output formats are refused for now.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { RbeeError } from '../../shared/errors.js';
import type { ChatMessage, DoneEvent, JobRequest } from '../../shared/wire.js';

const inputPart = z.object({ type: z.enum(['input_text', 'output_text']), text: z.string() });
const inputMessage = z.object({
  type: z.literal('message').optional(),
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string(), z.array(inputPart)]),
});

export const responsesSchema = z.object({
  model: z.string().min(1),
  input: z.union([z.string(), z.array(inputMessage).min(1)]),
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
  for (const key of ['tools', 'reasoning', 'conversation', 'background']) {
    if (record[key] != null && !(Array.isArray(record[key]) && record[key].length === 0)) {
      throw new RbeeError('BAD_REQUEST', `\`${key}\` is not supported on /v1/responses yet`);
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
      const size = conversation.reduce((n, m) => n + m.content.length, 0);
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

/** The request's turns after any earlier response's: what the answer continues (without instructions). */
export function conversationOf(body: ResponsesBody, memory: ResponseMemory): ChatMessage[] {
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
  return [
    ...earlier,
    ...body.input.map((m): ChatMessage => ({
      role: m.role === 'developer' ? 'system' : m.role,
      content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join(''),
    })),
  ];
}

/** The chat job a Responses request runs: its instructions, then the conversation. */
export function responsesJob(body: ResponsesBody, conversation: ChatMessage[]): JobRequest {
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
  };
}

type Json = Record<string, unknown>;

/** The response object and its streamed events, for one job. */
export function responsesShape(
  body: ResponsesBody,
  jobId: string,
  created: number,
  /** Called once with the answer's whole text, when the response completes. */
  onAnswer?: (responseId: string, text: string) => void,
): {
  chunk(text: string | undefined, finish: string | null, first: boolean, done?: DoneEvent): Json[];
  whole(text: string, done: DoneEvent): Json;
} {
  const id = `resp_${jobId}`;
  const itemId = `msg_${randomUUID().replaceAll('-', '')}`;
  let sequence = 0;
  let text = '';
  const event = (type: string, fields: Json): Json => ({ type, sequence_number: sequence++, ...fields });
  const part = (t: string): Json => ({ type: 'output_text', text: t, annotations: [], logprobs: [] });
  const item = (status: string, content: Json[]): Json => ({
    id: itemId,
    type: 'message',
    status,
    role: 'assistant',
    content,
  });
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
    parallel_tool_calls: false,
    tool_choice: 'none',
    tools: [],
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
  const status = (done: DoneEvent): string => (done.finishReason === 'length' ? 'incomplete' : 'completed');
  const opening = (): Json[] => [
    event('response.created', { response: response('in_progress', []) }),
    event('response.in_progress', { response: response('in_progress', []) }),
    event('response.output_item.added', { output_index: 0, item: item('in_progress', []) }),
    event('response.content_part.added', {
      item_id: itemId,
      output_index: 0,
      content_index: 0,
      part: part(''),
    }),
  ];
  const at = { item_id: itemId, output_index: 0, content_index: 0 };
  return {
    chunk(piece, finish, first, done) {
      const events = first ? opening() : [];
      if (piece !== undefined) {
        text += piece;
        events.push(event('response.output_text.delta', { ...at, delta: piece, logprobs: [] }));
      }
      if (finish === null || done === undefined) return events;
      const finalItem = item(status(done) === 'completed' ? 'completed' : 'incomplete', [part(text)]);
      const end = status(done);
      onAnswer?.(id, text);
      return [
        ...events,
        event('response.output_text.done', { ...at, text, logprobs: [] }),
        event('response.content_part.done', { ...at, part: part(text) }),
        event('response.output_item.done', { output_index: 0, item: finalItem }),
        event(`response.${end}`, { response: response(end, [finalItem], done) }),
      ];
    },
    whole: (whole, done) => {
      onAnswer?.(id, whole);
      return response(
        status(done),
        [item(status(done) === 'completed' ? 'completed' : 'incomplete', [part(whole)])],
        done,
      );
    },
  };
}
