import { describe, expect, it } from 'vitest';
import { cpuFeaturesOf } from '../../src/engine/doctor.js';
import type { DeviceInfo } from '../../src/engine/index.js';
import { doctorReport, type DoctorFacts } from '../../src/node/hive/doctor.js';
import { chooseCpuBinary, decide, type BinaryDecision } from '../../src/engine/binary-choice.js';
import type { NativeBuild } from '../../src/engine/native-build.js';

const SYSTEM_INFO = 'CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | AVX512 = 0 |';

const devices: DeviceInfo = {
  cpu: { model: 'EPYC', arch: 'x64', physicalCores: 8, logicalCores: 16 },
  memory: { totalBytes: 32e9, freeBytes: 20e9 },
  gpus: [],
  backends: ['cpu'],
};

function facts(overrides: Partial<DoctorFacts> = {}): DoctorFacts {
  return {
    nodeName: 'box',
    nodeVersion: '20.20.2',
    platform: 'linux',
    arch: 'x64',
    engine: {
      binary: 'prebuilt',
      llamaCpp: { repo: 'ggml-org/llama.cpp', release: 'b6000' },
      systemInfo: SYSTEM_INFO,
      cpuFeatures: cpuFeaturesOf(SYSTEM_INFO),
    },
    binary: {
      workers: { binary: 'prebuilt', why: 'the default: no native build here' },
      nativeBuild: undefined,
      decision: undefined,
    },
    configuredThreads: undefined,
    physicalCores: 8,
    defaultThreads: 7,
    devices,
    backends: [],
    modelsDir: '/data/models',
    freeDiskBytes: 200e9,
    ...overrides,
  };
}

const check = (f: DoctorFacts, id: string) => doctorReport(f).checks.find((c) => c.id === id);

describe('rbee doctor checks', () => {
  it('reads the CPU features llama.cpp reports as present', () => {
    expect(cpuFeaturesOf(SYSTEM_INFO)).toEqual(['SSE3', 'SSSE3', 'AVX', 'AVX2', 'F16C', 'FMA']);
  });

  it('passes a healthy machine, with a hint to build llama.cpp here when the binary is prebuilt', () => {
    const report = doctorReport(facts());
    expect(report.checks.map((c) => c.id)).toEqual([
      'node',
      'llama-binary',
      'native-build',
      'cpu-features',
      'threads',
      'gpu',
      'disk',
    ]);
    expect(report.checks.filter((c) => c.status !== 'ok').map((c) => c.id)).toEqual(['native-build']);
    expect(check(facts(), 'llama-binary')).toMatchObject({
      status: 'ok',
      summary: 'llama.cpp b6000, the prebuilt binary from npm',
    });
    expect(check(facts(), 'native-build')).toMatchObject({
      status: 'hint',
      summary: 'CPU workers load the prebuilt binary; no llama.cpp build for this CPU here',
      fix: expect.stringContaining('`rbee doctor --fix`') as string,
    });
    expect(report.binary).toEqual({ workers: 'prebuilt', why: 'the default: no native build here' });
    expect(check(facts(), 'cpu-features')?.summary).toBe(
      'CPU features used by llama.cpp: AVX, AVX2, FMA, F16C',
    );
    expect(check(facts(), 'threads')?.summary).toBe('7 generation threads on 8 physical cores (the default)');
    expect(report.threads).toEqual({ effective: 7, physicalCores: 8 });
  });

  it('is content with a binary built on this machine', () => {
    const engine = { ...(facts().engine as object), binary: 'localBuild' } as DoctorFacts['engine'];
    expect(check(facts({ engine }), 'llama-binary')).toEqual({
      id: 'llama-binary',
      status: 'ok',
      summary: 'llama.cpp b6000, built on this machine',
    });
  });

  it('fails when llama.cpp does not load or Node is too old, and says what to do', () => {
    expect(check(facts({ engine: { error: 'no binary for linux-x64' } }), 'llama-binary')).toMatchObject({
      status: 'fail',
      summary: 'llama.cpp did not load: no binary for linux-x64',
      fix: expect.stringContaining('@node-llama-cpp/linux-x64') as string,
    });
    expect(check(facts({ nodeVersion: '20.11.1' }), 'node')).toMatchObject({ status: 'fail' });
    expect(check(facts({ nodeVersion: '22.1.0' }), 'node')).toMatchObject({ status: 'ok' });
  });

  it('warns about what slows generation down: no AVX2, threads that leave the node no core', () => {
    const noAvx2 = 'CPU : SSE3 = 1 | AVX = 1 | AVX2 = 0 |';
    const engine = { ...(facts().engine as object), systemInfo: noAvx2, cpuFeatures: cpuFeaturesOf(noAvx2) };
    expect(check(facts({ engine: engine as DoctorFacts['engine'] }), 'cpu-features')).toMatchObject({
      status: 'warn',
      summary: 'llama.cpp found no AVX2 on this CPU (has AVX)',
    });
    // arm64 has no AVX2 to miss
    expect(
      check(facts({ engine: engine as DoctorFacts['engine'], arch: 'arm64' }), 'cpu-features')?.status,
    ).toBe('ok');
    expect(check(facts({ configuredThreads: 8 }), 'threads')).toMatchObject({
      status: 'warn',
      fix: expect.stringContaining('set `threads` to 7') as string,
    });
    expect(check(facts({ configuredThreads: 4 }), 'threads')?.status).toBe('ok');
  });

  it('reports GPUs, a failed GPU probe, and low disk space', () => {
    const cuda = {
      name: 'cuda' as const,
      available: true,
      binary: { package: '@node-llama-cpp/linux-x64-cuda', version: '3.22.1' },
      devices: ['NVIDIA H100'],
      build: { engine: 'node-llama-cpp', engineVersion: '3.22.1', llamaCppRepo: 'r', llamaCppTag: 't' },
    };
    expect(check(facts({ backends: [cuda] }), 'gpu')).toMatchObject({
      status: 'ok',
      summary: 'cuda: NVIDIA H100',
    });
    expect(check(facts({ devices: { ...devices, gpuProbeError: 'driver too old' } }), 'gpu')).toMatchObject({
      status: 'warn',
      summary: 'GPU detection failed: driver too old',
    });
    expect(check(facts({ freeDiskBytes: 3e9 }), 'disk')).toMatchObject({
      status: 'warn',
      summary: '3.0 GB free for models in /data/models',
    });
    expect(check(facts({ freeDiskBytes: undefined }), 'disk')).toBeUndefined();
  });

  it('says which binary CPU workers load after `rbee doctor --fix`, with the figures, and when its build is gone', () => {
    const build = { folder: 'linux-x64-abc', release: 'v0.5.0', builtAt: 1_000 };
    const measured = (ratio: number) => [
      { preset: 'tiny', tokens: 512, threads: 1, nativeTokS: [ratio * 100], prebuiltTokS: [100], ratio },
    ];
    const status = (decision: BinaryDecision, nativeBuild: NativeBuild | undefined) => ({
      workers: chooseCpuBinary(decision, nativeBuild),
      nativeBuild,
      decision,
    });
    const faster = decide(build, measured(1.12), Date.UTC(2026, 11, 5, 3, 0));
    expect(check(facts({ binary: status(faster, build) }), 'native-build')).toEqual({
      id: 'native-build',
      status: 'ok',
      summary:
        'CPU workers load the native build (native build v0.5.0: 1.12× prebuilt on tiny (512 tokens, ' +
        '1 thread, median of 1); measured 2026-12-05 03:00)',
    });
    expect(doctorReport(facts({ binary: status(faster, build) })).binary).toMatchObject({
      workers: 'native',
      nativeBuild: build,
      decision: { choice: 'native', measurements: [{ preset: 'tiny', ratio: 1.12 }] },
    });
    const same = decide(build, measured(1.01), Date.UTC(2026, 11, 5, 3, 0));
    expect(check(facts({ binary: status(same, build) }), 'native-build')).toMatchObject({
      status: 'ok',
      summary: expect.stringMatching(
        /^CPU workers load the prebuilt binary: native build v0.5.0 not faster by 5%: 1.01×/,
      ) as string,
    });
    // chosen, then dropped by a fresh npm install: the prebuilt binary, with a warning and the fix
    expect(check(facts({ binary: status(faster, undefined) }), 'native-build')).toMatchObject({
      status: 'warn',
      summary: expect.stringContaining('is gone') as string,
      fix: expect.stringContaining('`rbee doctor --fix`') as string,
    });
  });

  it('says when the node builds llama.cpp itself: due at an idle moment, running, or how it last ended', () => {
    expect(
      check(facts({ engineBuild: { state: 'pending', trigger: 'idle', text: 'builds …' } }), 'native-build')
        ?.fix,
    ).toMatch(/the node does this itself at its first idle moment/);
    expect(
      check(
        facts({
          engineBuild: { state: 'building', trigger: 'idle', text: 'compiling llama.cpp: 45%', percent: 45 },
        }),
        'native-build',
      ),
    ).toMatchObject({
      status: 'hint',
      summary: expect.stringContaining(
        'building llama.cpp for this CPU at an idle moment (compiling llama.cpp: 45%)',
      ) as string,
      fix: expect.stringContaining('`rbee doctor --fix --cancel` cancels it') as string,
    });
    expect(
      check(
        facts({
          engineBuild: { state: 'failed', trigger: 'idle', text: 'failed: out of memory', retryAt: 1 },
        }),
        'native-build',
      )?.fix,
    ).toMatch(/the node's last build failed: out of memory/);
  });
});
