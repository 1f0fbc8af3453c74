/**
 * Aliases: names a user gave to models on this node (`rbee models alias NAME REF`). Each stands for
 * a canonical ref; the name is checked (models/model-names.ts) before it gets here.
 */
import type { Database } from './db.js';

export interface ModelAlias {
  name: string;
  /** The canonical ref the name stands for. */
  ref: string;
  createdAt: number;
}

export interface ModelAliases {
  /** Adds the alias, or points an existing one at another ref. */
  set(name: string, ref: string, at?: number): ModelAlias;
  get(name: string): ModelAlias | undefined;
  /** Says whether there was one. */
  remove(name: string): boolean;
  /** Every alias, by name. */
  list(): ModelAlias[];
}

interface DbRow {
  name: string;
  ref: string;
  created_at: number;
}

const fromDb = (row: DbRow): ModelAlias => ({ name: row.name, ref: row.ref, createdAt: row.created_at });

export function createModelAliases(db: Database): ModelAliases {
  const set = db.prepare<[string, string, number]>(
    `INSERT INTO model_aliases (name, ref, created_at) VALUES (?, ?, ?)
     ON CONFLICT (name) DO UPDATE SET ref = excluded.ref, created_at = excluded.created_at`,
  );
  const get = db.prepare<[string], DbRow>('SELECT name, ref, created_at FROM model_aliases WHERE name = ?');
  const remove = db.prepare<[string]>('DELETE FROM model_aliases WHERE name = ?');
  const list = db.prepare<[], DbRow>('SELECT name, ref, created_at FROM model_aliases ORDER BY name');
  return {
    set(name, ref, at = Date.now()) {
      set.run(name, ref, at);
      return { name, ref, createdAt: at };
    },
    get(name) {
      const row = get.get(name);
      return row === undefined ? undefined : fromDb(row);
    },
    remove: (name) => remove.run(name).changes > 0,
    list: () => list.all().map(fromDb),
  };
}
