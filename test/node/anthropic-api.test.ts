/**
 * Anthropic's Messages API on a real node with the demo model, driven by the official
 * `@anthropic-ai/sdk` client (and plain fetch for the raw event stream). The demo model's weights
 * are random, so what it says is gibberish: what holds is the shapes, the stop reasons, that a
 * stream adds up to the whole answer, that a forced call is valid, and the errors' types.
 */
import Anthropic from '@anthropic-ai/sdk';
import type {
  MessageCreateParamsNonStreaming,
  Tool,
  ToolUseBlock,
} from '@anthropic-ai/sdk/resources/messages';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestNode, type TestNode } from '../helpers/test-node.js';

let test: TestNode;
let client: Anthropic;

/** Starts the demo model's worker (making the model first), so that no test waits for a load. */
async function warm(url: string, key?: string): Promise<void> {
  const response = await fetch(`${url}/v1/workers`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key === undefined ? {} : { authorization: `Bearer ${key}` }),
    },
    body: JSON.stringify({ model: 'demo' }),
  });
  expect(response.status, await response.clone().text()).toBe(201);
}

beforeAll(async () => {
  test = await startTestNode('rbee-anthropic-');
  client = new Anthropic({ baseURL: test.url, apiKey: 'unused', maxRetries: 0 });
  await warm(test.url);
}, 180_000);
afterAll(async () => {
  await test?.stop();
});

/**
 * Greedy sampling, so that two requests answer the same. The sdk's types no longer list the
 * sampling parameters; it sends them as they are, and rbee takes them as Anthropic's API did.
 */
const greedy = { temperature: 0, top_k: 1 };

const base = {
  model: 'demo',
  system: 'You are terse.',
  messages: [
    { role: 'user', content: 'Hello' },
    { role: 'assistant', content: 'Hi.' },
    { role: 'user', content: [{ type: 'text', text: 'Tell me a story.' }] },
  ],
  max_tokens: 24,
  ...greedy,
} as MessageCreateParamsNonStreaming;

const weather: Tool = {
  name: 'get_weather',
  description: 'The weather in a city',
  input_schema: {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 12 }, days: { type: 'integer' } },
    required: ['city', 'days'],
  },
};

const textOf = (content: Anthropic.ContentBlock[]): string =>
  content.map((b) => (b.type === 'text' ? b.text : '')).join('');

function checkWeatherCall(block: Anthropic.ContentBlock | undefined): ToolUseBlock {
  expect(block?.type).toBe('tool_use');
  const call = block as ToolUseBlock;
  expect(call.name).toBe('get_weather');
  expect(call.id).not.toBe('');
  const input = call.input as { city?: unknown; days?: unknown };
  expect(typeof input.city).toBe('string');
  expect((input.city as string).length).toBeLessThanOrEqual(12);
  expect(Number.isInteger(input.days)).toBe(true);
  return call;
}

describe('Anthropic Messages API', () => {
  it('answers a multi-turn chat with a system prompt as one message', async () => {
    const message = await client.messages.create(base);
    expect(message).toMatchObject({ type: 'message', role: 'assistant', model: 'demo', stop_sequence: null });
    expect(message.id).toMatch(/^msg_/);
    expect(message.content[0]?.type).toBe('text');
    expect(textOf(message.content).length).toBeGreaterThan(0);
    expect(['end_turn', 'max_tokens']).toContain(message.stop_reason);
    expect(message.usage.output_tokens).toBeGreaterThan(0);
    expect(message.usage.output_tokens).toBeLessThanOrEqual(24);
    expect(message.usage.input_tokens + (message.usage.cache_read_input_tokens ?? 0)).toBeGreaterThan(5);
  });

  it('stops at max_tokens and says so', async () => {
    const message = await client.messages.create({ ...base, max_tokens: 3 });
    expect(message.stop_reason).toBe('max_tokens');
    expect(message.usage.output_tokens).toBe(3);
  });

  it('streams the same answer with the sdk, as text events that add up to the whole message', async () => {
    const whole = await client.messages.create(base);
    const stream = client.messages.stream(base);
    let streamed = '';
    let started: Anthropic.Usage | undefined;
    stream.on('text', (text) => (streamed += text));
    stream.on('streamEvent', (event) => {
      // a copy: the sdk adds later usage to the message it was given
      if (event.type === 'message_start') started = { ...event.message.usage };
    });
    const final = await stream.finalMessage();
    expect(streamed).toBe(textOf(whole.content));
    expect(textOf(final.content)).toBe(textOf(whole.content));
    expect(final.stop_reason).toBe(whole.stop_reason);
    expect(final.usage.output_tokens).toBe(whole.usage.output_tokens);
    // message_start already knows the prompt: the same input tokens as the end, not 0
    const prompt = (u: Anthropic.Usage): number => u.input_tokens + (u.cache_read_input_tokens ?? 0);
    expect(prompt(started!)).toBe(prompt(whole.usage));
    expect(started!.input_tokens).toBe(final.usage.input_tokens);
    expect(started!.cache_read_input_tokens).toBe(final.usage.cache_read_input_tokens);
    expect(started!.output_tokens).toBe(0);
  });

  it('stops at a stop sequence, leaves it out of the text and names it', async () => {
    const free = await client.messages.create({ ...base, max_tokens: 32 });
    const text = textOf(free.content);
    // a piece from the middle of the answer: the answer with it as a stop sequence ends before it
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
    expect(stop.trim().length).toBeGreaterThan(0);
    const stopped = await client.messages.create({
      ...base,
      max_tokens: 32,
      stop_sequences: ['@@never@@', stop],
    });
    expect(stopped.stop_reason).toBe('stop_sequence');
    expect(stopped.stop_sequence).toBe(stop);
    expect(textOf(stopped.content)).toBe(text.slice(0, text.indexOf(stop)));

    const stream = client.messages.stream({ ...base, max_tokens: 32, stop_sequences: [stop] });
    const final = await stream.finalMessage();
    expect(final.stop_reason).toBe('stop_sequence');
    expect(final.stop_sequence).toBe(stop);
    expect(textOf(final.content)).toBe(text.slice(0, text.indexOf(stop)));
  });

  it('round-trips tool use: a forced tool_use, its tool_result, then an answer', async () => {
    const ask = {
      model: 'demo',
      max_tokens: 120,
      ...greedy,
      messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
      tools: [weather],
      tool_choice: { type: 'tool', name: 'get_weather' },
    } as MessageCreateParamsNonStreaming;
    const called = await client.messages.create(ask);
    expect(called.stop_reason).toBe('tool_use');
    const call = checkWeatherCall(called.content.find((b) => b.type === 'tool_use'));

    const answered = await client.messages.create({
      ...ask,
      max_tokens: 16,
      tool_choice: { type: 'none' },
      messages: [
        ...ask.messages,
        { role: 'assistant', content: called.content },
        {
          role: 'user',
          content: [{ type: 'tool_result', tool_use_id: call.id, content: '21 degrees and sunny' }],
        },
      ],
    });
    expect(['end_turn', 'max_tokens']).toContain(answered.stop_reason);
    expect(answered.content.every((b) => b.type === 'text')).toBe(true);
    expect(textOf(answered.content).length).toBeGreaterThan(0);

    // a result that answers no call is refused
    await expect(
      client.messages.create({
        ...ask,
        messages: [
          ...ask.messages,
          { role: 'assistant', content: 'Let me see.' },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_nope', content: 'x' }] },
        ],
      }),
    ).rejects.toBeInstanceOf(Anthropic.BadRequestError);
  });

  it('streams a forced call as input_json deltas that add up to the same call', async () => {
    const ask = {
      model: 'demo',
      max_tokens: 120,
      ...greedy,
      messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
      tools: [weather],
      tool_choice: { type: 'any', disable_parallel_tool_use: true },
    } as MessageCreateParamsNonStreaming;
    const whole = await client.messages.create(ask);
    const stream = client.messages.stream(ask);
    let json = '';
    stream.on('inputJson', (delta) => (json += delta));
    const final = await stream.finalMessage();
    expect(final.stop_reason).toBe('tool_use');
    const call = checkWeatherCall(final.content[0]);
    expect(JSON.parse(json)).toEqual(call.input);
    expect(call.input).toEqual(checkWeatherCall(whole.content[0]).input);
  });

  it('counts the input tokens of a request as the model sees them', async () => {
    const { input_tokens: counted } = await client.messages.countTokens({
      model: base.model,
      system: base.system,
      messages: base.messages,
    });
    const message = await client.messages.create(base);
    expect(counted).toBe(message.usage.input_tokens + (message.usage.cache_read_input_tokens ?? 0));
    const longer = await client.messages.countTokens({
      model: base.model,
      messages: [...base.messages, { role: 'assistant', content: 'Once upon a time there was a fox.' }],
      system: base.system,
    });
    expect(longer.input_tokens).toBeGreaterThan(counted);
    // the tools are part of the prompt the template renders
    const withTools = await client.messages.countTokens({
      model: base.model,
      system: base.system,
      messages: base.messages,
      tools: [weather],
    });
    expect(withTools.input_tokens).toBeGreaterThan(counted);
    await expect(
      client.messages.countTokens({ model: 'no-such-model', messages: base.messages }),
    ).rejects.toBeInstanceOf(Anthropic.NotFoundError);
  });

  it("answers errors in Anthropic's shape, as the sdk's typed errors", async () => {
    const unknown = client.messages.create({ ...base, model: 'no-such-model' });
    await expect(unknown).rejects.toBeInstanceOf(Anthropic.NotFoundError);
    await expect(unknown).rejects.toMatchObject({
      status: 404,
      error: { type: 'error', error: { type: 'not_found_error' } },
    });

    const { max_tokens: _dropped, ...noMax } = base;
    const malformed = client.messages.create(noMax as MessageCreateParamsNonStreaming);
    await expect(malformed).rejects.toBeInstanceOf(Anthropic.BadRequestError);
    await expect(malformed).rejects.toMatchObject({ error: { error: { type: 'invalid_request_error' } } });

    const image = client.messages.create({
      ...base,
      messages: [
        {
          role: 'user',
          content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAAA' } }],
        },
      ],
    });
    await expect(image).rejects.toBeInstanceOf(Anthropic.BadRequestError);
    await expect(image).rejects.toMatchObject({ message: expect.stringContaining('`image`') as unknown });

    const notJson = await fetch(`${test.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: '{"model":',
    });
    expect(notJson.status).toBe(400);
    expect(await notJson.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });

    // the OpenAI routes keep OpenAI's shape
    const openAi = await fetch(`${test.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'no-such-model', messages: [{ role: 'user', content: 'Hi' }] }),
    });
    expect(await openAi.json()).toMatchObject({ error: { code: 'model_not_found' } });
  });

  it('streams raw server-sent events in Anthropic’s names and order', async () => {
    const response = await fetch(`${test.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ ...base, max_tokens: 6, stream: true }),
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const raw = await response.text();
    const events = raw
      .split('\n\n')
      .filter((block) => block.trim() !== '')
      .map((block) => {
        const lines = block.split('\n');
        expect(lines).toHaveLength(2);
        expect(lines[0]).toMatch(/^event: [a-z_]+$/);
        expect(lines[1]).toMatch(/^data: \{/);
        const data = JSON.parse(lines[1]!.slice('data: '.length)) as { type: string } & Record<
          string,
          unknown
        >;
        expect(data.type).toBe(lines[0]!.slice('event: '.length));
        return data;
      });
    const names = events.map((e) => e.type);
    expect(names.slice(0, 3)).toEqual(['message_start', 'ping', 'content_block_start']);
    expect(names.slice(-3)).toEqual(['content_block_stop', 'message_delta', 'message_stop']);
    expect(new Set(names.slice(3, -3))).toEqual(new Set(['content_block_delta']));
    expect(events[0]).toMatchObject({
      message: { type: 'message', role: 'assistant', content: [], stop_reason: null },
    });
    const { input_tokens: countedInput } = await client.messages.countTokens({
      model: base.model,
      system: base.system!,
      messages: base.messages,
    });
    const startUsage = (events[0] as unknown as { message: { usage: Anthropic.Usage } }).message.usage;
    expect(startUsage.input_tokens + (startUsage.cache_read_input_tokens ?? 0)).toBe(countedInput);
    expect(events[2]).toMatchObject({ index: 0, content_block: { type: 'text', text: '' } });
    expect(events.at(-2)).toMatchObject({
      delta: { stop_reason: 'max_tokens', stop_sequence: null },
      usage: { output_tokens: 6 },
    });
  });
});

describe('Anthropic Messages API on a node that wants a key from every client', () => {
  let keyed: TestNode;
  let admin: string;
  beforeAll(async () => {
    keyed = await startTestNode('rbee-anthropic-keys-', {}, { auth: 'always', cluster: { enabled: false } });
    admin = await createKey({ name: 'admin' });
    await warm(keyed.url, admin);
  }, 180_000);
  afterAll(async () => {
    await keyed?.stop();
  });

  const createKey = async (body: Record<string, unknown>, key?: string): Promise<string> => {
    const response = await fetch(`${keyed.url}/v1/keys`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(key === undefined ? {} : { authorization: `Bearer ${key}` }),
      },
      body: JSON.stringify(body),
    });
    expect(response.status).toBe(201);
    return ((await response.json()) as { key: string }).key;
  };

  it('takes the key as x-api-key or as a bearer token, refuses a wrong one, and says when to retry', async () => {
    const ask = { model: 'demo', max_tokens: 2, messages: base.messages };

    const withApiKey = new Anthropic({ baseURL: keyed.url, apiKey: admin, maxRetries: 0 });
    expect((await withApiKey.messages.create(ask)).type).toBe('message');
    const withToken = new Anthropic({ baseURL: keyed.url, authToken: admin, apiKey: null, maxRetries: 0 });
    expect((await withToken.messages.create(ask)).type).toBe('message');

    const wrong = new Anthropic({ baseURL: keyed.url, apiKey: `${admin.slice(0, -1)}x`, maxRetries: 0 });
    const refused = wrong.messages.create(ask);
    await expect(refused).rejects.toBeInstanceOf(Anthropic.AuthenticationError);
    await expect(refused).rejects.toMatchObject({
      error: { type: 'error', error: { type: 'authentication_error' } },
    });

    const limited = new Anthropic({
      baseURL: keyed.url,
      apiKey: await createKey({ name: 'limited', rpm: 1 }, admin),
      maxRetries: 0,
    });
    expect((await limited.messages.create(ask)).type).toBe('message');
    const over = limited.messages.create(ask);
    await expect(over).rejects.toBeInstanceOf(Anthropic.RateLimitError);
    const error = (await over.catch((e: unknown) => e)) as InstanceType<typeof Anthropic.RateLimitError>;
    expect(error.error).toMatchObject({ type: 'error', error: { type: 'rate_limit_error' } });
    expect(Number(error.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  });
});
