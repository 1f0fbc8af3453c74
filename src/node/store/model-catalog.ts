/**
 * The model catalog: which models are on this machine's disk (the registry of running workers is a
 * different, in-memory thing). Rows are plain objects; timestamps are milliseconds since the epoch.
 *
 * This object is the table's only writer, so it keeps the rows in memory too and answers reads from
 * there: every job looks its model up and the hive's published state lists the catalog, several
 * times per request, which cost a statement and a row copy each (about 0.3 ms per request). Writes go
 * to SQLite first and reach memory only once they succeeded. A use (`touch`) is recorded in memory at
 * once and written at most once per second per model (the last use before a crash may be kept up to a
 * second early), which is plenty for "least recently used".
 */
import { RbeeError } from '../../shared/errors.js';
import type { Database } from './db.js';

export type ModelSource = 'download' | 'local' | 'demo';

export interface ModelRow {
  /** Stable id derived from the ref (see modelId). */
  id: string;
  /** The canonical ref string, e.g. `hf:org/repo/file.gguf`. */
  ref: string;
  /** A short name chosen by the user; unique when set. */
  alias: string | null;
  name: string;
  /** Absolute path of the GGUF file; for a split model, its first part (llama.cpp finds the rest). */
  path: string;
  /** Size on disk; for a split model, all parts together. */
  bytes: number;
  /**
   * Hex sha256 of the file at `path` (for a split model, of the first part; every part was checked
   * against the published hash when there was one); null for local files, not hashed on registration.
   */
  sha256: string | null;
  architecture: string;
  quantization: string;
  contextLength: number;
  addedAt: number;
  lastUsedAt: number | null;
  source: ModelSource;
}

export interface ModelCatalog {
  /** Inserts or replaces the row with this id. An alias already used by another model is BAD_REQUEST. */
  upsert(row: ModelRow): ModelRow;
  /** Looks a model up by id, then ref, then alias. */
  get(key: string): ModelRow | undefined;
  /** Every model, oldest first. */
  list(): ModelRow[];
  /** Deletes a row; says whether there was one. */
  remove(id: string): boolean;
  /** Records a use. Defaults to now. */
  touch(id: string, at?: number): void;
}

interface DbRow {
  id: string;
  ref: string;
  alias: string | null;
  name: string;
  path: string;
  bytes: number;
  sha256: string | null;
  architecture: string;
  quantization: string;
  context_length: number;
  added_at: number;
  last_used_at: number | null;
  source: ModelSource;
}

const COLUMNS =
  'id, ref, alias, name, path, bytes, sha256, architecture, quantization, context_length, added_at, last_used_at, source';

export function createModelCatalog(db: Database): ModelCatalog {
  const upsert = db.prepare<DbRow>(
    `INSERT INTO models (${COLUMNS})
     VALUES (@id, @ref, @alias, @name, @path, @bytes, @sha256, @architecture, @quantization, @context_length,
             @added_at, @last_used_at, @source)
     ON CONFLICT (id) DO UPDATE SET
       ref = excluded.ref, alias = excluded.alias, name = excluded.name, path = excluded.path,
       bytes = excluded.bytes, sha256 = excluded.sha256, architecture = excluded.architecture,
       quantization = excluded.quantization, context_length = excluded.context_length,
       added_at = excluded.added_at, last_used_at = excluded.last_used_at, source = excluded.source`,
  );
  const list = db.prepare<[], DbRow>(`SELECT ${COLUMNS} FROM models ORDER BY added_at, id`);
  const remove = db.prepare<[string]>('DELETE FROM models WHERE id = ?');
  const touch = db.prepare<[number, string]>('UPDATE models SET last_used_at = ? WHERE id = ?');

  // every row, in list order (added_at, id), and the same rows by id; read once here
  let rows: ModelRow[] = list.all().map(fromDb);
  const byId = new Map(rows.map((r) => [r.id, r]));
  /** When each model's use was last written to the table. */
  const touchWritten = new Map<string, number>();
  const TOUCH_WRITE_MS = 1000;
  const order = (a: ModelRow, b: ModelRow): number =>
    a.addedAt - b.addedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

  return {
    upsert(row) {
      try {
        upsert.run(toDb(row));
      } catch (error) {
        const code = (error as { code?: unknown }).code;
        if (code === 'SQLITE_CONSTRAINT_UNIQUE') {
          throw new RbeeError('BAD_REQUEST', `another model already uses this ref or alias: ${row.ref}`, {
            cause: error,
            details: { id: row.id, ref: row.ref, alias: row.alias },
          });
        }
        throw new RbeeError('INTERNAL', `cannot save model ${row.id}: ${(error as Error).message}`, {
          cause: error,
        });
      }
      const kept = { ...row };
      rows = [...rows.filter((r) => r.id !== row.id), kept].sort(order);
      byId.set(row.id, kept);
      touchWritten.delete(row.id);
      return { ...row };
    },
    get(key) {
      // as the statement did: by id, then ref, then alias
      const found = byId.get(key) ?? rows.find((r) => r.ref === key) ?? rows.find((r) => r.alias === key);
      return found === undefined ? undefined : { ...found };
    },
    list() {
      return rows.map((r) => ({ ...r }));
    },
    remove(id) {
      const removed = remove.run(id).changes > 0;
      if (byId.delete(id)) rows = rows.filter((r) => r.id !== id);
      touchWritten.delete(id);
      return removed;
    },
    touch(id, at = Date.now()) {
      const kept = byId.get(id);
      if (kept === undefined) return;
      kept.lastUsedAt = at;
      const written = touchWritten.get(id);
      if (written !== undefined && Math.abs(at - written) < TOUCH_WRITE_MS) return;
      touch.run(at, id);
      touchWritten.set(id, at);
    },
  };
}

function toDb(row: ModelRow): DbRow {
  return {
    id: row.id,
    ref: row.ref,
    alias: row.alias,
    name: row.name,
    path: row.path,
    bytes: row.bytes,
    sha256: row.sha256,
    architecture: row.architecture,
    quantization: row.quantization,
    context_length: row.contextLength,
    added_at: row.addedAt,
    last_used_at: row.lastUsedAt,
    source: row.source,
  };
}

function fromDb(row: DbRow): ModelRow {
  return {
    id: row.id,
    ref: row.ref,
    alias: row.alias,
    name: row.name,
    path: row.path,
    bytes: row.bytes,
    sha256: row.sha256,
    architecture: row.architecture,
    quantization: row.quantization,
    contextLength: row.context_length,
    addedAt: row.added_at,
    lastUsedAt: row.last_used_at,
    source: row.source,
  };
}
