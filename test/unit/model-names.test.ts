/**
 * Short names of models, and resolving names to refs: what `/v1/models` lists is what a client
 * sends back as `model`.
 */
import { describe, expect, it } from 'vitest';
import { checkAliasName, createModelResolver, shortModelName } from '../../src/node/models/model-names.js';

describe('shortModelName', () => {
  it.each([
    [{ ref: 'demo:tiny', quantization: 'Q8_0' }, 'tiny:q8_0'],
    [{ ref: 'demo:small', quantization: 'F16' }, 'small:f16'],
    [
      { ref: 'hf:HuggingFaceTB/SmolLM-135M-GGUF/SmolLM-135M-Q8_0.gguf', quantization: 'Q8_0' },
      'smollm-135m:q8_0',
    ],
    [
      { ref: 'hf:org/repo/sub/Big-Model-Q4_K_M-00001-of-00003.gguf', quantization: 'Q4_K_M' },
      'big-model:q4_k_m',
    ],
    [{ ref: 'file:/home/me/models/my model.gguf', quantization: 'Q4_0' }, 'my-model:q4_0'],
    [
      { ref: 'https://example.com/files/qwen2.5-0.5b-instruct-q5_k_m.gguf', quantization: 'Q5_K_M' },
      'qwen2.5-0.5b-instruct:q5_k_m',
    ],
    [{ ref: 'file:/m/phi-3.IQ2_XS.gguf', quantization: 'unknown' }, 'phi-3'],
  ])('%o is %s', (model, name) => {
    expect(shortModelName(model)).toBe(name);
  });
});

describe('the model resolver', () => {
  const resolve = createModelResolver({
    alias: (name) => (name === 'chat' ? 'hf:org/repo/Chat-Q4_0.gguf' : undefined),
    local: () => [{ id: 'demo-tiny-1234abcd', ref: 'demo:tiny', quantization: 'Q8_0' }],
    remote: () => [{ id: 'far-5678abcd', ref: 'file:/srv/Far-Q4_0.gguf', quantization: 'Q4_0' }],
  });

  it('resolves refs, aliases, catalog ids and short names of this hive and the others', () => {
    expect(resolve('demo')).toEqual({ kind: 'demo', preset: 'tiny' });
    expect(resolve('demo-tiny-1234abcd')).toEqual({ kind: 'demo', preset: 'tiny' });
    expect(resolve('tiny:q8_0')).toEqual({ kind: 'demo', preset: 'tiny' });
    expect(resolve('TINY:Q8_0')).toEqual({ kind: 'demo', preset: 'tiny' });
    expect(resolve('chat')).toEqual({ kind: 'hf', repo: 'org/repo', file: 'Chat-Q4_0.gguf' });
    expect(resolve('far:q4_0')).toEqual({ kind: 'file', path: '/srv/Far-Q4_0.gguf' });
    expect(resolve('far-5678abcd')).toEqual({ kind: 'file', path: '/srv/Far-Q4_0.gguf' });
  });

  it('says MODEL_NOT_FOUND for a name of no model, MODEL_REF_INVALID for a malformed ref', () => {
    expect(() => resolve('gpt-4o')).toThrow(expect.objectContaining({ code: 'MODEL_NOT_FOUND' }) as Error);
    expect(() => resolve('hf:only-org')).toThrow(
      expect.objectContaining({ code: 'MODEL_REF_INVALID' }) as Error,
    );
  });

  it('refuses aliases that read as refs', () => {
    expect(() => checkAliasName('demo')).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }) as Error);
    expect(() => checkAliasName('hf:x')).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }) as Error);
    expect(() => checkAliasName('a/b')).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }) as Error);
    expect(() => checkAliasName('coder:7b')).not.toThrow();
  });
});
