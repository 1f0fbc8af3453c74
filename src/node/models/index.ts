/**
 * Models: references (`demo`, paths, URLs, `hf:`), and the provisioner that makes sure a model is on
 * disk — downloads with resume and integrity checks, partial files, shared in-flight fetches.
 */
export {
  createProvisioner,
  type Provisioner,
  type ProvisionerInit,
  type EnsureOptions,
  type EnsureResult,
  type ReconcileReport,
} from './provisioner.js';
export { parseModelRef, canonicalRef, modelId, type ModelRef, type DemoPreset } from './model-ref.js';
export type { ProvisionPhase, ProvisionProgress } from './shared-tasks.js';
export { freeDiskBytes } from './disk-space.js';
export { observeProvisioner, type ProvisionObserver } from './observed-provisioner.js';
export {
  createModelResolver,
  shortModelName,
  checkAliasName,
  isModelRef,
  type NameableModel,
  type NamedModel,
  type ModelNameSources,
} from './model-names.js';
export type { PeerHolder, PeerNetwork } from './peer-source.js';
