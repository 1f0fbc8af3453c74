/**
 * Which device a worker starts on, with a fake spawn that records the WorkerInit it got (no GPU on
 * the machines that run these tests): the device asked for, the hive's own pick without one, the
 * worker already loaded reused wherever it runs, and a GPU that fails falling back to the CPU — said.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { WorkerHandle, WorkerInit } from '../../src/engine/types.js';
import {
  createMemoryChecker,
  createWorkerPool,
  type DeviceChoice,
  type WorkerPool,
  type WorkerPoolInit,
} from '../../src/node/hive/index.js';
import { RbeeError } from '../../src/shared/errors.js';
import { waitFor } from '../helpers/wait-for.js';
import type { MemoryObservation, ModelRow } from '../../src/node/store/index.js';

const MiB = 2 ** 20;
const CUDA0: DeviceChoice = { backend: 'cuda', index: 0 };

function model(id: string): ModelRow {
  return { id, path: `/models/${id}.gguf`, bytes: 300 * MiB, contextLength: 2048 } as ModelRow;
}

interface Lab {
  pool: WorkerPool;
  /** Every WorkerInit the pool spawned with, in order (failed spawns too). */
  spawned: WorkerInit[];
  narration: string[];
  observed: MemoryObservation[];
}

let logs: string;
const pools: WorkerPool[] = [];
beforeEach(() => {
  logs = mkdtempSync(join(tmpdir(), 'rbee-pool-'));
});
afterEach(async () => {
  await Promise.all(pools.splice(0).map((p) => p.stopAll()));
  rmSync(logs, { recursive: true, force: true });
});

function lab(options: {
  /** What a worker needs, as the GGUF estimate says. */
  estimateBytes?: number;
  ramFreeBytes?: number;
  /** Free VRAM of every GPU as probed (undefined: not known). */
  vramFreeBytes?: number | undefined;
  /** Spawns on these backends fail as a real worker does when the backend is missing. */
  failing?: string[];
  pickDevice?: WorkerPoolInit['pickDevice'];
}): Lab {
  const spawned: WorkerInit[] = [];
  const narration: string[] = [];
  const observed: MemoryObservation[] = [];
  const estimateBytes = options.estimateBytes ?? 200 * MiB;
  const vramFree = 'vramFreeBytes' in options ? options.vramFreeBytes : 8192 * MiB;
  const pool = createWorkerPool({
    spawn: (init) => {
      spawned.push(init);
      const backend = init.backend ?? 'cpu';
      if (options.failing?.includes(backend)) {
        return Promise.reject(
          new RbeeError('WORKER_START_FAILED', `backend ${backend} is not available: no ${backend} device`),
        );
      }
      return Promise.resolve(fakeHandle(init, spawned.length, estimateBytes));
    },
    log: pino({ level: 'silent' }),
    logsDir: logs,
    threads: 1,
    slots: 1,
    contextSize: undefined,
    keepAliveS: -1,
    drainTimeoutMs: 10,
    memory: createMemoryChecker({
      estimate: () => Promise.resolve({ totalBytes: estimateBytes }),
      observations: {
        record: (o) => void observed.push(o),
        get: (id) => observed.find((o) => o.modelId === id),
      },
      reserveBytes: 512 * MiB,
      freeBytes: () => options.ramFreeBytes ?? 16_384 * MiB,
      totalBytes: () => 32_768 * MiB,
      vram: () => (vramFree === undefined ? undefined : { freeBytes: vramFree, totalBytes: 24_576 * MiB }),
    }),
    ...(options.pickDevice === undefined ? {} : { pickDevice: options.pickDevice }),
    onNarration: (text) => void narration.push(text),
  });
  pools.push(pool);
  return { pool, spawned, narration, observed };
}

function fakeHandle(init: WorkerInit, n: number, estimatedBytes: number): WorkerHandle {
  let exit!: (value: { code: number | null; signal: NodeJS.Signals | null }) => void;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => (exit = r));
  return {
    info: {
      id: `w${n}`,
      pid: 10_000 + n,
      modelPath: init.modelPath,
      backend: init.backend ?? 'cpu',
      device: init.device ?? 0,
      slots: 1,
      // as the engine does: what it was asked for, else the model's own (2048 here)
      contextSize: init.contextSize ?? 2048,
      threads: 1,
      state: 'idle',
      memoryBytes: 150 * MiB,
      estimatedBytes,
      loadMs: 5,
    },
    generate: () => ({
      [Symbol.asyncIterator]: () => ({ next: () => Promise.resolve({ done: true, value: undefined }) }),
    }),
    embed: () => Promise.reject(new Error('no embeddings here')),
    rank: () => Promise.reject(new Error('no ranking here')),
    countTokens: () => Promise.reject(new Error('no tokenizer here')),
    stop: () => {
      exit({ code: 0, signal: null });
      return exited.then(() => undefined);
    },
    exited,
    lastHeartbeat: undefined,
    invalidMessages: 0,
  };
}

/** acquire, collecting the job's narration. */
async function acquire(pool: WorkerPool, id: string, device?: DeviceChoice) {
  const said: string[] = [];
  const lease = await pool.acquire(model(id), {
    narrate: (text) => void said.push(text),
    ...(device === undefined ? {} : { device }),
  });
  return { lease, said };
}

describe('a worker starts', () => {
  it('on the GPU the queen chose, and says so', async () => {
    const { pool, spawned, observed } = lab({});
    const { lease, said } = await acquire(pool, 'm', { backend: 'cuda', index: 1 });
    expect(spawned).toHaveLength(1);
    expect(spawned[0]).toMatchObject({ backend: 'cuda', device: 1 });
    expect(lease.worker).toMatchObject({ backend: 'cuda', device: 1 });
    expect(said).toContainEqual(
      expect.stringMatching(/m fits: needs 200 MiB \(estimated\), 8192 MiB free on GPU1 \(cuda\)/),
    );
    expect(said).toContainEqual(
      expect.stringMatching(/no worker has m loaded; starting a worker on GPU1 \(cuda\)/),
    );
    expect(said).toContainEqual(expect.stringMatching(/worker w1 ready in \d+ ms .* on GPU1 \(cuda\)$/));
    // a GPU worker's resident memory is no figure for the CPU
    expect(observed).toEqual([]);
  });

  it('on the CPU when it is chosen, with no GPU index and its memory observed', async () => {
    const { pool, spawned, observed } = lab({});
    const { said } = await acquire(pool, 'm', { backend: 'cpu', index: -1 });
    expect(spawned[0]?.backend).toBe('cpu');
    expect(spawned[0]).not.toHaveProperty('device');
    // published as the scheduler reads devices: -1 is the CPU
    expect(pool.list()[0]).toMatchObject({ backend: 'cpu', device: -1 });
    expect(said).toContainEqual(expect.stringMatching(/starting a worker on the CPU/));
    expect(observed).toHaveLength(1);
  });

  it('on the hive’s own pick when the job comes without a device, else on the CPU', async () => {
    const picked = lab({ pickDevice: () => ({ backend: 'vulkan', index: 0 }) });
    await acquire(picked.pool, 'm');
    expect(picked.spawned[0]).toMatchObject({ backend: 'vulkan', device: 0 });

    const plain = lab({});
    await acquire(plain.pool, 'm');
    expect(plain.spawned[0]?.backend).toBe('cpu');
  });
});

describe('a worker already loaded', () => {
  it('is used wherever it runs (one per model), and the narration says it differs', async () => {
    const { pool, spawned } = lab({});
    (await acquire(pool, 'm', { backend: 'cpu', index: -1 })).lease.release();
    const { lease, said } = await acquire(pool, 'm', CUDA0);
    expect(spawned).toHaveLength(1);
    expect(lease.worker.backend).toBe('cpu');
    expect(said).toEqual([
      'worker w1 already has m loaded on the CPU; using it rather than GPU0 (cuda) (one worker per model)',
    ]);
  });

  it('on the chosen device is used without remark', async () => {
    const { pool } = lab({});
    (await acquire(pool, 'm', CUDA0)).lease.release();
    const { said } = await acquire(pool, 'm', CUDA0);
    expect(said).toEqual(['worker w1 already has m loaded on GPU0 (cuda)']);
  });
});

describe('a GPU that fails', () => {
  it('to start the backend: the worker starts on the CPU instead, said with the reason', async () => {
    const { pool, spawned } = lab({ failing: ['cuda'] });
    const { lease, said } = await acquire(pool, 'm', CUDA0);
    expect(spawned.map((s) => s.backend)).toEqual(['cuda', 'cpu']);
    expect(lease.worker.backend).toBe('cpu');
    expect(said).toContainEqual(
      'GPU0 (cuda) failed: backend cuda is not available: no cuda device; starting on the CPU instead',
    );
    // the fallback is not a crash: no breaker counts it
    expect(pool.breakers()).toEqual([]);
  });

  it('for want of VRAM: nothing is loaded there, the CPU takes it', async () => {
    const { pool, spawned } = lab({ vramFreeBytes: 100 * MiB, estimateBytes: 500 * MiB });
    const { said } = await acquire(pool, 'm', CUDA0);
    expect(spawned.map((s) => s.backend)).toEqual(['cpu']);
    expect(said).toContainEqual(
      'GPU0 (cuda) failed: m needs 500 MiB (estimated) but 100 MiB of 24576 MiB VRAM is free on GPU0 (cuda); ' +
        'starting on the CPU instead',
    );
  });

  it('whose free VRAM is unknown: the CPU takes it, said', async () => {
    const { pool, spawned } = lab({ vramFreeBytes: undefined });
    const { said } = await acquire(pool, 'm', CUDA0);
    expect(spawned.map((s) => s.backend)).toEqual(['cpu']);
    expect(said).toContainEqual(
      expect.stringMatching(/free VRAM of GPU0 \(cuda\) is not known.*starting on the CPU instead/),
    );
  });

  it('counts what this hive’s workers hold there: a second model makes room by unloading an idle one', async () => {
    const { pool, spawned, narration } = lab({ vramFreeBytes: 1000 * MiB, estimateBytes: 600 * MiB });
    (await acquire(pool, 'a', CUDA0)).lease.release();
    const { lease, said } = await acquire(pool, 'b', CUDA0);
    expect(lease.worker.backend).toBe('cuda');
    expect(spawned.map((s) => s.backend)).toEqual(['cuda', 'cuda']);
    expect(narration).toContainEqual(
      expect.stringMatching(/unloading worker w1 \(a\): making room for b on GPU0 \(cuda\)/),
    );
    expect(said).toContainEqual(
      expect.stringMatching(/b fits: needs 600 MiB \(estimated\), 1000 MiB free on GPU0/),
    );
  });

  it('counts what this hive’s workers hold there: with the first one busy, the CPU takes the second', async () => {
    const { pool, spawned } = lab({ vramFreeBytes: 1000 * MiB, estimateBytes: 600 * MiB });
    await acquire(pool, 'a', CUDA0); // not released: busy
    const { lease, said } = await acquire(pool, 'b', CUDA0);
    expect(lease.worker.backend).toBe('cpu');
    expect(spawned.map((s) => s.backend)).toEqual(['cuda', 'cpu']);
    expect(said).toContainEqual(expect.stringMatching(/but 400 MiB of 24576 MiB VRAM is free on GPU0/));
  });

  it('with no room on the CPU either: refused, naming both reasons', async () => {
    const { pool, spawned } = lab({ failing: ['cuda'], ramFreeBytes: 600 * MiB });
    const error = await pool.acquire(model('m'), { device: CUDA0 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RbeeError);
    expect((error as RbeeError).code).toBe('INSUFFICIENT_MEMORY');
    expect((error as RbeeError).message).toMatch(
      /^GPU0 \(cuda\) failed: backend cuda is not available.*; and on the CPU: m needs 370 MiB \(estimated\)/,
    );
    expect(spawned.map((s) => s.backend)).toEqual(['cuda']);
  });
});

describe('a job that asks for more context than the loaded worker has', () => {
  const withContext = (pool: WorkerPool, contextSize: number, signal?: AbortSignal) => {
    const said: string[] = [];
    const lease = pool.acquire(model('m'), {
      contextSize,
      narrate: (text) => void said.push(text),
      ...(signal === undefined ? {} : { signal }),
    });
    return { lease, said };
  };

  it('reloads an idle worker with the context asked, which later jobs then share', async () => {
    const { pool, spawned, narration } = lab({});
    (await acquire(pool, 'm')).lease.release();
    const { lease, said } = withContext(pool, 8192);
    const big = await lease;
    expect(spawned.map((s) => s.contextSize)).toEqual([undefined, 8192]);
    expect(big.worker).toMatchObject({ id: 'w2', contextSize: 8192 });
    expect(narration).toContainEqual(
      'unloading worker w1 (m): reloading m with 8192 tokens of context ' +
        '(worker w1 has 2048 tokens of context and the job asks for 8192)',
    );
    expect(said).toContainEqual(
      expect.stringMatching(/starting a worker on the CPU \(.*8192 tokens of context\)/),
    );
    big.release();
    // a job without a wish, or a smaller one, takes the larger worker as it is
    const next = await acquire(pool, 'm');
    expect(next.lease.worker.id).toBe('w2');
    next.lease.release();
    expect((await withContext(pool, 4096).lease).worker.id).toBe('w2');
    expect(spawned).toHaveLength(2);
    expect(pool.list().map((w) => w.id)).toEqual(['w2']);
  });

  it('does not reload for less context than the worker has', async () => {
    const { pool, spawned } = lab({});
    (await acquire(pool, 'm')).lease.release();
    const small = await withContext(pool, 1024).lease;
    expect(small.worker.id).toBe('w1');
    expect(spawned).toHaveLength(1);
    // and a first worker started for a small wish gets the default context, not less
    const other = lab({});
    const first = await other.pool.acquire(model('m'), { contextSize: 256 });
    expect(first.worker.contextSize).toBe(2048);
    expect(other.spawned[0]).not.toHaveProperty('contextSize');
  });

  it('waits for the running jobs of a busy worker, then reloads it', async () => {
    const { pool, spawned } = lab({});
    const running = await acquire(pool, 'm');
    const { lease, said } = withContext(pool, 4096);
    let placed = false;
    void lease.then(() => (placed = true));
    const waiting =
      'worker w1 has 2048 tokens of context and the job asks for 4096: it is reloaded once its 1 running job(s) are done';
    // the lease has come to the point of waiting for the running job
    await waitFor(() => said.includes(waiting), { what: 'the lease waiting for the running job' });
    expect(placed).toBe(false);
    expect(said).toContainEqual(waiting);
    expect(spawned).toHaveLength(1);
    running.lease.release();
    expect((await lease).worker).toMatchObject({ id: 'w2', contextSize: 4096 });
  });

  it('stops waiting when its job is cancelled, and leaves the worker alone', async () => {
    const { pool, spawned } = lab({});
    const running = await acquire(pool, 'm');
    const controller = new AbortController();
    const { lease } = withContext(pool, 4096, controller.signal);
    controller.abort(new RbeeError('JOB_CANCELLED', 'cancelled'));
    await expect(lease).rejects.toMatchObject({ code: 'JOB_CANCELLED' });
    running.lease.release();
    expect(spawned).toHaveLength(1);
    expect(pool.list().map((w) => w.id)).toEqual(['w1']);
  });
});
