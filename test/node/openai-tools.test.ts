/**
 * Tool calling on the OpenAI chat route, driven by the official `openai` client against a real
 * node with the demo model. Its weights are random, so what it says is gibberish: what holds is
 * that a forced call is a valid call (arguments that parse and match the tool's schema), in the
 * right shapes, and that a streamed call adds up to the same call as a whole answer.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import type {
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionMessageFunctionToolCall,
  ChatCompletionTool,
} from 'openai/resources/chat/completions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testNodeConfig } from '../helpers/test-node.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';

let home: string;
let node: RunningNode;
let client: OpenAI;

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), 'rbee-openai-tools-'));
  node = await startNode(testNodeConfig(home));
  client = new OpenAI({ baseURL: `${node.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await node.close('test done');
  rmSync(home, { recursive: true, force: true });
});

const weather: ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: {
      type: 'object',
      properties: {
        city: { type: 'string', maxLength: 12 },
        days: { type: 'integer' },
      },
      required: ['city', 'days'],
    },
  },
};
const lights: ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'set_lights',
    parameters: {
      type: 'object',
      properties: { on: { type: 'boolean' }, room: { enum: ['kitchen', 'hall'] } },
      required: ['on', 'room'],
    },
  },
};

const base = {
  model: 'demo',
  messages: [{ role: 'user' as const, content: 'What is the weather in Paris?' }],
  max_tokens: 120,
  temperature: 0,
  seed: 1,
};

/** The arguments of a call, checked against the test tools' schemas. */
function checkArguments(call: ChatCompletionMessageFunctionToolCall): Record<string, unknown> {
  expect(call.type).toBe('function');
  expect(call.id).toMatch(/^call_/);
  const args = JSON.parse(call.function.arguments) as Record<string, unknown>;
  if (call.function.name === 'get_weather') {
    expect(typeof args.city).toBe('string');
    expect((args.city as string).length).toBeLessThanOrEqual(12);
    expect(Number.isInteger(args.days)).toBe(true);
  } else {
    expect(call.function.name).toBe('set_lights');
    expect(typeof args.on).toBe('boolean');
    expect(['kitchen', 'hall']).toContain(args.room);
  }
  return args;
}

function functionCalls(message: OpenAI.ChatCompletionMessage): ChatCompletionMessageFunctionToolCall[] {
  return (message.tool_calls ?? []).map((call) => {
    if (call.type !== 'function') throw new Error(`unexpected call type ${call.type}`);
    return call;
  });
}

describe('OpenAI tool calling', () => {
  it('answers a forced call to a named function with arguments that match its schema', async () => {
    const completion = await client.chat.completions.create({
      ...base,
      tools: [weather, lights],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
    });
    const choice = completion.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.content).toBeNull();
    const calls = functionCalls(choice.message);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.function.name).toBe('get_weather');
    checkArguments(calls[0]!);
  });

  it('with tool_choice required, calls one of two tools', async () => {
    const completion = await client.chat.completions.create({
      ...base,
      messages: [{ role: 'user', content: 'Turn on the kitchen lights' }],
      tools: [weather, lights],
      tool_choice: 'required',
      parallel_tool_calls: false,
    });
    const calls = functionCalls(completion.choices[0]!.message);
    expect(calls).toHaveLength(1);
    expect(['get_weather', 'set_lights']).toContain(calls[0]!.function.name);
    checkArguments(calls[0]!);
    expect(completion.choices[0]!.finish_reason).toBe('tool_calls');
  });

  it('with parallel tool calls, answers one or more valid calls with distinct ids', async () => {
    const completion = await client.chat.completions.create({
      ...base,
      max_tokens: 400,
      tools: [weather, lights],
      tool_choice: 'required',
      parallel_tool_calls: true,
    });
    expect(completion.choices[0]!.finish_reason).toBe('tool_calls');
    const calls = functionCalls(completion.choices[0]!.message);
    expect(calls.length).toBeGreaterThanOrEqual(1);
    for (const call of calls) checkArguments(call);
    expect(new Set(calls.map((c) => c.id)).size).toBe(calls.length);
  });

  it('streams forced calls (several here) as deltas that add up to the calls it answers whole', async () => {
    const params: ChatCompletionCreateParamsNonStreaming = {
      ...base,
      max_tokens: 400,
      tools: [weather, lights],
      tool_choice: 'required',
    };
    const whole = functionCalls((await client.chat.completions.create(params)).choices[0]!.message);

    const stream = await client.chat.completions.create({ ...params, stream: true });
    const calls: { id?: string; name?: string; arguments: string; pieces: number }[] = [];
    let finish: string | null = null;
    let role: string | undefined;
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (choice === undefined) continue;
      role ??= choice.delta.role;
      finish = choice.finish_reason ?? finish;
      expect(choice.delta.content ?? null).toBeNull();
      for (const delta of choice.delta.tool_calls ?? []) {
        const call = (calls[delta.index] ??= { arguments: '', pieces: 0 });
        if (delta.id !== undefined) {
          // the first delta of a call names it; its arguments follow
          expect(call.id).toBeUndefined();
          expect(delta.type).toBe('function');
          call.id = delta.id;
          call.name = delta.function?.name;
        } else {
          expect(call.id).toBeDefined();
          expect(delta.function?.name).toBeUndefined();
        }
        if ((delta.function?.arguments ?? '') !== '') call.pieces++;
        call.arguments += delta.function?.arguments ?? '';
      }
    }
    expect(role).toBe('assistant');
    expect(finish).toBe('tool_calls');
    expect(calls.map((c) => [c.name, c.arguments])).toEqual(
      whole.map((c) => [c.function.name, c.function.arguments]),
    );
    // the arguments arrive while they are generated, not in one piece at the end
    expect(calls[0]!.pieces).toBeGreaterThan(1);
  });

  it('accepts a call and its result in the history, and answers after it', async () => {
    const history = (result: string): OpenAI.ChatCompletionMessageParam[] => [
      { role: 'user', content: 'What is the weather in Paris?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          {
            id: 'call_abc',
            type: 'function',
            function: { name: 'get_weather', arguments: '{"city":"Paris","days":1}' },
          },
        ],
      },
      { role: 'tool', tool_call_id: 'call_abc', content: result },
    ];
    const short = await client.chat.completions.create({
      ...base,
      max_tokens: 4,
      tools: [weather],
      tool_choice: 'none',
      messages: history('{"temp":21}'),
    });
    const long = await client.chat.completions.create({
      ...base,
      max_tokens: 4,
      tools: [weather],
      tool_choice: 'none',
      messages: history('{"temp":21,"sky":"clear, with a light wind from the west all afternoon"}'),
    });
    expect(typeof short.choices[0]!.message.content).toBe('string');
    expect(short.choices[0]!.message.tool_calls ?? []).toEqual([]);
    // the tool's result is part of the prompt the model was given
    expect(long.usage!.prompt_tokens).toBeGreaterThan(short.usage!.prompt_tokens + 5);

    // and a forced next call after the result is again a valid call
    const next = await client.chat.completions.create({
      ...base,
      tools: [weather, lights],
      tool_choice: { type: 'function', function: { name: 'set_lights' } },
      messages: history('{"temp":21}'),
    });
    checkArguments(functionCalls(next.choices[0]!.message)[0]!);
  });

  it('presents the tools to the model, and with tool_choice auto answers text or valid calls', async () => {
    const plain = await client.chat.completions.create({ ...base, max_tokens: 8 });
    const auto = await client.chat.completions.create({ ...base, max_tokens: 8, tools: [weather, lights] });
    // the template renders the tools' names, descriptions and parameters into the prompt
    expect(auto.usage!.prompt_tokens).toBeGreaterThan(plain.usage!.prompt_tokens + 20);
    const choice = auto.choices[0]!;
    if (choice.finish_reason === 'tool_calls') functionCalls(choice.message).forEach(checkArguments);
    else expect(choice.message.content!.length).toBeGreaterThan(0);
  });

  it('with tool_choice none answers text', async () => {
    const completion = await client.chat.completions.create({
      ...base,
      max_tokens: 6,
      tools: [weather],
      tool_choice: 'none',
    });
    expect(completion.choices[0]!.finish_reason).toBe('length');
    expect(completion.choices[0]!.message.content!.length).toBeGreaterThan(0);
    expect(completion.choices[0]!.message.tool_calls ?? []).toEqual([]);
  });

  it('refuses tool requests it cannot honour with a 400 before any answer', async () => {
    const refused = async (params: Partial<ChatCompletionCreateParamsNonStreaming>): Promise<string> => {
      const error = await client.chat.completions
        .create({ ...base, ...params } as ChatCompletionCreateParamsNonStreaming)
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OpenAI.BadRequestError);
      return (error as InstanceType<typeof OpenAI.BadRequestError>).message;
    };
    expect(
      await refused({ tools: [weather], tool_choice: { type: 'function', function: { name: 'nope' } } }),
    ).toMatch(/nope/);
    expect(await refused({ tool_choice: 'required' })).toMatch(/tools/);
    expect(
      await refused({
        tools: [weather],
        tool_choice: 'required',
        response_format: { type: 'json_object' },
      }),
    ).toMatch(/response_format/);
    expect(
      await refused({
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'tool', tool_call_id: 'call_unknown', content: '1' },
        ],
      }),
    ).toMatch(/tool message/);
  });
});
