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
  bundledLlamaCppRelease,
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

/** Who started a fix: `rbee doctor --fix`, or the node at an idle moment (hive/idle-build.ts). */
export type FixTrigger = 'doctor' | 'idle';

/** Where a fix stands: compiling (with its share done, when the compiler says) or measuring. */
export interface FixProgress {
  phase: 'building' | 'measuring';
  text: string;
  percent?: number;
}

export interface EngineFixInit {
  decisionPath: string;
  /** Where the generated models it measures with are kept. */
  engineDir: string;
  /** The threads workers use (config.json's, else the default). */
  threads: number | undefined;
  presets?: FixPreset[];
  signal?: AbortSignal;
  onProgress?: (text: string, progress: FixProgress) => void;
  /** Defaults to `doctor`. */
  trigger?: FixTrigger;
  /**
   * Test hook: a child process that acts as the build for this many ms (native-build.ts TestBuild),
   * in the engine folder, and no measurement; below 0, one that fails after -ms. Never set outside
   * tests.
   */
  testBuildMs?: number;
}

interface RunningFix {
  done: Promise<BinaryDecision>;
  stop: AbortController;
  trigger: FixTrigger;
  startedAt: number;
  status: { progress: FixProgress | undefined };
  listeners: Set<(text: string, progress: FixProgress) => void>;
}

let running: RunningFix | undefined;

/** The fix running on this node, if any: who started it, when, and where it stands. */
export function engineFixInProgress():
  { trigger: FixTrigger; startedAt: number; progress: FixProgress | undefined } | undefined {
  return running === undefined
    ? undefined
    : { trigger: running.trigger, startedAt: running.startedAt, progress: running.status.progress };
}

/**
 * Runs the fix; one at a time per node. `rbee doctor --fix` while the node's idle build runs
 * attaches to it: the user gets its progress and its decision, and from then on it is theirs (a
 * job arriving no longer cancels it; their Ctrl-C does). Any other overlap is FIX_IN_PROGRESS.
 */
export async function runEngineFix(init: EngineFixInit): Promise<BinaryDecision> {
  const trigger = init.trigger ?? 'doctor';
  const current = running;
  if (current !== undefined) {
    if (current.trigger !== 'idle' || trigger !== 'doctor') {
      throw new RbeeError(
        'FIX_IN_PROGRESS',
        current.trigger === 'idle'
          ? 'the node is building llama.cpp for this CPU at an idle moment: `rbee doctor --fix` follows it, `rbee doctor --fix --cancel` cancels it'
          : '`rbee doctor --fix` already runs on this node (`rbee doctor --fix --cancel` cancels it)',
      );
    }
    return attach(current, init);
  }
  const stop = new AbortController();
  const signal = init.signal === undefined ? stop.signal : AbortSignal.any([init.signal, stop.signal]);
  const listeners = new Set(init.onProgress === undefined ? [] : [init.onProgress]);
  const status: RunningFix['status'] = { progress: undefined };
  const say = (text: string, progress: FixProgress): void => {
    status.progress = progress;
    for (const listener of listeners) listener(text, progress);
  };
  const startedAt = Date.now();
  const done = fix({ ...init, signal }, say);
  running = { done, stop, trigger, startedAt, status, listeners };
  try {
    return await done;
  } finally {
    running = undefined;
  }
}

async function attach(fixing: RunningFix, init: EngineFixInit): Promise<BinaryDecision> {
  fixing.trigger = 'doctor';
  const now = fixing.status.progress;
  const where = now === undefined ? 'starting' : now.text;
  init.onProgress?.(
    `following the build this node started at an idle moment (${where}); a job no longer cancels it`,
    now ?? { phase: 'building', text: where },
  );
  if (init.onProgress !== undefined) fixing.listeners.add(init.onProgress);
  const onAbort = (): void => fixing.stop.abort(init.signal?.reason);
  init.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await fixing.done;
  } finally {
    init.signal?.removeEventListener('abort', onAbort);
    if (init.onProgress !== undefined) fixing.listeners.delete(init.onProgress);
  }
}

/**
 * Cancels a fix in progress and waits until it has cleaned up (the build's processes killed, what
 * it left half-built removed): a node that stops leaves no compiler running behind it. With `only`,
 * cancels only a fix of that trigger. Says whether it cancelled one.
 */
export async function cancelEngineFix(
  reason: RbeeError = new RbeeError('NODE_SHUTTING_DOWN', 'the node is stopping'),
  only?: FixTrigger,
): Promise<boolean> {
  const fixing = running;
  if (fixing === undefined || (only !== undefined && fixing.trigger !== only)) return false;
  fixing.stop.abort(reason);
  await fixing.done.catch(() => undefined);
  return true;
}

async function fix(
  init: EngineFixInit,
  say: (text: string, progress: FixProgress) => void,
): Promise<BinaryDecision> {
  const building = (text: string, percent?: number): void =>
    say(text, { phase: 'building', text, ...(percent === undefined ? {} : { percent }) });
  const measuring = (text: string): void => say(text, { phase: 'measuring', text });
  const signal = init.signal;
  const test =
    init.testBuildMs === undefined
      ? undefined
      : {
          dir: join(init.engineDir, 'test-builds'),
          ms: Math.abs(init.testBuildMs),
          fails: init.testBuildMs < 0,
          release: bundledLlamaCppRelease() ?? 'unknown',
        };
  let build = test === undefined ? findNativeBuild() : undefined;
  if (build === undefined) {
    const started = Date.now();
    build = await buildNative({
      onProgress: (p) => building(p.text, p.percent),
      // the machine's other work goes first: it is built once, and minutes more do not matter
      nice: true,
      ...(test === undefined ? {} : { test }),
      ...(signal === undefined ? {} : { signal }),
    });
    building(
      `native build ${build.release} ready in ${Math.round((Date.now() - started) / 1000)} s (${build.folder})`,
      100,
    );
  } else {
    measuring(`native build ${build.release} already here (${build.folder}): measuring it`);
  }
  signal?.throwIfAborted();
  const threads = init.threads ?? defaultThreads();
  const measurements: BinaryMeasurement[] = [];
  if (test !== undefined) {
    measuring('a test build: not measured');
    measurements.push({
      preset: 'test',
      tokens: 1,
      threads: 1,
      nativeTokS: [1],
      prebuiltTokS: [1],
      ratio: 1,
    });
  }
  for (const preset of test === undefined ? (init.presets ?? ['tiny']) : []) {
    mkdirSync(init.engineDir, { recursive: true });
    const modelPath = join(init.engineDir, `${preset}-seed1.gguf`);
    if (!existsSync(modelPath)) {
      measuring(`generating the ${preset} model to measure with`);
      await generateTestModel({ path: modelPath, preset, seed: 1 });
    }
    measuring(
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
        onProgress: measuring,
        ...(signal === undefined ? {} : { signal }),
      }),
    );
  }
  const decision = decide(build, measurements);
  writeBinaryDecision(init.decisionPath, decision);
  measuring(
    decision.choice === 'native'
      ? `CPU workers started from now on load the native build: ${decision.why}`
      : `CPU workers keep the prebuilt binary: ${decision.why}`,
  );
  return decision;
}
