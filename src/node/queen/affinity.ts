/**
 * Prefix affinity, computed where the prompt is (the entry node), from what every hive publishes:
 * which warm workers of the model keep the start of this prompt in a slot's KV cache, and how many
 * of its tokens. The queen's scheduler then prefers them, so a chat's next turn returns to the cache
 * of its last one and skips most of its prompt processing. Only these few numbers travel to the
 * queen, never the prompt.
 */
import { cachedTokensFor, promptOf } from '../../shared/prefix.js';
import type { JobRequest } from '../../shared/wire.js';
import type { HiveCandidate } from './scheduler.js';

/** Workers listed at most (the best first): more never changes a placement. */
const MAX_AFFINITY = 16;

export function prefixAffinity(
  request: Pick<JobRequest, 'raw' | 'prompt' | 'messages' | 'system'>,
  modelId: string,
  hives: readonly HiveCandidate[],
): { worker: string; tokens: number }[] {
  const prompt = promptOf(request);
  const found: { worker: string; tokens: number }[] = [];
  for (const { state } of hives) {
    for (const worker of state.workers) {
      if (worker.model !== modelId || worker.prefixes === undefined || worker.prefixes.length === 0) continue;
      const tokens = cachedTokensFor(prompt, worker.prefixes);
      if (tokens > 0) found.push({ worker: worker.id, tokens });
    }
  }
  return found.sort((a, b) => b.tokens - a.tokens).slice(0, MAX_AFFINITY);
}
