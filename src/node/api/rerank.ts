/**
 * Reranking: `POST /v1/rerank` (also `/rerank` and `/v1/reranking`, as llama.cpp's server routes
 * it), in the shape llama.cpp's server and the common rerank APIs (Jina, Cohere) share. A
 * reranker's score of every document for the query, sorted by score, highest first. It runs as a
 * job like embeddings do (queued, placed, in the jobs table and /metrics, cancelled when the client
 * leaves, counted against key limits); a model that cannot rank is MODEL_CANNOT_RANK (400). Errors
 * are in the OpenAI routes' shape.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { JobManager } from '../jobs/index.js';
import type { ApiClient } from './auth.js';
import { sendErrorBody } from './error-body.js';
import { rankAsJob } from './job-events.js';
import type { ModelAccessCheck } from './model-access.js';

export interface RerankInit {
  jobs: JobManager;
  checkModel: ModelAccessCheck;
  admit: (client: ApiClient) => () => void;
}

const MAX_TEXT = 1_000_000;
const documentSchema = z.union([z.string().max(MAX_TEXT), z.object({ text: z.string().max(MAX_TEXT) })]);

export const rerankSchema = z.object({
  model: z.string().min(1),
  query: z.string().min(1).max(MAX_TEXT),
  documents: z.array(documentSchema).min(1).max(2048),
  /** How many results to return, the best first; all of them by default. */
  top_n: z.number().int().min(1).optional(),
  /** Each result with its document's text as `document: {text}` (Cohere's and Jina's shape). */
  return_documents: z.boolean().optional(),
  /** Ollama's extension, as on the other routes: how long the model stays loaded after this. */
  keep_alive: z.union([z.number(), z.string().max(32)]).optional(),
});

export interface RerankResult {
  index: number;
  relevance_score: number;
  document?: { text: string };
}

/** The results as the API returns them: every document's score, best first, cut to `topN`. */
export function rerankResults(
  texts: readonly string[],
  scores: readonly number[],
  options: { topN?: number | undefined; returnDocuments?: boolean | undefined } = {},
): RerankResult[] {
  return (
    scores
      .map((score, index) => ({ index, score }))
      // stable on ties: the earlier document first
      .sort((a, b) => b.score - a.score || a.index - b.index)
      .slice(0, options.topN ?? scores.length)
      .map(({ index, score }) => ({
        index,
        relevance_score: score,
        ...(options.returnDocuments === true ? { document: { text: texts[index] ?? '' } } : {}),
      }))
  );
}

export function registerRerankRoutes(app: FastifyInstance, init: RerankInit): void {
  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    let body: z.infer<typeof rerankSchema>;
    let release: () => void;
    try {
      const parsed = rerankSchema.safeParse(request.body);
      if (!parsed.success) throw new RbeeError('BAD_REQUEST', z.prettifyError(parsed.error));
      body = parsed.data;
      const empty = body.documents.findIndex((d) => (typeof d === 'string' ? d : d.text).length === 0);
      if (empty >= 0) throw new RbeeError('BAD_REQUEST', `document ${empty} is empty`);
      init.checkModel(body.model, request.apiClient);
      release = init.admit(request.apiClient);
    } catch (error) {
      return sendErrorBody(reply, toRbeeError(error), { openAiCodes: true });
    }
    const texts = body.documents.map((d) => (typeof d === 'string' ? d : d.text));
    let result: { scores: number[]; promptTokens: number };
    try {
      result = await rankAsJob(
        init.jobs,
        { model: body.model, query: body.query, documents: texts, keepAlive: body.keep_alive },
        request.apiClient.owner,
        reply,
        release,
      );
    } catch (error) {
      return sendErrorBody(reply, toRbeeError(error), { openAiCodes: true });
    }
    return reply.send({
      model: body.model,
      object: 'list',
      results: rerankResults(texts, result.scores, {
        topN: body.top_n,
        returnDocuments: body.return_documents,
      }),
      usage: { prompt_tokens: result.promptTokens, total_tokens: result.promptTokens },
    });
  };
  for (const path of ['/v1/rerank', '/rerank', '/v1/reranking']) app.post(path, handler);
}
