/**
 * Continuing an answer from its tokens (`continueTokens`): what a job whose worker died mid-stream
 * runs on its next worker. The continued text picks up exactly where the answer stopped.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnWorker } from '../../src/engine/index.js';
import type { GenerateRequest, WorkerHandle } from '../../src/engine/types.js';
import { tinyModelPath } from '../helpers/tiny-model.js';

let worker: WorkerHandle;
beforeAll(async () => {
  worker = await spawnWorker({ modelPath: await tinyModelPath(), threads: 1 });
});
afterAll(async () => {
  await worker.stop();
});

async function generate(request: GenerateRequest): Promise<{ text: string; tokens: number[] }[]> {
  const chunks: { text: string; tokens: number[] }[] = [];
  for await (const chunk of worker.generate(request)) {
    if (chunk.type === 'token') chunks.push({ text: chunk.text, tokens: chunk.tokens });
  }
  return chunks;
}

const requests: [string, GenerateRequest][] = [
  [
    'a chat',
    { messages: [{ role: 'user', content: 'A long answer, please' }], maxTokens: 80, temperature: 0 },
  ],
  ['a raw prompt', { prompt: 'hello there', maxTokens: 80, temperature: 0 }],
];

describe.each(requests)('continuing %s', (_name, request) => {
  it('goes on from the tokens already sent, leading spaces and all', async () => {
    const full = await generate(request);
    // every chunk carries the tokens it covers: the ids of the whole answer
    expect(full.flatMap((c) => c.tokens)).toHaveLength(80);
    const all = full.map((c) => c.text).join('');
    for (const cut of [1, 5, 40]) {
      const sent = full.slice(0, cut);
      const sentTokens = sent.flatMap((c) => c.tokens);
      const rest = await generate({
        ...request,
        continueTokens: sentTokens,
        maxTokens: 80 - sentTokens.length,
      });
      const before = sent.map((c) => c.text).join('');
      const after = rest.map((c) => c.text).join('');
      // Where the answer stopped, it goes on: no token repeated, none lost, no space dropped. Much
      // further on a random-weights model may part ways: the sent tokens are now evaluated as one
      // batch rather than one by one, and float sums in another order can flip a near-tie.
      expect(after.slice(0, 60), `cut after ${cut}`).toBe(all.slice(before.length, before.length + 60));
    }
  });
});
