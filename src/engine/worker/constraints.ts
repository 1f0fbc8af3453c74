/**
 * Checks for constrained output (GBNF grammars and JSON schemas) that need no native code, so the
 * parent refuses a bad request before it reaches a worker, and the worker never hands llama.cpp
 * something that would hang it or that node-llama-cpp would silently turn into another schema.
 */

type Json = Record<string, unknown>;

/** Keywords that describe and never constrain: accepted and ignored. */
const ANNOTATIONS = new Set([
  'title',
  'description',
  '$schema',
  '$id',
  '$comment',
  'examples',
  'default',
  'deprecated',
  'readOnly',
  'writeOnly',
]);
/**
 * Keywords a grammar does not enforce (or enforces only in the cases terminalFor knows): accepted,
 * left out of the grammar, and checked on the finished output against the whole schema.
 */
const CHECKED_AFTER = new Set([
  'pattern',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
  'multipleOf',
  'uniqueItems',
  'propertyNames',
  'contentEncoding',
  'contentMediaType',
]);
const OBJECT_KEYWORDS = ['properties', 'required', 'additionalProperties', 'minProperties', 'maxProperties'];
const ARRAY_KEYWORDS = ['items', 'prefixItems', 'minItems', 'maxItems'];
const STRING_KEYWORDS = ['minLength', 'maxLength', 'format'];
const SUPPORTED = new Set([
  ...ANNOTATIONS,
  ...CHECKED_AFTER,
  ...OBJECT_KEYWORDS,
  ...ARRAY_KEYWORDS,
  ...STRING_KEYWORDS,
  'type',
  'const',
  'enum',
  'oneOf',
  'anyOf',
  '$ref',
  '$defs',
]);
/** The types a keyword applies to, for splitting a type list into alternatives. */
const NUMBER_TYPES = ['number', 'integer'];
const TYPE_KEYWORDS: Record<string, string[] | undefined> = {
  minLength: ['string'],
  maxLength: ['string'],
  format: ['string'],
  pattern: ['string'],
  minimum: NUMBER_TYPES,
  maximum: NUMBER_TYPES,
  exclusiveMinimum: NUMBER_TYPES,
  exclusiveMaximum: NUMBER_TYPES,
  multipleOf: NUMBER_TYPES,
};
const SCALAR_TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null']);
/** Formats node-llama-cpp or a terminal of rbee's own enforces; any other is checked afterwards. */
const GRAMMAR_FORMATS = new Set(['time']);
const MAX_DEPTH = 64;
const MAX_NODES = 10_000;
/** An integer range up to this many values becomes an enum, which the grammar enforces exactly. */
const MAX_ENUM_RANGE = 256;

/**
 * GBNF for values node-llama-cpp has no rule for. The schema given to node-llama-cpp names one as a
 * const placeholder string, which createRequestGrammar replaces in the grammar it generates. Dates
 * stop at day 28 and times are UTC, so every value is valid in every month and to every validator.
 */
const DIGITS15 = '[0-9]{0,14}';
const DATE = '[12] [0-9]{3} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | "1" [0-9] | "2" [0-8])';
export const TERMINALS = {
  uuid: '"\\"" [0-9a-f]{8} "-" [0-9a-f]{4} "-4" [0-9a-f]{3} "-" [89ab] [0-9a-f]{3} "-" [0-9a-f]{12} "\\""',
  email: '"\\"" [a-z] [a-z0-9]{0,15} "@" [a-z] [a-z0-9]{0,15} "." [a-z]{2,6} "\\""',
  date: `"\\"" ${DATE} "\\""`,
  'date-time': `"\\"" ${DATE} "T" ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})? "Z\\""`,
  'positive-integer': `[1-9] ${DIGITS15}`,
  'nonnegative-integer': `("0" | [1-9] ${DIGITS15})`,
  'nonnegative-number': `("0" | [1-9] ${DIGITS15}) ("." [0-9]{1,15})?`,
  unit: '("0" ("." [0-9]{1,6})? | "1")',
  'positive-number': `([1-9] ${DIGITS15} ("." [0-9]{1,15})? | "0." [0-9]{0,14} [1-9])`,
} as const;
export type TerminalName = keyof typeof TERMINALS;
export const terminalPlaceholder = (name: TerminalName): string => `@@rbee-terminal:${name}@@`;

/**
 * Repetitions of one group that llama.cpp's GBNF parser takes: it refuses a minimum over 2,000
 * (“exceeds sane defaults”) and reads a maximum over 2,000 as none. A string's length bound or an
 * array's item count above this is not handed to node-llama-cpp as it is (see longStringRule).
 */
const REPEAT_BLOCK = 1_000;
/** Above this many optional repetitions, a maximum is left to the check of the finished output. */
const MAX_NESTED_OPTIONAL = 16 * REPEAT_BLOCK;
/** One character of a JSON string, as node-llama-cpp's own string rule has it. */
const STRING_CHAR = String.raw`([^"\\\x7F\x00-\x1F] | "\\" ["\\/bfnrt] | "\\u" [0-9a-fA-F]{4})`;
const longStringPlaceholder = (min: number, max: number | undefined): string =>
  `@@rbee-string:${min}:${max ?? ''}@@`;
const LONG_STRING = /"\\"@@rbee-string:(\d+):(\d*)@@\\""/g;

/**
 * `x` repeated from `min` to `max` (undefined: no maximum) times, as nested repetitions of at most
 * REPEAT_BLOCK each, accepting exactly the same counts. The optional part nests without ambiguity
 * (“fewer than a block, or a whole block and then more”), so the sampler's grammar stacks do not
 * multiply; a maximum more than MAX_NESTED_OPTIONAL above the minimum is left open (`*`), and the
 * finished output is checked against the schema.
 */
export function repeatRule(x: string, min: number, max: number | undefined): string {
  const exactly = (k: number): string => {
    if (k === 0) return '';
    if (k <= REPEAT_BLOCK) return `${x}{${k}}`;
    const rest = k % REPEAT_BLOCK;
    return `(${x}{${REPEAT_BLOCK}}){${Math.floor(k / REPEAT_BLOCK)}}${rest === 0 ? '' : ` ${x}{${rest}}`}`;
  };
  const upTo = (e: number): string =>
    e <= REPEAT_BLOCK
      ? `${x}{0,${e}}`
      : `(${x}{0,${REPEAT_BLOCK - 1}} | ${x}{${REPEAT_BLOCK}} ${upTo(e - REPEAT_BLOCK)})`;
  const optional =
    max === undefined || max - min > MAX_NESTED_OPTIONAL ? `${x}*` : max === min ? '' : upTo(max - min);
  const parts = [exactly(min), optional].filter((part) => part !== '');
  return parts.length === 0 ? '""' : `(${parts.join(' ')})`;
}

export type PreparedJsonSchema =
  | {
      ok: true;
      /** What node-llama-cpp turns into a grammar (with terminal placeholders). */
      schema: Json;
      /** The whole schema, normalised to draft 2020-12 with $defs, for checking the output. */
      full: Json;
    }
  | { ok: false; problem: string };

/**
 * Validates a JSON schema as schema libraries write it (zod, pydantic, TypeBox) and splits it in two:
 * what a grammar can enforce, for node-llama-cpp (`anyOf` as `oneOf`, equivalent for generation),
 * and the whole schema, normalised (`definitions` as `$defs`, draft-07 tuples as `prefixItems`), to
 * check the finished output against. Keywords outside both are a problem with their JSON path rather
 * than a constraint silently dropped. Note that node-llama-cpp always generates every listed
 * property, `required` or not.
 */
export function prepareJsonSchema(schema: unknown): PreparedJsonSchema {
  const state = { nodes: 0 };
  try {
    const full = normalise(schema, '$', 0, state) as Json;
    state.nodes = 0;
    return { ok: true, schema: prepareNode(full, '$', [], 0, state), full };
  } catch (error) {
    if (error instanceof SchemaProblem) return { ok: false, problem: error.message };
    throw error;
  }
}

class SchemaProblem extends Error {}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0;
}

function isLiteral(value: unknown): boolean {
  return value === null || ['string', 'number', 'boolean'].includes(typeof value);
}

/**
 * Rewrites the older spellings libraries still emit into draft 2020-12: `definitions` (and refs into
 * it) as `$defs`, `items: [..]` tuples as `prefixItems`, a lone `allOf: [X]` (pydantic v1 around a
 * $ref) merged into its parent, OpenAPI's `nullable: true` as a type list. Everything else is copied.
 */
function normalise(node: unknown, path: string, depth: number, state: { nodes: number }): unknown {
  if (++state.nodes > MAX_NODES)
    throw new SchemaProblem(`${path}: the schema has more than ${MAX_NODES} subschemas`);
  if (depth > MAX_DEPTH)
    throw new SchemaProblem(`${path}: the schema is nested deeper than ${MAX_DEPTH} levels`);
  if (Array.isArray(node)) return node.map((item, i) => normalise(item, `${path}[${i}]`, depth + 1, state));
  if (!isObject(node)) return node;
  let source: Json = node;
  if (Array.isArray(source.allOf) && source.allOf.length === 1 && isObject(source.allOf[0])) {
    const { allOf, ...rest } = source;
    source = { ...(allOf as Json[])[0], ...rest };
  }
  const out: Json = {};
  for (const [key, value] of Object.entries(source)) {
    if (key === '$ref' && typeof value === 'string' && value.startsWith('#/definitions/')) {
      out.$ref = `#/$defs/${value.slice('#/definitions/'.length)}`;
    } else if (key === 'items' && Array.isArray(value)) {
      out.prefixItems = normalise(value, `${path}.items`, depth + 1, state);
    } else if (key === 'additionalItems' && Array.isArray(source.items)) {
      if (value !== false) out.items = normalise(value, `${path}.additionalItems`, depth + 1, state);
      else if (source.maxItems === undefined) out.maxItems = source.items.length;
    } else if (key === 'nullable') {
      continue;
    } else if (key === 'properties' || key === '$defs' || key === 'definitions') {
      // property names are not keywords: normalise the schemas under them, not the names
      if (!isObject(value)) out[key === 'definitions' ? '$defs' : key] = value;
      else {
        const map: Json = {};
        for (const [name, sub] of Object.entries(value))
          map[name] = normalise(sub, `${path}.${key}.${name}`, depth + 1, state);
        if (key === 'properties') out.properties = map;
        else out.$defs = { ...(out.$defs as Json | undefined), ...map };
      }
    } else if (key === 'enum' || key === 'const' || ANNOTATIONS.has(key)) {
      out[key] = value;
    } else {
      out[key] = normalise(value, `${path}.${key}`, depth + 1, state);
    }
  }
  if (source.nullable === true && typeof out.type === 'string') out.type = [out.type, 'null'];
  return out;
}

/** Bounds of a number schema, exclusive bounds made inclusive for integers. */
function boundsOf(schema: Json, integer: boolean): { lo: number; hi: number; strictLo: boolean } {
  const num = (v: unknown): number | undefined =>
    typeof v === 'number' && Number.isFinite(v) ? v : undefined;
  let lo = num(schema.minimum) ?? -Infinity;
  let hi = num(schema.maximum) ?? Infinity;
  let strictLo = false;
  const exLo = num(schema.exclusiveMinimum);
  const exHi = num(schema.exclusiveMaximum);
  if (exLo !== undefined && exLo >= lo) {
    lo = integer ? Math.floor(exLo) + 1 : exLo;
    strictLo = !integer;
  }
  if (exHi !== undefined && exHi <= hi) hi = integer ? Math.ceil(exHi) - 1 : exHi;
  if (integer) {
    lo = Math.ceil(lo);
    hi = Math.floor(hi);
  }
  return { lo, hi, strictLo };
}

/** A grammar-side schema that enforces a number's bounds, when one is known; else undefined. */
function numberTerminal(schema: Json, type: 'integer' | 'number'): Json | undefined {
  const integer = type === 'integer';
  const { lo, hi, strictLo } = boundsOf(schema, integer);
  if (
    integer &&
    Number.isFinite(lo) &&
    Number.isFinite(hi) &&
    hi >= lo &&
    hi - lo < MAX_ENUM_RANGE &&
    schema.multipleOf === undefined
  ) {
    return { enum: Array.from({ length: hi - lo + 1 }, (_, i) => lo + i) };
  }
  const placeholder = (name: TerminalName): Json => ({ const: terminalPlaceholder(name) });
  if (integer && lo >= 1 && lo <= 1) return placeholder('positive-integer');
  if (integer && lo === 0) return placeholder('nonnegative-integer');
  if (!integer && lo === 0 && hi === 1 && !strictLo && schema.exclusiveMaximum === undefined) {
    return placeholder('unit');
  }
  if (!integer && lo === 0) return placeholder(strictLo ? 'positive-number' : 'nonnegative-number');
  return undefined;
}

function prepareNode(
  node: unknown,
  path: string,
  scopes: readonly Json[],
  depth: number,
  state: { nodes: number },
): Json {
  const fail = (why: string): never => {
    throw new SchemaProblem(`${path}: ${why}`);
  };
  if (++state.nodes > MAX_NODES) fail(`the schema has more than ${MAX_NODES} subschemas`);
  if (depth > MAX_DEPTH) fail(`the schema is nested deeper than ${MAX_DEPTH} levels`);
  if (!isObject(node)) fail('a schema must be a JSON object');
  const schema = node as Json;
  for (const key of Object.keys(schema)) {
    if (!SUPPORTED.has(key)) fail(`keyword "${key}" is not supported for constrained output`);
  }

  // node-llama-cpp reads a type list without its keywords: one alternative per type keeps them
  if (Array.isArray(schema.type) && schema.type.length > 1 && !('enum' in schema) && !('const' in schema)) {
    const { type: list, ...rest } = schema;
    const split = (list as unknown[]).map((t) => {
      const alt: Json = { type: t };
      for (const [key, value] of Object.entries(rest)) {
        if (TYPE_KEYWORDS[key] === undefined || TYPE_KEYWORDS[key].includes(t as string)) alt[key] = value;
      }
      return alt;
    });
    return prepareNode({ oneOf: split }, path, scopes, depth, state);
  }

  const out: Json = {};
  let defs = scopes;
  if (schema.$defs !== undefined) {
    if (!isObject(schema.$defs)) fail('$defs must be an object');
    defs = [...scopes, schema.$defs as Json];
    const prepared: Json = {};
    for (const [name, def] of Object.entries(schema.$defs as Json)) {
      prepared[name] = prepareNode(def, `${path}.$defs.${name}`, defs, depth + 1, state);
    }
    out.$defs = prepared;
  }
  for (const key of ANNOTATIONS) if (key in schema && key !== '$schema') out[key] = schema[key];

  const type = schema.type;
  const types = Array.isArray(type) ? (type as unknown[]) : type === undefined ? [] : [type];
  if (Array.isArray(type)) {
    if (type.length === 0) fail('type must not be an empty array');
    for (const t of type) {
      if (typeof t !== 'string' || !SCALAR_TYPES.has(t)) {
        fail('a list of types may hold only string, number, integer, boolean and null (use oneOf)');
      }
    }
  } else if (
    type !== undefined &&
    (typeof type !== 'string' || !(SCALAR_TYPES.has(type) || type === 'object' || type === 'array'))
  ) {
    fail(`unknown type ${JSON.stringify(type)}`);
  }
  if (type !== undefined) out.type = type;
  const only = (keywords: readonly string[], wanted: string): void => {
    for (const key of keywords) {
      if (key in schema && !types.includes(wanted)) fail(`"${key}" needs type "${wanted}"`);
    }
  };
  only(OBJECT_KEYWORDS, 'object');
  only(ARRAY_KEYWORDS, 'array');
  only(STRING_KEYWORDS, 'string');
  // a constraint on one type of a type list is checked afterwards, not enforced
  const exactly = (wanted: string): boolean => types.length === 1 && types[0] === wanted;

  if ('const' in schema) {
    if (!isLiteral(schema.const)) fail('const must be a string, number, boolean or null');
    out.const = schema.const;
  }
  if ('enum' in schema) {
    if (!Array.isArray(schema.enum) || schema.enum.length === 0 || !schema.enum.every(isLiteral)) {
      fail('enum must be a non-empty array of strings, numbers, booleans or nulls');
    }
    out.enum = schema.enum;
  }
  if ('oneOf' in schema && 'anyOf' in schema) fail('use either oneOf or anyOf, not both');
  for (const key of ['oneOf', 'anyOf'] as const) {
    if (!(key in schema)) continue;
    const list = schema[key];
    if (!Array.isArray(list) || list.length === 0) fail(`${key} must be a non-empty array of schemas`);
    out.oneOf = (list as unknown[]).map((alt, i) =>
      prepareNode(alt, `${path}.${key}[${i}]`, defs, depth + 1, state),
    );
  }
  if ('$ref' in schema) {
    const ref = schema.$ref;
    const name =
      typeof ref === 'string' && ref.startsWith('#/$defs/') ? ref.slice('#/$defs/'.length) : undefined;
    if (name === undefined) fail('$ref must point into $defs or definitions ("#/$defs/NAME")');
    if (!defs.some((scope) => Object.hasOwn(scope, name as string)))
      fail(`$ref ${String(ref)} names no definition`);
    out.$ref = ref;
  }
  if (types.length === 0 && !['const', 'enum', 'oneOf', 'anyOf', '$ref'].some((k) => k in schema)) {
    fail('a schema needs a type, const, enum, oneOf, anyOf or $ref ("any value" is not supported)');
  }

  for (const key of ['minProperties', 'maxProperties', 'minItems', 'maxItems', 'minLength', 'maxLength']) {
    if (!(key in schema)) continue;
    if (!isCount(schema[key])) fail(`${key} must be a non-negative integer`);
    // more items than llama.cpp repeats are left to the check of the finished output
    if ((key === 'minItems' || key === 'maxItems') && (schema[key] as number) > REPEAT_BLOCK) continue;
    out[key] = schema[key];
  }
  for (const key of ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf']) {
    if (key in schema && (typeof schema[key] !== 'number' || !Number.isFinite(schema[key]))) {
      fail(`${key} must be a number`);
    }
  }
  if ('pattern' in schema && typeof schema.pattern !== 'string') fail('pattern must be a string');
  if ('format' in schema && typeof schema.format !== 'string') fail('format must be a string');
  if (exactly('string') && !('const' in schema) && !('enum' in schema)) {
    const format = schema.format as string | undefined;
    if (format !== undefined && Object.hasOwn(TERMINALS, format)) {
      return { ...annotationsOf(out), const: terminalPlaceholder(format as TerminalName) };
    }
    // lengths past what llama.cpp repeats: a string rule of rbee's own (see repeatRule)
    const min = (out.minLength as number | undefined) ?? 0;
    const max = out.maxLength as number | undefined;
    if (min > REPEAT_BLOCK || (max !== undefined && max > REPEAT_BLOCK)) {
      return { ...annotationsOf(out), const: longStringPlaceholder(min, max) };
    }
    // node-llama-cpp's format strings take no length bounds: the bounds win, the format is checked
    if (
      format !== undefined &&
      GRAMMAR_FORMATS.has(format) &&
      !('minLength' in out) &&
      !('maxLength' in out)
    ) {
      out.format = format;
    }
  }
  for (const t of ['integer', 'number'] as const) {
    if (exactly(t) && !('const' in schema) && !('enum' in schema)) {
      const terminal = numberTerminal(schema, t);
      if (terminal !== undefined) return { ...annotationsOf(out), ...terminal };
    }
  }
  if ('properties' in schema) {
    if (!isObject(schema.properties)) fail('properties must be an object');
    const properties: Json = {};
    for (const [name, sub] of Object.entries(schema.properties as Json)) {
      properties[name] = prepareNode(sub, `${path}.properties.${name}`, defs, depth + 1, state);
    }
    out.properties = properties;
  }
  if ('required' in schema) {
    const required = schema.required;
    const props = isObject(schema.properties) ? schema.properties : {};
    if (!Array.isArray(required) || !required.every((r) => typeof r === 'string')) {
      fail('required must be an array of strings');
    }
    for (const name of required as string[]) {
      if (!Object.hasOwn(props, name)) fail(`required property "${name}" is not in properties`);
    }
    out.required = required;
  }
  if ('additionalProperties' in schema) {
    const extra = schema.additionalProperties;
    out.additionalProperties =
      typeof extra === 'boolean'
        ? extra
        : prepareNode(extra, `${path}.additionalProperties`, defs, depth + 1, state);
  }
  if (schema.items === false) {
    // 2020-12's "nothing after the prefixItems" (zod's tuples)
    const count = Array.isArray(schema.prefixItems) ? schema.prefixItems.length : 0;
    if (!('maxItems' in out) || (out.maxItems as number) > count) out.maxItems = count;
  } else if ('items' in schema) {
    if (Array.isArray(schema.items)) fail('items must be one schema (use prefixItems for tuples)');
    out.items = prepareNode(schema.items, `${path}.items`, defs, depth + 1, state);
  }
  if ('prefixItems' in schema) {
    if (!Array.isArray(schema.prefixItems)) fail('prefixItems must be an array of schemas');
    out.prefixItems = (schema.prefixItems as unknown[]).map((item, i) =>
      prepareNode(item, `${path}.prefixItems[${i}]`, defs, depth + 1, state),
    );
  }
  return out;
}

function annotationsOf(out: Json): Json {
  const kept: Json = {};
  for (const key of ['$defs', 'description']) if (key in out) kept[key] = out[key];
  return kept;
}

/** Puts rbee's terminals in place of their placeholders in a grammar node-llama-cpp generated. */
export function insertTerminals(gbnf: string): string {
  let out = gbnf;
  for (const [name, rule] of Object.entries(TERMINALS)) {
    out = out.split(`"\\"${terminalPlaceholder(name as TerminalName)}\\""`).join(`(${rule})`);
  }
  return out.replace(
    LONG_STRING,
    (_whole, min: string, max: string) =>
      `("\\"" ${repeatRule(STRING_CHAR, Number(min), max === '' ? undefined : Number(max))} "\\"")`,
  );
}

const EXPONENT = ' ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?';
const INTEGER_DIGITS = '"-"? ("0" | [1-9] [0-9]{0,15})';

/**
 * Tightens the number rules of a grammar that node-llama-cpp generated from a JSON schema. Its
 * "integer" accepts exponents and 16 digits, so a model can write `4691E696` (seen from the test
 * model), which JSON.parse reads as Infinity, or integers past 2⁵³. Integers become plain, at most
 * 15 digits; other numbers keep an exponent of at most two digits. A grammar whose rules read
 * differently (another node-llama-cpp version) comes back unchanged.
 */
export function tightenNumberRules(gbnf: string): string {
  return gbnf
    .split('\n')
    .map((line) => {
      if (line.startsWith('integer-number-rule ::= ')) {
        return line.replace(EXPONENT, '').replace(INTEGER_DIGITS, '"-"? ("0" | [1-9] [0-9]{0,14})');
      }
      if (line.startsWith('fractional-number-rule ::= '))
        return line.replace(EXPONENT, ' ([eE] [-+]? [0-9]{1,2})?');
      return line;
    })
    .join('\n');
}

/**
 * Finds what llama.cpp's GBNF parser cannot be trusted with. A repetition `{m,n}` with n < m sends
 * it into a loop of ~2⁶⁴ steps on the worker's main thread (measured: it never returns), so it is
 * refused here; every other syntax error llama.cpp reports itself. Undefined when nothing is found.
 */
export function gbnfProblem(grammar: string): string | undefined {
  let i = 0;
  const n = grammar.length;
  while (i < n) {
    const c = grammar[i];
    if (c === '#') {
      while (i < n && grammar[i] !== '\n' && grammar[i] !== '\r') i++;
    } else if (c === '"' || c === '[') {
      const close = c === '"' ? '"' : ']';
      i++;
      while (i < n && grammar[i] !== close) i += grammar[i] === '\\' ? 2 : 1;
      i++;
    } else if (c === '{') {
      const match = /^\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}/.exec(grammar.slice(i, i + 64));
      if (match?.[2] !== undefined && match[2] !== '' && BigInt(match[2]) < BigInt(match[1] ?? '0')) {
        return `repetition ${match[0]} has a maximum below its minimum`;
      }
      i++;
    } else {
      i++;
    }
  }
  return undefined;
}
