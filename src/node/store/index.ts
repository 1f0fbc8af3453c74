/**
 * The node's SQLite database (WAL, ordered migrations) and its repositories: the model and worker
 * catalogs, observed memory, API key hashes, and the cluster's persisted term and vote.
 */
export { openDatabase, schemaVersion, type Database, type OpenDatabaseOptions } from './db.js';
export { createModelCatalog, type ModelCatalog, type ModelRow, type ModelSource } from './model-catalog.js';
export {
  createWorkerCatalog,
  WORKERS_KEPT,
  type WorkerCatalog,
  type BackendRow,
  type WorkerRow,
} from './worker-catalog.js';
export {
  createMemoryObservations,
  type MemoryObservation,
  type MemoryObservations,
} from './memory-observations.js';
export {
  createApiKeyStore,
  keySetDigest,
  MAX_KEYS,
  MAX_TOMBSTONES,
  type ApiKeyStore,
  type ApiKeyInfo,
  type KeyLimits,
  type KeyRecord,
  type KeySetVersion,
} from './api-keys.js';
export { createSqliteClusterStore } from './cluster-store.js';
export { createJobStore, type JobStore, type JobRow, type JobRowState } from './job-store.js';
export { createModelAliases, type ModelAlias, type ModelAliases } from './model-aliases.js';
export { createModelPieces, MAX_MODEL_PIECES, type ModelPieces, type PieceList } from './model-pieces.js';
