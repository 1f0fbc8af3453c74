/**
 * Embeddings inside the worker, on an embedding context of their own that is created on first use:
 * a worker that only generates never pays for it.
 *
 * What it costs once created: a KV cache for one sequence, plus compute buffers sized for a batch
 * of the whole context (pooling needs the whole input in one batch). For a generative model the
 * compute buffers dominate: llama.cpp still runs the LM head over every input token, about
 * 8 bytes × vocabulary size per token of context (measured on the 49k-vocabulary test model at
 * 512 / 1024 / 2048 tokens: +196 / +387 / +772 MiB of RSS, node-llama-cpp estimating 23 / 66 / 210).
 * So a generative model's embedding context is capped to fit EMBED_LOGITS_BUDGET; a dedicated
 * embedding model (one whose GGUF names a pooling type) gets the worker's whole context. The memory
 * stays allocated while the worker lives. Texts run one at a time (the context has one sequence),
 * alongside any generation on the slots.
 */
import type { LlamaEmbeddingContext, LlamaModel } from 'node-llama-cpp';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { EmbedResult } from '../types.js';

/** llama.cpp's LLAMA_POOLING_TYPE_RANK (node-llama-cpp's const enum cannot be imported as a value). */
const POOLING_RANK = 4;

/** What a generative model's embedding context may spend on per-token logits: caps its context. */
export const EMBED_LOGITS_BUDGET = 256 * 2 ** 20;
/** A generative model's embedding context is never capped below this, whatever its vocabulary. */
const MIN_EMBED_CONTEXT = 256;

export interface EmbedderInit {
  model: LlamaModel;
  /** The worker's context per slot: the most an embedding context gets. */
  contextSize: number;
  threads: number;
}

export interface Embedder {
  embed(texts: readonly string[], options: { signal: AbortSignal }): Promise<EmbedResult>;
  dispose(): Promise<void>;
}

export function createEmbedder(init: EmbedderInit): Embedder {
  const { model } = init;
  let context: Promise<{ embedding: LlamaEmbeddingContext; size: number }> | undefined;
  let disposed = false;

  function unsupportedReason(): string | undefined {
    const insights = model.fileInsights;
    if (insights.hasEncoder && insights.hasDecoder) return 'it is an encoder-decoder model';
    const pooling = (insights.ggufFileInfo.architectureMetadata as { pooling_type?: unknown }).pooling_type;
    if (pooling === POOLING_RANK) return 'it is a reranking model (it scores, not embeds)';
    return undefined;
  }

  /** Tokens the embedding context holds (texts get one fewer). */
  function embedContextSize(): number {
    const { architectureMetadata, metadata } = model.fileInsights.ggufFileInfo;
    const pooling = (architectureMetadata as { pooling_type?: unknown }).pooling_type;
    if (typeof pooling === 'number' && pooling > 0) return init.contextSize;
    const vocab =
      (architectureMetadata as { vocab_size?: unknown }).vocab_size ??
      (metadata as { tokenizer?: { ggml?: { tokens?: readonly unknown[] } } }).tokenizer?.ggml?.tokens
        ?.length;
    if (typeof vocab !== 'number' || vocab <= 0) return Math.min(init.contextSize, MIN_EMBED_CONTEXT);
    const fits = Math.floor(EMBED_LOGITS_BUDGET / (8 * vocab));
    return Math.min(init.contextSize, Math.max(MIN_EMBED_CONTEXT, fits));
  }

  async function getContext(): Promise<{ embedding: LlamaEmbeddingContext; size: number }> {
    const reason = unsupportedReason();
    if (reason !== undefined) {
      throw new RbeeError(
        'EMBEDDINGS_UNSUPPORTED',
        `${model.filename ?? 'this model'} cannot embed: ${reason}`,
      );
    }
    const contextSize = embedContextSize();
    context ??= model
      .createEmbeddingContext({
        contextSize,
        // One batch for the whole input: pooled embeddings of an input split over batches are wrong.
        batchSize: contextSize,
        threads: init.threads,
      })
      .then((embedding) => ({ embedding, size: contextSize }))
      .catch((error: unknown) => {
        // Not cached: a failure for lack of memory may pass once a generation has finished.
        context = undefined;
        throw new RbeeError('INTERNAL', `cannot create an embedding context: ${messageOf(error)}`, {
          cause: error,
        });
      });
    return context;
  }

  return {
    async embed(texts, { signal }) {
      if (disposed) throw new RbeeError('WORKER_BUSY', 'worker is stopping');
      const { embedding: embeddingContext, size } = await getContext();
      // node-llama-cpp may pad the context up, never down; evaluation needs one token spare.
      const limit = size - 1;
      const lengths = texts.map((text) => embeddingContext.calculateInputLength(text));
      lengths.forEach((length, i) => {
        if (length > limit) {
          throw new RbeeError(
            'BAD_REQUEST',
            `text ${i} is ${length} tokens; this worker embeds at most ${limit} tokens per text`,
          );
        }
      });
      const embeddings: number[][] = [];
      for (const text of texts) {
        if (signal.aborted) throw toRbeeError(signal.reason, 'JOB_CANCELLED');
        const { vector } = await embeddingContext.getEmbeddingFor(text);
        embeddings.push(normalise(vector));
      }
      return { embeddings, promptTokens: lengths.reduce((sum, n) => sum + n, 0) };
    },
    async dispose() {
      disposed = true;
      const pending = context;
      context = undefined;
      await pending?.then((c) => c.embedding.dispose()).catch(() => undefined);
    },
  };
}

/**
 * Scales to unit length, as llama.cpp's server and the OpenAI API return them (cosine similarity
 * is then a dot product). A vector with a non-finite value is an engine fault, not a result.
 */
function normalise(vector: readonly number[]): number[] {
  let sum = 0;
  for (const v of vector) sum += v * v;
  const norm = Math.sqrt(sum);
  if (!Number.isFinite(norm)) throw new RbeeError('INTERNAL', 'the model produced a non-finite embedding');
  return norm === 0 ? [...vector] : vector.map((v) => v / norm);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
