/**
 * The cluster layer's persistent memory (term, vote, known members) in the node's database. A vote
 * must be durable before it is granted: each write is its own committed transaction before the
 * promise resolves (WAL with synchronous NORMAL survives a process crash; an OS crash may lose it).
 */
import type { ClusterStore } from '../../p2p/store.js';
import type { Database } from './db.js';

export function createSqliteClusterStore(db: Database): ClusterStore {
  const select = db.prepare<[string], { value: string }>('SELECT value FROM cluster_store WHERE key = ?');
  const upsert = db.prepare<[string, string]>(
    'INSERT INTO cluster_store (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
  );
  return {
    read(key) {
      const row = select.get(key);
      return Promise.resolve(row === undefined ? undefined : (JSON.parse(row.value) as unknown));
    },
    write(key, value) {
      upsert.run(key, JSON.stringify(value));
      return Promise.resolve();
    },
  };
}
