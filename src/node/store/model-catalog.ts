/**
 * The model catalog: which models are on this machine's disk (the registry of running workers is a
 * different, in-memory thing). Rows are plain objects; timestamps are milliseconds since the epoch.
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
  const get = db.prepare<{ key: string }, DbRow>(
    `SELECT ${COLUMNS} FROM models WHERE id = @key OR ref = @key OR alias = @key
     ORDER BY CASE WHEN id = @key THEN 0 WHEN ref = @key THEN 1 ELSE 2 END LIMIT 1`,
  );
  const list = db.prepare<[], DbRow>(`SELECT ${COLUMNS} FROM models ORDER BY added_at, id`);
  const remove = db.prepare<[string]>('DELETE FROM models WHERE id = ?');
  const touch = db.prepare<[number, string]>('UPDATE models SET last_used_at = ? WHERE id = ?');

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
      return { ...row };
    },
    get(key) {
      const row = get.get({ key });
      return row === undefined ? undefined : fromDb(row);
    },
    list() {
      return list.all().map(fromDb);
    },
    remove(id) {
      return remove.run(id).changes > 0;
    },
    touch(id, at = Date.now()) {
      touch.run(at, id);
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
