import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  chooseCpuBinary,
  decide,
  NATIVE_MARGIN,
  pairedRatio,
  readBinaryDecision,
  writeBinaryDecision,
  type BinaryMeasurement,
} from '../../src/engine/binary-choice.js';
import { compilePercent, findNativeBuild } from '../../src/engine/native-build.js';

const build = { folder: 'linux-x64-abc', release: 'v0.5.0', builtAt: 1_000 };

/** A measurement as measureBinaries returns it: rounds of both binaries, and their paired ratio. */
function measured(preset: string, nativeTokS: number[], prebuiltTokS: number[]): BinaryMeasurement {
  return {
    preset,
    tokens: 512,
    threads: 1,
    nativeTokS,
    prebuiltTokS,
    ratio: pairedRatio(nativeTokS, prebuiltTokS),
  };
}

const dirs: string[] = [];
const tempDir = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 'rbee-binary-'));
  dirs.push(dir);
  return dir;
};
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('which llama.cpp binary CPU workers load', () => {
  it('pairs rounds: a load that slows one round of both does not move the ratio', () => {
    // round 2 ran on a loaded machine: both binaries at a third of their speed
    expect(pairedRatio([110, 37, 110], [100, 33, 100])).toBeCloseTo(1.1, 5);
    expect(pairedRatio([100, 0], [100, 100])).toBe(1);
  });

  it('chooses the native build only when every model measured has it faster by the margin', () => {
    expect(NATIVE_MARGIN).toBe(1.05);
    const faster = decide(build, [measured('tiny', [110, 108, 111], [100, 100, 100])]);
    expect(faster.choice).toBe('native');
    expect(faster.why).toBe(
      'native build v0.5.0: 1.10× prebuilt on tiny (512 tokens, 1 thread, median of 3)',
    );
    expect(decide(build, [measured('tiny', [103, 104, 102], [100, 100, 100])])).toMatchObject({
      choice: 'prebuilt',
      why: 'native build v0.5.0 not faster by 5%: 1.03× prebuilt on tiny (512 tokens, 1 thread, median of 3)',
    });
    // faster on the tiny model, not on the small one: not worth a second binary
    const mixed = decide(build, [
      measured('tiny', [120, 120, 120], [100, 100, 100]),
      measured('small', [20, 20, 20], [20, 20, 20]),
    ]);
    expect(mixed.choice).toBe('prebuilt');
    expect(mixed.measurements.map((m) => m.ratio)).toEqual([1.2, 1]);
  });

  it('falls back to the prebuilt binary, saying why, whenever the native one cannot be trusted', () => {
    expect(chooseCpuBinary(undefined, undefined)).toMatchObject({
      binary: 'prebuilt',
      why: expect.stringContaining('the default') as string,
    });
    expect(chooseCpuBinary(undefined, build)).toMatchObject({
      binary: 'prebuilt',
      why: expect.stringContaining('not measured yet') as string,
    });
    const native = decide(build, [measured('tiny', [120], [100])]);
    expect(chooseCpuBinary(native, build)).toEqual({ binary: 'native', why: native.why });
    // a fresh npm install dropped the build
    expect(chooseCpuBinary(native, undefined)).toMatchObject({
      binary: 'prebuilt',
      why: expect.stringContaining('is gone') as string,
    });
    // rebuilt since: what was measured is not what is there
    expect(chooseCpuBinary(native, { ...build, builtAt: 2_000 })).toMatchObject({
      binary: 'prebuilt',
      why: expect.stringContaining('rebuilt since') as string,
    });
    const prebuilt = decide(build, [measured('tiny', [100], [100])]);
    expect(chooseCpuBinary(prebuilt, build)).toEqual({ binary: 'prebuilt', why: prebuilt.why });
  });

  it('keeps the decision in a file, and reads a missing or damaged one as none', () => {
    const path = join(tempDir(), 'engine', 'binary.json');
    expect(readBinaryDecision(path)).toBeUndefined();
    const decision = decide(build, [measured('tiny', [120, 118], [100, 101])], 1234);
    writeBinaryDecision(path, decision);
    expect(readBinaryDecision(path)).toEqual(decision);
    writeFileSync(path, '{"choice": "native"');
    expect(readBinaryDecision(path)).toBeUndefined();
    writeFileSync(path, JSON.stringify({ ...decision, choice: 'turbo' }));
    expect(readBinaryDecision(path)).toBeUndefined();
  });
});

describe('the native build on disk', () => {
  /** A local build folder as node-llama-cpp leaves it; `done: false` is one cut short. */
  function localBuild(
    dir: string,
    folder: string,
    options: { custom: Record<string, string>; gpu?: string | false; done?: boolean },
  ): void {
    const release = join(dir, folder, 'Release');
    mkdirSync(release, { recursive: true });
    writeFileSync(join(release, 'llama-addon.node'), '');
    writeFileSync(
      join(release, '_nlcBuildMetadata.json'),
      JSON.stringify({
        buildOptions: {
          gpu: options.gpu ?? false,
          customCmakeOptions: options.custom,
          llamaCpp: { release: 'v0.5.0' },
        },
      }),
    );
    if (options.done !== false) writeFileSync(join(dir, folder, 'buildDone.status'), '');
  }

  it('is the finished CPU build made with exactly the native option, nothing else', () => {
    const dir = tempDir();
    expect(findNativeBuild(join(dir, 'absent'))).toBeUndefined();
    localBuild(dir, 'linux-x64', { custom: {} });
    localBuild(dir, 'linux-x64-cuda-h1', { custom: { GGML_NATIVE: 'ON' }, gpu: 'cuda' });
    localBuild(dir, 'linux-x64-h2', { custom: { GGML_NATIVE: 'ON', GGML_AVX512: 'OFF' } });
    localBuild(dir, 'linux-x64-h3', { custom: { GGML_NATIVE: 'ON' }, done: false });
    expect(findNativeBuild(dir)).toBeUndefined();
    localBuild(dir, 'linux-x64-h4', { custom: { GGML_NATIVE: 'ON' } });
    expect(findNativeBuild(dir)).toMatchObject({ folder: 'linux-x64-h4', release: 'v0.5.0' });
  });

  it("reads the compilation's progress from make's and ninja's lines", () => {
    expect(compilePercent('[ 45%] Building CXX object ggml/src/CMakeFiles/ggml-cpu.dir/ops.cpp.o')).toBe(45);
    expect(compilePercent('[123/456] Building C object x.o')).toBe(26);
    expect(compilePercent('Compiling llama.cpp')).toBeUndefined();
  });
});
