import fc from 'fast-check';
import { getLlama, LlamaJsonSchemaGrammar, LlamaLogLevel } from 'node-llama-cpp';
import { describe, expect, it } from 'vitest';
import {
  gbnfProblem,
  prepareJsonSchema,
  repeatRule,
  terminalPlaceholder,
  tightenNumberRules,
} from '../../src/engine/worker/constraints.js';
import { createRequestGrammar } from '../../src/engine/worker/grammar.js';
import { generateRequestSchema, parseParentMessage } from '../../src/engine/worker/protocol.js';

function problemOf(schema: unknown): string | undefined {
  const prepared = prepareJsonSchema(schema);
  return prepared.ok ? undefined : prepared.problem;
}

describe('prepareJsonSchema', () => {
  it('accepts the subset node-llama-cpp turns into a grammar', () => {
    const schema = {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      title: 'Person',
      type: 'object',
      properties: {
        name: { type: 'string', maxLength: 20, description: 'full name' },
        born: { type: 'string', format: 'date' },
        age: { type: ['integer', 'null'] },
        tags: { type: 'array', items: { enum: ['a', 'b'] }, maxItems: 3 },
        pair: { type: 'array', prefixItems: [{ type: 'number' }, { const: true }] },
        home: { $ref: '#/$defs/place' },
        extra: { type: 'object', additionalProperties: { type: 'boolean' } },
      },
      required: ['name', 'age'],
      additionalProperties: false,
      $defs: { place: { type: 'object', properties: { city: { type: 'string' } } } },
    };
    const prepared = prepareJsonSchema(schema);
    expect(prepared).toMatchObject({ ok: true });
    if (!prepared.ok) return;
    expect(prepared.schema).not.toHaveProperty('$schema');
    expect(prepared.schema.required).toEqual(['name', 'age']);
  });

  it('rewrites anyOf as oneOf, recursively', () => {
    const prepared = prepareJsonSchema({
      type: 'object',
      properties: { n: { anyOf: [{ type: 'integer' }, { anyOf: [{ type: 'null' }] }] } },
    });
    expect(prepared.ok && prepared.schema).toEqual({
      type: 'object',
      properties: { n: { oneOf: [{ type: 'integer' }, { oneOf: [{ type: 'null' }] }] } },
    });
  });

  it('reads the older spellings schema libraries emit as draft 2020-12', () => {
    const prepared = prepareJsonSchema({
      $schema: 'http://json-schema.org/draft-07/schema#',
      type: 'object',
      properties: {
        user: { $ref: '#/definitions/User' },
        point: { type: 'array', items: [{ type: 'number' }, { type: 'number' }], additionalItems: false },
        old: { allOf: [{ $ref: '#/definitions/User' }], description: 'pydantic v1' },
      },
      definitions: { User: { type: 'object', properties: { items: { type: 'string' } } } },
    });
    expect(prepared.ok).toBe(true);
    if (!prepared.ok) return;
    const { properties } = prepared.full as { properties: Record<string, Record<string, unknown>> };
    expect(properties.user).toEqual({ $ref: '#/$defs/User' });
    expect(properties.point).toEqual({
      type: 'array',
      prefixItems: [{ type: 'number' }, { type: 'number' }],
      maxItems: 2,
    });
    expect(properties.old).toEqual({ $ref: '#/$defs/User', description: 'pydantic v1' });
    // a definition's property named like a keyword stays a property
    expect(prepared.full.$defs).toEqual({
      User: { type: 'object', properties: { items: { type: 'string' } } },
    });
  });

  it('enforces in the grammar what it can of number bounds, formats and type lists', () => {
    const prepared = prepareJsonSchema({
      type: 'object',
      properties: {
        small: { type: 'integer', minimum: -2, exclusiveMaximum: 2 },
        safe: { type: 'integer', minimum: -9007199254740991, maximum: 9007199254740991 },
        count: { type: 'integer', minimum: 0 },
        price: { type: 'number', exclusiveMinimum: 0 },
        id: { type: 'string', format: 'uuid', pattern: '^[0-9a-f-]+$' },
        name: { type: ['string', 'null'], maxLength: 4 },
      },
    });
    expect(prepared.ok).toBe(true);
    if (!prepared.ok) return;
    const props = prepared.schema.properties as Record<string, Record<string, unknown>>;
    expect(props.small).toEqual({ enum: [-2, -1, 0, 1] });
    expect(props.safe).toEqual({ type: 'integer' });
    expect(props.count).toEqual({ const: terminalPlaceholder('nonnegative-integer') });
    expect(props.price).toEqual({ const: terminalPlaceholder('positive-number') });
    expect(props.id).toEqual({ const: terminalPlaceholder('uuid') });
    expect(props.name).toEqual({ oneOf: [{ type: 'string', maxLength: 4 }, { type: 'null' }] });
    // the whole schema keeps every keyword, for the check of the finished output
    expect((prepared.full.properties as Record<string, unknown>).id).toEqual({
      type: 'string',
      format: 'uuid',
      pattern: '^[0-9a-f-]+$',
    });
  });

  it.each([
    [{ type: 'foo' }, 'unknown type'],
    [{}, 'needs a type'],
    [[], 'must be a JSON object'],
    [{ type: 'string', not: { const: 'a' } }, 'keyword "not" is not supported'],
    [{ type: 'integer', minimum: '0' }, 'minimum must be a number'],
    [{ type: 'string', pattern: 1 }, 'pattern must be a string'],
    [{ allOf: [{ type: 'string' }, { maxLength: 2 }] }, 'keyword "allOf"'],
    [{ type: 'object', properties: { a: { type: 'bogus' } } }, '$.properties.a: unknown type'],
    [{ type: 'object', properties: { a: { type: 'string' } }, required: ['b'] }, '"b" is not in properties'],
    [{ type: ['object', 'null'], properties: {} }, '"properties" needs type "object"'],
    [{ type: 'string', maxItems: 2 }, '"maxItems" needs type "array"'],
    [{ type: 'string', maxLength: -1 }, 'non-negative integer'],
    [{ $ref: '#/definitions/x' }, 'names no definition'],
    [{ $ref: 'https://example.com/x' }, '$ref must point into $defs'],
    [{ $ref: '#/$defs/missing', $defs: { other: { type: 'null' } } }, 'names no definition'],
    [{ enum: [] }, 'non-empty array'],
    [{ const: { a: 1 } }, 'const must be'],
    [{ oneOf: [{ type: 'string' }], anyOf: [{ type: 'null' }] }, 'either oneOf or anyOf'],
  ])('refuses %j with a reason', (schema, reason) => {
    expect(problemOf(schema)).toContain(reason);
  });

  it('refuses schemas nested too deep instead of recursing without end', () => {
    let schema: Record<string, unknown> = { type: 'null' };
    for (let i = 0; i < 100; i++) schema = { type: 'array', items: schema };
    expect(problemOf(schema)).toContain('nested deeper');
  });
});

describe('tightenNumberRules', () => {
  it('removes integer exponents from the grammar node-llama-cpp really generates', async () => {
    // The real generator, so that a node-llama-cpp upgrade that renames or rewrites rules fails here.
    const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    try {
      const schema = {
        type: 'object',
        properties: { i: { type: 'integer' }, f: { type: 'number' } },
      } as const;
      const original = new LlamaJsonSchemaGrammar(llama, schema).grammar;
      const tightened = tightenNumberRules(original);
      const rule = (name: string): string | undefined =>
        tightened.split('\n').find((line) => line.startsWith(`${name} ::= `));
      expect(rule('integer-number-rule')).toBe('integer-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,14})');
      expect(rule('fractional-number-rule')).toContain('([eE] [-+]? [0-9]{1,2})?');
      expect(tightened).not.toBe(original);
    } finally {
      await llama.dispose();
    }
  });

  it('leaves other grammars alone', () => {
    expect(tightenNumberRules('root ::= "yes" | "no"')).toBe('root ::= "yes" | "no"');
  });
});

describe('gbnfProblem', () => {
  it('finds a repetition whose maximum is below its minimum (llama.cpp hangs on it)', () => {
    expect(gbnfProblem('root ::= "a"{3,1}')).toContain('{3,1}');
    expect(gbnfProblem('root ::= [a-z]{ 10 , 2 } "."')).toContain('maximum below its minimum');
  });

  it('passes valid repetitions and ignores braces inside strings, classes and comments', () => {
    expect(gbnfProblem('root ::= "a"{2,3} "b"{4} "c"{1,}')).toBeUndefined();
    expect(gbnfProblem('root ::= "{3,1}" [{}] # {9,1}\n')).toBeUndefined();
    expect(gbnfProblem('root ::= "\\"{3,1}"')).toBeUndefined();
  });
});

describe('long strings and arrays', () => {
  /** A GBNF repetition of `(a)` read as a JavaScript regular expression (the same operators). */
  const asRegex = (gbnf: string): RegExp =>
    new RegExp(
      `^${gbnf.replaceAll(' ', '').replaceAll('(a)', 'a').replaceAll('(', '(?:').replaceAll('""', '')}$`,
    );

  it('repeats exactly the counts asked for, in blocks llama.cpp takes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 4_500 }),
        fc.option(fc.integer({ min: 0, max: 4_500 }), { nil: undefined }),
        fc.integer({ min: 0, max: 9_500 }),
        (min, extra, random) => {
          const max = extra === undefined ? undefined : min + extra;
          const rule = repeatRule('(a)', min, max);
          // no repetition over the block size: llama.cpp refuses more than 2,000
          for (const [, n] of rule.matchAll(/\{(?:\d+,)?(\d+)\}/g))
            expect(Number(n)).toBeLessThanOrEqual(1_000);
          const regex = asRegex(rule);
          // each bound and both its sides, and one count anywhere
          for (const count of [
            min - 1,
            min,
            min + 1,
            random,
            ...(max === undefined ? [] : [max - 1, max, max + 1]),
          ]) {
            if (count < 0) continue;
            const accepted = count >= min && (max === undefined || count <= max);
            expect(regex.test('a'.repeat(count)), `${rule.slice(0, 80)}… × ${count}`).toBe(accepted);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('turns a JSON schema with lengths and counts past 2,000 into a grammar llama.cpp parses', async () => {
    const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    try {
      const jsonSchema = {
        type: 'object',
        properties: {
          essay: { type: 'string', minLength: 3000, maxLength: 5500 },
          notes: { type: 'string', maxLength: 2_000_000 },
          scores: { type: 'array', items: { type: 'integer' }, minItems: 2500 },
        },
        required: ['essay'],
      };
      // node-llama-cpp alone: llama.cpp refuses the 3,000 repetitions
      expect(() => new LlamaJsonSchemaGrammar(llama, jsonSchema as never)).toThrow();
      const { grammar, checkOutput } = createRequestGrammar(llama, { prompt: 'x', jsonSchema });
      expect(grammar).toBeDefined();
      // what the grammar leaves open (the array's minItems) is still checked on the answer
      expect(
        checkOutput?.(JSON.stringify({ essay: 'x'.repeat(3000), notes: '', scores: [1] })),
      ).toBeDefined();
    } finally {
      await llama.dispose();
    }
  });
});

describe('generate request schema', () => {
  const base = { prompt: 'x' };

  it('accepts penalties, a grammar or a JSON schema', () => {
    const request = { ...base, repeatPenalty: 1.2, presencePenalty: -0.5, frequencyPenalty: 0.5 };
    expect(generateRequestSchema.safeParse({ ...request, repeatLastTokens: 0 }).success).toBe(true);
    expect(generateRequestSchema.safeParse({ ...base, grammar: 'root ::= "yes"' }).success).toBe(true);
    expect(generateRequestSchema.safeParse({ ...base, jsonSchema: { type: 'integer' } }).success).toBe(true);
  });

  it('refuses out-of-range penalties, both constraints at once, and invalid constraints', () => {
    for (const bad of [
      { ...base, repeatPenalty: 0 },
      { ...base, repeatPenalty: 3 },
      { ...base, presencePenalty: 2.5 },
      { ...base, frequencyPenalty: -3 },
      { ...base, repeatLastTokens: -1 },
      { ...base, grammar: '' },
      { ...base, grammar: 'root ::= "a"{3,1}' },
      { ...base, jsonSchema: { type: 'foo' } },
      { ...base, jsonSchema: [] },
      { ...base, grammar: 'root ::= "a"', jsonSchema: { type: 'string' } },
    ]) {
      expect(generateRequestSchema.safeParse(bad).success, JSON.stringify(bad)).toBe(false);
    }
  });

  it('carries embed messages and refuses empty ones', () => {
    expect(parseParentMessage({ type: 'embed', requestId: 'e', texts: ['a', 'b'] })).toBeDefined();
    expect(parseParentMessage({ type: 'embed', requestId: 'e', texts: [] })).toBeUndefined();
    expect(parseParentMessage({ type: 'embed', requestId: 'e', texts: [''] })).toBeUndefined();
  });
});
