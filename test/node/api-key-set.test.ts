/**
 * The API key set on a real SQLite file, as the cluster replicates it: records carry hashes and
 * limits (never keys), merging is a union in which revocations win, a revoked key stays a
 * tombstone that no merge brings back, and everything survives reopening the database.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createApiKeyStore,
  openDatabase,
  type ApiKeyStore,
  type Database,
} from '../../src/node/store/index.js';

let dir: string;
const dbs: Database[] = [];

function open(name: string): ApiKeyStore {
  const db = openDatabase(join(dir, `${name}.db`));
  dbs.push(db);
  return createApiKeyStore(db);
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rbee-keyset-'));
});
afterEach(async () => {
  for (const db of dbs.splice(0)) db.close();
  await rm(dir, { recursive: true, force: true });
});

describe('the API key set', () => {
  it('replicates hashes and limits, never keys, and a merged key verifies on the other node', () => {
    const a = open('a');
    const b = open('b');
    const created = a.create('editor', { maxConcurrent: 2, rpm: 30 });
    const records = a.records();
    expect(JSON.stringify(records)).not.toContain(created.key);
    expect(records).toEqual([
      expect.objectContaining({ id: created.id, name: 'editor', maxConcurrent: 2, rpm: 30 }),
    ]);
    expect(b.verify(created.key)).toBeUndefined();
    expect(b.merge(records)).toBe(true);
    expect(b.verify(created.key)).toMatchObject({ id: created.id, maxConcurrent: 2, rpm: 30 });
    expect(b.digest()).toBe(a.digest());
    // merging what is already there changes nothing
    expect(b.merge(records)).toBe(false);
  });

  it('lets a revocation win over a key in force, and never brings a revoked key back', () => {
    const a = open('a');
    const b = open('b');
    const key = a.create('laptop');
    b.merge(a.records());
    b.remove(key.id);
    expect(b.verify(key.key)).toBeUndefined();
    expect(() => b.remove(key.id)).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }));
    // the node that missed the revocation offers the key in force: the tombstone holds
    expect(b.merge(a.records())).toBe(false);
    expect(b.verify(key.key)).toBeUndefined();
    expect(b.list()).toEqual([]);
    // and it takes the revocation the other way
    expect(a.merge(b.records())).toBe(true);
    expect(a.verify(key.key)).toBeUndefined();
    expect(a.digest()).toBe(b.digest());
    expect(a.count()).toBe(0);
  });

  it('ends equal on both sides whatever the order of merges (the earliest revocation is kept)', () => {
    const a = open('a');
    const b = open('b');
    const c = open('c');
    const one = a.create('one');
    b.create('two');
    c.merge(a.records());
    a.remove(one.id);
    c.remove(one.id); // a second, later revocation of the same key
    for (const [x, y] of [
      [a, b],
      [b, c],
      [c, a],
      [a, b],
    ] as const) {
      x.merge(y.records());
      y.merge(x.records());
    }
    expect(new Set([a.digest(), b.digest(), c.digest()]).size).toBe(1);
    expect(a.list().map((k) => k.name)).toEqual(['two']);
  });

  it('keeps keys, tombstones and the set version across a restart', () => {
    const a = open('a');
    const kept = a.create('kept', { rpm: 5 });
    const gone = a.create('gone');
    a.remove(gone.id);
    a.setVersion({ version: 7, term: 3, queen: 'peer-q' });
    dbs.pop()!.close();
    const again = open('a');
    expect(again.verify(kept.key)).toMatchObject({ id: kept.id, rpm: 5 });
    expect(again.verify(gone.key)).toBeUndefined();
    expect(again.records().find((r) => r.id === gone.id)?.revokedAt).toEqual(expect.any(Number));
    expect(again.version()).toEqual({ version: 7, term: 3, queen: 'peer-q' });
  });
});
