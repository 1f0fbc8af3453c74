/**
 * A zod schema compiled to a parser of its own (`z.compile`), for the parses on a request's or a
 * token's path. zod's runtime parser is one generic walk shared by every schema of the process; in a
 * node, where hundreds of schemas go through it, V8's caches for that walk see every shape and a
 * worker's `done` message cost 100–300 µs to check against ~30 µs in a process of its own. The
 * compiled parser is code for that one schema (~3× faster even in isolation). Results are the same:
 * whatever its fast path refuses it hands to the schema's own parser, so errors and their messages
 * are unchanged. Compiled once per schema, on first use.
 */
import { z } from 'zod';

const compiledSchemas = new WeakMap<z.ZodType, z.ZodType>();

export function compiled<T extends z.ZodType>(schema: T): T {
  let fast = compiledSchemas.get(schema) as T | undefined;
  if (fast === undefined) {
    fast = z.compile(schema);
    compiledSchemas.set(schema, fast);
  }
  return fast;
}
