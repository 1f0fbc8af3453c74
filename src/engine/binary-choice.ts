/**
 * Which llama.cpp binary CPU workers load: the prebuilt one from npm (the default, and the fallback)
 * or the native build (native-build.ts), once it was measured against the prebuilt one on this
 * machine and found faster by a margin. The decision and its figures are kept in a small JSON file,
 * so they are measured once, not at every start. GPU workers always load their prebuilt binaries.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import type { NativeBuild } from './native-build.js';

/** The native build is chosen only when it generates at least this much faster than the prebuilt. */
export const NATIVE_MARGIN = 1.05;

const measurementSchema = z.object({
  /** The generated model it ran on (`tiny`, `small`). */
  preset: z.string(),
  tokens: z.number().int().positive(),
  threads: z.number().int().positive(),
  /** Generation tok/s of each round, in round order (the two interleaved, one round each). */
  prebuiltTokS: z.array(z.number()),
  nativeTokS: z.array(z.number()),
  /** The median of the rounds' native ÷ prebuilt ratios. */
  ratio: z.number(),
  /** The 1-minute load average before and after, when the OS says (a loaded machine measures noise). */
  load: z.array(z.number()).optional(),
});
export type BinaryMeasurement = z.infer<typeof measurementSchema>;

export const binaryDecisionSchema = z.object({
  choice: z.enum(['native', 'prebuilt']),
  /** One line for a person: the figures that decided. */
  why: z.string(),
  build: z.object({ folder: z.string(), release: z.string(), builtAt: z.number() }),
  measurements: z.array(measurementSchema).min(1),
  decidedAt: z.number(),
});
export type BinaryDecision = z.infer<typeof binaryDecisionSchema>;

/** What a CPU worker is asked to load, and why. */
export interface CpuBinaryChoice {
  binary: 'native' | 'prebuilt';
  why: string;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? Number.NaN)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** The median of the per-round ratios: rounds are interleaved, so each pair saw the same load. */
export function pairedRatio(nativeTokS: number[], prebuiltTokS: number[]): number {
  const n = Math.min(nativeTokS.length, prebuiltTokS.length);
  const ratios: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = nativeTokS[i] ?? 0;
    const b = prebuiltTokS[i] ?? 0;
    if (a > 0 && b > 0) ratios.push(a / b);
  }
  return median(ratios);
}

const times = (ratio: number): string => `${ratio.toFixed(2)}×`;

/** "1.07× prebuilt on tiny (512 tokens, 1 thread)" for each measurement. */
export function describeMeasurements(measurements: BinaryMeasurement[]): string {
  return measurements
    .map(
      (m) =>
        `${times(m.ratio)} prebuilt on ${m.preset} (${m.tokens} tokens, ` +
        `${m.threads} thread${m.threads === 1 ? '' : 's'}, median of ${m.nativeTokS.length})`,
    )
    .join(', ');
}

/**
 * Native only when every measurement has it faster by NATIVE_MARGIN: a build that is as fast (this
 * CPU has nothing the prebuilt variant lacks) or faster on one model only is not worth a second
 * binary to keep working.
 */
export function decide(
  build: NativeBuild,
  measurements: BinaryMeasurement[],
  at = Date.now(),
): BinaryDecision {
  const faster = measurements.length > 0 && measurements.every((m) => m.ratio >= NATIVE_MARGIN);
  const figures = describeMeasurements(measurements);
  return {
    choice: faster ? 'native' : 'prebuilt',
    why: faster
      ? `native build ${build.release}: ${figures}`
      : `native build ${build.release} not faster by ${Math.round((NATIVE_MARGIN - 1) * 100)}%: ${figures}`,
    build: { folder: build.folder, release: build.release, builtAt: build.builtAt },
    measurements,
    decidedAt: at,
  };
}

/**
 * What CPU workers load now, from the decision (if any) and the native build on disk (if any). A
 * chosen build that is gone (node_modules reinstalled) or was rebuilt since it was measured means
 * the prebuilt binary, with the reason, until `rbee doctor --fix` measures again.
 */
export function chooseCpuBinary(
  decision: BinaryDecision | undefined,
  build: NativeBuild | undefined,
): CpuBinaryChoice {
  if (decision === undefined) {
    return {
      binary: 'prebuilt',
      why:
        build === undefined
          ? 'the default: no native build here (`rbee doctor --fix` builds and measures one)'
          : `native build ${build.release} not measured yet (\`rbee doctor --fix\`)`,
    };
  }
  if (decision.choice === 'prebuilt') return { binary: 'prebuilt', why: decision.why };
  if (build === undefined) {
    return {
      binary: 'prebuilt',
      why: `the native build chosen (${decision.build.release}) is gone, e.g. after npm install: \`rbee doctor --fix\` builds it again`,
    };
  }
  if (build.folder !== decision.build.folder || build.builtAt !== decision.build.builtAt) {
    return {
      binary: 'prebuilt',
      why: `native build ${build.release} rebuilt since it was measured (\`rbee doctor --fix\`)`,
    };
  }
  return { binary: 'native', why: decision.why };
}

/** The decision kept at `path`; undefined when there is none or it cannot be read. */
export function readBinaryDecision(path: string): BinaryDecision | undefined {
  let raw: string;
  try {
    raw = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const parsed = binaryDecisionSchema.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Writes the decision whole or not at all (a temporary file renamed over it). */
export function writeBinaryDecision(path: string, decision: BinaryDecision): void {
  mkdirSync(dirname(path), { recursive: true });
  const partial = `${path}.${process.pid}.partial`;
  writeFileSync(partial, `${JSON.stringify(decision, null, 2)}\n`);
  renameSync(partial, path);
}
