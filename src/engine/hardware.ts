/**
 * What this machine can run inference on. CPU and RAM come from the os module and are always
 * fresh; GPU probing loads node-llama-cpp's native binary (about a second, more with GPU
 * drivers), so it happens only when asked for and only once per process.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { arch, availableParallelism, cpus, freemem, platform, totalmem } from 'node:os';
import { raceSignal } from '../shared/abort.js';
import type { Backend, DeviceInfo, GpuDevice } from './types.js';

let cachedPhysicalCores: number | undefined;

/**
 * Physical CPU cores usable by this process. llama.cpp threads spin-wait, so hyper-threads (and
 * node-llama-cpp's default `maxThreads` of max(cores, 4): 4 on a 2-core machine, where it measured
 * generation about 300× slower) slow generation down badly on small machines. Threads are always
 * set from physical cores (docs/benchmarks.md, Threads).
 */
export function physicalCores(): number {
  cachedPhysicalCores ??= Math.max(1, Math.min(countPhysicalCores() ?? Infinity, availableParallelism()));
  return cachedPhysicalCores;
}

/**
 * The default number of generation threads: one physical core is left to the node, its HTTP
 * server and the OS. Spin-waiting llama.cpp threads that compete with them for a core lose far
 * more than one core's worth: on a 2-core machine 1 thread measured 1.5× to 8× faster than 2.
 * Re-checked with the native (OpenMP) build of `rbee doctor --fix`: still no gain from 2 threads
 * there (docs/benchmarks.md, Threads).
 */
export function defaultThreads(): number {
  return Math.max(1, physicalCores() - 1);
}

function countPhysicalCores(): number | undefined {
  try {
    if (platform() === 'linux') return parseCpuinfoCores(readFileSync('/proc/cpuinfo', 'utf8'));
    if (platform() === 'darwin') {
      const out = execFileSync('sysctl', ['-n', 'hw.physicalcpu'], { encoding: 'utf8', timeout: 2000 });
      const n = Number.parseInt(out.trim(), 10);
      return Number.isFinite(n) && n > 0 ? n : undefined;
    }
  } catch {
    // Unreadable: fall back to the logical count below.
  }
  return undefined;
}

/** Counts distinct (physical id, core id) pairs; undefined when the file has no core ids (many ARM kernels). */
export function parseCpuinfoCores(cpuinfo: string): number | undefined {
  const cores = new Set<string>();
  for (const block of cpuinfo.split(/\n\s*\n/)) {
    const physical = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1] ?? '0';
    const core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
    if (core !== undefined) cores.add(`${physical}:${core}`);
  }
  return cores.size > 0 ? cores.size : undefined;
}

interface GpuProbe {
  backend: Exclude<Backend, 'cpu'> | undefined;
  names: string[];
  vram?: { totalBytes: number; freeBytes: number };
  supported: Exclude<Backend, 'cpu'>[];
  error?: string;
}

let gpuProbe: Promise<GpuProbe> | undefined;

async function probeGpus(): Promise<GpuProbe> {
  // Loaded lazily: importing node-llama-cpp is itself slow and pulls in native code.
  const { getLlama, getLlamaGpuTypes, LlamaLogLevel } = await import('node-llama-cpp');
  const supported = (await getLlamaGpuTypes('supported')).filter((t) => t !== false);
  if (supported.length === 0) return { backend: undefined, names: [], supported };
  const llama = await getLlama({
    gpu: 'auto',
    // Never compile llama.cpp from a hardware probe: use what is installed or report no GPU.
    build: 'never',
    logLevel: LlamaLogLevel.error,
    logger: () => undefined,
  });
  try {
    if (llama.gpu === false) return { backend: undefined, names: [], supported };
    const [names, vram] = await Promise.all([llama.getGpuDeviceNames(), llama.getVramState()]);
    return {
      backend: llama.gpu,
      names,
      vram: { totalBytes: vram.total, freeBytes: vram.free },
      supported,
    };
  } finally {
    await llama.dispose();
  }
}

/** This machine's CPU, at once (what `detectDevices` reports before its GPU probe is done). */
export function describeCpu(cpuList = cpus()): DeviceInfo['cpu'] {
  return {
    model: cpuList[0]?.model.trim() ?? 'unknown',
    arch: arch(),
    physicalCores: physicalCores(),
    logicalCores: availableParallelism(),
  };
}

/**
 * Describes this machine. GPU probing runs once per process and is cached; a failed probe
 * reports a CPU-only machine with the reason in `gpuProbeError`, never an exception.
 */
export async function detectDevices(options: { signal?: AbortSignal } = {}): Promise<DeviceInfo> {
  options.signal?.throwIfAborted();
  gpuProbe ??= probeGpus().catch((error: unknown): GpuProbe => ({
    backend: undefined,
    names: [],
    supported: [],
    error: error instanceof Error ? error.message : String(error),
  }));
  const probe = await raceSignal(gpuProbe, options.signal);
  const cpuList = cpus();
  const gpus: GpuDevice[] = [];
  if (probe.backend !== undefined) {
    const backend = probe.backend;
    const single = probe.names.length === 1 && probe.vram !== undefined;
    probe.names.forEach((name, index) => {
      gpus.push(
        single && probe.vram !== undefined
          ? {
              index,
              name,
              backend,
              vramTotalBytes: probe.vram.totalBytes,
              vramFreeBytes: probe.vram.freeBytes,
            }
          : { index, name, backend },
      );
    });
  }
  const info: DeviceInfo = {
    cpu: describeCpu(cpuList),
    memory: { totalBytes: totalmem(), freeBytes: freemem() },
    gpus,
    backends: ['cpu', ...(probe.backend === undefined ? [] : [probe.backend])],
  };
  if (probe.vram !== undefined && probe.backend !== undefined) info.vram = probe.vram;
  if (probe.error !== undefined) info.gpuProbeError = probe.error;
  return info;
}
