/**
 * Turns a request's `grammar` (GBNF) or `jsonSchema` into a node-llama-cpp grammar, inside the
 * worker. Every failure is a BAD_REQUEST for that request alone: the worker and its other slots
 * carry on.
 */
import { LlamaGrammar, LlamaJsonSchemaGrammar, type GbnfJsonSchema, type Llama } from 'node-llama-cpp';
import { RbeeError } from '../../shared/errors.js';
import type { GenerateRequest } from '../types.js';
import { gbnfProblem, insertTerminals, prepareJsonSchema, tightenNumberRules } from './constraints.js';
import { createOutputCheck, type OutputCheck } from './output-check.js';

/** What a request's constraints turn into: a grammar for sampling, a check of the finished text. */
export interface RequestConstraints {
  grammar?: LlamaGrammar;
  checkOutput?: OutputCheck;
}

/**
 * The grammar a request asks for, or undefined when it asks for none. Built with the synchronous
 * constructors (what `llama.createGrammar*` wrap) so that the request is queued in the same tick
 * it arrived in, and a cancel that follows it can never overtake it.
 */
export function createRequestGrammar(llama: Llama, request: GenerateRequest): RequestConstraints {
  if (request.grammar !== undefined && request.jsonSchema !== undefined) {
    throw new RbeeError('BAD_REQUEST', 'at most one of grammar and jsonSchema');
  }
  if (request.grammar !== undefined) {
    // Checked again here, not only by the parent: llama.cpp's parser hangs on some input.
    const problem = gbnfProblem(request.grammar);
    if (problem !== undefined) throw new RbeeError('BAD_REQUEST', `invalid grammar: ${problem}`);
    try {
      return { grammar: new LlamaGrammar(llama, { grammar: request.grammar }) };
    } catch (error) {
      // llama.cpp logs the parser's reason to the worker's stderr; the exception only says it failed.
      throw new RbeeError('BAD_REQUEST', 'invalid grammar: llama.cpp could not parse it as GBNF', {
        cause: error,
      });
    }
  }
  if (request.jsonSchema !== undefined) {
    const prepared = prepareJsonSchema(request.jsonSchema);
    if (!prepared.ok) throw new RbeeError('BAD_REQUEST', `invalid jsonSchema: ${prepared.problem}`);
    const checkOutput = createOutputCheck(prepared.full);
    try {
      // The schema's static type is unknowable here: prepareJsonSchema checked its shape at runtime.
      const json = new LlamaJsonSchemaGrammar<GbnfJsonSchema>(llama, prepared.schema as GbnfJsonSchema);
      const tightened = insertTerminals(tightenNumberRules(json.grammar));
      if (tightened === json.grammar) return { grammar: json, checkOutput };
      const grammar = new LlamaGrammar(llama, {
        grammar: tightened,
        stopGenerationTriggers: json.stopGenerationTriggers,
        trimWhitespaceSuffix: json.trimWhitespaceSuffix,
      });
      return { grammar, checkOutput };
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      throw new RbeeError('BAD_REQUEST', `invalid jsonSchema: ${why}`, { cause: error });
    }
  }
  return {};
}
