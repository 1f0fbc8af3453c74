import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  canonicalRef,
  modelDirName,
  modelFileName,
  modelId,
  parseModelRef,
  resolveInModelsDir,
  type ModelRef,
} from '../../src/node/models/model-ref.js';
import { RbeeError } from '../../src/shared/errors.js';

function refusal(input: string, options?: { cwd?: string }): RbeeError {
  try {
    parseModelRef(input, options);
  } catch (error) {
    expect(error).toBeInstanceOf(RbeeError);
    return error as RbeeError;
  }
  throw new Error(`parseModelRef accepted ${JSON.stringify(input)}`);
}

describe('parseModelRef', () => {
  it.each<[string, ModelRef]>([
    ['hf:org/repo', { kind: 'hf', repo: 'org/repo' }],
    ['hf:TheOrg/Repo-1.5B-GGUF:q4_k_m', { kind: 'hf', repo: 'TheOrg/Repo-1.5B-GGUF', quant: 'Q4_K_M' }],
    ['hf:org/repo/model.Q8_0.gguf', { kind: 'hf', repo: 'org/repo', file: 'model.Q8_0.gguf' }],
    ['hf:org/repo/sub/dir/file.gguf', { kind: 'hf', repo: 'org/repo', file: 'sub/dir/file.gguf' }],
    ['https://example.com/models/x.gguf', { kind: 'url', url: 'https://example.com/models/x.gguf' }],
    [
      'http://127.0.0.1:8080/a/b.GGUF?sig=1#frag',
      { kind: 'url', url: 'http://127.0.0.1:8080/a/b.GGUF?sig=1' },
    ],
    ['/srv/models/m.gguf', { kind: 'file', path: '/srv/models/m.gguf' }],
    ['file:/srv/models/m.gguf', { kind: 'file', path: '/srv/models/m.gguf' }],
    ['file:///srv/models/m%20x.gguf', { kind: 'file', path: '/srv/models/m x.gguf' }],
    ['demo', { kind: 'demo', preset: 'tiny' }],
    ['demo:tiny', { kind: 'demo', preset: 'tiny' }],
    ['demo:small', { kind: 'demo', preset: 'small' }],
    ['demo:rerank', { kind: 'demo', preset: 'rerank' }],
    ['  demo  ', { kind: 'demo', preset: 'tiny' }],
  ])('parses %s', (input, expected) => {
    expect(parseModelRef(input)).toEqual(expected);
  });

  it('resolves relative paths only against a given cwd', () => {
    expect(parseModelRef('./m.gguf', { cwd: '/home/me' })).toEqual({ kind: 'file', path: '/home/me/m.gguf' });
    expect(parseModelRef('../m.gguf', { cwd: '/home/me' })).toEqual({ kind: 'file', path: '/home/m.gguf' });
    expect(parseModelRef('m.gguf', { cwd: '/home/me' })).toEqual({ kind: 'file', path: '/home/me/m.gguf' });
    expect(refusal('./m.gguf').message).toMatch(/absolute path/);
  });

  it.each([
    ['', /empty/],
    ['   ', /empty/],
    ['ftp://host/x.gguf', /unknown scheme/],
    ['s3:bucket/x.gguf', /unknown scheme/],
    ['hf:', /hf:org\/repo/],
    ['hf:org', /hf:org\/repo/],
    ['hf:org/', /hf:org\/repo/],
    ['hf:/repo', /hf:org\/repo/],
    ['hf:org/../x.gguf', /'\.\.'/],
    ['hf:../org/repo', /'\.\.'/],
    ['hf:org/repo/../../../etc/passwd.gguf', /'\.\.'/],
    ['hf:org/repo/%2e%2e/x.gguf', /'\.\.'|not a valid/],
    ['hf:.org/repo', /not a valid/],
    ['hf:-org/repo', /not a valid/],
    ['hf:org/re po', /not a valid/],
    ['hf:org/repo$', /not a valid/],
    ['hf:org/repo/.hidden.gguf', /not a valid/],
    ['hf:org/repo//x.gguf', /not a valid/],
    ['hf:org/repo/readme.md', /\.gguf/],
    ['hf:org/repo:Q4 K', /quantization/],
    ['hf:org/repo/x.gguf:Q4_0', /not a valid|either/],
    ['https://host/model.bin', /\.gguf/],
    ['https://host/', /\.gguf/],
    ['https://user:pw@host/x.gguf', /credentials/],
    ['https://host/a/../x.gguf', /'\.\.'/],
    ['https://host/a/%2e%2e/x.gguf', /'\.\.'/],
    ['/srv/models/m.bin', /\.gguf/],
    ['/srv/../etc/m.gguf', /'\.\.'/],
    ['demo:huge', /demo preset/],
    ['demo:', /demo preset/],
    ['hf:org/repo\u0000x', /control/],
    ['demo\n', /control/],
    ['hf:org/re\u001bpo', /control/],
    ['what', /expected/],
  ])('refuses %j', (input, message) => {
    const error = refusal(input);
    expect(error.code).toBe('MODEL_REF_INVALID');
    expect(error.message).toMatch(message);
  });
});

describe('canonicalRef', () => {
  it.each([
    'hf:org/repo',
    'hf:org/repo:Q4_K_M',
    'hf:org/repo/sub/file.gguf',
    'https://example.com/x.gguf?a=1',
    'file:/srv/m.gguf',
    'demo:tiny',
    'demo:small',
  ])('round-trips %s', (text) => {
    const ref = parseModelRef(text);
    expect(canonicalRef(ref)).toBe(text);
    expect(parseModelRef(canonicalRef(ref))).toEqual(ref);
  });

  it('gives equivalent spellings one canonical form', () => {
    expect(canonicalRef(parseModelRef('demo'))).toBe(canonicalRef(parseModelRef('DEMO:TINY')));
    expect(canonicalRef(parseModelRef('hf:o/r:q8_0'))).toBe('hf:o/r:Q8_0');
    expect(canonicalRef(parseModelRef('HTTPS://Example.COM:443/x.gguf'))).toBe('https://example.com/x.gguf');
    expect(canonicalRef(parseModelRef('/srv/./m.gguf'))).toBe('file:/srv/m.gguf');
  });
});

describe('modelId', () => {
  it('is stable, readable and distinct', () => {
    const a = modelId(parseModelRef('hf:Org/Repo/model.Q4_K_M.gguf'));
    expect(a).toBe(modelId(parseModelRef('hf:Org/Repo/model.Q4_K_M.gguf')));
    expect(a).toMatch(/^hf-org-repo-model\.q4_k_m\.gguf-[0-9a-f]{8}$/);
    // Same slug, different refs: the hash keeps them apart.
    expect(modelId(parseModelRef('hf:a/b-c/x.gguf'))).not.toBe(modelId(parseModelRef('hf:a-b/c/x.gguf')));
    expect(modelId(parseModelRef('demo'))).toMatch(/^demo-tiny-[0-9a-f]{8}$/);
    expect(modelId(parseModelRef(`https://h/${'x'.repeat(300)}.gguf`)).length).toBeLessThanOrEqual(69);
  });
});

describe('paths derived from refs', () => {
  const modelsDir = '/data/rbee/models';

  it('lay out hf, url and demo models under the models directory', () => {
    const hf = parseModelRef('hf:org/repo/sub/file.gguf') as ModelRef & { kind: 'hf' };
    expect(resolveInModelsDir(modelsDir, modelDirName(hf), modelFileName(hf))).toBe(
      '/data/rbee/models/hf/org/repo/sub/file.gguf',
    );
    const url = parseModelRef('http://127.0.0.1:9000/dl/My%20Model.gguf') as ModelRef & { kind: 'url' };
    expect(modelDirName(url)).toMatch(/^url\/127\.0\.0\.1_9000\/[0-9a-f]{8}$/);
    expect(modelFileName(url)).toBe('My_Model.gguf');
    expect(modelDirName(parseModelRef('demo:small'))).toBe('demo');
  });

  it('never leave the models directory, whatever the URL encodes', () => {
    for (const text of [
      'http://h/%2e%2e%2f%2e%2e%2fetc%2fpasswd.gguf',
      'http://h/..%2f..%2fescape.gguf',
      'http://h/x/%2F..%2F..%2Fy.gguf',
      'http://h/.hidden.gguf',
      'http://h/%00.gguf',
      'http://h/' + encodeURIComponent('../../../../tmp/x.gguf'),
    ]) {
      let ref: ModelRef;
      try {
        ref = parseModelRef(text);
      } catch (error) {
        expect((error as RbeeError).code).toBe('MODEL_REF_INVALID');
        continue;
      }
      const urlRef = ref as ModelRef & { kind: 'url' };
      const name = modelFileName(urlRef);
      expect(name).not.toMatch(/[/\\]/);
      expect(name.startsWith('.')).toBe(false);
      const path = resolveInModelsDir(modelsDir, modelDirName(urlRef), name);
      expect(path.startsWith(`${modelsDir}/url/`)).toBe(true);
    }
  });

  it('resolveInModelsDir refuses anything outside', () => {
    for (const parts of [['..', 'x'], ['/etc/passwd'], ['a/../../b'], ['.'], ['']]) {
      expect(() => resolveInModelsDir(modelsDir, ...parts)).toThrow(
        expect.objectContaining({ code: 'MODEL_REF_INVALID' }) as Error,
      );
    }
    expect(resolveInModelsDir(modelsDir, 'a/./b')).toBe(join(resolve(modelsDir), 'a', 'b'));
  });
});
