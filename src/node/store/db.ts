/**
 * The node's one SQLite database: WAL (readers never block the writer), foreign keys on, a busy
 * timeout instead of instant SQLITE_BUSY, and migrations keyed by `PRAGMA user_version`.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { RbeeError } from '../../shared/errors.js';
import { MIGRATIONS } from './migrations.js';

export type Database = BetterSqlite3.Database;

export interface OpenDatabaseOptions {
  /** Defaults to the project's MIGRATIONS; tests pass their own. */
  migrations?: readonly string[];
  /** How long a statement waits for another connection's lock. Defaults to 5000 ms. */
  busyTimeoutMs?: number;
}

/** Opens (creating if needed) the database at `path`, or `:memory:`, and brings its schema up to date. */
export function openDatabase(path: string, options: OpenDatabaseOptions = {}): Database {
  const migrations = options.migrations ?? MIGRATIONS;
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  let db: Database;
  try {
    db = new BetterSqlite3(path, { timeout: options.busyTimeoutMs ?? 5000 });
  } catch (error) {
    throw new RbeeError('CONFIG_INVALID', `cannot open database ${path}: ${(error as Error).message}`, {
      cause: error,
      details: { path },
    });
  }
  try {
    db.pragma('journal_mode = WAL');
    // NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the last commit.
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    migrate(db, path, migrations);
    return db;
  } catch (error) {
    db.close();
    if (error instanceof RbeeError) throw error;
    throw new RbeeError('CONFIG_INVALID', `database ${path} is not usable: ${(error as Error).message}`, {
      cause: error,
      details: { path },
    });
  }
}

/** The schema version a database is at. */
export function schemaVersion(db: Database): number {
  return db.pragma('user_version', { simple: true }) as number;
}

function migrate(db: Database, path: string, migrations: readonly string[]): void {
  const current = schemaVersion(db);
  if (current > migrations.length) {
    throw new RbeeError(
      'CONFIG_INVALID',
      `database ${path} has schema version ${current}, newer than this rbee understands (${migrations.length}); ` +
        'upgrade rbee or point RBEE_HOME elsewhere',
      { details: { path, version: current, supported: migrations.length } },
    );
  }
  for (let version = current; version < migrations.length; version++) {
    const sql = migrations[version] ?? '';
    // user_version lives in the database header and is transactional, so a failed step leaves nothing.
    db.transaction(() => {
      db.exec(sql);
      db.pragma(`user_version = ${version + 1}`);
    })();
  }
}
