import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, schemaVersion, type Database } from '../../src/node/store/db.js';
import { MIGRATIONS } from '../../src/node/store/migrations.js';
import { createModelCatalog, type ModelRow } from '../../src/node/store/model-catalog.js';

function row(overrides: Partial<ModelRow> = {}): ModelRow {
  return {
    id: 'hf-org-repo-m.gguf-12345678',
    ref: 'hf:org/repo/m.gguf',
    alias: null,
    name: 'Model',
    path: '/data/models/hf/org/repo/m.gguf',
    bytes: 1024,
    sha256: 'ab'.repeat(32),
    architecture: 'llama',
    quantization: 'Q4_K_M',
    contextLength: 4096,
    addedAt: 1_700_000_000_000,
    lastUsedAt: null,
    source: 'download',
    ...overrides,
  };
}

describe('openDatabase', () => {
  let dir: string;
  const open: Database[] = [];
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rbee-db-'));
  });
  afterEach(async () => {
    for (const db of open.splice(0)) if (db.open) db.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('creates the file (and its directory) with WAL, foreign keys and the latest schema', () => {
    const db = openDatabase(join(dir, 'nested', 'rbee.db'));
    open.push(db);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
    expect(schemaVersion(db)).toBe(MIGRATIONS.length);
    expect(
      db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'models'").get(),
    ).toBeDefined();
  });

  it('applies only the migrations a database lacks, in order, and survives reopening', () => {
    const path = join(dir, 'rbee.db');
    const first = openDatabase(path, { migrations: ['CREATE TABLE a (x INTEGER) STRICT'] });
    first.prepare('INSERT INTO a VALUES (1)').run();
    first.close();
    const second = openDatabase(path, {
      migrations: [
        'CREATE TABLE a (x INTEGER) STRICT',
        'ALTER TABLE a ADD COLUMN y TEXT',
        "UPDATE a SET y = x || '!'",
      ],
    });
    open.push(second);
    expect(schemaVersion(second)).toBe(3);
    expect(second.prepare('SELECT x, y FROM a').all()).toEqual([{ x: 1, y: '1!' }]);
  });

  it('rolls back a failing migration completely', () => {
    const path = join(dir, 'rbee.db');
    expect(() =>
      openDatabase(path, {
        migrations: ['CREATE TABLE a (x INTEGER)', 'CREATE TABLE b (y); SELECT * FROM nope'],
      }),
    ).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }) as Error);
    const raw = new BetterSqlite3(path);
    try {
      expect(raw.pragma('user_version', { simple: true })).toBe(1);
      expect(raw.prepare("SELECT name FROM sqlite_master WHERE name = 'b'").get()).toBeUndefined();
    } finally {
      raw.close();
    }
  });

  it('refuses a database written by a newer rbee', () => {
    const path = join(dir, 'rbee.db');
    const raw = new BetterSqlite3(path);
    raw.pragma(`user_version = ${MIGRATIONS.length + 5}`);
    raw.close();
    let error: unknown;
    try {
      openDatabase(path);
    } catch (caught) {
      error = caught;
    }
    expect(error).toMatchObject({ code: 'CONFIG_INVALID' });
    expect((error as Error).message).toMatch(/newer than this rbee/);
  });

  it('refuses a file that is not a database with CONFIG_INVALID', async () => {
    const path = join(dir, 'rbee.db');
    const { writeFile } = await import('node:fs/promises');
    await writeFile(
      path,
      'this is not sqlite, just some text that is long enough to have a header'.repeat(20),
    );
    expect(() => openDatabase(path)).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }) as Error);
  });
});

describe('model catalog', () => {
  let db: Database;
  beforeEach(() => {
    db = openDatabase(':memory:');
  });
  afterEach(() => {
    db.close();
  });

  it('stores and returns plain rows', () => {
    const catalog = createModelCatalog(db);
    const saved = catalog.upsert(row());
    expect(saved).toEqual(row());
    expect(catalog.get(row().id)).toEqual(row());
    expect(catalog.list()).toEqual([row()]);
  });

  it('finds a model by id, ref or alias, and id wins over a clashing alias', () => {
    const catalog = createModelCatalog(db);
    catalog.upsert(row({ alias: 'fast' }));
    const other = row({ id: 'other', ref: 'demo:tiny', alias: row().id, source: 'demo' });
    catalog.upsert(other);
    expect(catalog.get('hf:org/repo/m.gguf')?.id).toBe(row().id);
    expect(catalog.get('fast')?.id).toBe(row().id);
    expect(catalog.get(row().id)?.id).toBe(row().id);
    expect(catalog.get('other')?.ref).toBe('demo:tiny');
    expect(catalog.get('nothing')).toBeUndefined();
  });

  it('updates in place on the same id', () => {
    const catalog = createModelCatalog(db);
    catalog.upsert(row());
    catalog.upsert(row({ bytes: 2048, sha256: null, alias: 'x' }));
    expect(catalog.list()).toEqual([row({ bytes: 2048, sha256: null, alias: 'x' })]);
  });

  it('refuses an alias or ref that another model already has', () => {
    const catalog = createModelCatalog(db);
    catalog.upsert(row({ alias: 'fast' }));
    expect(() => catalog.upsert(row({ id: 'b', ref: 'demo:tiny', alias: 'fast' }))).toThrow(
      expect.objectContaining({ code: 'BAD_REQUEST' }) as Error,
    );
    expect(() => catalog.upsert(row({ id: 'c' }))).toThrow(
      expect.objectContaining({ code: 'BAD_REQUEST' }) as Error,
    );
    expect(catalog.list()).toHaveLength(1);
  });

  it('rejects a source outside the known set', () => {
    const catalog = createModelCatalog(db);
    expect(() => catalog.upsert(row({ source: 'stolen' as ModelRow['source'] }))).toThrow(
      expect.objectContaining({ code: 'INTERNAL' }) as Error,
    );
  });

  it('touches and removes', () => {
    const catalog = createModelCatalog(db);
    catalog.upsert(row());
    catalog.touch(row().id, 1_800_000_000_000);
    expect(catalog.get(row().id)?.lastUsedAt).toBe(1_800_000_000_000);
    const before = Date.now();
    catalog.touch(row().id);
    expect(catalog.get(row().id)?.lastUsedAt).toBeGreaterThanOrEqual(before);
    expect(catalog.remove(row().id)).toBe(true);
    expect(catalog.remove(row().id)).toBe(false);
    expect(catalog.list()).toEqual([]);
  });

  it('lists oldest first and keeps rows across reopening a file database', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rbee-db-'));
    try {
      const path = join(dir, 'rbee.db');
      const first = openDatabase(path);
      const catalog = createModelCatalog(first);
      catalog.upsert(row({ id: 'new', ref: 'demo:small', addedAt: 2 }));
      catalog.upsert(row({ id: 'old', ref: 'demo:tiny', addedAt: 1 }));
      first.close();
      const second = openDatabase(path);
      try {
        expect(
          createModelCatalog(second)
            .list()
            .map((r) => r.id),
        ).toEqual(['old', 'new']);
      } finally {
        second.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('answers from memory what the table holds: callers get copies, failed writes change nothing', () => {
    const catalog = createModelCatalog(db);
    catalog.upsert(row({ alias: 'fast' }));
    const listed = catalog.list()[0]!;
    listed.bytes = 1;
    listed.alias = 'mine';
    catalog.get('fast')!.path = '/elsewhere';
    expect(catalog.get(row().id)).toEqual(row({ alias: 'fast' }));
    expect(() => catalog.upsert(row({ id: 'b', ref: 'demo:tiny', alias: 'fast' }))).toThrow();
    expect(catalog.get('b')).toBeUndefined();
    expect(catalog.get('demo:tiny')).toBeUndefined();
    // what a fresh catalog on the same database reads is what this one answers
    catalog.upsert(row({ id: 'a', ref: 'demo:small', addedAt: 1 }));
    catalog.remove(row().id);
    expect(createModelCatalog(db).list()).toEqual(catalog.list());
  });

  it('writes a use at most once a second per model, and each use is seen at once', () => {
    const catalog = createModelCatalog(db);
    catalog.upsert(row());
    const t = 1_800_000_000_000;
    catalog.touch(row().id, t);
    catalog.touch(row().id, t + 400);
    expect(catalog.get(row().id)?.lastUsedAt).toBe(t + 400);
    expect(createModelCatalog(db).get(row().id)?.lastUsedAt).toBe(t);
    catalog.touch(row().id, t + 1000);
    expect(createModelCatalog(db).get(row().id)?.lastUsedAt).toBe(t + 1000);
  });
});
