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
const OBJECT_KEYWORDS = ['properties', 'required', 'additionalProperties', 'minProperties', 'maxProperties'];
const ARRAY_KEYWORDS = ['items', 'prefixItems', 'minItems', 'maxItems'];
const STRING_KEYWORDS = ['minLength', 'maxLength', 'format'];
const SUPPORTED = new Set([
  ...ANNOTATIONS,
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
const SCALAR_TYPES = new Set(['string', 'number', 'integer', 'boolean', 'null']);
const FORMATS = new Set(['date-time', 'time', 'date']);
const MAX_DEPTH = 64;
const MAX_NODES = 10_000;

export type PreparedJsonSchema = { ok: true; schema: Json } | { ok: false; problem: string };

/**
 * Validates a JSON schema against the subset that node-llama-cpp turns into a grammar, and rewrites
 * `anyOf` as `oneOf` (equivalent for generation: the grammar accepts any alternative). Anything
 * outside the subset is a problem with its JSON path rather than a constraint silently dropped.
 * Note that node-llama-cpp always generates every listed property, `required` or not.
 */
export function prepareJsonSchema(schema: unknown): PreparedJsonSchema {
  const state = { nodes: 0 };
  try {
    return { ok: true, schema: prepareNode(schema, '$', [], 0, state) };
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
      if (key in schema && !(types.length === 1 && types[0] === wanted))
        fail(`"${key}" needs type "${wanted}"`);
    }
  };
  only(OBJECT_KEYWORDS, 'object');
  only(ARRAY_KEYWORDS, 'array');
  only(STRING_KEYWORDS, 'string');

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
    if (name === undefined) fail('$ref must point into $defs ("#/$defs/NAME")');
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
    out[key] = schema[key];
  }
  if ('format' in schema) {
    if (typeof schema.format !== 'string' || !FORMATS.has(schema.format)) {
      fail('format may only be date-time, time or date');
    }
    out.format = schema.format;
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
  if ('items' in schema) {
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
