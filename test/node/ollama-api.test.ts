/**
 * Ollama's API, driven by the official `ollama` client as desktop apps and editor plugins do, against
 * a real node with the demo model (random weights: its text is gibberish, its shapes are real) and
 * a real worker. The raw NDJSON is read with plain fetch.
 */
import { readFile } from 'node:fs/promises';
import { Ollama, type Message, type Tool } from 'ollama';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';
import { serveGated, startServer } from './gguf-http-server.js';

let node: TestNode;
let ollama: Ollama;
/** The demo model's name as `/api/tags` lists it. */
let demoName: string;
/** The first answer's load_duration: that request started the demo model's worker. */
let firstLoadNs: number;

beforeAll(async () => {
  node = await startTestNode('rbee-ollama-');
  ollama = new Ollama({ host: node.url });
  // the demo model is generated on its first use, as `rbee infer -m demo` does
  const first = await ollama.generate({ model: 'demo', prompt: 'Hello', options: { num_predict: 2 } });
  expect(first.done).toBe(true);
  firstLoadNs = first.load_duration;
  const { models } = await ollama.list();
  demoName = models[0]!.name;
});
afterAll(async () => {
  await node.stop();
});

const settled = { temperature: 0, seed: 1 };

describe('Ollama API', () => {
  it('answers its version', async () => {
    const { version } = await ollama.version();
    expect(version).toMatch(/^\d+\.\d+\.\d+$/);
    // apps check that the server is up at its root first
    expect((await fetch(`${node.url}/`)).status).toBe(200);
  });

  it("lists the cluster's models with Ollama's fields", async () => {
    const { models } = await ollama.list();
    expect(models).toHaveLength(1);
    const [model] = models;
    expect(model!.name).toMatch(/^tiny:[a-z0-9_]+$/);
    expect(model!.model).toBe(model!.name);
    expect(model!.size).toBeGreaterThan(0);
    expect(model!.digest).toMatch(/^[0-9a-f]{64}$/);
    expect(new Date(model!.modified_at).getTime()).toBeGreaterThan(0);
    expect(model!.details).toMatchObject({ format: 'gguf', family: 'llama' });
    expect(model!.details.parameter_size).toMatch(/^\d+(\.\d+)?[KMB]$/);
    expect(model!.details.quantization_level).toBe(model!.name.split(':')[1]!.toUpperCase());
  });

  it('lists an alias as a model of its own, which works as a model name', async () => {
    const aliased = await fetch(`${node.url}/v1/aliases`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'llama3', model: demoName }),
    });
    expect(aliased.status).toBe(200);
    try {
      const { models } = await ollama.list();
      const alias = models.find((m) => m.name === 'llama3');
      const own = models.find((m) => m.name === demoName);
      expect(alias?.digest).toBe(own?.digest);
      // Ollama's default tag on an alias without one
      const answer = await ollama.generate({
        model: 'llama3:latest',
        prompt: 'Hi',
        options: { num_predict: 1 },
      });
      expect(answer).toMatchObject({ done: true, model: 'llama3:latest' });
    } finally {
      await fetch(`${node.url}/v1/aliases/llama3`, { method: 'DELETE', headers: { 'x-rbee-client': '1' } });
    }
  });

  it('shows a model: details, its context length, its template', async () => {
    const shown = await ollama.show({ model: demoName });
    expect(shown.details.family).toBe('llama');
    const info = shown.model_info as unknown as Record<string, unknown>;
    expect(info['general.architecture']).toBe('llama');
    expect(info['llama.context_length']).toBeGreaterThan(0);
    expect(shown.capabilities).toContain('completion');
    expect(typeof shown.template).toBe('string');
  });

  it('chats whole and streamed, with the same text for the same seed', async () => {
    const request = {
      model: demoName,
      messages: [{ role: 'user', content: 'Hello there' }],
      options: { ...settled, num_predict: 8 },
    };
    const whole = await ollama.chat({ ...request, stream: false });
    expect(whole.message.role).toBe('assistant');
    expect(whole.message.content.length).toBeGreaterThan(0);
    expect(whole).toMatchObject({ done: true, done_reason: 'length', eval_count: 8, model: demoName });
    expect(whole.prompt_eval_count).toBeGreaterThan(0);
    expect(whole.total_duration).toBeGreaterThanOrEqual(whole.eval_duration);

    let text = '';
    let last: Awaited<ReturnType<typeof ollama.chat>> | undefined;
    let pieces = 0;
    for await (const part of await ollama.chat({ ...request, stream: true })) {
      text += part.message.content;
      last = part;
      pieces += 1;
    }
    expect(text).toBe(whole.message.content);
    expect(pieces).toBeGreaterThan(1);
    expect(last).toMatchObject({ done: true, done_reason: 'length', eval_count: 8 });
  });

  it('generates from a prompt, raw or through the template', async () => {
    const whole = await ollama.generate({
      model: demoName,
      prompt: 'Once upon',
      raw: true,
      options: { ...settled, num_predict: 5 },
    });
    expect(whole.response!.length).toBeGreaterThan(0);
    expect(whole).toMatchObject({ done: true, eval_count: 5 });

    let text = '';
    for await (const part of await ollama.generate({
      model: demoName,
      prompt: 'Once upon',
      raw: true,
      stream: true,
      options: { ...settled, num_predict: 5 },
    }))
      text += part.response;
    expect(text).toBe(whole.response);

    const templated = await ollama.generate({
      model: demoName,
      prompt: 'Once upon',
      system: 'Be brief',
      options: { ...settled, num_predict: 3 },
    });
    expect(templated.eval_count).toBe(3);
    // the chat template wraps the prompt: more tokens are evaluated than the raw prompt's
    expect(templated.prompt_eval_count).toBeGreaterThan(whole.prompt_eval_count);
  });

  it('constrains the answer to JSON with format', async () => {
    const schema = { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] };
    const answer = await ollama.chat({
      model: demoName,
      messages: [{ role: 'user', content: 'A number please' }],
      format: schema,
      options: { temperature: 0, num_predict: 40 },
    });
    expect(Number.isInteger((JSON.parse(answer.message.content) as { a: unknown }).a)).toBe(true);
    const json = await ollama.generate({
      model: demoName,
      prompt: 'JSON please',
      format: 'json',
      options: { temperature: 0, num_predict: 40 },
    });
    expect(typeof JSON.parse(json.response!)).toBe('object');
  });

  it("answers tool calls in Ollama's shape, and takes their results back", async () => {
    const weather: Tool = {
      type: 'function',
      function: {
        name: 'get_weather',
        description: 'The weather in a city',
        parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
      },
    };
    // random weights never call a tool on their own: a format that only a call matches makes them
    const callFormat = {
      type: 'object',
      properties: {
        name: { const: 'get_weather' },
        arguments: {
          type: 'object',
          properties: { city: { type: 'string', maxLength: 12 } },
          required: ['city'],
        },
      },
      required: ['name', 'arguments'],
    };
    const messages: Message[] = [{ role: 'user', content: 'Weather in Paris?' }];
    const request = { model: demoName, tools: [weather], format: callFormat, options: { temperature: 0 } };
    const answer = await ollama.chat({ ...request, messages });
    const calls = answer.message.tool_calls ?? [];
    expect(calls).toHaveLength(1);
    expect(calls[0]!.function.name).toBe('get_weather');
    expect(typeof calls[0]!.function.arguments.city).toBe('string');
    expect(answer.done_reason).toBe('stop');

    // streamed, the call arrives whole in one line before the last
    const streamed: Message[] = [];
    for await (const part of await ollama.chat({ ...request, messages, stream: true }))
      streamed.push(part.message);
    const streamedCalls = streamed.flatMap((m) => m.tool_calls ?? []);
    expect(streamedCalls.map((c) => c.function)).toEqual(calls.map((c) => c.function));

    const followUp = await ollama.chat({
      model: demoName,
      tools: [weather],
      messages: [
        ...messages,
        answer.message,
        { role: 'tool', tool_name: 'get_weather', content: '{"temperature": 21}' },
      ],
      options: { ...settled, num_predict: 4 },
    });
    expect(followUp.done).toBe(true);
    expect(followUp.prompt_eval_count).toBeGreaterThan(answer.prompt_eval_count);
  });

  it('embeds one text or several, and answers the legacy embeddings route', async () => {
    const { embeddings, prompt_eval_count } = await ollama.embed({
      model: demoName,
      input: ['hello', 'hello', 'other words'],
    });
    expect(embeddings).toHaveLength(3);
    expect(embeddings[0]!.length).toBe(128);
    expect(embeddings[0]).toEqual(embeddings[1]);
    expect(embeddings[2]).not.toEqual(embeddings[0]);
    expect(prompt_eval_count).toBeGreaterThan(0);
    const legacy = await ollama.embeddings({ model: demoName, prompt: 'hello' });
    expect(legacy.embedding).toEqual(embeddings[0]);
  });

  it('lists running workers, loads a model on an empty prompt and unloads it with keep_alive 0', async () => {
    const loaded = await ollama.generate({ model: demoName, prompt: '', keep_alive: '10m' });
    expect(loaded).toMatchObject({ done: true, done_reason: 'load' });
    const { models } = await ollama.ps();
    expect(models.map((m) => m.name)).toEqual([demoName]);
    expect(models[0]!.size).toBeGreaterThan(0);
    expect(models[0]!.size_vram).toBe(0); // tests run on the CPU
    // the keep-alive the request set: ten minutes after its last use, which was just now
    const expires = new Date(models[0]!.expires_at).getTime() - Date.now();
    expect(expires).toBeGreaterThan(5 * 60_000);
    expect(expires).toBeLessThanOrEqual(10 * 60_000);

    const unloaded = await ollama.chat({ model: demoName, messages: [], keep_alive: 0 });
    expect(unloaded).toMatchObject({ done: true, done_reason: 'unload' });
    await waitFor(async () => (await ollama.ps()).models.length === 0, { timeoutMs: 15_000 });
  });

  // three worker loads (each seconds on a loaded machine)
  it('honours num_ctx: the worker is reloaded with the context asked, and /api/ps shows it', async () => {
    const contextOfRunning = async (): Promise<number[]> => {
      const body = (await (await fetch(`${node.url}/api/ps`)).json()) as {
        models: { context_length: number }[];
      };
      return body.models.map((m) => m.context_length);
    };
    const hi: Message[] = [{ role: 'user', content: 'Hi' }];
    await ollama.chat({ model: demoName, messages: hi, options: { num_predict: 1 } });
    // the model's own context (the tiny model's 2048)
    expect(await contextOfRunning()).toEqual([2048]);
    const widened = await ollama.chat({
      model: demoName,
      messages: hi,
      options: { num_ctx: 4096, num_predict: 1 },
    });
    expect(widened.done).toBe(true);
    expect(await contextOfRunning()).toEqual([4096]);
    // less than the worker has, or none: served as it is, not reloaded
    await ollama.generate({ model: demoName, prompt: 'Hi', options: { num_ctx: 1024, num_predict: 1 } });
    await ollama.chat({ model: demoName, messages: hi, options: { num_predict: 1 } });
    expect(await contextOfRunning()).toEqual([4096]);
    // a load request (no messages) with more loads the model with it
    const loaded = await ollama.chat({ model: demoName, messages: [], options: { num_ctx: 6144 } });
    expect(loaded).toMatchObject({ done: true, done_reason: 'load' });
    expect(await contextOfRunning()).toEqual([6144]);
    const refused = await ollama.chat({ model: demoName, messages: hi, options: { num_ctx: 8 } }).then(
      () => undefined,
      (error: unknown) => error as { status_code: number; error: string },
    );
    expect(refused?.status_code).toBe(400);
    expect(refused?.error).toContain('num_ctx');
  }, 180_000);

  it('pulls a model already on disk, and a model file by its path', async () => {
    const statuses: string[] = [];
    for await (const progress of await ollama.pull({ model: 'demo', stream: true })) {
      statuses.push(progress.status);
      if (progress.total !== undefined && progress.total > 0) expect(progress.completed).toBe(progress.total);
    }
    expect(statuses[0]).toBe('pulling manifest');
    expect(statuses.at(-1)).toBe('success');

    const path = await tinyModelPath();
    const pulled = await ollama.pull({ model: `file:${path}`, stream: false });
    expect(pulled.status).toBe('success');
    const names = (await ollama.list()).models.map((m) => m.name);
    const added = names.find((n) => n.startsWith('tiny-seed1:'));
    expect(added).toBeDefined();
    const answer = await ollama.generate({ model: added!, prompt: 'Hi', options: { num_predict: 2 } });
    expect(answer.eval_count).toBe(2);
  });

  it('copies a model as an alias, and deletes the copy, then a model, as Ollama does', async () => {
    await ollama.copy({ source: demoName, destination: 'my-copy:latest' });
    const listed = (await ollama.list()).models;
    expect(listed.find((m) => m.name === 'my-copy')?.digest).toBe(
      listed.find((m) => m.name === demoName)?.digest,
    );
    const answer = await ollama.generate({ model: 'my-copy', prompt: 'Hi', options: { num_predict: 2 } });
    expect(answer.eval_count).toBe(2);
    // deleting the copy deletes the name only: the model stays
    await ollama.delete({ model: 'my-copy' });
    const after = (await ollama.list()).models.map((m) => m.name);
    expect(after).not.toContain('my-copy');
    expect(after).toContain(demoName);
    await expect(ollama.delete({ model: 'my-copy' })).rejects.toMatchObject({ status_code: 404 });
    await expect(ollama.copy({ source: 'no-such-model', destination: 'x' })).rejects.toMatchObject({
      status_code: 404,
    });

    // a model: refused while a worker has it loaded, gone from the node's models once unloaded
    const path = await tinyModelPath();
    await ollama.pull({ model: `file:${path}`, stream: false });
    const name = (await ollama.list()).models.map((m) => m.name).find((n) => n.startsWith('tiny-seed1:'))!;
    await ollama.generate({ model: name, prompt: 'Hi', options: { num_predict: 1 }, keep_alive: '5m' });
    await expect(ollama.delete({ model: name })).rejects.toMatchObject({ status_code: 409 });
    await ollama.generate({ model: name, prompt: '', keep_alive: 0 });
    await waitFor(async () => !(await ollama.ps()).models.some((m) => m.name === name), {
      timeoutMs: 15_000,
    });
    await ollama.delete({ model: name });
    expect((await ollama.list()).models.map((m) => m.name)).not.toContain(name);
  });

  it('reports the load of the worker a request started as load_duration, and none once loaded', async () => {
    expect(firstLoadNs).toBeGreaterThan(0);
    const warm = await ollama.generate({ model: demoName, prompt: 'Hi', options: { num_predict: 2 } });
    expect(warm.load_duration).toBe(0);
    expect(warm.total_duration).toBeGreaterThan(0);
  });

  it('streams the progress of a download as it goes, then success', async () => {
    const body = await readFile(await tinyModelPath());
    const server = await startServer();
    let open!: () => void;
    server.route(
      '/models/pulled-tiny.gguf',
      serveGated(body, body.length >> 1, new Promise((r) => (open = r))),
    );
    try {
      const lines: { status: string; digest?: string; total?: number; completed?: number }[] = [];
      for await (const progress of await ollama.pull({
        model: `${server.origin}/models/pulled-tiny.gguf`,
        stream: true,
      })) {
        lines.push(progress);
        // half the file is there and the rest waits: the client has seen the download under way
        if (progress.completed > 0 && progress.completed < body.length) open();
      }
      const pulling = lines.filter((l) => l.status.startsWith('pulling ') && l.status !== 'pulling manifest');
      expect(pulling.some((l) => l.completed! < body.length)).toBe(true);
      for (const l of pulling) {
        expect(l.total).toBe(body.length);
        expect(l.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
        expect(l.status).toBe(`pulling ${l.digest!.slice(7, 19)}`);
      }
      const completed = pulling.map((l) => l.completed!);
      expect(completed).toEqual([...completed].sort((a, b) => a - b));
      expect(lines.at(-1)!.status).toBe('success');
      expect((await ollama.list()).models.map((m) => m.name)).toContain('pulled-tiny:q8_0');
    } finally {
      open();
      await server.close();
    }
  });

  it("answers an unknown model with Ollama's 404", async () => {
    const calls = [
      () => ollama.chat({ model: 'no-such-model:7b', messages: [{ role: 'user', content: 'Hi' }] }),
      () => ollama.generate({ model: 'no-such-model:7b', prompt: 'Hi' }),
      () => ollama.show({ model: 'no-such-model:7b' }),
      () => ollama.embed({ model: 'no-such-model:7b', input: 'Hi' }),
      () => ollama.pull({ model: 'no-such-model:7b' }),
    ];
    for (const call of calls) {
      await expect(call()).rejects.toMatchObject({
        status_code: 404,
        error: "model 'no-such-model:7b' not found",
      });
    }
    // Ollama's default tag: a name without a tag works with `:latest` too
    const latest = await ollama.generate({ model: 'demo:latest', prompt: 'Hi', options: { num_predict: 1 } });
    expect(latest.done).toBe(true);
  });

  it('refuses a bad request with a message', async () => {
    const refused = await ollama
      .chat({ model: demoName, messages: [{ role: 'user', content: 'Hi' }], options: { temperature: 50 } })
      .then(
        () => undefined,
        (error: unknown) => error as { status_code: number; error: string },
      );
    expect(refused?.status_code).toBe(400);
    expect(refused?.error).toContain('temperature');
    const response = await fetch(`${node.url}/api/chat`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"model": ',
    });
    expect(response.status).toBe(400);
    expect(typeof ((await response.json()) as { error: unknown }).error).toBe('string');
  });

  it('streams NDJSON: one JSON object per line, the last with done true', async () => {
    for (const [route, body] of [
      ['chat', { messages: [{ role: 'user', content: 'Hi' }] }],
      ['generate', { prompt: 'Hi' }],
    ] as const) {
      const response = await fetch(`${node.url}/api/${route}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: demoName, ...body, options: { num_predict: 6 } }),
      });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toBe('application/x-ndjson');
      const text = await response.text();
      expect(text.endsWith('\n')).toBe(true);
      const lines = text.slice(0, -1).split('\n');
      const objects = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(objects.length).toBeGreaterThan(1);
      expect(objects.slice(0, -1).every((o) => o.done === false)).toBe(true);
      expect(objects.at(-1)).toMatchObject({ done: true, done_reason: 'length', eval_count: 6 });
      for (const o of objects) expect(o.model).toBe(demoName);
    }
  });
});

describe('Ollama API of a node that wants a key from every client', () => {
  it("refuses a client without a valid key in Ollama's shape, and serves one with a key", async () => {
    const keyed = await startTestNode('rbee-ollama-auth-', {}, { auth: 'always' });
    try {
      const noKey = new Ollama({ host: keyed.url, headers: { authorization: 'Bearer rbee_not-a-key' } });
      await expect(noKey.list()).rejects.toMatchObject({
        status_code: 401,
        error: expect.stringContaining('API key') as unknown,
      });
      // the first key is made without one
      const created = await fetch(`${keyed.url}/v1/keys`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      const { key } = (await created.json()) as { key: string };
      const withKey = new Ollama({ host: keyed.url, headers: { authorization: `Bearer ${key}` } });
      expect((await withKey.list()).models).toEqual([]);
    } finally {
      await keyed.stop();
    }
  });
});
