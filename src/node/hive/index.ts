/**
 * The hive: this machine. The worker pool (registry and lifecycle), its restart policy and memory
 * checker, `rbee doctor`'s checks, and the `Hive` seam that the job router drives — implemented here
 * by the local hive, and by the cluster's remote hive for other machines.
 */
export type { Hive, HiveEvent, HiveJob, HiveRunOptions } from './hive.js';
export { createLocalHive, bestDevice, allowedBackends, type LocalHiveInit } from './local-hive.js';
export {
  createWorkerPool,
  deviceName,
  CPU_DEVICE,
  type DeviceChoice,
  type WorkerPool,
  type WorkerPoolInit,
  type WorkerSnapshot,
  type WorkerEventKind,
  type Lease,
} from './worker-pool.js';
export { createRestartPolicy, type RestartPolicy, type OpenBreaker } from './restart-policy.js';
export { createMemoryChecker, type MemoryChecker, type Fit, type GpuTarget } from './memory-checker.js';
export { diagnoseNode, doctorReport, type DoctorFacts } from './doctor.js';
export { createEngineBuilds, type EngineBuilds, type EngineBuildsInit } from './idle-build.js';
export {
  cancelEngineFix,
  createCpuBinaryChooser,
  engineBinaryStatus,
  runEngineFix,
  type EngineBinaryStatus,
  type EngineFixInit,
  type FixPreset,
} from './engine-fix.js';
