/**
 * Structured output with JSON schemas as schema libraries write them (zod, zod-to-json-schema,
 * pydantic, TypeBox: test/fixtures/json-schemas), through the official `openai` client on a real
 * node with the demo model: every answer parses and validates against its whole schema.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testNodeConfig } from '../helpers/test-node.js';
import { buildTestVocab } from '../../src/engine/gguf/index.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';

type AddFormats = (ajv: Ajv2020) => Ajv2020;
const addFormats = ((addFormatsModule as unknown as { default?: AddFormats }).default ??
  addFormatsModule) as unknown as AddFormats;

const dir = new URL('../fixtures/json-schemas/', import.meta.url);
const fixtures = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .map((f) => [f, JSON.parse(readFileSync(new URL(f, dir), 'utf8')) as Record<string, unknown>] as const);

/**
 * The demo model's random weights rarely pick a closing quote, brace or bracket among the ~2,000
 * tokens a string or map allows, so an unbounded string could run to max_tokens. The client nudges
 * the closers up with `logit_bias`, as a user steers a model: the grammar still decides where one
 * may stand (a string's minLength, an object's required keys), so every answer must finish.
 */
const demoVocab = buildTestVocab(2048).tokens;
const CLOSERS = ['"', '}', ']'].flatMap((c) => [c, `\u2581${c}`]);
const closerBias = Object.fromEntries(
  CLOSERS.map((piece) => {
    const id = demoVocab.indexOf(piece);
    if (id < 0) throw new Error(`the demo vocabulary has no ${piece}`);
    return [String(id), 6];
  }),
);

let home: string;
let node: RunningNode;
let client: OpenAI;

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), 'rbee-schemas-'));
  node = await startNode(testNodeConfig(home));
  client = new OpenAI({ baseURL: `${node.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await node.close('test done');
  rmSync(home, { recursive: true, force: true });
});

/** An independent validator, as the client's own code would check the answer. */
function validatorFor(schema: Record<string, unknown>): (value: unknown) => boolean {
  const { $schema: _s, definitions, ...rest } = schema;
  const ajv = new Ajv2020({ strict: false });
  addFormats(ajv);
  // draft-07's spellings, as a draft-07 validator reads them
  const text = JSON.stringify(definitions === undefined ? rest : { ...rest, $defs: definitions })
    .replaceAll('#/definitions/', '#/$defs/')
    .replace(/"items":(\[[^\]]*\])/g, '"prefixItems":$1');
  const validate = ajv.compile(JSON.parse(text) as object);
  return (value) => validate(value);
}

describe('JSON schemas from schema libraries', () => {
  expect(fixtures.length).toBeGreaterThanOrEqual(8);
  it.each(fixtures)('%s: the answer parses and validates', async (name, schema) => {
    const completion = await client.chat.completions.create({
      model: 'demo',
      messages: [{ role: 'user', content: 'Fill in the form' }],
      max_tokens: 3000,
      temperature: 0,
      seed: 3,
      logit_bias: closerBias,
      response_format: { type: 'json_schema', json_schema: { name: name.replace('.json', ''), schema } },
    });
    const choice = completion.choices[0]!;
    expect(choice.finish_reason).toBe('stop');
    const value = JSON.parse(choice.message.content!) as unknown;
    expect(validatorFor(schema)(value)).toBe(true);
  });

  it('generates a string longer than a grammar repeats at once (minLength 3000), within its bounds', async () => {
    const completion = await client.chat.completions.create({
      model: 'demo',
      messages: [{ role: 'user', content: 'Write an essay' }],
      max_tokens: 3000,
      temperature: 0,
      response_format: {
        type: 'json_schema',
        json_schema: {
          name: 'essay',
          schema: {
            type: 'object',
            properties: { essay: { type: 'string', minLength: 3000, maxLength: 3100 } },
            required: ['essay'],
          },
        },
      },
    });
    const choice = completion.choices[0]!;
    expect(choice.finish_reason).toBe('stop');
    const { essay } = JSON.parse(choice.message.content!) as { essay: string };
    expect(essay.length).toBeGreaterThanOrEqual(3000);
    expect(essay.length).toBeLessThanOrEqual(3100);
  });

  it('answers OUTPUT_INVALID when the model misses a pattern the grammar cannot enforce', async () => {
    const answer = client.chat.completions.create({
      model: 'demo',
      messages: [{ role: 'user', content: 'Code?' }],
      max_tokens: 60,
      temperature: 0,
      response_format: {
        type: 'json_schema',
        json_schema: {
          name: 'code',
          schema: {
            type: 'object',
            properties: { code: { type: 'string', maxLength: 6, pattern: '^[A-Z]{3}-[0-9]{2}$' } },
            required: ['code'],
          },
        },
      },
    });
    await expect(answer).rejects.toMatchObject({ status: 422, code: 'OUTPUT_INVALID' });
  });

  it('refuses a schema whose pattern is no regular expression before generating', async () => {
    const answer = client.chat.completions.create({
      model: 'demo',
      messages: [{ role: 'user', content: 'x' }],
      response_format: {
        type: 'json_schema',
        json_schema: { name: 'bad', schema: { type: 'string', pattern: '([a-z' } },
      },
    });
    await expect(answer).rejects.toMatchObject({ status: 400, code: 'BAD_REQUEST' });
  });
});

describe('OpenAI parameters', () => {
  it('accepts parameters that ask for nothing and refuses more with a clear message', async () => {
    const base = { model: 'demo', messages: [{ role: 'user' as const, content: 'Hi' }], max_tokens: 2 };
    const fine = await client.chat.completions.create({
      ...base,
      logprobs: false,
      n: 1,
      user: 'someone',
      logit_bias: {},
    });
    expect(fine.choices).toHaveLength(1);
    // this node's workers have one slot: two choices cannot run at once
    await expect(client.chat.completions.create({ ...base, n: 2 })).rejects.toMatchObject({
      status: 400,
      code: 'TOO_MANY_CHOICES',
    });
  });

  it('passes logit_bias to sampling: a strongly favoured token is the answer, a banned one never comes', async () => {
    const base = { model: 'demo', prompt: 'Once upon', max_tokens: 4, temperature: 0 };
    const plain = await client.completions.create(base);
    const forced = await client.completions.create({ ...base, logit_bias: { '42': 100 } });
    expect(forced.choices[0]!.text).not.toBe(plain.choices[0]!.text);
    // the same token four times: its text repeated
    const piece = forced.choices[0]!.text.slice(0, forced.choices[0]!.text.length / 4);
    expect(forced.choices[0]!.text).toBe(piece.repeat(4));
    const banned = await client.completions.create({ ...base, logit_bias: { '42': -100 } });
    expect(banned.choices[0]!.text).not.toContain(piece);
    await expect(client.completions.create({ ...base, logit_bias: { '99999999': 5 } })).rejects.toMatchObject(
      {
        status: 400,
        message: expect.stringContaining('vocabulary') as unknown,
      },
    );
  });
});
