/**
 * The native llama.cpp build at the node's first idle moment. The prebuilt binary stays the
 * first-run default, so installing compiles nothing; once the node has had nothing to do for a
 * while (no job running or queued, no download, no worker generating) and no decision exists yet
 * for the llama.cpp release node-llama-cpp bundles, the node runs what `rbee doctor --fix` runs
 * (engine-fix.ts): niced, narrated, on the cluster view with its phase and progress. A job arriving
 * cancels it (the half-built folder removed) and it starts again at a later idle moment; a user
 * cancels it too, and a failure is kept, so that neither is tried again before a day has passed or
 * node-llama-cpp brings another release. A decision, whichever way it went, is never redone.
 * `rbee doctor --fix` goes through here as well, so the view shows its progress the same way.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { bundledLlamaCppRelease, readBinaryDecision, type BinaryDecision } from '../../engine/index.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { DoctorFixCancel, EngineBuildView } from '../../shared/view.js';
import {
  cancelEngineFix,
  engineFixInProgress,
  runEngineFix,
  type FixPreset,
  type FixProgress,
  type FixTrigger,
} from './engine-fix.js';

export interface EngineBuildsInit {
  /** `idle`: build at the first idle moment; `off`: only `rbee doctor --fix` builds. */
  mode: 'idle' | 'off';
  /** How long the node has had nothing to do before the build starts. */
  idleMs: number;
  decisionPath: string;
  engineDir: string;
  threads: number | undefined;
  /** What keeps the node busy now (a job, a download, a worker generating), or undefined when idle. */
  busy: () => string | undefined;
  /** Narration for the node's log and the view's narration. */
  narrate: (text: string) => void;
  /** What `view()` returns may have changed. */
  onChange: () => void;
  /** How long a failed or user-cancelled idle build waits before it is tried again. Defaults to a day. */
  retryMs?: number;
  /** Test hook (engine-fix.ts `testBuildMs`): a fake build of this many ms; never set outside tests. */
  testBuildMs?: number;
  now?: () => number;
  /** Whether the machine runs on battery now (the idle build waits for mains). Defaults to onBattery. */
  onBattery?: () => boolean;
}

export interface EngineBuilds {
  /** Where the native build stands on this node, for its hive view; undefined when nothing is of note. */
  view(): EngineBuildView | undefined;
  /** `rbee doctor --fix`: runs the fix, or follows the idle build already running (engine-fix.ts). */
  fix(options: {
    presets?: FixPreset[];
    signal?: AbortSignal;
    onProgress?: (text: string) => void;
  }): Promise<BinaryDecision>;
  /** `rbee doctor --fix --cancel`: cancels the build running here, whoever started it. */
  cancel(): Promise<DoctorFixCancel>;
  /** Work arrived (a job): the node is not idle, and an idle build running is cancelled. */
  work(reason: string): void;
  /** Something changed (a worker, a download): a node found busy cancels its idle build. */
  changed(): void;
  /** Stops watching; a build this node runs is cancelled and cleaned up. */
  close(): Promise<void>;
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** What the node keeps of its last idle build that did not end in a decision. */
const attemptSchema = z.object({
  release: z.string(),
  outcome: z.enum(['failed', 'cancelled']),
  at: z.number(),
  retryAt: z.number(),
  text: z.string(),
});
type Attempt = z.infer<typeof attemptSchema>;

type Cause = { kind: 'job'; reason: string } | { kind: 'user' } | { kind: 'shutdown' };

const minutes = (ms: number): string => {
  const m = ms / 60_000;
  return m >= 1 ? `${Math.round(m)} min` : `${Math.round(ms / 1000)} s`;
};
const time = (ms: number): string => new Date(ms).toISOString().slice(0, 16).replace('T', ' ');

/**
 * Whether this machine runs on battery, where that is cheap to tell (Linux's power supply class: a
 * battery discharging); false elsewhere.
 */
export function onBattery(dir = '/sys/class/power_supply'): boolean {
  let supplies: string[];
  try {
    supplies = readdirSync(dir);
  } catch {
    return false;
  }
  return supplies.some((name) => {
    try {
      const type = readFileSync(join(dir, name, 'type'), 'utf8').trim();
      const status = readFileSync(join(dir, name, 'status'), 'utf8').trim();
      return type === 'Battery' && status === 'Discharging';
    } catch {
      return false;
    }
  });
}

export function createEngineBuilds(init: EngineBuildsInit): EngineBuilds {
  const now = init.now ?? Date.now;
  const retryMs = init.retryMs ?? DAY_MS;
  const attemptPath = join(init.engineDir, 'idle-build.json');
  /** Since when the node has had nothing to do. */
  let idleSince = now();
  /** This node's build while it runs (started here at an idle moment, or by doctor --fix here). */
  let current: { trigger: FixTrigger; startedAt: number; progress: FixProgress | undefined } | undefined;
  let ended: EngineBuildView | undefined;
  /** Why this node cancelled its running build, read when the build's promise settles. */
  let cause: Cause | undefined;
  let closed = false;
  /** Why no idle build is due (notDue), as of the last check: what the view says meanwhile. */
  let due: string | undefined = 'not checked yet';
  let attempt: Attempt | undefined;
  /** What every run of the fix here shares: this node's paths and threads, the test hook. */
  const fixOf = (trigger: FixTrigger) => ({
    decisionPath: init.decisionPath,
    engineDir: init.engineDir,
    threads: init.threads,
    trigger,
    ...(init.testBuildMs === undefined ? {} : { testBuildMs: init.testBuildMs }),
  });

  const readAttempt = (): Attempt | undefined => {
    try {
      const parsed = attemptSchema.safeParse(JSON.parse(readFileSync(attemptPath, 'utf8')));
      return parsed.success ? parsed.data : undefined;
    } catch {
      return undefined;
    }
  };
  const writeAttempt = (attempt: Attempt): void => {
    mkdirSync(dirname(attemptPath), { recursive: true });
    const partial = `${attemptPath}.${process.pid}.partial`;
    writeFileSync(partial, `${JSON.stringify(attempt)}\n`);
    renameSync(partial, attemptPath);
  };

  /** Why no idle build starts now, or undefined when one is due (the node being idle aside). */
  const notDue = (): string | undefined => {
    if (init.mode === 'off') return 'off';
    const release = bundledLlamaCppRelease();
    if (release === undefined) return 'node-llama-cpp has no llama.cpp source here';
    const decision = readBinaryDecision(init.decisionPath);
    if (decision?.build.release === release) return 'decided';
    const attempt = readAttempt();
    if (attempt?.release === release && now() < attempt.retryAt) return 'waiting to retry';
    return undefined;
  };

  const refresh = (): void => {
    due = notDue();
    attempt = readAttempt();
  };

  const busyNow = (reason: string): void => {
    idleSince = now();
    // the first reason is the one said; the build is cancelled once
    if (current?.trigger === 'idle' && engineFixInProgress()?.trigger === 'idle' && cause === undefined) {
      cause = { kind: 'job', reason };
      void cancelEngineFix(new RbeeError('JOB_CANCELLED', `cancelled (${reason})`), 'idle');
    }
  };

  const battery = init.onBattery ?? onBattery;
  /** `tick`: the periodic check, which also asks the (slower) battery question. */
  const check = (tick = false): void => {
    // only an idle build cares whether the node is idle (a doctor --fix is the user's own call)
    if (closed || init.mode === 'off') return;
    if (current === undefined && due === 'decided') return;
    const busy = init.busy() ?? (tick && battery() ? 'the machine runs on battery' : undefined);
    if (busy !== undefined) {
      busyNow(busy);
      return;
    }
    // whether one is due is asked on the periodic check only (it reads files), not at every heartbeat
    if (!tick || current !== undefined || engineFixInProgress() !== undefined) return;
    if (now() - idleSince < init.idleMs) return;
    refresh();
    if (due === undefined) start();
  };

  const progressed = (progress: FixProgress): void => {
    if (current === undefined) return;
    current.progress = progress;
    init.onChange();
  };

  const settle = (outcome: Promise<BinaryDecision>): void => {
    outcome.then(
      (decision) => {
        const trigger = current?.trigger ?? 'doctor';
        ended = {
          state: 'done',
          trigger,
          text:
            decision.choice === 'native'
              ? `CPU workers load the native build: ${decision.why}`
              : `CPU workers keep the prebuilt binary: ${decision.why}`,
          startedAt: current?.startedAt ?? now(),
        };
        rmSync(attemptPath, { force: true });
        refresh();
        current = undefined;
        cause = undefined;
        init.onChange();
      },
      (error: unknown) => {
        const rbee = toRbeeError(error);
        const trigger = current?.trigger ?? 'doctor';
        const startedAt = current?.startedAt ?? now();
        const why = cause;
        current = undefined;
        cause = undefined;
        if (closed || why?.kind === 'shutdown' || rbee.code === 'NODE_SHUTTING_DOWN') return;
        const release = bundledLlamaCppRelease() ?? 'unknown';
        // cancelled here (whatever error the step it was in ended with), or by the client leaving
        const cancelled = why !== undefined || rbee.code === 'JOB_CANCELLED';
        if (why?.kind === 'job') {
          // the user's work has the CPU; the next idle moment builds again
          ended = {
            state: 'cancelled',
            trigger,
            text: `cancelled (${why.reason}); it builds again at the next idle moment`,
            startedAt,
          };
          init.narrate(`native llama.cpp build ${ended.text}`);
        } else {
          const retryAt = now() + retryMs;
          const next =
            init.mode === 'idle'
              ? `tried again at an idle moment after ${time(retryAt)} (\`rbee doctor --fix\` builds it now)`
              : '`rbee doctor --fix` builds it again';
          const text = cancelled ? `cancelled; ${next}` : `failed: ${rbee.message}; ${next}`;
          ended = {
            state: cancelled ? 'cancelled' : 'failed',
            trigger,
            text: text.slice(0, 2000),
            startedAt,
            ...(init.mode === 'idle' ? { retryAt } : {}),
          };
          writeAttempt({
            release,
            outcome: cancelled ? 'cancelled' : 'failed',
            at: now(),
            retryAt,
            text: ended.text,
          });
          refresh();
          if (!cancelled) init.narrate(`native llama.cpp build ${ended.text.slice(0, 500)}`);
        }
        init.onChange();
      },
    );
  };

  function start(): void {
    const startedAt = now();
    current = { trigger: 'idle', startedAt, progress: undefined };
    ended = undefined;
    init.narrate(
      `the node has been idle for ${minutes(now() - idleSince)}: building llama.cpp for this CPU ` +
        '(niced; a job cancels it, `rbee doctor --fix --cancel` too; `engineBuild: off` in config.json turns this off)',
    );
    init.onChange();
    const outcome = runEngineFix({
      ...fixOf('idle'),
      onProgress: (text, progress) => {
        progressed(progress);
        init.narrate(`native build: ${text}`);
      },
    });
    settle(outcome);
  }

  refresh();
  const timer = setInterval(() => check(true), Math.min(30_000, Math.max(100, Math.floor(init.idleMs / 5))));
  timer.unref();

  return {
    view() {
      const running = current;
      if (running !== undefined) {
        const fixing = engineFixInProgress();
        const trigger = fixing?.trigger ?? running.trigger;
        const progress = running.progress;
        return {
          state: progress?.phase ?? 'building',
          trigger,
          text: progress?.text ?? 'starting',
          ...(progress?.percent === undefined ? {} : { percent: progress.percent }),
          startedAt: running.startedAt,
        };
      }
      if (ended !== undefined) return ended;
      if (due === undefined) {
        return {
          state: 'pending',
          trigger: 'idle',
          text: `builds llama.cpp for this CPU once the node has been idle for ${minutes(init.idleMs)}`,
        };
      }
      if (init.mode === 'idle' && due === 'waiting to retry' && attempt !== undefined) {
        return {
          state: attempt.outcome,
          trigger: 'idle',
          text: attempt.text,
          retryAt: attempt.retryAt,
        };
      }
      return undefined;
    },

    async fix(options) {
      const onProgress = options.onProgress;
      if (engineFixInProgress() !== undefined) {
        // the idle build running here is followed (and now the user's), anything else FIX_IN_PROGRESS
        if (current !== undefined && engineFixInProgress()?.trigger === 'idle') current.trigger = 'doctor';
        return runEngineFix({
          decisionPath: init.decisionPath,
          engineDir: init.engineDir,
          threads: init.threads,
          trigger: 'doctor',
          ...(options.signal === undefined ? {} : { signal: options.signal }),
          ...(onProgress === undefined ? {} : { onProgress: (text: string) => onProgress(text) }),
        });
      }
      current = { trigger: 'doctor', startedAt: now(), progress: undefined };
      ended = undefined;
      init.onChange();
      const outcome = runEngineFix({
        ...fixOf('doctor'),
        ...(options.presets === undefined ? {} : { presets: options.presets }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        onProgress: (text, progress) => {
          progressed(progress);
          onProgress?.(text);
        },
      });
      settle(outcome);
      return outcome;
    },

    async cancel() {
      const fixing = engineFixInProgress();
      if (fixing === undefined || current === undefined) {
        return { cancelled: false, text: 'no native llama.cpp build runs on this node' };
      }
      cause = { kind: 'user' };
      const trigger = fixing.trigger;
      const cancelled = await cancelEngineFix(
        new RbeeError('JOB_CANCELLED', 'the native build was cancelled; nothing of it was kept'),
      );
      const next =
        init.mode === 'idle'
          ? `the node tries again at an idle moment after ${time(now() + retryMs)} (\`engineBuild: off\` in config.json stops that)`
          : '`rbee doctor --fix` builds it again';
      return {
        cancelled,
        trigger,
        text: cancelled
          ? `cancelled the native llama.cpp build ${trigger === 'idle' ? 'the node started at an idle moment' : 'of `rbee doctor --fix`'}; nothing of it was kept; ${next}`
          : 'no native llama.cpp build runs on this node',
      };
    },

    work: busyNow,
    changed: () => check(),

    async close() {
      closed = true;
      clearInterval(timer);
      if (current !== undefined) {
        cause = { kind: 'shutdown' };
        await cancelEngineFix();
      }
    },
  };
}
