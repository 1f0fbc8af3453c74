import type { Database } from 'better-sqlite3';

/** What a worker of one model, context size and slot count was seen to use after loading. */
export interface MemoryObservation {
  modelId: string;
  contextSize: number;
  slots: number;
  /** Resident memory of the worker process once ready. */
  observedBytes: number;
  /** What was estimated from the GGUF for the same shape (process baseline included). */
  estimatedBytes: number;
  observedAt: number;
}

export interface MemoryObservations {
  record(observation: MemoryObservation): void;
  get(modelId: string, contextSize: number, slots: number): MemoryObservation | undefined;
}

interface Row {
  model_id: string;
  context_size: number;
  slots: number;
  observed_bytes: number;
  estimated_bytes: number;
  observed_at: number;
}

export function createMemoryObservations(db: Database): MemoryObservations {
  const upsert = db.prepare<Row>(
    `INSERT INTO model_memory (model_id, context_size, slots, observed_bytes, estimated_bytes, observed_at)
     VALUES (@model_id, @context_size, @slots, @observed_bytes, @estimated_bytes, @observed_at)
     ON CONFLICT (model_id, context_size, slots) DO UPDATE SET
       observed_bytes = excluded.observed_bytes, estimated_bytes = excluded.estimated_bytes,
       observed_at = excluded.observed_at`,
  );
  const select = db.prepare<[string, number, number], Row>(
    'SELECT * FROM model_memory WHERE model_id = ? AND context_size = ? AND slots = ?',
  );
  return {
    record(o) {
      upsert.run({
        model_id: o.modelId,
        context_size: o.contextSize,
        slots: o.slots,
        observed_bytes: Math.round(o.observedBytes),
        estimated_bytes: Math.round(o.estimatedBytes),
        observed_at: o.observedAt,
      });
    },
    get(modelId, contextSize, slots) {
      const row = select.get(modelId, contextSize, slots);
      return row === undefined
        ? undefined
        : {
            modelId: row.model_id,
            contextSize: row.context_size,
            slots: row.slots,
            observedBytes: row.observed_bytes,
            estimatedBytes: row.estimated_bytes,
            observedAt: row.observed_at,
          };
    },
  };
}
