import type { Database } from 'better-sqlite3';
import type { BackendInfo } from '../../engine/index.js';

/** The worker catalog: the backends a worker can be started on here, as last detected. */
export interface BackendRow extends BackendInfo {
  detectedAt: number;
}

export interface WorkerCatalog {
  /** Replaces the catalog with what was just detected. */
  record(backends: BackendInfo[], at?: number): void;
  list(): BackendRow[];
}

interface Row {
  name: string;
  available: number;
  binary: string | null;
  devices: string;
  build: string;
  detected_at: number;
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
  };
}
