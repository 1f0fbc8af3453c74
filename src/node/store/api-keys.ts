/**
 * API keys: what a client beyond this machine shows to use the node's HTTP API. A key is 32 random
 * bytes, shown once when created; only its sha256 is stored (a key has full entropy, so a slow hash
 * adds nothing), and lookups compare hashes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { RbeeError } from '../../shared/errors.js';
import type { Database } from './db.js';

export interface ApiKeyInfo {
  id: string;
  name: string;
  createdAt: number;
  lastUsedAt: number | undefined;
}

export interface ApiKeyStore {
  /** Creates a key; the returned `key` is the only copy there will ever be. */
  create(name: string): ApiKeyInfo & { key: string };
  list(): ApiKeyInfo[];
  /** NOT_FOUND when no key has this id. */
  remove(id: string): void;
  /** The key's info when `key` is a key of this node (and notes its use), else undefined. */
  verify(key: string): ApiKeyInfo | undefined;
  count(): number;
}

const PREFIX = 'rbee_';
/** Writes of `last_used_at` at most this often per key: every request must not be a disk write. */
const USE_RESOLUTION_MS = 60_000;

interface Row {
  id: string;
  name: string;
  created_at: number;
  last_used_at: number | null;
}

const sha256 = (key: string): string => createHash('sha256').update(key).digest('hex');
const info = (row: Row): ApiKeyInfo => ({
  id: row.id,
  name: row.name,
  createdAt: row.created_at,
  lastUsedAt: row.last_used_at ?? undefined,
});

export function createApiKeyStore(db: Database, now: () => number = Date.now): ApiKeyStore {
  const insert = db.prepare<[string, string, string, number]>(
    'INSERT INTO api_keys (id, name, hash, created_at) VALUES (?, ?, ?, ?)',
  );
  const all = db.prepare<[], Row>(
    'SELECT id, name, created_at, last_used_at FROM api_keys ORDER BY created_at',
  );
  const byHash = db.prepare<[string], Row>(
    'SELECT id, name, created_at, last_used_at FROM api_keys WHERE hash = ?',
  );
  const del = db.prepare<[string]>('DELETE FROM api_keys WHERE id = ?');
  const touch = db.prepare<[number, string]>('UPDATE api_keys SET last_used_at = ? WHERE id = ?');
  const size = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM api_keys');
  return {
    create(name) {
      const secret = randomBytes(32).toString('base64url');
      const key = `${PREFIX}${secret}`;
      // The id is public (listed, used to revoke): 8 characters of its own, not of the secret.
      const id = randomBytes(6).toString('base64url');
      const createdAt = now();
      insert.run(id, name, sha256(key), createdAt);
      return { id, name, createdAt, lastUsedAt: undefined, key };
    },
    list: () => all.all().map(info),
    remove(id) {
      if (del.run(id).changes === 0) throw new RbeeError('NOT_FOUND', `no API key ${id}`);
    },
    verify(key) {
      if (!key.startsWith(PREFIX)) return undefined;
      const row = byHash.get(sha256(key));
      if (row === undefined) return undefined;
      const at = now();
      if (row.last_used_at === null || at - row.last_used_at >= USE_RESOLUTION_MS) touch.run(at, row.id);
      return info(row);
    },
    count: () => size.get()?.n ?? 0,
  };
}
