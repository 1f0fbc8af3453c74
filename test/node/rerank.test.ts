/**
 * Reranking through a real node: `POST /v1/rerank` (and llama.cpp's other routes for it) with plain
 * fetch, a generated reranker (random weights, so the scores mean nothing; what is checked is the
 * shape, the order, top_n, the indices, determinism, and that the figures are node-llama-cpp's own
 * ranking of the same inputs) and a real worker.
 */
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { tinyRerankerPath } from '../helpers/tiny-model.js';

let node: TestNode;
let reranker: string;

beforeAll(async () => {
  reranker = await tinyRerankerPath();
  node = await startTestNode('rbee-rerank-');
});
afterAll(async () => {
  await node?.stop();
});

const query = 'what does a hive run';
const documents = ['workers for the models on its disk', 'a queen', 'bees make honey', 'llama.cpp'];

interface RerankResult {
  index: number;
  relevance_score: number;
  document?: { text: string };
}
interface RerankBody {
  model: string;
  object: string;
  results: RerankResult[];
  usage: { prompt_tokens: number; total_tokens: number };
  error: { code: string; type: string; message: string };
}

async function post(
  path: string,
  body: unknown,
): Promise<{ status: number; text: string; json: RerankBody }> {
  const response = await fetch(`${node.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, text, json: JSON.parse(text) as RerankBody };
}

describe('POST /v1/rerank', () => {
  it("scores every document, sorted best first, with usage, as node-llama-cpp's own ranking does", async () => {
    const { status, json } = await post('/v1/rerank', {
      model: reranker,
      query,
      // both document shapes the common APIs take
      documents: [documents[0], { text: documents[1] }, documents[2], { text: documents[3] }],
    });
    expect(status).toBe(200);
    expect(Object.keys(json).sort()).toEqual(['model', 'object', 'results', 'usage']);
    expect(json.object).toBe('list');
    expect(json.model).toBe(reranker);
    const results = json.results;
    expect(results.map((r) => r.index).sort()).toEqual([0, 1, 2, 3]);
    for (const r of results) {
      expect(Object.keys(r).sort()).toEqual(['index', 'relevance_score']);
      expect(r.relevance_score).toBeGreaterThan(0);
      expect(r.relevance_score).toBeLessThan(1);
    }
    const scores = results.map((r) => r.relevance_score);
    expect(scores).toEqual([...scores].sort((a, b) => b - a));
    expect(json.usage.prompt_tokens).toBeGreaterThan(documents.length);
    expect(json.usage.total_tokens).toBe(json.usage.prompt_tokens);

    // the same figures from node-llama-cpp in this process, on the same file
    const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
    try {
      const model = await llama.loadModel({ modelPath: reranker, gpuLayers: 0 });
      const context = await model.createRankingContext({ contextSize: 512, threads: 1 });
      const own = await context.rankAll(query, documents);
      const byIndex = new Map(results.map((r) => [r.index, r.relevance_score]));
      own.forEach((score, i) => expect(byIndex.get(i)).toBeCloseTo(score, 6));
      const lengths = documents.map((d) => context.calculateInputLength(query, d));
      expect(json.usage.prompt_tokens).toBe(lengths.reduce((a, b) => a + b, 0));
    } finally {
      await llama.dispose();
    }
  });

  it('answers the same request with the same bytes, on every route llama.cpp serves it', async () => {
    const body = { model: reranker, query, documents };
    const first = await post('/v1/rerank', body);
    expect((await post('/v1/rerank', body)).text).toBe(first.text);
    expect((await post('/rerank', body)).text).toBe(first.text);
    expect((await post('/v1/reranking', body)).text).toBe(first.text);
  });

  it('returns the top_n best, with their documents when asked', async () => {
    const all = (await post('/v1/rerank', { model: reranker, query, documents })).json;
    const { status, json } = await post('/v1/rerank', {
      model: reranker,
      query,
      documents,
      top_n: 2,
      return_documents: true,
    });
    expect(status).toBe(200);
    expect(json.results).toEqual(
      all.results.slice(0, 2).map((r) => ({
        ...r,
        document: { text: documents[r.index] },
      })),
    );
    // usage counts every document scored, not only those returned
    expect(json.usage).toEqual(all.usage);
  });

  it('refuses a model that cannot rank, and bad requests, in the API error shape', async () => {
    const demo = await post('/v1/rerank', { model: 'demo', query, documents });
    expect(demo.status).toBe(400);
    expect(demo.json.error).toMatchObject({ code: 'MODEL_CANNOT_RANK', type: 'invalid_request_error' });
    expect(demo.json.error.message).toContain('cannot rank');

    const empty = await post('/v1/rerank', { model: reranker, query, documents: [] });
    expect(empty.status).toBe(400);
    expect(empty.json.error.code).toBe('BAD_REQUEST');
    const blank = await post('/v1/rerank', { model: reranker, query, documents: ['a', ''] });
    expect(blank.status).toBe(400);
    expect(blank.json.error.message).toContain('document 1');
    const unknown = await post('/v1/rerank', { model: 'no-such-model', query, documents });
    expect(unknown.status).toBe(404);
    expect(unknown.json.error.code).toBe('model_not_found');
  });

  it('ranks with the demo reranker, generated on first use, by its ref and by its short name', async () => {
    const byRef = await post('/v1/rerank', { model: 'demo:rerank', query, documents });
    expect(byRef.status).toBe(200);
    expect(byRef.json.results).toHaveLength(documents.length);
    const names = (await (await fetch(`${node.url}/v1/models`)).json()) as { data: { id: string }[] };
    const short = names.data.map((m) => m.id).find((id) => id.startsWith('rerank:'));
    expect(short).toBeDefined();
    const byName = await post('/v1/rerank', { model: short, query, documents });
    expect(byName.json.results).toEqual(byRef.json.results);
  });

  it('runs as a job of the jobs table', async () => {
    const response = await fetch(`${node.url}/v1/jobs`);
    const { jobs } = (await response.json()) as { jobs: { model: string; state: string }[] };
    const ranked = jobs.filter((j) => j.model === reranker);
    expect(ranked.length).toBeGreaterThanOrEqual(5);
    expect(ranked.every((j) => j.state === 'done')).toBe(true);
  });
});
