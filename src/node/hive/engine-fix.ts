/**
 * `rbee doctor --fix` on a node: builds llama.cpp for this CPU once (native-build.ts), measures it
 * against the prebuilt binary on a generated model, and keeps the decision with its figures in the
 * data directory, where every CPU worker started afterwards reads it. The prebuilt binary stays the
 * default until then, and whenever the native build is not faster by the margin.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  buildNative,
  chooseCpuBinary,
  decide,
  defaultThreads,
  findNativeBuild,
  generateTestModel,
  measureBinaries,
  readBinaryDecision,
  writeBinaryDecision,
  type BinaryDecision,
  type BinaryMeasurement,
  type CpuBinaryChoice,
  type NativeBuild,
} from '../../engine/index.js';
import { RbeeError } from '../../shared/errors.js';

/** What CPU workers load here, and what it rests on. */
export interface EngineBinaryStatus {
  workers: CpuBinaryChoice;
  nativeBuild: NativeBuild | undefined;
  decision: BinaryDecision | undefined;
}

export function engineBinaryStatus(decisionPath: string): EngineBinaryStatus {
  const decision = readBinaryDecision(decisionPath);
  const nativeBuild = findNativeBuild();
  return { workers: chooseCpuBinary(decision, nativeBuild), nativeBuild, decision };
}

/**
 * The choice a CPU worker gets at its start: read again whenever the decision file or the native
 * build's folder changed (a fix that just finished, a reinstall), else from memory.
 */
export function createCpuBinaryChooser(decisionPath: string): () => CpuBinaryChoice {
  let key = '';
  let choice: CpuBinaryChoice | undefined;
  const stamp = (path: string): string => {
    try {
      return String(statSync(path).mtimeMs);
    } catch {
      return '-';
    }
  };
  return () => {
    const build = findNativeBuild();
    const now = `${stamp(decisionPath)}|${build?.folder ?? '-'}|${build?.builtAt ?? '-'}`;
    if (choice === undefined || now !== key) {
      key = now;
      choice = chooseCpuBinary(readBinaryDecision(decisionPath), build);
    }
    return choice;
  };
}

export type FixPreset = 'tiny' | 'small';

/** Tokens per generation: a few hundred on the tiny model, fewer on the 10× slower small one. */
const TOKENS: Record<FixPreset, number> = { tiny: 512, small: 128 };
const ROUNDS = 5;

export interface EngineFixInit {
  decisionPath: string;
  /** Where the generated models it measures with are kept. */
  engineDir: string;
  /** The threads workers use (config.json's, else the default). */
  threads: number | undefined;
  presets?: FixPreset[];
  signal?: AbortSignal;
  onProgress?: (text: string) => void;
}

let running: { done: Promise<unknown>; stop: AbortController } | undefined;

/** Runs the fix; one at a time per node (FIX_IN_PROGRESS otherwise). */
export async function runEngineFix(init: EngineFixInit): Promise<BinaryDecision> {
  if (running !== undefined) {
    throw new RbeeError('FIX_IN_PROGRESS', '`rbee doctor --fix` already runs on this node');
  }
  const stop = new AbortController();
  const signal = init.signal === undefined ? stop.signal : AbortSignal.any([init.signal, stop.signal]);
  const done = fix({ ...init, signal });
  running = { done, stop };
  try {
    return await done;
  } finally {
    running = undefined;
  }
}

/**
 * Cancels a fix in progress and waits until it has cleaned up (the build's processes killed, what
 * it left half-built removed): a node that stops leaves no compiler running behind it.
 */
export async function cancelEngineFix(): Promise<void> {
  const fixing = running;
  if (fixing === undefined) return;
  fixing.stop.abort(new RbeeError('NODE_SHUTTING_DOWN', 'the node is stopping'));
  await fixing.done.catch(() => undefined);
}

async function fix(init: EngineFixInit): Promise<BinaryDecision> {
  const say = init.onProgress ?? (() => undefined);
  const signal = init.signal;
  let build = findNativeBuild();
  if (build === undefined) {
    const started = Date.now();
    build = await buildNative({
      onProgress: (p) => say(p.text),
      ...(signal === undefined ? {} : { signal }),
    });
    say(
      `native build ${build.release} ready in ${Math.round((Date.now() - started) / 1000)} s (${build.folder})`,
    );
  } else {
    say(`native build ${build.release} already here (${build.folder}): measuring it`);
  }
  signal?.throwIfAborted();
  const threads = init.threads ?? defaultThreads();
  const measurements: BinaryMeasurement[] = [];
  for (const preset of init.presets ?? ['tiny']) {
    mkdirSync(init.engineDir, { recursive: true });
    const modelPath = join(init.engineDir, `${preset}-seed1.gguf`);
    if (!existsSync(modelPath)) {
      say(`generating the ${preset} model to measure with`);
      await generateTestModel({ path: modelPath, preset, seed: 1 });
    }
    say(
      `measuring on the ${preset} model: native vs prebuilt, ${TOKENS[preset]} tokens, ` +
        `${ROUNDS} interleaved rounds, ${threads} thread${threads === 1 ? '' : 's'}`,
    );
    measurements.push(
      await measureBinaries({
        modelPath,
        preset,
        tokens: TOKENS[preset],
        rounds: ROUNDS,
        threads,
        onProgress: say,
        ...(signal === undefined ? {} : { signal }),
      }),
    );
  }
  const decision = decide(build, measurements);
  writeBinaryDecision(init.decisionPath, decision);
  say(
    decision.choice === 'native'
      ? `CPU workers started from now on load the native build: ${decision.why}`
      : `CPU workers keep the prebuilt binary: ${decision.why}`,
  );
  return decision;
}
