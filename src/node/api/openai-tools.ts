/**
 * Tool calling on the OpenAI chat route. The tools go to the chat template (which presents them to
 * the model in its own format); the answer's calls are JSON objects `{"name": …, "arguments": {…}}`.
 *
 * - `tool_choice: "required"` or a named function constrains the output with a grammar built from
 *   the tools' parameter schemas: one call (or, with `parallel_tool_calls`, a JSON array of one or
 *   more), always valid, streamed as OpenAI's tool-call deltas while it is generated.
 * - `"auto"` (the default with tools) lets the model answer freely: an answer that is such a JSON
 *   call (or several, each optionally inside `<tool_call>…</tool_call>`, the format many templates
 *   teach) naming a tool becomes tool calls; anything else is text. While a streamed answer could
 *   still turn out to be a call it is held back, then sent whole.
 * - `"none"` answers text; the tools are not shown to the model.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { RbeeError } from '../../shared/errors.js';
import type { ChatMessage, JobRequest, Tool, ToolCall } from '../../shared/wire.js';

export const toolFields = {
  tools: z
    .array(
      z.object({
        type: z.literal('function'),
        function: z.object({
          name: z
            .string()
            .regex(/^[A-Za-z0-9_-]{1,64}$/, 'a function name is 1 to 64 of a-z, A-Z, 0-9, _ and -'),
          description: z.string().optional(),
          parameters: z.record(z.string(), z.unknown()).optional(),
          strict: z.boolean().nullable().optional(),
        }),
      }),
    )
    .max(128)
    .nullable()
    .optional(),
  tool_choice: z
    .union([
      z.enum(['none', 'auto', 'required']),
      z.object({ type: z.literal('function'), function: z.object({ name: z.string() }) }),
    ])
    .nullable()
    .optional(),
  parallel_tool_calls: z.boolean().nullable().optional(),
};

export const toolMessageFields = {
  tool_calls: z
    .array(
      z.object({
        id: z.string().min(1),
        type: z.literal('function'),
        function: z.object({ name: z.string().min(1), arguments: z.string() }),
      }),
    )
    .nullable()
    .optional(),
  tool_call_id: z.string().min(1).optional(),
};

interface ToolBody {
  tools?: z.infer<typeof toolFields.tools>;
  tool_choice?: z.infer<typeof toolFields.tool_choice>;
  parallel_tool_calls?: boolean | null | undefined;
  response_format?: { type: string } | undefined;
  grammar?: string | undefined;
}

/** How a chat request uses tools, decided once from its body. */
export interface ToolPlan {
  tools: Tool[];
  /** Forced: the output is constrained to calls. Otherwise calls are recognized in free text. */
  forced: boolean;
  /** More than one call may be answered. */
  parallel: boolean;
}

/** The request's tool plan, or undefined when the answer is plain text. Throws BAD_REQUEST. */
export function toolPlan(body: ToolBody): ToolPlan | undefined {
  const tools = (body.tools ?? []).map((t): Tool => ({
    name: t.function.name,
    ...(t.function.description === undefined ? {} : { description: t.function.description }),
    ...(t.function.parameters === undefined ? {} : { parameters: t.function.parameters }),
  }));
  const choice = body.tool_choice ?? (tools.length > 0 ? 'auto' : 'none');
  if (choice === 'none') return undefined;
  if (tools.length === 0) throw new RbeeError('BAD_REQUEST', '`tool_choice` other than "none" needs `tools`');
  const names = new Set<string>();
  for (const tool of tools) {
    if (names.has(tool.name)) throw new RbeeError('BAD_REQUEST', `two tools are named ${tool.name}`);
    names.add(tool.name);
    const type = tool.parameters?.type;
    if (tool.parameters !== undefined && type !== 'object') {
      throw new RbeeError('BAD_REQUEST', `the parameters of tool ${tool.name} must be an object schema`);
    }
  }
  const named = typeof choice === 'object' ? choice.function.name : undefined;
  if (named !== undefined && !names.has(named))
    throw new RbeeError('BAD_REQUEST', `tool_choice names ${named}, which is not among the tools`);
  const forced = choice === 'required' || named !== undefined;
  if (forced && (body.grammar !== undefined || (body.response_format?.type ?? 'text') !== 'text')) {
    throw new RbeeError(
      'BAD_REQUEST',
      'a forced tool call is constrained by its own grammar: leave out `grammar` and `response_format`',
    );
  }
  return {
    tools: named === undefined ? tools : tools.filter((t) => t.name === named),
    forced,
    // a named function is called once; otherwise OpenAI's default allows several calls
    parallel: named === undefined && body.parallel_tool_calls !== false,
  };
}

/** The JSON schema of one call to one of `tools` (name first, so it streams before the arguments). */
function callSchema(tools: readonly Tool[]): Record<string, unknown> {
  const alternatives = tools.map((tool) => ({
    type: 'object',
    properties: {
      name: { const: tool.name },
      arguments: tool.parameters ?? { type: 'object', properties: {} },
    },
    required: ['name', 'arguments'],
  }));
  return alternatives.length === 1 ? alternatives[0]! : { oneOf: alternatives };
}

/** The job's tool fields: the tools for the template and, when forced, the calls' schema. */
export function toolJobFields(plan: ToolPlan): Pick<JobRequest, 'tools' | 'jsonSchema'> {
  if (!plan.forced) return { tools: plan.tools };
  const call = callSchema(plan.tools);
  return {
    tools: plan.tools,
    // a bound on the calls keeps a model that never closes the list from filling its whole budget
    jsonSchema: plan.parallel ? { type: 'array', items: call, minItems: 1, maxItems: MAX_CALLS } : call,
  };
}

type MessageIn = {
  role: string;
  content: string;
  tool_calls?: z.infer<typeof toolMessageFields.tool_calls>;
  tool_call_id?: string | undefined;
};

/** Checks that every tool message answers a call of the assistant message before it. */
export function checkToolMessages(messages: readonly MessageIn[]): void {
  let open = new Set<string>();
  for (const m of messages) {
    if (m.role === 'tool') {
      if (m.tool_call_id === undefined || !open.has(m.tool_call_id)) {
        throw new RbeeError(
          'BAD_REQUEST',
          'a tool message must answer, by tool_call_id, a call of the assistant message before it',
        );
      }
      open.delete(m.tool_call_id);
      continue;
    }
    open = new Set((m.role === 'assistant' ? (m.tool_calls ?? []) : []).map((c) => c.id));
  }
}

/** checkToolMessages over rbee's own messages (as other APIs' requests arrive at them). */
export function checkChatToolMessages(messages: readonly ChatMessage[]): void {
  checkToolMessages(
    messages.map((m) => ({
      role: m.role,
      content: m.content,
      tool_calls: m.toolCalls?.map((c) => ({
        id: c.id,
        type: 'function' as const,
        function: { name: c.name, arguments: c.arguments },
      })),
      ...(m.toolCallId === undefined ? {} : { tool_call_id: m.toolCallId }),
    })),
  );
}

/** A message's tool fields on the wire. */
export function toolMessage(m: MessageIn): Pick<ChatMessage, 'toolCalls' | 'toolCallId'> {
  return {
    ...(m.tool_calls == null || m.tool_calls.length === 0
      ? {}
      : {
          toolCalls: m.tool_calls.map((c): ToolCall => ({
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
          })),
        }),
    ...(m.role === 'tool' && m.tool_call_id !== undefined ? { toolCallId: m.tool_call_id } : {}),
  };
}

export interface OpenAiToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

/** What a streamed answer turns into, piece by piece. */
export type ToolStreamEvent =
  | { type: 'text'; text: string }
  | { type: 'call'; index: number; id: string; name: string }
  | { type: 'arguments'; index: number; fragment: string };

const newCallId = (): string => `call_${randomUUID().replaceAll('-', '').slice(0, 24)}`;

/**
 * Reads grammar-constrained calls (one object, or an array of them) as they are generated: each
 * call's name once its string is complete, then its arguments' JSON text as it grows, exactly the
 * characters the model wrote, so the pieces add up to the whole answer's arguments.
 */
class CallScanner {
  private depth = 0;
  private inString = false;
  private escape = false;
  private stringStart = -1;
  private expectKey = false;
  private key: string | undefined;
  private argsFrom = -1;
  private sent = 0;
  private index = -1;
  private readonly callDepth: number;
  private text = '';
  readonly calls: OpenAiToolCall[] = [];

  constructor(array: boolean) {
    this.callDepth = array ? 2 : 1;
  }

  feed(chunk: string): ToolStreamEvent[] {
    const events: ToolStreamEvent[] = [];
    const start = this.text.length;
    this.text += chunk;
    for (let i = start; i < this.text.length; i++) {
      const c = this.text[i]!;
      if (this.inString) {
        if (this.escape) this.escape = false;
        else if (c === '\\') this.escape = true;
        else if (c === '"') {
          this.inString = false;
          if (this.depth === this.callDepth)
            this.stringEnded(this.text.slice(this.stringStart, i + 1), events);
        }
        continue;
      }
      if (c === '"') {
        this.inString = true;
        this.stringStart = i;
      } else if (c === '{' || c === '[') {
        if (this.depth === this.callDepth && !this.expectKey && this.key === 'arguments') this.argsFrom = i;
        this.depth++;
        if (this.depth === this.callDepth && c === '{') {
          this.expectKey = true;
          this.key = undefined;
        }
      } else if (c === '}' || c === ']') {
        this.depth--;
        if (this.depth === this.callDepth && this.argsFrom >= 0) {
          this.flush(i + 1, events);
          this.argsFrom = -1;
          this.key = undefined;
        }
      } else if (this.depth === this.callDepth) {
        if (c === ',') this.expectKey = true;
        else if (c === ':') this.expectKey = false;
      }
    }
    if (this.argsFrom >= 0) this.flush(this.text.length, events);
    return events;
  }

  private stringEnded(literal: string, events: ToolStreamEvent[]): void {
    if (this.expectKey) {
      this.key = JSON.parse(literal) as string;
      return;
    }
    if (this.key === 'name') {
      const name = JSON.parse(literal) as string;
      this.index++;
      const call: OpenAiToolCall = { id: newCallId(), type: 'function', function: { name, arguments: '' } };
      this.calls.push(call);
      events.push({ type: 'call', index: this.index, id: call.id, name });
    }
  }

  private flush(to: number, events: ToolStreamEvent[]): void {
    const from = Math.max(this.argsFrom, this.sent);
    if (to <= from || this.index < 0) return;
    const fragment = this.text.slice(from, to);
    this.sent = to;
    this.calls[this.index]!.function.arguments += fragment;
    events.push({ type: 'arguments', index: this.index, fragment });
  }
}

/** The calls in a free answer, or undefined when it is text (or names no tool of `plan`). */
export function recognizeCalls(text: string, plan: ToolPlan): OpenAiToolCall[] | undefined {
  let body = text.trim();
  const tagged = [...body.matchAll(/<tool_call>([\s\S]*?)<\/tool_call>/g)];
  if (tagged.length > 0) {
    if (body.replace(/<tool_call>[\s\S]*?<\/tool_call>/g, '').trim() !== '') return undefined;
    body = `[${tagged.map((m) => m[1]).join(',')}]`;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return undefined;
  }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  if (list.length === 0 || (list.length > 1 && !plan.parallel)) return undefined;
  const names = new Set(plan.tools.map((t) => t.name));
  const calls: OpenAiToolCall[] = [];
  for (const item of list) {
    if (typeof item !== 'object' || item === null) return undefined;
    const { name, arguments: args } = item as { name?: unknown; arguments?: unknown };
    if (typeof name !== 'string' || !names.has(name)) return undefined;
    if (typeof args !== 'object' || args === null || Array.isArray(args)) return undefined;
    calls.push({ id: newCallId(), type: 'function', function: { name, arguments: JSON.stringify(args) } });
  }
  return calls;
}

/**
 * Turns an answer's text, as it streams, into text and tool-call pieces: forced calls as they are
 * generated; a free answer's text at once unless it could be a call, which waits for the end.
 */
export class ToolStream {
  private readonly scanner: CallScanner | undefined;
  private held = '';
  private mode: 'undecided' | 'text' | 'held' = 'undecided';
  calls: OpenAiToolCall[] = [];

  constructor(private readonly plan: ToolPlan) {
    if (plan.forced) this.scanner = new CallScanner(plan.parallel);
  }

  feed(text: string): ToolStreamEvent[] {
    if (this.scanner !== undefined) {
      const events = this.scanner.feed(text);
      this.calls = this.scanner.calls;
      return events;
    }
    if (this.mode === 'text') return [{ type: 'text', text }];
    this.held += text;
    if (this.mode === 'undecided') {
      const start = this.held.trimStart();
      if (start === '' || (start.length < TAG.length && TAG.startsWith(start))) return [];
      if (start.startsWith('{') || start.startsWith('[') || start.startsWith(TAG)) {
        this.mode = 'held';
        return [];
      }
      this.mode = 'text';
      const all = this.held;
      this.held = '';
      return [{ type: 'text', text: all }];
    }
    return [];
  }

  /** What is left once the answer is complete. */
  end(): ToolStreamEvent[] {
    if (this.scanner !== undefined || this.held === '') return [];
    const text = this.held;
    this.held = '';
    const calls = recognizeCalls(text, this.plan);
    if (calls === undefined) return [{ type: 'text', text }];
    this.calls = calls;
    return calls.flatMap((call, index): ToolStreamEvent[] => [
      { type: 'call', index, id: call.id, name: call.function.name },
      { type: 'arguments', index, fragment: call.function.arguments },
    ]);
  }
}

const TAG = '<tool_call>';
const MAX_CALLS = 16;

/** The whole answer as OpenAI's message and finish reason. */
export function toolAnswer(
  text: string,
  plan: ToolPlan,
  finish: string,
): { message: Record<string, unknown>; finish: string } {
  const stream = new ToolStream(plan);
  const events = [...stream.feed(text), ...stream.end()];
  const content = events.flatMap((e) => (e.type === 'text' ? [e.text] : [])).join('');
  if (stream.calls.length === 0) return { message: { role: 'assistant', content: text }, finish };
  return {
    message: { role: 'assistant', content: content === '' ? null : content, tool_calls: stream.calls },
    finish: finish === 'stop' ? 'tool_calls' : finish,
  };
}

type Json = Record<string, unknown>;

/**
 * A chat answer with tools, streamed as OpenAI's chunks: text as `content`, calls as
 * `delta.tool_calls[i]` (index, id, type and name first, then `function.arguments` pieces), and
 * finish_reason `tool_calls` when it called any. `chunk` builds one chunk from a delta.
 */
export function toolChatShape(
  plan: ToolPlan,
  chunk: (delta: Json, finish: string | null) => Json,
): {
  chunk(text: string | undefined, finish: string | null): Json[];
  message(text: string, finish: string): { message: Json; finish: string };
} {
  const stream = new ToolStream(plan);
  let first = true;
  const toChunks = (events: ToolStreamEvent[]): Json[] =>
    events.map((e) => {
      const delta: Json =
        e.type === 'text'
          ? { content: e.text }
          : e.type === 'call'
            ? {
                tool_calls: [
                  { index: e.index, id: e.id, type: 'function', function: { name: e.name, arguments: '' } },
                ],
              }
            : { tool_calls: [{ index: e.index, function: { arguments: e.fragment } }] };
      if (first) {
        first = false;
        return chunk({ role: 'assistant', ...(e.type === 'text' ? {} : { content: null }), ...delta }, null);
      }
      return chunk(delta, null);
    });
  return {
    chunk(text, finish) {
      // no text and no finish: a chunk with an empty delta (the base of the usage chunk)
      if (finish === null) return text === undefined ? [chunk({}, null)] : toChunks(stream.feed(text));
      const rest = toChunks(stream.end());
      const reason = finish === 'stop' && stream.calls.length > 0 ? 'tool_calls' : finish;
      return [...rest, chunk(first ? { role: 'assistant' } : {}, reason)];
    },
    message: (text, finish) => toolAnswer(text, plan, finish),
  };
}
