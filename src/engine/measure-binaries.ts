/**
 * The native build against the prebuilt binary on one model: two real workers, one of each, loaded
 * side by side, then generations interleaved round by round (the order alternating), so that both
 * see the same load. Only one generates at a time; an idle worker's threads sleep.
 */
import { loadavg } from 'node:os';
import { RbeeError } from '../shared/errors.js';
import { pairedRatio, type BinaryMeasurement } from './binary-choice.js';
import type { WorkerHandle, WorkerInit } from './types.js';
import { spawnWorker } from './worker/client.js';

const PROMPT = 'Once upon a time, in a village by the sea, there lived';

export interface MeasureInit {
  modelPath: string;
  /** Its name in the figures (`tiny`, `small`). */
  preset: string;
  tokens: number;
  rounds: number;
  threads: number;
  signal?: AbortSignal;
  onProgress?: (text: string) => void;
  /** Defaults to the real one; a test may pass another. */
  spawn?: (init: WorkerInit) => Promise<WorkerHandle>;
}

async function tokensPerSecond(worker: WorkerHandle, tokens: number, signal?: AbortSignal): Promise<number> {
  const request = { prompt: PROMPT, maxTokens: tokens, temperature: 0 };
  for await (const chunk of worker.generate(request, signal === undefined ? {} : { signal })) {
    if (chunk.type === 'done') return chunk.tokensPerSecond;
  }
  throw new RbeeError('WORKER_CRASHED', 'the worker stream ended without done');
}

export async function measureBinaries(init: MeasureInit): Promise<BinaryMeasurement> {
  const load = [loadavg()[0] ?? 0];
  const why = 'measuring the native build against the prebuilt one';
  const pair = await measurePair({
    ...init,
    a: { name: 'native', binary: { binary: 'native', why }, threads: init.threads },
    b: { name: 'prebuilt', binary: { binary: 'prebuilt', why }, threads: init.threads },
    check: (native) => {
      if (native.info.binary?.kind !== 'native') {
        throw new RbeeError(
          'ENGINE_BUILD_FAILED',
          `the native build did not load: ${native.info.binary?.why ?? 'the worker loaded another binary'}`,
        );
      }
    },
  });
  load.push(loadavg()[0] ?? 0);
  return {
    preset: init.preset,
    tokens: init.tokens,
    threads: init.threads,
    nativeTokS: pair.aTokS,
    prebuiltTokS: pair.bTokS,
    ratio: pair.ratio,
    ...(load.every((l) => l > 0) ? { load } : {}),
  };
}

/** One side of a pair: the binary a worker loads and its threads. */
export interface PairSide {
  name: string;
  binary: NonNullable<WorkerInit['binary']>;
  threads: number;
}

/**
 * Two workers on one model, generations interleaved round by round (the order alternating), one
 * untimed generation each first. `check` sees worker a once it is ready (e.g. that it loaded the
 * binary asked for). Both are stopped at the end, whatever happened.
 */
export async function measurePair(
  init: Omit<MeasureInit, 'threads'> & { a: PairSide; b: PairSide; check?: (a: WorkerHandle) => void },
): Promise<{ aTokS: number[]; bTokS: number[]; ratio: number }> {
  const spawn = init.spawn ?? spawnWorker;
  const say = init.onProgress ?? (() => undefined);
  const start = (side: PairSide): Promise<WorkerHandle> =>
    spawn({
      modelPath: init.modelPath,
      threads: side.threads,
      slots: 1,
      contextSize: Math.max(512, init.tokens + 64),
      prefixReuse: false,
      binary: side.binary,
      ...(init.signal === undefined ? {} : { signal: init.signal }),
    });
  const workers: WorkerHandle[] = [];
  try {
    const b = await start(init.b);
    workers.push(b);
    const a = await start(init.a);
    workers.push(a);
    init.check?.(a);
    // first-use costs (page faults, allocations) are not the binary's
    await tokensPerSecond(b, Math.min(32, init.tokens), init.signal);
    await tokensPerSecond(a, Math.min(32, init.tokens), init.signal);
    const aTokS: number[] = [];
    const bTokS: number[] = [];
    for (let round = 0; round < init.rounds; round++) {
      init.signal?.throwIfAborted();
      const order = round % 2 === 0 ? [true, false] : [false, true];
      for (const first of order) {
        const tokS = await tokensPerSecond(first ? a : b, init.tokens, init.signal);
        (first ? aTokS : bTokS).push(tokS);
      }
      say(
        `${init.preset}, round ${round + 1}/${init.rounds}: ${init.a.name} ${(aTokS.at(-1) ?? 0).toFixed(1)} tok/s, ` +
          `${init.b.name} ${(bTokS.at(-1) ?? 0).toFixed(1)} tok/s`,
      );
    }
    return { aTokS, bTokS, ratio: pairedRatio(aTokS, bTokS) };
  } finally {
    await Promise.allSettled(workers.map((w) => w.stop()));
  }
}
