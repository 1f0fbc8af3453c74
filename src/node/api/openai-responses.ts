/**
 * OpenAI's Responses API (`POST /v1/responses`) over the same chat jobs: `input` (a string or
 * messages) and `instructions` become the chat, the answer one `message` output item with one
 * `output_text` part. Streaming sends the typed event sequence (response.created … response.completed),
 * each as `event: TYPE` and `data: JSON` with its sequence_number. Nothing is stored, so
 * `previous_response_id` is refused, as are tools and non-text output formats for now.
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
  /** Accepted and ignored: nothing is kept after the answer. */
  store: z.boolean().nullable().optional(),
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
  for (const key of ['previous_response_id', 'tools', 'reasoning', 'conversation', 'background']) {
    if (record[key] != null && !(Array.isArray(record[key]) && record[key].length === 0)) {
      throw new RbeeError('BAD_REQUEST', `\`${key}\` is not supported on /v1/responses yet`);
    }
  }
}

/** The chat job a Responses request runs. */
export function responsesJob(body: ResponsesBody): JobRequest {
  const messages: ChatMessage[] = [];
  if (body.instructions != null) messages.push({ role: 'system', content: body.instructions });
  if (typeof body.input === 'string') messages.push({ role: 'user', content: body.input });
  else {
    for (const m of body.input) {
      messages.push({
        role: m.role === 'developer' ? 'system' : m.role,
        content: typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join(''),
      });
    }
  }
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
      return [
        ...events,
        event('response.output_text.done', { ...at, text, logprobs: [] }),
        event('response.content_part.done', { ...at, part: part(text) }),
        event('response.output_item.done', { output_index: 0, item: finalItem }),
        event(`response.${end}`, { response: response(end, [finalItem], done) }),
      ];
    },
    whole: (whole, done) =>
      response(
        status(done),
        [item(status(done) === 'completed' ? 'completed' : 'incomplete', [part(whole)])],
        done,
      ),
  };
}
