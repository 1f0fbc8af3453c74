/**
 * The jobs table: every job this node accepted, with where it ran and how it ended. Written at the
 * few moments a job changes state (accepted, placing, running, first token, end), never per token.
 * At start, a job left unfinished by a previous run of the node is marked failed with the reason.
 *
 * A job's row is written the moment it is accepted, before the client hears of it, so a crash never
 * loses a job the client was told about: the restart marks it failed with NODE_RESTARTED. The later
 * changes are behind the job, not in its way: each is queued and the queue is written in one
 * transaction `writeDelayMs` later, so that a job's first token does not wait for four statements
 * and a burst of jobs commits once. Every read, and `flush`, writes the queue first, so what is read
 * is always what was recorded; a crash of the node loses at most the last `writeDelayMs` of state
 * changes (the node flushes on every orderly stop).
 */
import type { Database } from './db.js';

export type JobRowState = 'queued' | 'placing' | 'running' | 'done' | 'failed' | 'cancelled';

export interface JobRow {
  id: string;
  model: string;
  /** Who submitted it: `key:ID`, or the machine's own user. */
  owner: string | undefined;
  state: JobRowState;
  /** The hive that runs (or ran) it: peer id and name. */
  hive: string | undefined;
  hiveName: string | undefined;
  worker: string | undefined;
  /** Why it was placed there (the queen's reason). */
  reason: string | undefined;
  acceptedAt: number;
  startedAt: number | undefined;
  firstTokenAt: number | undefined;
  finishedAt: number | undefined;
  completionTokens: number | undefined;
  errorCode: string | undefined;
  errorMessage: string | undefined;
}

export interface JobStore {
  accepted(job: { id: string; model: string; acceptedAt: number; owner?: string | undefined }): void;
  /** Back in line: the queen's queue holds it until a hive has room. */
  queued(id: string): void;
  placing(id: string): void;
  running(
    id: string,
    where: { hive: string; hiveName: string; worker?: string | undefined; reason: string },
  ): void;
  firstToken(id: string, at: number): void;
  finished(
    id: string,
    end: {
      state: 'done' | 'failed' | 'cancelled';
      at: number;
      completionTokens?: number;
      error?: { code: string; message: string };
    },
  ): void;
  get(id: string): JobRow | undefined;
  /** Newest first; only `owner`'s when given. */
  list(options?: { limit?: number; owner?: string | undefined }): JobRow[];
  /**
   * The jobs whose id is `prefix` or starts with it (only `owner`'s when given), at most `limit`
   * (default 11, enough to tell one from many and name ten), by id. An index range, not a scan.
   */
  find(prefix: string, options?: { limit?: number; owner?: string | undefined }): JobRow[];
  /** The newest jobs that ended `done` with a first token, newest first: what past runs measured. */
  recentDone(limit: number): JobRow[];
  /** Marks every unfinished job failed (the node stopped under it); returns how many. */
  failUnfinished(reason: { code: string; message: string }, at: number): number;
  /** Keeps the newest `keep` jobs; returns how many older rows went. */
  prune(keep: number): number;
  /** Writes what is queued now. */
  flush(): void;
}

export interface JobStoreOptions {
  /** How long a record waits to be written with the others; 0 writes each at once. Defaults to 20 ms. */
  writeDelayMs?: number;
  /** A queued record that could not be written (it is dropped; the others are kept). */
  onWriteError?: (error: unknown) => void;
}

export const DEFAULT_JOB_WRITE_DELAY_MS = 20;

interface Row {
  id: string;
  model: string;
  owner: string | null;
  state: JobRowState;
  hive: string | null;
  hive_name: string | null;
  worker: string | null;
  reason: string | null;
  accepted_at: number;
  started_at: number | null;
  first_token_at: number | null;
  finished_at: number | null;
  completion_tokens: number | null;
  error_code: string | null;
  error_message: string | null;
}

const row = (r: Row): JobRow => ({
  id: r.id,
  model: r.model,
  owner: r.owner ?? undefined,
  state: r.state,
  hive: r.hive ?? undefined,
  hiveName: r.hive_name ?? undefined,
  worker: r.worker ?? undefined,
  reason: r.reason ?? undefined,
  acceptedAt: r.accepted_at,
  startedAt: r.started_at ?? undefined,
  firstTokenAt: r.first_token_at ?? undefined,
  finishedAt: r.finished_at ?? undefined,
  completionTokens: r.completion_tokens ?? undefined,
  errorCode: r.error_code ?? undefined,
  errorMessage: r.error_message ?? undefined,
});

const UNFINISHED = "state IN ('queued', 'placing', 'running')";

export function createJobStore(db: Database, options: JobStoreOptions = {}): JobStore {
  const writeDelayMs = options.writeDelayMs ?? DEFAULT_JOB_WRITE_DELAY_MS;
  let queued: (() => void)[] = [];
  let timer: NodeJS.Timeout | undefined;
  const writeQueued = db.transaction((writes: (() => void)[]) => {
    for (const write of writes) {
      try {
        write();
      } catch (error) {
        options.onWriteError?.(error);
      }
    }
  });
  const flush = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (queued.length === 0) return;
    const writes = queued;
    queued = [];
    try {
      writeQueued(writes);
    } catch (error) {
      options.onWriteError?.(error);
    }
  };
  const record = (write: () => void): void => {
    if (writeDelayMs <= 0) return write();
    queued.push(write);
    timer ??= setTimeout(flush, writeDelayMs).unref();
  };
  /**
   * A statement that runs now (a read, a restart's sweep, a prune): what is queued is written first,
   * so it sees or follows every record made before it.
   */
  const afterQueued = <T>(query: () => T): T => {
    flush();
    return query();
  };

  const insert = db.prepare<[string, string, string | null, number]>(
    "INSERT INTO jobs (id, model, owner, state, accepted_at) VALUES (?, ?, ?, 'queued', ?)",
  );
  const setQueued = db.prepare<[string]>(
    `UPDATE jobs SET state = 'queued' WHERE id = ? AND state = 'placing'`,
  );
  const setPlacing = db.prepare<[string]>(`UPDATE jobs SET state = 'placing' WHERE id = ? AND ${UNFINISHED}`);
  const setRunning = db.prepare<[string, string, string | null, string, number, string]>(
    `UPDATE jobs SET state = 'running', hive = ?, hive_name = ?, worker = ?, reason = ?, started_at = ?
     WHERE id = ? AND ${UNFINISHED}`,
  );
  const setFirstToken = db.prepare<[number, string]>(
    'UPDATE jobs SET first_token_at = ? WHERE id = ? AND first_token_at IS NULL',
  );
  const setFinished = db.prepare<[string, number, number | null, string | null, string | null, string]>(
    `UPDATE jobs SET state = ?, finished_at = ?, completion_tokens = ?, error_code = ?, error_message = ?
     WHERE id = ? AND ${UNFINISHED}`,
  );
  const selectOne = db.prepare<[string], Row>('SELECT * FROM jobs WHERE id = ?');
  const selectMany = db.prepare<[number], Row>('SELECT * FROM jobs ORDER BY accepted_at DESC, id LIMIT ?');
  const selectOwned = db.prepare<[string, number], Row>(
    'SELECT * FROM jobs WHERE owner = ? ORDER BY accepted_at DESC, id LIMIT ?',
  );
  // every id that starts with the prefix sorts between it and the prefix followed by the highest
  // code point; the primary key's index serves the range
  const selectPrefix = db.prepare<[string, string, number], Row>(
    'SELECT * FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?',
  );
  const selectPrefixOwned = db.prepare<[string, string, string, number], Row>(
    'SELECT * FROM jobs WHERE id >= ? AND id < ? AND owner = ? ORDER BY id LIMIT ?',
  );
  const selectDone = db.prepare<[number], Row>(
    `SELECT * FROM jobs WHERE state = 'done' AND first_token_at IS NOT NULL AND finished_at IS NOT NULL
     ORDER BY finished_at DESC, id LIMIT ?`,
  );
  const failAll = db.prepare<[number, string, string]>(
    `UPDATE jobs SET state = 'failed', finished_at = ?, error_code = ?, error_message = ? WHERE ${UNFINISHED}`,
  );
  const pruneOld = db.prepare<[number]>(
    'DELETE FROM jobs WHERE id NOT IN (SELECT id FROM jobs ORDER BY accepted_at DESC, id LIMIT ?)',
  );
  return {
    // at once, after what is queued: the row exists before the client is told the job was accepted
    // (a row that cannot be written is said, as a queued one is, and the job goes on)
    accepted: (job) =>
      afterQueued(() => {
        try {
          insert.run(job.id, job.model, job.owner ?? null, job.acceptedAt);
        } catch (error) {
          options.onWriteError?.(error);
        }
      }),
    queued: (id) => record(() => setQueued.run(id)),
    placing: (id) => record(() => setPlacing.run(id)),
    running: (id, where) => {
      const startedAt = Date.now();
      record(() =>
        setRunning.run(where.hive, where.hiveName, where.worker ?? null, where.reason, startedAt, id),
      );
    },
    firstToken: (id, at) => record(() => setFirstToken.run(at, id)),
    finished: (id, end) =>
      record(() =>
        setFinished.run(
          end.state,
          end.at,
          end.completionTokens ?? null,
          end.error?.code ?? null,
          end.error?.message ?? null,
          id,
        ),
      ),
    get: (id) =>
      afterQueued(() => {
        const found = selectOne.get(id);
        return found === undefined ? undefined : row(found);
      }),
    list: (options = {}) =>
      afterQueued(() =>
        (options.owner === undefined
          ? selectMany.all(options.limit ?? 100)
          : selectOwned.all(options.owner, options.limit ?? 100)
        ).map(row),
      ),
    find: (prefix, options = {}) =>
      afterQueued(() => {
        const upper = `${prefix}\u{10FFFF}`;
        const limit = options.limit ?? 11;
        return (
          options.owner === undefined
            ? selectPrefix.all(prefix, upper, limit)
            : selectPrefixOwned.all(prefix, upper, options.owner, limit)
        ).map(row);
      }),
    recentDone: (limit) => afterQueued(() => selectDone.all(limit).map(row)),
    failUnfinished: (reason, at) => afterQueued(() => failAll.run(at, reason.code, reason.message).changes),
    prune: (keep) => afterQueued(() => pruneOld.run(keep).changes),
    flush,
  };
}
