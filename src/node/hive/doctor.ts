/**
 * `rbee doctor` on a node: the facts that decide how fast and how safely this machine runs models
 * (Node, the llama.cpp binary and the CPU features it found, threads, GPU backends, disk), turned
 * into checks that each say what to do when something could be better.
 */
import { arch, platform } from 'node:os';
import {
  defaultThreads,
  describeBackends,
  detectDevices,
  diagnoseEngine,
  physicalCores,
  type BackendInfo,
  type DeviceInfo,
  type EngineDiagnosis,
} from '../../engine/index.js';
import { toRbeeError } from '../../shared/errors.js';
import { engineBinaryStatus, type EngineBinaryStatus } from './engine-fix.js';
import { freeDiskBytes } from '../models/index.js';
import { VERSION } from '../../shared/version.js';
import type { DoctorCheck, DoctorReport, EngineBuildView } from '../../shared/view.js';

export interface DoctorFacts {
  nodeName: string;
  /** process.versions.node */
  nodeVersion: string;
  platform: string;
  arch: string;
  engine: EngineDiagnosis | { error: string };
  /** Which llama.cpp binary CPU workers load (prebuilt or native), and the figures that decided. */
  binary: EngineBinaryStatus;
  /** The native build running, due at an idle moment, or how it last ended (idle-build.ts). */
  engineBuild?: EngineBuildView | undefined;
  /** `threads` from config.json, when set. */
  configuredThreads: number | undefined;
  physicalCores: number;
  defaultThreads: number;
  devices: DeviceInfo;
  backends: BackendInfo[];
  modelsDir: string;
  /** Free bytes where models are stored; undefined when the filesystem cannot say. */
  freeDiskBytes: number | undefined;
}

/** The oldest Node rbee runs on (package.json `engines`). */
const MIN_NODE = [20, 19] as const;
/** Below this much free space a typical 4–8 GB model no longer fits. */
const LOW_DISK_BYTES = 10 * 1e9;
/** CPU features that decide llama.cpp's speed, listed when present. */
const KEY_FEATURES = [
  'AVX',
  'AVX2',
  'FMA',
  'F16C',
  'AVX512',
  'AVX512_VNNI',
  'AVX_VNNI',
  'NEON',
  'ARM_FMA',
  'SVE',
];

const gb = (bytes: number): string => `${(bytes / 1e9).toFixed(1)} GB`;

function nodeCheck(version: string): DoctorCheck {
  const [major = 0, minor = 0] = version.split('.').map(Number);
  const recent = major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1]);
  return recent
    ? { id: 'node', status: 'ok', summary: `Node v${version}` }
    : {
        id: 'node',
        status: 'fail',
        summary: `Node v${version} is too old: rbee needs ${MIN_NODE.join('.')} or newer`,
        fix: 'install Node 20.19 or newer, then `npm install` again',
      };
}

function binaryCheck(engine: DoctorFacts['engine'], platform: string, arch: string): DoctorCheck {
  if ('error' in engine) {
    return {
      id: 'llama-binary',
      status: 'fail',
      summary: `llama.cpp did not load: ${engine.error}`,
      fix: `reinstall rbee's dependencies (\`npm install\`); the CPU binary comes in @node-llama-cpp/${platform}-${arch}`,
    };
  }
  const release = `llama.cpp ${engine.llamaCpp.release}`;
  if (engine.binary === 'localBuild') {
    return { id: 'llama-binary', status: 'ok', summary: `${release}, built on this machine` };
  }
  return { id: 'llama-binary', status: 'ok', summary: `${release}, the prebuilt binary from npm` };
}

const date = (ms: number): string => new Date(ms).toISOString().slice(0, 16).replace('T', ' ');

/** The native build: whether there is one, what it measured, which binary CPU workers load. */
function nativeBuildCheck(status: EngineBinaryStatus, build: EngineBuildView | undefined): DoctorCheck {
  const { decision, nativeBuild, workers } = status;
  const fix = '`rbee doctor --fix`: builds llama.cpp for this CPU (offline, once; minutes) and measures it';
  if (build?.state === 'building' || build?.state === 'measuring') {
    const by = build.trigger === 'idle' ? 'at an idle moment' : 'for `rbee doctor --fix`';
    return {
      id: 'native-build',
      status: 'hint',
      summary: `CPU workers load the ${workers.binary} binary; the node is building llama.cpp for this CPU ${by} (${build.text})`,
      fix: '`rbee doctor --fix` follows it; `rbee doctor --fix --cancel` cancels it',
    };
  }
  if (decision === undefined) {
    const idle =
      build?.state === 'pending'
        ? '; the node does this itself at its first idle moment (`engineBuild` in config.json)'
        : build?.state === 'failed' || build?.state === 'cancelled'
          ? `; the node's last build ${build.text}`
          : '';
    return {
      id: 'native-build',
      status: 'hint',
      summary:
        nativeBuild === undefined
          ? 'CPU workers load the prebuilt binary; no llama.cpp build for this CPU here'
          : `CPU workers load the prebuilt binary; native build ${nativeBuild.release} here, not measured yet`,
      fix: `${fix}; workers use it only if it generates faster by 5% or more${idle}`,
    };
  }
  if (workers.binary === 'native') {
    return {
      id: 'native-build',
      status: 'ok',
      summary: `CPU workers load the native build (${workers.why}; measured ${date(decision.decidedAt)})`,
    };
  }
  if (decision.choice === 'native') {
    return {
      id: 'native-build',
      status: 'warn',
      summary: `CPU workers load the prebuilt binary: ${workers.why}`,
      fix,
    };
  }
  return {
    id: 'native-build',
    status: 'ok',
    summary: `CPU workers load the prebuilt binary: ${decision.why} (measured ${date(decision.decidedAt)})`,
  };
}

function cpuCheck(engine: DoctorFacts['engine'], arch: string): DoctorCheck | undefined {
  if ('error' in engine) return undefined;
  const present = new Set(engine.cpuFeatures);
  const listed = KEY_FEATURES.filter((f) => present.has(f));
  if (arch === 'x64' && !present.has('AVX2')) {
    return {
      id: 'cpu-features',
      status: 'warn',
      summary: `llama.cpp found no AVX2 on this CPU${listed.length > 0 ? ` (has ${listed.join(', ')})` : ''}`,
      fix: 'generation runs several times slower without AVX2; prefer a machine that has it, or a GPU',
    };
  }
  return {
    id: 'cpu-features',
    status: 'ok',
    summary: `CPU features used by llama.cpp: ${listed.length > 0 ? listed.join(', ') : 'none of note'}`,
  };
}

function threadsCheck(facts: DoctorFacts): DoctorCheck {
  const threads = facts.configuredThreads ?? facts.defaultThreads;
  const cores = facts.physicalCores;
  const of = `${threads} generation thread${threads === 1 ? '' : 's'} on ${cores} physical core${cores === 1 ? '' : 's'}`;
  if (facts.configuredThreads !== undefined && cores > 1 && threads >= cores) {
    return {
      id: 'threads',
      status: 'warn',
      summary: `${of}: none is left to the node`,
      fix:
        `llama.cpp's threads spin-wait, and competing with the node for a core slowed generation 1.5–8× ` +
        `where rbee was measured; set \`threads\` to ${facts.defaultThreads} in config.json or remove it`,
    };
  }
  return {
    id: 'threads',
    status: 'ok',
    summary: `${of}${facts.configuredThreads === undefined ? ' (the default)' : ' (config.json)'}`,
  };
}

function gpuCheck(facts: DoctorFacts): DoctorCheck {
  const gpus = facts.backends.filter((b) => b.name !== 'cpu' && b.available);
  if (gpus.length > 0) {
    return {
      id: 'gpu',
      status: 'ok',
      summary: gpus.map((b) => `${b.name}: ${b.devices.join(', ')}`).join('; '),
    };
  }
  if (facts.devices.gpuProbeError !== undefined) {
    return {
      id: 'gpu',
      status: 'warn',
      summary: `GPU detection failed: ${facts.devices.gpuProbeError}`,
      fix: 'workers run on the CPU; check the GPU driver, then restart the node (`rbee node stop`)',
    };
  }
  return { id: 'gpu', status: 'ok', summary: 'no GPU found: workers run on the CPU' };
}

function diskCheck(facts: DoctorFacts): DoctorCheck | undefined {
  if (facts.freeDiskBytes === undefined) return undefined;
  const summary = `${gb(facts.freeDiskBytes)} free for models in ${facts.modelsDir}`;
  return facts.freeDiskBytes < LOW_DISK_BYTES
    ? {
        id: 'disk',
        status: 'warn',
        summary,
        fix: 'a typical 7–8B model needs 4–8 GB: free space, or remove models with `rbee models rm`',
      }
    : { id: 'disk', status: 'ok', summary };
}

export function doctorReport(facts: DoctorFacts): DoctorReport {
  const checks = [
    nodeCheck(facts.nodeVersion),
    binaryCheck(facts.engine, facts.platform, facts.arch),
    nativeBuildCheck(facts.binary, facts.engineBuild),
    cpuCheck(facts.engine, facts.arch),
    threadsCheck(facts),
    gpuCheck(facts),
    diskCheck(facts),
  ].filter((c): c is DoctorCheck => c !== undefined);
  return {
    node: {
      name: facts.nodeName,
      version: VERSION,
      nodeVersion: facts.nodeVersion,
      platform: `${facts.platform} ${facts.arch}`,
    },
    engine: facts.engine,
    binary: {
      workers: facts.binary.workers.binary,
      why: facts.binary.workers.why,
      ...(facts.binary.nativeBuild === undefined ? {} : { nativeBuild: facts.binary.nativeBuild }),
      ...(facts.binary.decision === undefined ? {} : { decision: facts.binary.decision }),
    },
    threads: {
      ...(facts.configuredThreads === undefined ? {} : { configured: facts.configuredThreads }),
      effective: facts.configuredThreads ?? facts.defaultThreads,
      physicalCores: facts.physicalCores,
    },
    checks,
  };
}

/** Gathers this machine's facts (loading llama.cpp as a CPU worker would) and checks them. */
export async function diagnoseNode(init: {
  nodeName: string;
  configuredThreads: number | undefined;
  modelsDir: string;
  /** Where `rbee doctor --fix` keeps its decision (DataPaths.binaryDecision). */
  decisionPath: string;
  engineBuild?: EngineBuildView | undefined;
}): Promise<DoctorReport> {
  const [engine, devices, free] = await Promise.all([
    diagnoseEngine().catch((error: unknown) => ({ error: toRbeeError(error).message })),
    detectDevices(),
    freeDiskBytes(init.modelsDir),
  ]);
  return doctorReport({
    nodeName: init.nodeName,
    nodeVersion: process.versions.node,
    platform: platform(),
    arch: arch(),
    engine,
    binary: engineBinaryStatus(init.decisionPath),
    engineBuild: init.engineBuild,
    configuredThreads: init.configuredThreads,
    physicalCores: physicalCores(),
    defaultThreads: defaultThreads(),
    devices,
    backends: describeBackends(devices),
    modelsDir: init.modelsDir,
    freeDiskBytes: free,
  });
}
