/**
 * Names a person (or an OpenAI client) can use for a model instead of its ref.
 *
 * Every model gets a short name from its file: the file name without `.gguf`, without a split
 * suffix (`-00001-of-00003`) and without the quantization at its end, in lower case, then `:` and
 * the quantization in lower case. `SmolLM-135M-Instruct-Q8_0.gguf` is `smollm-135m-instruct:q8_0`;
 * the demo models are `tiny:<quant>` and `small:<quant>`. An alias (`rbee models alias NAME REF`)
 * names a ref on this node.
 *
 * A model is named, in this order, by: a ref (`demo`, `hf:…`, a URL, a path); an alias of this
 * node; a catalog id, ref or short name of this node; a catalog id or short name of another hive of
 * the cluster (from its published state). Two models with the same short name: this node's oldest
 * comes first, then the other hives' in the order of their states.
 */
import { basename } from 'node:path';
import { RbeeError } from '../../shared/errors.js';
import { parseModelRef, type ModelRef } from './model-ref.js';

/** What a short name is derived from: a catalog row, or a model in a hive's published state. */
export interface NameableModel {
  ref: string;
  quantization: string;
}

const SPLIT_SUFFIX = /-\d{5}-of-\d{5}$/i;
/** Quantization-like endings of a file name, when the model's quantization name is not one of them. */
const QUANT_SUFFIX = /[-._](?:i?q\d[a-z0-9_]*|f16|f32|bf16)$/i;

function stemOf(ref: string): string {
  if (ref.startsWith('demo:')) return ref.slice(5);
  if (ref.startsWith('hf:')) {
    const body = ref.slice(3).replace(/:[^/]*$/, '');
    const parts = body.split('/');
    return parts.length > 2 ? (parts.at(-1) ?? body) : (parts[1] ?? body);
  }
  if (ref.startsWith('file:')) return basename(ref.slice(5));
  try {
    return basename(decodeURIComponent(new URL(ref).pathname));
  } catch {
    return basename(ref);
  }
}

/** The model's short name, e.g. `smollm-135m-instruct:q8_0` (see the rule above). */
export function shortModelName(model: NameableModel): string {
  const quant = model.quantization
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_');
  let stem = stemOf(model.ref)
    .replace(/\.gguf$/i, '')
    .replace(SPLIT_SUFFIX, '');
  const lower = stem.toLowerCase();
  if (quant !== '' && ['-', '.', '_'].some((sep) => lower.endsWith(`${sep}${quant}`))) {
    stem = stem.slice(0, stem.length - quant.length - 1);
  } else {
    stem = stem.replace(QUANT_SUFFIX, '');
  }
  const clean =
    stem
      .toLowerCase()
      .replace(/[^a-z0-9._-]+/g, '-')
      .replace(/-{2,}/g, '-')
      .replace(/^[-.]+|[-.]+$/g, '') || 'model';
  return quant === '' || quant === 'unknown' ? clean : `${clean}:${quant}`;
}

/** Whether a text is a ref (then it can never be an alias, and it resolves as itself). */
export function isModelRef(text: string): boolean {
  try {
    parseModelRef(text);
    return true;
  } catch {
    return false;
  }
}

/** Aliases are names like `chat` or `coder:7b`: letters, digits, `.`, `_`, `-`, `:`. */
const ALIAS = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/;

export function checkAliasName(name: string): void {
  if (!ALIAS.test(name)) {
    throw new RbeeError(
      'BAD_REQUEST',
      `alias ${JSON.stringify(name)} is not a name (letters, digits, '.', '_', '-', ':'; at most 64)`,
    );
  }
  if (name === 'rm' || name === 'ls') {
    throw new RbeeError(
      'BAD_REQUEST',
      `'${name}' is a subcommand of \`rbee models alias\`; choose another name`,
    );
  }
  if (isModelRef(name) || /^(?:hf|https?|file|demo):/i.test(name)) {
    throw new RbeeError('BAD_REQUEST', `alias ${JSON.stringify(name)} reads as a model ref; choose a name`);
  }
}

export interface NamedModel extends NameableModel {
  id: string;
  /** The file's sha256, when its hive knows it: `sha256:<hex>` names the model too. */
  sha256?: string | null | undefined;
}

/** `sha256:<hex>` (or the bare hex): a model named by its content. */
const SHA256_NAME = /^(?:sha256:)?([0-9a-f]{64})$/i;

export interface ModelNameSources {
  /** This node's aliases: name → canonical ref. */
  alias: (name: string) => string | undefined;
  /** This node's catalog, oldest first. */
  local: () => readonly NamedModel[];
  /** The models of the cluster's other hives. */
  remote: () => readonly NamedModel[];
}

/**
 * Parses a ref or resolves a name to the ref it stands for. An unknown name is MODEL_NOT_FOUND; a
 * text that looks like a ref but is none stays MODEL_REF_INVALID.
 */
export function createModelResolver(sources: ModelNameSources): (input: string) => ModelRef {
  return (input) => {
    let parseError: unknown;
    try {
      return parseModelRef(input);
    } catch (error) {
      parseError = error;
    }
    const ref = refForName(input.trim(), sources);
    if (ref !== undefined) return parseModelRef(ref);
    if (looksLikeName(input)) {
      throw new RbeeError(
        'MODEL_NOT_FOUND',
        `no model ${JSON.stringify(input)}: no hive has a model of that name or id, no alias has it, and it is no model ref ` +
          '(demo, hf:org/repo, https://…/x.gguf, a path)',
        { details: { model: input } },
      );
    }
    throw parseError;
  };
}

function refForName(name: string, sources: ModelNameSources): string | undefined {
  const aliased = sources.alias(name);
  if (aliased !== undefined) return aliased;
  const lower = name.toLowerCase();
  const sha256 = SHA256_NAME.exec(name)?.[1]?.toLowerCase();
  if (sha256 !== undefined) {
    for (const models of [sources.local(), sources.remote()]) {
      // a user's own file is a path on its hive's disk, which names nothing on another
      const bySha = models.find((m) => m.sha256 === sha256 && !m.ref.startsWith('file:'));
      if (bySha !== undefined) return bySha.ref;
    }
  }
  for (const models of [sources.local(), sources.remote()]) {
    const byId = models.find((m) => m.id === name || m.ref === name);
    if (byId !== undefined) return byId.ref;
  }
  for (const models of [sources.local(), sources.remote()]) {
    const byName = models.find((m) => shortModelName(m) === lower);
    if (byName !== undefined) return byName.ref;
  }
  return undefined;
}

/** A bare word (`gpt-4o`, `tiny:q8_0`), not a malformed URL, path or `hf:` ref. */
function looksLikeName(input: string): boolean {
  const text = input.trim();
  return (
    text !== '' &&
    !text.includes('/') &&
    !text.includes('\\') &&
    !/\.gguf$/i.test(text) &&
    !/^(?:hf|https?|file|demo):/i.test(text)
  );
}
