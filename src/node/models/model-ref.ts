/**
 * Model references: what a person types after `-m`, parsed into one of four kinds.
 *
 * - `hf:org/repo`, `hf:org/repo:Q4_K_M`, `hf:org/repo/file.gguf`, `hf:org/repo/sub/dir/file.gguf`
 * - `https://host/path/file.gguf` (http or https; the URL's path must end in `.gguf`, because the file
 *   name on disk comes from it and an HTML page or a redirect-to-login is not a model). Credentials in
 *   the URL are refused: the ref is stored in the catalog and shown in the dashboard.
 * - `/abs/path/model.gguf` or `file:/abs/path/model.gguf`; `./rel.gguf` only with a `cwd` to resolve
 *   against (the CLI passes its own). A local file is never copied or written, so it may live anywhere.
 * - `demo` (= `demo:tiny`), `demo:small` and `demo:rerank` (a tiny reranker): generated
 *   random-weight models for smoke tests.
 *
 * Everything that later becomes a path under the models directory (repo names, file names) is checked
 * here, and `resolveInModelsDir` checks again, so nothing derived from a ref can escape that directory.
 */
import { createHash } from 'node:crypto';
import { isAbsolute, join, normalize, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RbeeError } from '../../shared/errors.js';

export type DemoPreset = 'tiny' | 'small' | 'rerank';

export type ModelRef =
  | { kind: 'hf'; repo: string; file?: string; quant?: string }
  | { kind: 'url'; url: string }
  | { kind: 'file'; path: string }
  | { kind: 'demo'; preset: DemoPreset };

export interface ParseModelRefOptions {
  /** Base for relative file paths (`./model.gguf`). Without it, relative paths are refused. */
  cwd?: string;
}

/** HF org and repo names: letters, digits, `.`, `_`, `-`, not starting with `.` or `-`. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,95}$/;
/** File path segments inside a repo: the same, plus `+`. */
const FILE_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$/;
const QUANT = /^[A-Za-z0-9_]{1,32}$/;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const DOT_DOT_SEGMENT = /(?:^|[/\\])\.\.(?:[/\\]|$)/;
const GGUF = /\.gguf$/i;

function invalid(input: string, why: string): RbeeError {
  return new RbeeError('MODEL_REF_INVALID', `invalid model ref ${JSON.stringify(input)}: ${why}`, {
    details: { ref: input },
  });
}

export function parseModelRef(input: string, options: ParseModelRefOptions = {}): ModelRef {
  if (typeof input !== 'string') throw invalid(String(input), 'not a string');
  if (CONTROL.test(input)) throw invalid(input, 'contains control characters');
  const text = input.trim();
  if (text === '') throw invalid(input, 'empty');
  if (hasDotDotSegment(text) && !isRelativePath(text)) throw invalid(input, "'..' segments are not allowed");

  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(text)?.[1]?.toLowerCase();
  if (scheme === 'hf') return parseHf(input, text.slice(3));
  if (scheme === 'http' || scheme === 'https') return parseUrl(input, text);
  if (scheme === 'demo' || text.toLowerCase() === 'demo') return parseDemo(input, text);
  if (scheme === 'file') return parseFile(input, fileSchemePath(input, text), options);
  if (scheme !== undefined && !isAbsolute(text)) {
    throw invalid(
      input,
      `unknown scheme '${scheme}:' (use hf:, http(s)://, a path to a .gguf file, or demo)`,
    );
  }
  if (isAbsolute(text) || isRelativePath(text) || GGUF.test(text)) return parseFile(input, text, options);
  throw invalid(input, 'expected hf:org/repo, an http(s) URL, a path to a .gguf file, or demo');
}

function hasDotDotSegment(text: string): boolean {
  if (DOT_DOT_SEGMENT.test(text)) return true;
  try {
    return DOT_DOT_SEGMENT.test(decodeURIComponent(text));
  } catch {
    return false;
  }
}

function isRelativePath(text: string): boolean {
  return text.startsWith('./') || text.startsWith('../') || text === '.' || text === '..';
}

function parseHf(input: string, rest: string): ModelRef {
  let body = rest;
  let quant: string | undefined;
  const colon = body.indexOf(':');
  if (colon !== -1) {
    quant = body.slice(colon + 1);
    body = body.slice(0, colon);
    if (!QUANT.test(quant)) throw invalid(input, `quantization '${quant}' is not a name like Q4_K_M`);
  }
  const segments = body.split('/');
  const [org, repo, ...fileSegments] = segments;
  if (org === undefined || repo === undefined || org === '' || repo === '') {
    throw invalid(input, 'expected hf:org/repo');
  }
  for (const name of [org, repo]) {
    if (!NAME.test(name)) throw invalid(input, `'${name}' is not a valid Hugging Face name`);
  }
  if (fileSegments.length === 0) {
    return quant === undefined
      ? { kind: 'hf', repo: `${org}/${repo}` }
      : { kind: 'hf', repo: `${org}/${repo}`, quant: quant.toUpperCase() };
  }
  if (quant !== undefined) throw invalid(input, 'give either a file or a quantization, not both');
  for (const segment of fileSegments) {
    if (!FILE_SEGMENT.test(segment)) throw invalid(input, `'${segment}' is not a valid file path segment`);
  }
  const file = fileSegments.join('/');
  if (!GGUF.test(file)) throw invalid(input, 'the file must end in .gguf');
  return { kind: 'hf', repo: `${org}/${repo}`, file };
}

function parseUrl(input: string, text: string): ModelRef {
  let url: URL;
  try {
    url = new URL(text);
  } catch (error) {
    throw new RbeeError('MODEL_REF_INVALID', `invalid model ref ${JSON.stringify(input)}: not a URL`, {
      cause: error,
      details: { ref: input },
    });
  }
  if (url.username !== '' || url.password !== '') {
    throw invalid(input, 'credentials in the URL are not allowed');
  }
  if (url.hostname === '') throw invalid(input, 'the URL has no host');
  if (!GGUF.test(url.pathname)) throw invalid(input, "the URL's path must end in .gguf");
  url.hash = '';
  return { kind: 'url', url: url.href };
}

function parseDemo(input: string, text: string): ModelRef {
  const preset = text.includes(':') ? text.slice(text.indexOf(':') + 1).toLowerCase() : 'tiny';
  if (preset !== 'tiny' && preset !== 'small' && preset !== 'rerank') {
    throw invalid(input, `unknown demo preset '${preset}' (use demo, demo:small or demo:rerank)`);
  }
  return { kind: 'demo', preset };
}

function fileSchemePath(input: string, text: string): string {
  if (!text.slice(5).startsWith('//')) return text.slice(5);
  try {
    return fileURLToPath(text);
  } catch (error) {
    throw new RbeeError('MODEL_REF_INVALID', `invalid model ref ${JSON.stringify(input)}: bad file URL`, {
      cause: error,
      details: { ref: input },
    });
  }
}

function parseFile(input: string, path: string, options: ParseModelRefOptions): ModelRef {
  let absolute: string;
  if (isAbsolute(path)) {
    if (hasDotDotSegment(path)) throw invalid(input, "'..' segments are not allowed");
    absolute = normalize(path);
  } else if (options.cwd !== undefined) {
    absolute = resolve(options.cwd, path);
  } else {
    throw invalid(input, 'a relative path needs a base directory; give an absolute path');
  }
  if (!GGUF.test(absolute)) throw invalid(input, 'the file must end in .gguf');
  return { kind: 'file', path: absolute };
}

/** One string per model: parsing it gives the same ref back. Used as the catalog's `ref`. */
export function canonicalRef(ref: ModelRef): string {
  switch (ref.kind) {
    case 'hf':
      if (ref.file !== undefined) return `hf:${ref.repo}/${ref.file}`;
      return ref.quant === undefined ? `hf:${ref.repo}` : `hf:${ref.repo}:${ref.quant.toUpperCase()}`;
    case 'url':
      return ref.url;
    case 'file':
      return `file:${ref.path}`;
    case 'demo':
      return `demo:${ref.preset}`;
  }
}

/** A stable catalog id: a readable slug of the canonical ref plus a short hash that keeps it unique. */
export function modelId(ref: ModelRef): string {
  const canonical = canonicalRef(ref);
  const slug = canonical
    .toLowerCase()
    .replace(/[^a-z0-9._]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 60)
    .replace(/-+$/, '');
  return `${slug}-${shortHash(canonical)}`;
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/**
 * Where a ref's files live, relative to the models directory, as path segments joined with '/':
 * `hf/<org>/<repo>`, `url/<host>/<hash>`, `demo`, `local/<hash>` (local files are not stored there).
 */
export function modelDirName(ref: ModelRef): string {
  switch (ref.kind) {
    case 'hf':
      return `hf/${ref.repo}`;
    case 'url': {
      const url = new URL(ref.url);
      return `url/${safeSegment(url.host)}/${shortHash(ref.url)}`;
    }
    case 'file':
      return `local/${shortHash(ref.path)}`;
    case 'demo':
      return 'demo';
  }
}

/** The file name a download is stored under: the repo-relative path for hf, the URL's last segment. */
export function modelFileName(ref: ModelRef & { kind: 'hf' | 'url' }): string {
  if (ref.kind === 'hf') {
    if (ref.file === undefined) throw new RbeeError('INTERNAL', 'hf ref without a file has no file name');
    return ref.file;
  }
  const last = new URL(ref.url).pathname.split('/').pop() ?? '';
  let decoded: string;
  try {
    decoded = decodeURIComponent(last);
  } catch {
    decoded = last;
  }
  const name = safeSegment(decoded);
  return GGUF.test(name) ? name : `${name}.gguf`;
}

function safeSegment(text: string): string {
  const cleaned = text.replace(/[^A-Za-z0-9._+-]/g, '_').replace(/^[.-]/, '_');
  return cleaned === '' ? '_' : cleaned.slice(0, 200);
}

/**
 * Joins a ref-derived relative path under the models directory and refuses anything that would land
 * outside it. Parsing already refuses such refs; this is the second lock on the same door.
 */
export function resolveInModelsDir(modelsDir: string, ...relativeParts: string[]): string {
  const root = resolve(modelsDir);
  const target = resolve(root, join(...relativeParts));
  const rel = relative(root, target);
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
    throw new RbeeError('MODEL_REF_INVALID', `refusing a path outside the models directory: ${target}`, {
      details: { modelsDir: root, path: target },
    });
  }
  return target;
}
