/**
 * A request's `logitBias` as both generation paths apply it: checked against the model's vocabulary
 * (a token id past it is a BAD_REQUEST), -100 or less a ban (-Infinity), end-of-generation tokens
 * left out as node-llama-cpp's TokenBias leaves them out.
 */
import type { LlamaModel, Token } from 'node-llama-cpp';
import { RbeeError } from '../../shared/errors.js';
import type { GenerateRequest } from '../types.js';

/** Token → the logit added to it; empty when the request biases nothing. */
export function logitBiasOf(model: LlamaModel, request: GenerateRequest): Map<Token, number> {
  const bias = new Map<Token, number>();
  const entries = Object.entries(request.logitBias ?? {});
  if (entries.length === 0) return bias;
  const vocabulary = vocabularySize(model);
  for (const [id, value] of entries) {
    const token = Number(id) as Token;
    if (vocabulary !== undefined && token >= vocabulary) {
      throw new RbeeError(
        'BAD_REQUEST',
        `logit_bias: token ${id} is not in the model's vocabulary of ${vocabulary}`,
      );
    }
    if (!model.isEogToken(token)) bias.set(token, value <= -100 ? -Infinity : value);
  }
  return bias;
}

function vocabularySize(model: LlamaModel): number | undefined {
  const metadata = model.fileInfo.metadata as { tokenizer?: { ggml?: { tokens?: unknown } } };
  const tokens = metadata.tokenizer?.ggml?.tokens;
  return Array.isArray(tokens) ? tokens.length : undefined;
}
