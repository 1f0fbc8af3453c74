/** The engine's public API: worker processes, hardware detection and GGUF insight. */
export { spawnWorker } from './worker/client.js';
export { describeBackends, type BackendInfo } from './backends.js';
export { defaultThreads, describeCpu, detectDevices, physicalCores } from './hardware.js';
export { diagnoseEngine, type EngineDiagnosis } from './doctor.js';
export {
  buildNative,
  bundledLlamaCppRelease,
  findNativeBuild,
  NATIVE_CMAKE_OPTIONS,
  type BuildProgress,
  type NativeBuild,
  type TestBuild,
} from './native-build.js';
export {
  chooseCpuBinary,
  decide,
  describeMeasurements,
  NATIVE_MARGIN,
  readBinaryDecision,
  writeBinaryDecision,
  type BinaryDecision,
  type BinaryMeasurement,
  type CpuBinaryChoice,
} from './binary-choice.js';
export { measureBinaries, measurePair, type MeasureInit, type PairSide } from './measure-binaries.js';
export { readModelInfo, type ModelInfo } from './model-info.js';
export {
  DEFAULT_CONTEXT_CAP,
  defaultContextSize,
  estimateWorkerMemory,
  type EstimateWorkerMemoryOptions,
} from './memory.js';
export { gbnfProblem, prepareJsonSchema, type PreparedJsonSchema } from './worker/constraints.js';
export type * from './types.js';
export * from './gguf/index.js';
