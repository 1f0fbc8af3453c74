import { randomUUID } from 'node:crypto';
import { mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { generateTestModel, TEST_MODEL_SHAPES } from '../../src/engine/gguf/index.js';
import { EMBED_LOGITS_BUDGET } from '../../src/engine/worker/embedder.js';
import { estimateWorkerMemory } from '../../src/engine/memory.js';
import type { WorkerHandle, WorkerInit } from '../../src/engine/types.js';
import { spawnWorker } from '../../src/engine/worker/client.js';
import { RbeeError } from '../../src/shared/errors.js';
import { TEST_MODELS_DIR, tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';

let tiny: string;
let tempDir: string;

beforeAll(async () => {
  tiny = await tinyModelPath();
  tempDir = await mkdtemp(join(tmpdir(), 'rbee-memory-test-'));
});

afterAll(async () => {
  await rm(tempDir, { recursive: true, force: true });
});

/** The SmolLM-135M-shaped test model (≈174 MB), written once into the shared model cache. */
async function smallModelPath(): Promise<string> {
  const path = join(TEST_MODELS_DIR, 'small-seed1.gguf');
  if (
    await stat(path).then(
      (s) => s.isFile(),
      () => false,
    )
  )
    return path;
  // Another test process may write it at the same time: each writes its own file and renames it.
  const temp = `${path}.${process.pid}-${randomUUID()}.tmp`;
  try {
    await generateTestModel({ path: temp, preset: 'small', seed: 1 });
    await rename(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
  return path;
}

describe('estimateWorkerMemory', () => {
  it('is positive and grows with slots and context, weights staying the same', async () => {
    const base = await estimateWorkerMemory(tiny, { contextSize: 512, slots: 1 });
    const moreSlots = await estimateWorkerMemory(tiny, { contextSize: 512, slots: 4 });
    const moreContext = await estimateWorkerMemory(tiny, { contextSize: 2048, slots: 1 });
    expect(base.weightsBytes).toBeGreaterThan(0);
    expect(base.kvCacheBytes).toBeGreaterThan(0);
    expect(base.totalBytes).toBe(base.weightsBytes + base.kvCacheBytes);
    expect(base.vramBytes).toBe(0);
    expect(moreSlots.kvCacheBytes).toBeGreaterThan(base.kvCacheBytes);
    expect(moreContext.kvCacheBytes).toBeGreaterThan(base.kvCacheBytes);
    expect(moreSlots.weightsBytes).toBe(base.weightsBytes);
    expect(moreContext.weightsBytes).toBe(base.weightsBytes);
    // The tiny model's Q8_0 weights are about its file size (≈1 MB), not some default.
    const fileBytes = (await stat(tiny)).size;
    expect(base.weightsBytes).toBeGreaterThan(fileBytes * 0.5);
    expect(base.weightsBytes).toBeLessThan(fileBytes * 1.5);
  });

  it('defaults to the context a worker would use', async () => {
    // The tiny model was trained with 2048 tokens, under the 4096 cap.
    expect(await estimateWorkerMemory(tiny)).toEqual(
      await estimateWorkerMemory(tiny, { contextSize: 2048, slots: 1 }),
    );
  });

  it('fails a missing file with MODEL_NOT_FOUND and a non-GGUF with MODEL_INVALID', async () => {
    const codeOf = (p: Promise<unknown>): Promise<unknown> =>
      p.then(
        () => 'resolved',
        (e: unknown) => (e instanceof RbeeError ? e.code : e),
      );
    expect(await codeOf(estimateWorkerMemory(join(tempDir, 'missing.gguf')))).toBe('MODEL_NOT_FOUND');
    const junk = join(tempDir, 'junk.gguf');
    await writeFile(junk, 'not a gguf at all\n'.repeat(64));
    expect(await codeOf(estimateWorkerMemory(junk))).toBe('MODEL_INVALID');
    expect(await codeOf(estimateWorkerMemory(tiny, { slots: 0 }))).toBe('CONFIG_INVALID');
    expect(await codeOf(estimateWorkerMemory(tiny, { signal: AbortSignal.abort() }))).toBe('JOB_CANCELLED');
  });
});

describe('estimate against what a worker really uses', () => {
  const started: WorkerHandle[] = [];
  afterEach(async () => {
    for (const worker of started.splice(0)) await worker.stop({ timeoutMs: 2000 });
  });

  /** Resident memory after a short generation, which touches every (memory-mapped) weight. */
  async function observedBytes(
    init: Omit<WorkerInit, 'threads'>,
  ): Promise<{ rss: number; estimated: number; worker: WorkerHandle }> {
    const worker = await spawnWorker({ ...init, threads: 1, heartbeatIntervalMs: 100 });
    started.push(worker);
    for await (const chunk of worker.generate({ prompt: 'Measure me', maxTokens: 4 })) void chunk;
    const after = worker.lastHeartbeat;
    await waitFor(() => worker.lastHeartbeat !== after && worker.lastHeartbeat?.slotsBusy === 0, {
      what: 'a heartbeat after the generation',
    });
    return { rss: worker.info.memoryBytes, estimated: worker.info.estimatedBytes, worker };
  }

  it('is within a sane factor of the RSS it adds over a near-empty worker', async () => {
    const small = await smallModelPath();
    const options = { contextSize: 1024, slots: 2 };
    const estimate = await estimateWorkerMemory(small, options);
    // The baseline: the same process with a ~1 MB model and a small context (Node, llama.cpp, buffers).
    const baseline = await observedBytes({ modelPath: tiny, contextSize: 256, slots: 1 });
    const measured = await observedBytes({ modelPath: small, ...options });
    expect(measured.estimated).toBe(estimate.totalBytes);
    const added = measured.rss - baseline.rss;
    const ratio = added / (estimate.totalBytes - baseline.estimated);
    console.log(
      `memory: baseline RSS ${mib(baseline.rss)}, small model RSS ${mib(measured.rss)} ` +
        `(+${mib(added)}); estimate ${mib(estimate.totalBytes)} = weights ${mib(estimate.weightsBytes)} ` +
        `+ kv ${mib(estimate.kvCacheBytes)}; observed/estimated ${ratio.toFixed(2)}`,
    );
    expect(ratio).toBeGreaterThan(0.2);
    expect(ratio).toBeLessThan(5);

    // Embedding on a generative model runs its LM head over every input token (8 bytes × vocabulary
    // per token): the embedding context is capped to a budget instead of taking the whole 1024.
    const cap = Math.floor(EMBED_LOGITS_BUDGET / (8 * TEST_MODEL_SHAPES.small.vocab)) - 1;
    expect(cap).toBeLessThan(options.contextSize - 1);
    const long = await measured.worker.embed(['word '.repeat(2000)]).catch((e: unknown) => e);
    expect(long).toBeInstanceOf(RbeeError);
    expect((long as RbeeError).message).toContain(`at most ${cap} tokens`);
    const fits = await measured.worker.embed(['a short text']);
    expect(fits.embeddings[0]).toHaveLength(TEST_MODEL_SHAPES.small.embedding);
  });
});

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
