/**
 * Reranking inside the worker: relevance scores of documents for a query, on a ranking context of
 * its own created on first use (a worker that never ranks never pays for it), as embeddings are.
 * Only a reranker can rank: a model with a classifier head (`cls.output.weight` or `cls.weight`)
 * and a way to join query and document (an EOS or SEP token, or a rerank template). Pairs run one
 * at a time on the context's one sequence, alongside any generation on the slots; a cancel stops
 * between pairs. The scores are node-llama-cpp's: llama.cpp's classifier output as a probability.
 */
import type { LlamaModel, LlamaRankingContext } from 'node-llama-cpp';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { RankResult } from '../types.js';

export interface RankerInit {
  model: LlamaModel;
  /** The worker's context per slot: what a (query, document) pair may fill. */
  contextSize: number;
  threads: number;
}

export interface Ranker {
  rank(query: string, documents: readonly string[], options: { signal: AbortSignal }): Promise<RankResult>;
  dispose(): Promise<void>;
}

export function createRanker(init: RankerInit): Ranker {
  const { model } = init;
  let context: Promise<LlamaRankingContext> | undefined;
  let disposed = false;

  function getContext(): Promise<LlamaRankingContext> {
    const insights = model.fileInsights;
    if (!insights.supportsRanking) {
      const reason =
        insights.hasEncoder && insights.hasDecoder
          ? 'it is an encoder-decoder model'
          : 'it is not a reranker (no classifier head)';
      throw new RbeeError('MODEL_CANNOT_RANK', `${model.filename ?? 'this model'} cannot rank: ${reason}`);
    }
    context ??= model
      .createRankingContext({
        contextSize: init.contextSize,
        // One batch per pair: the pooled score of a pair split over batches would be wrong.
        batchSize: init.contextSize,
        threads: init.threads,
      })
      .catch((error: unknown) => {
        // Not cached: a failure for lack of memory may pass once a generation has finished.
        context = undefined;
        throw new RbeeError('INTERNAL', `cannot create a ranking context: ${messageOf(error)}`, {
          cause: error,
        });
      });
    return context;
  }

  return {
    async rank(query, documents, { signal }) {
      if (disposed) throw new RbeeError('WORKER_BUSY', 'worker is stopping');
      const ranking = await getContext();
      // Evaluation needs one token spare, as for embeddings.
      const limit = ranking.contextSize - 1;
      const lengths = documents.map((document) => ranking.calculateInputLength(query, document));
      lengths.forEach((length, i) => {
        if (length > limit) {
          throw new RbeeError(
            'BAD_REQUEST',
            `the query with document ${i} is ${length} tokens; this worker ranks at most ${limit} tokens per pair`,
          );
        }
      });
      const scores: number[] = [];
      for (const document of documents) {
        if (signal.aborted) throw toRbeeError(signal.reason, 'JOB_CANCELLED');
        const score = await ranking.rank(query, document);
        if (!Number.isFinite(score)) throw new RbeeError('INTERNAL', 'the model produced a non-finite score');
        scores.push(score);
      }
      return { scores, promptTokens: lengths.reduce((sum, n) => sum + n, 0) };
    },
    async dispose() {
      disposed = true;
      const pending = context;
      context = undefined;
      await pending?.then((c) => c.dispose()).catch(() => undefined);
    },
  };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
