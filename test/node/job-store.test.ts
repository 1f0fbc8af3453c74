/**
 * The jobs table on a real SQLite file: a job's life from acceptance to its end, the rows a restart
 * finds unfinished, and the bound on how many rows are kept.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createJobStore, openDatabase, type Database, type JobStore } from '../../src/node/store/index.js';

let dir: string;
let db: Database;
let store: JobStore;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rbee-jobs-'));
  db = openDatabase(join(dir, 'rbee.db'));
  store = createJobStore(db);
});
afterEach(async () => {
  db.close();
  await rm(dir, { recursive: true, force: true });
});

describe('the jobs table', () => {
  it('records where a job ran and how it ended', () => {
    store.accepted({ id: 'j1', model: 'demo', acceptedAt: 1000 });
    expect(store.get('j1')).toMatchObject({ state: 'queued', model: 'demo', acceptedAt: 1000 });
    store.placing('j1');
    expect(store.get('j1')?.state).toBe('placing');
    store.running('j1', { hive: 'peer-c', hiveName: 'gamma', worker: 'w1', reason: 'model warm' });
    store.firstToken('j1', 1040);
    store.firstToken('j1', 1090); // only the first counts
    store.finished('j1', { state: 'done', at: 1500, completionTokens: 24 });
    expect(store.get('j1')).toMatchObject({
      state: 'done',
      hive: 'peer-c',
      hiveName: 'gamma',
      worker: 'w1',
      reason: 'model warm',
      firstTokenAt: 1040,
      finishedAt: 1500,
      completionTokens: 24,
    });
    // a final state is final: a late event changes nothing
    store.finished('j1', { state: 'failed', at: 1600, error: { code: 'WORKER_CRASHED', message: 'x' } });
    store.running('j1', { hive: 'other', hiveName: 'other', reason: 'late' });
    expect(store.get('j1')).toMatchObject({ state: 'done', hive: 'peer-c', finishedAt: 1500 });
  });

  it('marks what a stopped node left unfinished as failed, with the reason, and leaves ended jobs alone', () => {
    for (const [id, at] of [
      ['queued', 1],
      ['placing', 2],
      ['running', 3],
      ['done', 4],
    ] as const) {
      store.accepted({ id, model: 'demo', acceptedAt: at });
    }
    store.placing('placing');
    store.placing('running');
    store.running('running', { hive: 'h', hiveName: 'h', reason: 'r' });
    store.finished('done', { state: 'done', at: 10, completionTokens: 1 });
    const failed = store.failUnfinished({ code: 'NODE_RESTARTED', message: 'the node stopped' }, 99);
    expect(failed).toBe(3);
    for (const id of ['queued', 'placing', 'running']) {
      expect(store.get(id)).toMatchObject({ state: 'failed', errorCode: 'NODE_RESTARTED', finishedAt: 99 });
    }
    expect(store.get('done')).toMatchObject({ state: 'done', finishedAt: 10 });
  });

  it('lists newest first and keeps only the newest rows when pruned', () => {
    for (let i = 0; i < 50; i++) store.accepted({ id: `j${i}`, model: 'demo', acceptedAt: i });
    expect(store.list({ limit: 3 }).map((r) => r.id)).toEqual(['j49', 'j48', 'j47']);
    expect(store.prune(10)).toBe(40);
    expect(store.list({ limit: 100 }).map((r) => r.id)).toHaveLength(10);
    expect(store.get('j39')).toBeUndefined();
    expect(store.get('j40')).toBeDefined();
  });

  it('finds a job by its id or a prefix of it, only the owner’s when asked, with an index and not a scan', () => {
    store.accepted({ id: '3fa0c1', model: 'demo', acceptedAt: 1, owner: 'key:a' });
    store.accepted({ id: '3fa7d2', model: 'demo', acceptedAt: 2, owner: 'key:b' });
    store.accepted({ id: '3fb000', model: 'demo', acceptedAt: 3 });
    store.accepted({ id: '3f', model: 'demo', acceptedAt: 4 });
    expect(store.find('3fa7d2').map((r) => r.id)).toEqual(['3fa7d2']);
    expect(store.find('3fa').map((r) => r.id)).toEqual(['3fa0c1', '3fa7d2']);
    expect(store.find('3f').map((r) => r.id)).toEqual(['3f', '3fa0c1', '3fa7d2', '3fb000']);
    expect(store.find('3f', { limit: 2 })).toHaveLength(2);
    expect(store.find('3fa', { owner: 'key:b' }).map((r) => r.id)).toEqual(['3fa7d2']);
    expect(store.find('4')).toEqual([]);
    // characters LIKE or GLOB would treat as patterns are just characters
    expect(store.find('3%')).toEqual([]);
    expect(store.find('3f*')).toEqual([]);
    const plan = db
      .prepare<[], { detail: string }>(
        "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE id >= 'a' AND id < 'b' ORDER BY id LIMIT 11",
      )
      .all();
    expect(plan.map((p) => p.detail).join(' ')).toMatch(/USING (INDEX|PRIMARY KEY)/);
  });

  it('writes an accepted job at once, later changes behind it in one go, and every read sees them first', async () => {
    // another connection to the same file sees only what was committed
    const other = openDatabase(join(dir, 'rbee.db'));
    const committed = (): number =>
      (other.prepare('SELECT count(*) AS n FROM jobs').get() as { n: number }).n;
    const stateOf = (id: string): unknown =>
      (other.prepare('SELECT state FROM jobs WHERE id = ?').get(id) as { state: string } | undefined)?.state;
    try {
      const behind = createJobStore(db, { writeDelayMs: 50 });
      // a crash right after acceptance must still find the job: its row is committed before the client hears of it
      behind.accepted({ id: 'b1', model: 'demo', acceptedAt: 1 });
      expect(committed()).toBe(1);
      behind.placing('b1');
      expect(stateOf('b1')).toBe('queued');
      behind.accepted({ id: 'b2', model: 'demo', acceptedAt: 2 });
      // the second acceptance wrote what was queued before it (b1 placing), in order
      expect(committed()).toBe(2);
      expect(stateOf('b1')).toBe('placing');
      behind.running('b2', { hive: 'h', hiveName: 'h', reason: 'r' });
      expect(stateOf('b2')).toBe('queued');
      await vi.waitFor(() => expect(stateOf('b2')).toBe('running'), { timeout: 5000, interval: 10 });
      expect(behind.get('b1')?.state).toBe('placing');
      // a read writes what is queued before it answers
      behind.finished('b2', { state: 'done', at: 9, completionTokens: 1 });
      expect(behind.get('b2')).toMatchObject({ state: 'done', finishedAt: 9 });
      behind.running('b1', { hive: 'h', hiveName: 'h', reason: 'r' });
      behind.flush();
      expect(other.prepare("SELECT state FROM jobs WHERE id = 'b1'").get()).toEqual({ state: 'running' });
    } finally {
      other.close();
    }
  });

  it('keeps the other records when one cannot be written, and says why', () => {
    const errors: unknown[] = [];
    const behind = createJobStore(db, { writeDelayMs: 50, onWriteError: (e) => errors.push(e) });
    behind.accepted({ id: 'dup', model: 'demo', acceptedAt: 1 });
    behind.accepted({ id: 'dup', model: 'demo', acceptedAt: 2 });
    behind.accepted({ id: 'next', model: 'demo', acceptedAt: 3 });
    expect(behind.list().map((j) => j.id)).toEqual(['next', 'dup']);
    expect(errors).toHaveLength(1);
  });
});
