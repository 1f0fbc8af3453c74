/**
 * Prefix keys: short hashes that name the start of a prompt without its tokens. A worker publishes
 * the keys of what each slot keeps in its KV cache; whoever places a request computes the keys of
 * its own prompt with the same functions and looks for a match. No tokenizer is needed on that
 * side (a scheduler on another node may not even have the model), so the keys are over messages
 * and text, not tokens.
 *
 * - A chat's keys chain over its messages: key k names messages[0..k), role and content exact. The
 *   next turn of a chat starts with the previous turn's messages and its answer, so it finds the
 *   key the worker published for them.
 * - A raw prompt's key names its first `length` characters (UTF-16 code units, as JS counts).
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { ChatMessage, JobRequest } from './wire.js';

/** 16 hex digits (64 bits): collisions among the few prefixes a cluster holds are out of reach. */
const HASH_HEX = 16;

export const prefixKeySchema = z.object({
  /** 'messages': a chat's first `length` messages; 'text': a raw prompt's first `length` characters. */
  kind: z.enum(['messages', 'text']),
  length: z.number().int().min(0),
  hash: z.string().regex(/^[0-9a-f]{16}$/),
  /** Tokens of the slot's cache this prefix covers (about: a template's separators may fall either side). */
  tokens: z.number().int().min(0),
});
export type PrefixKey = z.infer<typeof prefixKeySchema>;

const digest = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, HASH_HEX);

/** Key hashes of every prefix of `messages`: element k-1 names messages[0..k). */
export function messagePrefixHashes(messages: readonly ChatMessage[]): string[] {
  const hashes: string[] = [];
  let previous = '';
  for (const m of messages) {
    // a plain message hashes as before; a tool call or result is part of what the template renders
    const parts: unknown[] =
      m.toolCalls === undefined && m.toolCallId === undefined
        ? [m.role, m.content]
        : [m.role, m.content, m.toolCalls ?? null, m.toolCallId ?? null];
    previous = digest(`${previous}\n${JSON.stringify(parts)}`);
    hashes.push(previous);
  }
  return hashes;
}

/** Key hash of the first `length` characters of a raw prompt. */
export function textPrefixHash(text: string, length = text.length): string {
  return digest(text.slice(0, length));
}

/** How many tokens of `keys` the prompt (messages or raw text) would find cached: the best match, or 0. */
export function cachedTokensFor(
  prompt: { messages: readonly ChatMessage[] } | { prompt: string },
  keys: readonly PrefixKey[],
): number {
  let best = 0;
  if ('messages' in prompt) {
    const hashes = messagePrefixHashes(prompt.messages);
    for (const key of keys) {
      if (key.kind === 'messages' && key.length > 0 && hashes[key.length - 1] === key.hash) {
        best = Math.max(best, key.tokens);
      }
    }
  } else {
    for (const key of keys) {
      if (key.kind === 'text' && key.length <= prompt.prompt.length) {
        if (textPrefixHash(prompt.prompt, key.length) === key.hash) best = Math.max(best, key.tokens);
      }
    }
  }
  return best;
}

/**
 * A job's prompt as its worker sees it (and keys it): the raw text, or the chat messages with the
 * job's system prompt first and a bare prompt as the user's message.
 */
export function promptOf(
  request: Pick<JobRequest, 'raw' | 'prompt' | 'messages' | 'system'>,
): { messages: ChatMessage[] } | { prompt: string } {
  if (request.raw === true && request.prompt !== undefined) return { prompt: request.prompt };
  const messages = request.messages ?? [{ role: 'user' as const, content: request.prompt ?? '' }];
  return {
    messages:
      request.system === undefined ? messages : [{ role: 'system', content: request.system }, ...messages],
  };
}
