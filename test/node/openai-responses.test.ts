/**
 * The Responses API (`POST /v1/responses`), driven by the official `openai` client's
 * `responses.create` against a real node with the demo model.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testNodeConfig } from '../helpers/test-node.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';

let home: string;
let node: RunningNode;
let client: OpenAI;

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), 'rbee-openai-responses-'));
  node = await startNode(testNodeConfig(home));
  client = new OpenAI({ baseURL: `${node.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await node.close('test done');
  rmSync(home, { recursive: true, force: true });
});

const params = {
  model: 'demo',
  input: 'Tell me a story',
  max_output_tokens: 8,
  temperature: 0,
};

describe('OpenAI Responses API', () => {
  it('answers with one message output item of output_text, and usage', async () => {
    const response = await client.responses.create(params);
    expect(response.object).toBe('response');
    expect(response.id).toMatch(/^resp_/);
    // cut by max_output_tokens
    expect(response.status).toBe('incomplete');
    expect(response.incomplete_details).toEqual({ reason: 'max_output_tokens' });
    expect(response.output).toHaveLength(1);
    const item = response.output[0]!;
    expect(item.type).toBe('message');
    if (item.type !== 'message') return;
    expect(item.role).toBe('assistant');
    expect(item.content[0]!.type).toBe('output_text');
    expect(response.output_text.length).toBeGreaterThan(0);
    expect(response.usage).toMatchObject({ output_tokens: 8 });
    expect(response.usage!.total_tokens).toBe(response.usage!.input_tokens + 8);
  });

  it('puts instructions and message input into the prompt', async () => {
    const plain = await client.responses.create(params);
    const instructed = await client.responses.create({
      ...params,
      instructions: 'You are a pirate who answers in rhymes, always, whatever the question is.',
    });
    expect(instructed.instructions).toMatch(/pirate/);
    expect(instructed.usage!.input_tokens).toBeGreaterThan(plain.usage!.input_tokens + 10);
    const messages = await client.responses.create({
      ...params,
      input: [
        { role: 'user', content: 'Tell me a story' },
        { role: 'assistant', content: 'Once upon a time' },
        { role: 'user', content: [{ type: 'input_text', text: 'Go on' }] },
      ],
    });
    expect(messages.usage!.input_tokens).toBeGreaterThan(plain.usage!.input_tokens);
  });

  it('streams the typed event sequence, with the same text as the whole answer', async () => {
    const whole = await client.responses.create(params);
    const stream = await client.responses.create({ ...params, stream: true });
    const types: string[] = [];
    const sequence: number[] = [];
    let deltas = '';
    let doneText: string | undefined;
    let final: OpenAI.Responses.Response | undefined;
    for await (const event of stream) {
      types.push(event.type);
      sequence.push(event.sequence_number);
      if (event.type === 'response.output_text.delta') deltas += event.delta;
      if (event.type === 'response.output_text.done') doneText = event.text;
      if (event.type === 'response.incomplete' || event.type === 'response.completed') final = event.response;
    }
    const deltaCount = types.filter((t) => t === 'response.output_text.delta').length;
    expect(deltaCount).toBeGreaterThan(1);
    expect(types.filter((t) => t !== 'response.output_text.delta')).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.incomplete',
    ]);
    expect(sequence).toEqual(sequence.map((_, i) => i));
    expect(deltas).toBe(whole.output_text);
    expect(doneText).toBe(deltas);
    expect(final?.usage).toMatchObject({ output_tokens: 8 });
  });

  it('continues a conversation from previous_response_id, streamed or not', async () => {
    const first = await client.responses.create({ ...params, input: 'Name three colours' });
    const second = await client.responses.create({
      ...params,
      input: 'And three more',
      previous_response_id: first.id,
    });
    expect(second.previous_response_id).toBe(first.id);
    const alone = await client.responses.create({ ...params, input: 'And three more' });
    // the second prompt holds the first turn (its input and its answer) before the new input
    expect(second.usage!.input_tokens).toBeGreaterThan(
      alone.usage!.input_tokens + first.usage!.output_tokens,
    );
    // a streamed turn continues the chain as well
    let streamedId: string | undefined;
    for await (const event of await client.responses.create({
      ...params,
      input: 'One more',
      previous_response_id: second.id,
      stream: true,
    })) {
      if (event.type === 'response.completed' || event.type === 'response.incomplete')
        streamedId = event.response.id;
    }
    const third = await client.responses.create({
      ...params,
      input: 'Thanks',
      previous_response_id: streamedId!,
    });
    expect(third.usage!.input_tokens).toBeGreaterThan(second.usage!.input_tokens);
  });

  it('does not know an unknown response, nor one sent with store: false', async () => {
    const unknown = await client.responses
      .create({ ...params, previous_response_id: 'resp_unknown' })
      .catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(OpenAI.NotFoundError);
    expect((unknown as Error).message).toMatch(/previous response resp_unknown not found/);
    const unstored = await client.responses.create({ ...params, store: false });
    const after = await client.responses
      .create({ ...params, previous_response_id: unstored.id })
      .catch((e: unknown) => e);
    expect(after).toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('refuses what it cannot honour with a 400', async () => {
    const error = await client.responses
      .create({ ...params, tools: [{ type: 'web_search_preview' }] })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect((error as Error).message).toMatch(/tools of type web_search_preview/);
    // a result for a call nobody made
    const orphan = await client.responses
      .create({ ...params, input: [{ type: 'function_call_output', call_id: 'call_x', output: '1' }] })
      .catch((e: unknown) => e);
    expect(orphan).toBeInstanceOf(OpenAI.BadRequestError);
  });
});

const weather: OpenAI.Responses.FunctionTool = {
  type: 'function',
  name: 'get_weather',
  description: 'The weather in a city',
  strict: false,
  parameters: {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 12 }, days: { type: 'integer' } },
    required: ['city', 'days'],
  },
};
const lights: OpenAI.Responses.FunctionTool = {
  type: 'function',
  name: 'set_lights',
  strict: false,
  parameters: {
    type: 'object',
    properties: { on: { type: 'boolean' }, room: { enum: ['kitchen', 'hall'] } },
    required: ['on', 'room'],
  },
};
const toolParams = {
  model: 'demo',
  input: 'What is the weather in Paris?',
  max_output_tokens: 120,
  temperature: 0,
  tools: [weather, lights],
};

function functionCalls(response: OpenAI.Responses.Response): OpenAI.Responses.ResponseFunctionToolCall[] {
  return response.output.flatMap((item) => (item.type === 'function_call' ? [item] : []));
}

describe('OpenAI Responses API with function tools', () => {
  it('answers a forced call as a function_call item whose arguments match the schema', async () => {
    const response = await client.responses.create({
      ...toolParams,
      tool_choice: { type: 'function', name: 'get_weather' },
    });
    expect(response.status).toBe('completed');
    const calls = functionCalls(response);
    expect(calls).toHaveLength(1);
    expect(response.output).toHaveLength(1);
    expect(calls[0]).toMatchObject({ type: 'function_call', name: 'get_weather', status: 'completed' });
    expect(calls[0]!.call_id).toMatch(/^call_/);
    expect(calls[0]!.id).toMatch(/^fc_/);
    const args = JSON.parse(calls[0]!.arguments) as { city: unknown; days: unknown };
    expect(typeof args.city).toBe('string');
    expect(Number.isInteger(args.days)).toBe(true);
    expect(response.tools.map((t) => (t.type === 'function' ? t.name : t.type))).toEqual([
      'get_weather',
      'set_lights',
    ]);
  });

  it('streams calls as argument deltas that add up to the calls of the whole answer', async () => {
    const request = { ...toolParams, tool_choice: 'required' as const, max_output_tokens: 400, seed: 4 };
    const whole = await client.responses.create(request);
    const types: string[] = [];
    const deltas = new Map<number, string>();
    const done = new Map<number, string>();
    let final: OpenAI.Responses.Response | undefined;
    for await (const event of await client.responses.create({ ...request, stream: true })) {
      types.push(event.type);
      if (event.type === 'response.function_call_arguments.delta')
        deltas.set(event.output_index, (deltas.get(event.output_index) ?? '') + event.delta);
      if (event.type === 'response.function_call_arguments.done')
        done.set(event.output_index, event.arguments);
      if (event.type === 'response.completed' || event.type === 'response.incomplete') final = event.response;
    }
    expect(final?.status, JSON.stringify(final?.output)).toBe('completed');
    const calls = functionCalls(final!);
    expect(calls.length).toBeGreaterThanOrEqual(1);
    // the same seeded answer, streamed or whole (call ids are new per answer)
    expect(calls.map((c) => [c.name, c.arguments])).toEqual(
      functionCalls(whole).map((c) => [c.name, c.arguments]),
    );
    calls.forEach((call, index) => {
      expect(deltas.get(index)).toBe(call.arguments);
      expect(done.get(index)).toBe(call.arguments);
    });
    expect(types[0]).toBe('response.created');
    expect(types.at(-1)).toBe('response.completed');
    expect(types).not.toContain('response.output_text.delta');
    expect(types.filter((t) => t === 'response.output_item.added')).toHaveLength(calls.length);
    expect(types.filter((t) => t === 'response.output_item.done')).toHaveLength(calls.length);
  });

  it('answers from a call’s result, given by previous_response_id or with the call in the input', async () => {
    const first = await client.responses.create({
      ...toolParams,
      tool_choice: { type: 'function', name: 'get_weather' },
    });
    const [call] = functionCalls(first);
    const result = { type: 'function_call_output' as const, call_id: call!.call_id, output: '{"c": 21}' };
    const followed = await client.responses.create({
      ...toolParams,
      max_output_tokens: 8,
      tool_choice: 'none',
      previous_response_id: first.id,
      input: [result],
    });
    expect(followed.status).toBe('incomplete');
    expect(followed.output_text.length).toBeGreaterThan(0);
    // the call and its result in the input, without previous_response_id: the same prompt
    const repeated = await client.responses.create({
      ...toolParams,
      max_output_tokens: 8,
      tool_choice: 'none',
      input: [
        { role: 'user', content: toolParams.input },
        { type: 'function_call', call_id: call!.call_id, name: call!.name, arguments: call!.arguments },
        result,
      ],
    });
    expect(repeated.usage!.input_tokens).toBe(followed.usage!.input_tokens);
    expect(repeated.output_text).toBe(followed.output_text);
  });
});
