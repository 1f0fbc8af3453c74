/**
 * Checks a finished constrained answer against the request's whole JSON schema: the grammar
 * enforces the shape and what it can of the rest (constraints.ts), this catches the keywords it
 * leaves out (patterns, most number bounds, other formats), so a client never gets an answer that
 * its own schema refuses without being told.
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { RbeeError } from '../../shared/errors.js';

type AddFormats = (ajv: Ajv2020) => Ajv2020;
// ajv-formats is CommonJS: its default export arrives as the module object under some loaders
const addFormats = ((addFormatsModule as unknown as { default?: AddFormats }).default ??
  addFormatsModule) as unknown as AddFormats;

/** Undefined when the text is valid, else why not. */
export type OutputCheck = (text: string) => string | undefined;

/** One per request: a shared instance would keep every schema it ever compiled. */
function validatorHost(): Ajv2020 {
  // strict off: annotations and vendor keywords of schema libraries are accepted, as the grammar
  // side accepts them; unknown formats are not checked rather than refused
  const ajv = new Ajv2020({ strict: false, allErrors: false, validateFormats: true, logger: false });
  addFormats(ajv);
  return ajv;
}

/** Compiles the check; a schema ajv cannot compile (a bad pattern, say) is a BAD_REQUEST. */
export function createOutputCheck(full: Record<string, unknown>): OutputCheck {
  const { $schema: _dialect, $id: _id, ...schema } = full;
  let validate;
  try {
    validate = validatorHost().compile(schema);
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error);
    throw new RbeeError('BAD_REQUEST', `invalid jsonSchema: ${why}`, { cause: error });
  }
  return (text) => {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      return 'the output is not valid JSON';
    }
    if (validate(value)) return undefined;
    const first = validate.errors?.[0];
    if (first === undefined) return 'the output does not match the schema';
    return `the output does not match the schema: ${first.instancePath || '/'} ${first.message ?? 'is invalid'}`;
  };
}
