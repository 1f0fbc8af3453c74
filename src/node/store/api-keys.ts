/**
 * API keys: what a client beyond this machine shows to use the node's HTTP API. A key is 32 random
 * bytes, shown once when created; only its sha256 is stored (a key has full entropy, so a slow hash
 * adds nothing), and lookups compare hashes.
 *
 * The same rows are what the cluster replicates (`KeyRecord`: id, name, hash, limits, revocation;
 * never a key). A revoked key stays as a tombstone, so that merging in a node that missed the
 * revocation cannot bring it back: merging is a union in which revocations win. `lastUsedAt` is
 * this node's own and never crosses the wire.
 */
import { createHash, randomBytes } from 'node:crypto';
import { RbeeError } from '../../shared/errors.js';
import type { Database } from './db.js';

export interface KeyLimits {
  /** Jobs of this key running at once on the node it calls. */
  maxConcurrent?: number;
  /** Requests that run a model, per minute, on the node it calls. */
  rpm?: number;
}

export interface ApiKeyInfo extends KeyLimits {
  id: string;
  name: string;
  createdAt: number;
  lastUsedAt: number | undefined;
}

/** One key as the cluster replicates it: its hash, never the key. */
export interface KeyRecord extends KeyLimits {
  id: string;
  name: string;
  /** sha256 of the key, hex. */
  hash: string;
  createdAt: number;
  /** Set once the key is revoked: a tombstone, kept so that no merge brings the key back. */
  revokedAt?: number;
}

/** The version of the key set this node holds, and the queen (and its term) it came from. */
export interface KeySetVersion {
  version: number;
  term: number;
  /** Peer id of the queen that made this version; '' for a node that never had one. */
  queen: string;
}

export interface ApiKeyStore {
  /** Creates a key; the returned `key` is the only copy there will ever be. */
  create(name: string, limits?: KeyLimits): ApiKeyInfo & { key: string };
  /** The keys in force (revoked ones are left out). */
  list(): ApiKeyInfo[];
  /** Revokes the key (a tombstone stays). NOT_FOUND when no key in force has this id. */
  remove(id: string): void;
  /** The key's info when `key` is a key in force here (and notes its use), else undefined. */
  verify(key: string): ApiKeyInfo | undefined;
  /** Keys in force. */
  count(): number;
  /** Every key and tombstone, for the cluster. */
  records(): KeyRecord[];
  /** Merges records in (union; a revocation wins); true when anything changed. */
  merge(records: readonly KeyRecord[]): boolean;
  /** A hash of `records()`: equal digests, equal key sets. */
  digest(): string;
  version(): KeySetVersion;
  setVersion(version: KeySetVersion): void;
}

const PREFIX = 'rbee_';
/** Writes of `last_used_at` at most this often per key: every request must not be a disk write. */
const USE_RESOLUTION_MS = 60_000;
/** Keys in force at most: the whole set crosses the cluster in one frame. */
export const MAX_KEYS = 1000;
/** Tombstones kept (the newest revocations); older ones are dropped. */
export const MAX_TOMBSTONES = 2000;

interface Row {
  id: string;
  name: string;
  hash: string;
  created_at: number;
  last_used_at: number | null;
  max_concurrent: number | null;
  rpm: number | null;
  revoked_at: number | null;
}

const sha256 = (key: string): string => createHash('sha256').update(key).digest('hex');

const limitsOf = (row: Row): KeyLimits => ({
  ...(row.max_concurrent === null ? {} : { maxConcurrent: row.max_concurrent }),
  ...(row.rpm === null ? {} : { rpm: row.rpm }),
});
const info = (row: Row): ApiKeyInfo => ({
  id: row.id,
  name: row.name,
  createdAt: row.created_at,
  lastUsedAt: row.last_used_at ?? undefined,
  ...limitsOf(row),
});
const record = (row: Row): KeyRecord => ({
  id: row.id,
  name: row.name,
  hash: row.hash,
  createdAt: row.created_at,
  ...limitsOf(row),
  ...(row.revoked_at === null ? {} : { revokedAt: row.revoked_at }),
});

/** A hash of a key set that does not depend on the order of its records. */
export function keySetDigest(records: readonly KeyRecord[]): string {
  const canonical = [...records]
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    .map((r) => [r.id, r.name, r.hash, r.createdAt, r.maxConcurrent ?? 0, r.rpm ?? 0, r.revokedAt ?? 0]);
  return createHash('sha256').update(JSON.stringify(canonical)).digest('hex');
}

export function createApiKeyStore(db: Database, now: () => number = Date.now): ApiKeyStore {
  const COLUMNS = 'id, name, hash, created_at, last_used_at, max_concurrent, rpm, revoked_at';
  const insert = db.prepare<[string, string, string, number, number | null, number | null, number | null]>(
    `INSERT OR IGNORE INTO api_keys (id, name, hash, created_at, max_concurrent, rpm, revoked_at)
     VALUES (?, ?, ?, ?, ?, ?, ?)`,
  );
  const all = db.prepare<[], Row>(`SELECT ${COLUMNS} FROM api_keys ORDER BY created_at, id`);
  const active = db.prepare<[], Row>(
    `SELECT ${COLUMNS} FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id`,
  );
  const byId = db.prepare<[string], Row>(`SELECT ${COLUMNS} FROM api_keys WHERE id = ?`);
  const byHash = db.prepare<[string], Row>(
    `SELECT ${COLUMNS} FROM api_keys WHERE hash = ? AND revoked_at IS NULL`,
  );
  const revoke = db.prepare<[{ at: number; id: string }]>(
    'UPDATE api_keys SET revoked_at = @at WHERE id = @id AND (revoked_at IS NULL OR revoked_at > @at)',
  );
  const touch = db.prepare<[number, string]>('UPDATE api_keys SET last_used_at = ? WHERE id = ?');
  const size = db.prepare<[], { n: number }>('SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL');
  const pruneTombstones = db.prepare<[number]>(
    `DELETE FROM api_keys WHERE revoked_at IS NOT NULL AND id NOT IN
       (SELECT id FROM api_keys WHERE revoked_at IS NOT NULL ORDER BY revoked_at DESC, id LIMIT ?)`,
  );
  const readVersion = db.prepare<[], KeySetVersion>('SELECT version, term, queen FROM api_key_set');
  const writeVersion = db.prepare<[number, number, string]>(
    `INSERT INTO api_key_set (id, version, term, queen) VALUES (1, ?, ?, ?)
     ON CONFLICT (id) DO UPDATE SET version = excluded.version, term = excluded.term, queen = excluded.queen`,
  );
  const count = (): number => size.get()?.n ?? 0;

  const mergeAll = db.transaction((records: readonly KeyRecord[]): boolean => {
    let changed = false;
    for (const r of records) {
      const known = byId.get(r.id);
      if (known === undefined) {
        const inserted = insert.run(
          r.id,
          r.name,
          r.hash,
          r.createdAt,
          r.maxConcurrent ?? null,
          r.rpm ?? null,
          r.revokedAt ?? null,
        );
        // a hash already known under another id is the same key: the first id stays
        changed ||= inserted.changes > 0;
      } else if (r.revokedAt !== undefined && (known.revoked_at === null || known.revoked_at > r.revokedAt)) {
        // revocations win; the earliest revocation time is kept, so every node ends up equal
        revoke.run({ at: r.revokedAt, id: r.id });
        changed = true;
      }
    }
    if (changed) pruneTombstones.run(MAX_TOMBSTONES);
    return changed;
  });

  return {
    create(name, limits = {}) {
      if (count() >= MAX_KEYS) {
        throw new RbeeError('BAD_REQUEST', `this node holds ${MAX_KEYS} keys already; revoke some first`);
      }
      const secret = randomBytes(32).toString('base64url');
      const key = `${PREFIX}${secret}`;
      // The id is public (listed, used to revoke): 8 characters of its own, not of the secret.
      const id = randomBytes(6).toString('base64url');
      const createdAt = now();
      insert.run(id, name, sha256(key), createdAt, limits.maxConcurrent ?? null, limits.rpm ?? null, null);
      return { id, name, createdAt, lastUsedAt: undefined, ...limits, key };
    },
    list: () => active.all().map(info),
    remove(id) {
      const known = byId.get(id);
      if (known === undefined || known.revoked_at !== null) {
        throw new RbeeError('NOT_FOUND', `no API key ${id}`);
      }
      revoke.run({ at: now(), id });
      pruneTombstones.run(MAX_TOMBSTONES);
    },
    verify(key) {
      if (!key.startsWith(PREFIX)) return undefined;
      const row = byHash.get(sha256(key));
      if (row === undefined) return undefined;
      const at = now();
      if (row.last_used_at === null || at - row.last_used_at >= USE_RESOLUTION_MS) touch.run(at, row.id);
      return info(row);
    },
    count,
    records: () => all.all().map(record),
    merge: (records) => mergeAll(records),
    digest: () => keySetDigest(all.all().map(record)),
    version: () => readVersion.get() ?? { version: 0, term: 0, queen: '' },
    setVersion(v) {
      writeVersion.run(v.version, v.term, v.queen);
    },
  };
}
