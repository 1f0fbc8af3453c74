/**
 * Which model refs a client beyond the node's machine may name: the pure decision, and the check
 * that adds the catalog to it.
 */
import { describe, expect, it } from 'vitest';
import {
  createModelAccessCheck,
  refAllowedFor,
  type RemoteModelRefs,
} from '../../src/node/api/model-access.js';
import { createModelResolver } from '../../src/node/models/model-names.js';
import { type ModelRef } from '../../src/node/models/model-ref.js';
import type { ModelCatalog, ModelRow } from '../../src/node/store/index.js';

const refs: Record<string, ModelRef> = {
  demo: { kind: 'demo', preset: 'tiny' },
  hf: { kind: 'hf', repo: 'org/repo', quant: 'Q4_K_M' },
  url: { kind: 'url', url: 'http://192.168.1.1/admin/x.gguf' },
  file: { kind: 'file', path: '/home/someone/private.gguf' },
};

describe('refAllowedFor', () => {
  it.each<[keyof typeof refs, boolean, RemoteModelRefs, boolean]>([
    ['demo', false, 'catalog-hf', true],
    ['hf', false, 'catalog-hf', true],
    ['url', false, 'catalog-hf', false],
    ['file', false, 'catalog-hf', false],
    ['url', false, 'any', true],
    ['file', false, 'any', true],
    ['url', true, 'catalog-hf', true],
    ['file', true, 'catalog-hf', true],
  ])('%s ref, local %s, policy %s: %s', (kind, local, policy, allowed) => {
    expect(refAllowedFor(refs[kind]!, { local, policy })).toBe(allowed);
  });
});

describe('the model access check', () => {
  // a catalog with one model a local user added from a path
  const row = { id: 'private-1a2b3c4d', ref: 'file:/models/private.gguf', alias: 'mine' } as ModelRow;
  const catalog = {
    get: (key: string) => ([row.id, row.ref, row.alias].includes(key) ? row : undefined),
  } as ModelCatalog;
  // another hive holds a model from a path on its own disk
  const resolveModel = createModelResolver({
    alias: () => undefined,
    local: () => [{ ...row, quantization: 'Q8_0' }],
    remote: () => [{ id: 'theirs-0a0b0c0d', ref: 'file:/srv/Theirs-Q4_K_M.gguf', quantization: 'Q4_K_M' }],
  });
  const check = createModelAccessCheck({ catalog, resolveModel, policy: 'catalog-hf' });
  const remote = { local: false };

  it('lets a remote client use catalog models by id, ref, alias or the path they were added from', () => {
    for (const model of [row.id, row.ref, 'mine', '/models/private.gguf', 'demo', 'hf:org/repo'])
      expect(() => check(model, remote), model).not.toThrow();
  });

  it('refuses a remote client a URL or a path the catalog does not hold, with MODEL_REF_FORBIDDEN', () => {
    for (const model of ['https://example.com/x.gguf', '/etc/other.gguf', 'file:/models/other.gguf'])
      expect(() => check(model, remote), model).toThrow(
        expect.objectContaining({ code: 'MODEL_REF_FORBIDDEN' }) as Error,
      );
  });

  it("lets a remote client name another hive's model by its name or id, though its ref is a path", () => {
    for (const model of ['theirs:q4_k_m', 'theirs-0a0b0c0d', 'private:q8_0'])
      expect(() => check(model, remote), model).not.toThrow();
  });

  it('lets a local client name anything, and refuses a name of no model and a malformed ref', () => {
    expect(() => check('/etc/other.gguf', { local: true })).not.toThrow();
    expect(() => check('gpt-4o', { local: true })).toThrow(
      expect.objectContaining({ code: 'MODEL_NOT_FOUND' }) as Error,
    );
    expect(() => check('gopher://x', remote)).toThrow(
      expect.objectContaining({ code: 'MODEL_REF_INVALID' }) as Error,
    );
  });
});
