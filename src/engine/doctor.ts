/**
 * What `rbee doctor` asks of the engine: the llama.cpp binary a CPU worker loads here (prebuilt or
 * built on this machine), its llama.cpp release, and the CPU features that binary detected.
 * Loads node-llama-cpp's native binary once per process (about a second), then lets it go.
 */

export interface EngineDiagnosis {
  /** `prebuilt`: the binary package from npm; `localBuild`: compiled on this machine. */
  binary: 'prebuilt' | 'localBuild';
  llamaCpp: { repo: string; release: string };
  /** llama.cpp's system info line, e.g. "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | …". */
  systemInfo: string;
  /** CPU features llama.cpp reports as present (the `X = 1` entries of systemInfo). */
  cpuFeatures: string[];
}

let diagnosis: Promise<EngineDiagnosis> | undefined;

export function cpuFeaturesOf(systemInfo: string): string[] {
  return [...systemInfo.matchAll(/([A-Z][A-Z0-9_]*) = 1/g)].map((m) => m[1] ?? '').filter((f) => f !== '');
}

async function diagnose(): Promise<EngineDiagnosis> {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  // The same choice a CPU worker makes (entry.ts): an installed binary, never a build.
  const llama = await getLlama({
    gpu: false,
    build: 'never',
    logLevel: LlamaLogLevel.error,
    logger: () => undefined,
  });
  try {
    const release = llama.llamaCppRelease;
    return {
      binary: llama.buildType,
      llamaCpp: { repo: release.repo, release: release.release },
      systemInfo: llama.systemInfo.trim(),
      cpuFeatures: cpuFeaturesOf(llama.systemInfo),
    };
  } finally {
    await llama.dispose();
  }
}

/** The engine's side of `rbee doctor`, computed once per process; a failure is retried next time. */
export function diagnoseEngine(): Promise<EngineDiagnosis> {
  diagnosis ??= diagnose().catch((error: unknown) => {
    diagnosis = undefined;
    throw error;
  });
  return diagnosis;
}
