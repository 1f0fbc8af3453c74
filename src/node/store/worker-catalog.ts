import type { Database } from 'better-sqlite3';
import type { BackendInfo, WorkerBinary } from '../../engine/index.js';

/**
 * The worker catalog: the backends a worker can be started on here, as last detected, and the
 * workers this hive started, each with the llama.cpp binary it runs and why.
 */
export interface BackendRow extends BackendInfo {
  detectedAt: number;
}

/** A worker this hive started, as recorded when it became ready. */
export interface WorkerRow {
  id: string;
  model: string;
  backend: string;
  /** The GPU's index; -1 on the CPU. */
  device: number;
  pid: number;
  /** The binary it runs and why; absent when the worker did not say. */
  binary?: WorkerBinary;
  readyAt: number;
  /** When it exited; absent while it runs (or when the node stopped before it could say). */
  exitedAt?: number;
}

export interface WorkerCatalog {
  /** Replaces the catalog with what was just detected. */
  record(backends: BackendInfo[], at?: number): void;
  list(): BackendRow[];
  /** A worker became ready: its row, with its binary and why. */
  workerReady(worker: Omit<WorkerRow, 'exitedAt'>): void;
  workerExited(id: string, at?: number): void;
  /** The workers recorded, newest first. */
  workers(limit?: number): WorkerRow[];
}

/** Worker rows kept (the newest); older ones are pruned as new ones come. */
export const WORKERS_KEPT = 1000;

interface Row {
  name: string;
  available: number;
  binary: string | null;
  devices: string;
  build: string;
  detected_at: number;
}

interface WorkerDbRow {
  id: string;
  model: string;
  backend: string;
  device: number;
  pid: number;
  binary_kind: WorkerBinary['kind'] | null;
  binary_label: string | null;
  binary_why: string | null;
  ready_at: number;
  exited_at: number | null;
}

export function createWorkerCatalog(db: Database): WorkerCatalog {
  const clear = db.prepare('DELETE FROM backends');
  const insert = db.prepare<Row>(
    `INSERT INTO backends (name, available, binary, devices, build, detected_at)
     VALUES (@name, @available, @binary, @devices, @build, @detected_at)`,
  );
  const select = db.prepare<[], Row>('SELECT * FROM backends ORDER BY name');
  const replace = db.transaction((backends: BackendInfo[], at: number) => {
    clear.run();
    for (const b of backends) {
      insert.run({
        name: b.name,
        available: b.available ? 1 : 0,
        binary: b.binary === undefined ? null : JSON.stringify(b.binary),
        devices: JSON.stringify(b.devices),
        build: JSON.stringify(b.build),
        detected_at: at,
      });
    }
  });
  const insertWorker = db.prepare<Omit<WorkerDbRow, 'exited_at'>>(
    `INSERT OR REPLACE INTO workers
       (id, model, backend, device, pid, binary_kind, binary_label, binary_why, ready_at)
     VALUES (@id, @model, @backend, @device, @pid, @binary_kind, @binary_label, @binary_why, @ready_at)`,
  );
  const pruneWorkers = db.prepare<[number]>(
    'DELETE FROM workers WHERE id NOT IN (SELECT id FROM workers ORDER BY ready_at DESC LIMIT ?)',
  );
  const exitWorker = db.prepare<[number, string]>(
    'UPDATE workers SET exited_at = ? WHERE id = ? AND exited_at IS NULL',
  );
  const selectWorkers = db.prepare<[number], WorkerDbRow>(
    'SELECT * FROM workers ORDER BY ready_at DESC, rowid DESC LIMIT ?',
  );
  let readySincePrune = 0;
  return {
    record: (backends, at = Date.now()) => replace(backends, at),
    list: () =>
      select.all().map((r) => ({
        name: r.name as BackendInfo['name'],
        available: r.available === 1,
        binary: r.binary === null ? undefined : (JSON.parse(r.binary) as BackendInfo['binary']),
        devices: JSON.parse(r.devices) as string[],
        build: JSON.parse(r.build) as BackendInfo['build'],
        detectedAt: r.detected_at,
      })),
    workerReady(worker) {
      insertWorker.run({
        id: worker.id,
        model: worker.model,
        backend: worker.backend,
        device: worker.device,
        pid: worker.pid,
        binary_kind: worker.binary?.kind ?? null,
        binary_label: worker.binary?.label ?? null,
        binary_why: worker.binary?.why ?? null,
        ready_at: worker.readyAt,
      });
      if (++readySincePrune >= WORKERS_KEPT / 10) {
        readySincePrune = 0;
        pruneWorkers.run(WORKERS_KEPT);
      }
    },
    workerExited: (id, at = Date.now()) => void exitWorker.run(at, id),
    workers: (limit = 100) =>
      selectWorkers.all(limit).map((r) => ({
        id: r.id,
        model: r.model,
        backend: r.backend,
        device: r.device,
        pid: r.pid,
        ...(r.binary_kind === null
          ? {}
          : { binary: { kind: r.binary_kind, label: r.binary_label ?? '', why: r.binary_why ?? '' } }),
        readyAt: r.ready_at,
        ...(r.exited_at === null ? {} : { exitedAt: r.exited_at }),
      })),
  };
}
