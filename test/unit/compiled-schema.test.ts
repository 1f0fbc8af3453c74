/**
 * The schemas checked on every request and token run compiled (src/shared/compiled-schema.ts). The
 * compiled parser must give what the schema's own gives, errors included, and each of these schemas
 * must compile to a fast path of its own: a change that leaves one to the runtime parser (a feature
 * `z.compile` cannot model) fails here with that feature's name instead of silently slowing the path.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  childMessageSchema,
  generateRequestSchema,
  parentMessageSchema,
} from '../../src/engine/worker/protocol.js';
import { compiled } from '../../src/shared/compiled-schema.js';
import { hiveStateSchema } from '../../src/shared/view.js';
import { jobRequestSchema } from '../../src/shared/wire.js';

const hot = {
  childMessageSchema,
  parentMessageSchema,
  generateRequestSchema,
  jobRequestSchema,
  hiveStateSchema,
};

const samples: [z.ZodType, unknown][] = [
  [childMessageSchema, { type: 'token', requestId: 'r1', text: 'hi', tokens: [1, 2], promptTokens: 5 }],
  [childMessageSchema, { type: 'token', requestId: 'r1', text: 'hi', tokens: [-1] }],
  [
    childMessageSchema,
    {
      type: 'done',
      requestId: 'r1',
      finishReason: 'length',
      usage: { promptTokens: 5, completionTokens: 1 },
      timeToFirstTokenMs: 3.5,
      tokensPerSecond: 0,
      extra: 'dropped',
    },
  ],
  [childMessageSchema, { type: 'done', requestId: 'r1', finishReason: 'sideways' }],
  [childMessageSchema, { type: 'nothing' }],
  [childMessageSchema, 'not an object'],
  [jobRequestSchema, { model: 'demo', prompt: 'Once', maxTokens: 8, temperature: 0 }],
  [jobRequestSchema, { model: '', prompt: 3 }],
  [jobRequestSchema, { model: 'demo', messages: [{ role: 'user', content: 'hi' }], contextSize: 4 }],
];

describe('compiled schemas', () => {
  it.each(Object.entries(hot))('%s compiles to a fast path of its own', (_name, schema) => {
    expect(() => z.compile(schema as z.ZodType, { strict: true })).not.toThrow();
  });

  it('answers exactly what the schema answers, errors and their messages included', () => {
    for (const [schema, input] of samples) {
      const slow = schema.safeParse(input);
      const fast = compiled(schema).safeParse(input);
      expect(fast.success).toBe(slow.success);
      if (slow.success) expect(fast.data).toEqual(slow.data);
      else expect(z.prettifyError(fast.error!)).toBe(z.prettifyError(slow.error));
    }
    // both kinds of answer are among the samples
    expect(samples.filter(([s, i]) => s.safeParse(i).success).length).toBeGreaterThan(2);
    expect(samples.filter(([s, i]) => !s.safeParse(i).success).length).toBeGreaterThan(2);
  });

  it('compiles a schema once', () => {
    expect(compiled(jobRequestSchema)).toBe(compiled(jobRequestSchema));
    expect(compiled(jobRequestSchema)).not.toBe(jobRequestSchema);
  });
});
