/**
 * The little a cluster node must remember across restarts (its term and vote, the members it knew)
 * goes through this interface, so the node can put it in SQLite and tests in memory or a JSON file.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RbeeError } from '../shared/errors.js';

export interface ClusterStore {
  read(key: string): Promise<unknown>;
  /** Resolves once the value is durable: an election vote is granted only after this. */
  write(key: string, value: unknown): Promise<void>;
}

export function createMemoryStore(initial: Record<string, unknown> = {}): ClusterStore {
  const data = new Map<string, string>(Object.entries(initial).map(([k, v]) => [k, JSON.stringify(v)]));
  return {
    read(key) {
      const text = data.get(key);
      return Promise.resolve(text === undefined ? undefined : (JSON.parse(text) as unknown));
    },
    write(key, value) {
      data.set(key, JSON.stringify(value));
      return Promise.resolve();
    },
  };
}

/** One JSON object in one file; writes are serialised and atomic (temporary file + rename). */
export function createJsonFileStore(path: string): ClusterStore {
  let cache: Record<string, unknown> | undefined;
  let chain: Promise<unknown> = Promise.resolve();

  async function load(): Promise<Record<string, unknown>> {
    if (cache !== undefined) return cache;
    try {
      const parsed = JSON.parse(await readFile(path, 'utf8')) as unknown;
      cache = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' && !(error instanceof SyntaxError)) {
        throw new RbeeError('CONFIG_INVALID', `cannot read the cluster store ${path}`, { cause: error });
      }
      // a missing or torn file means a fresh start: terms only ever grow from what peers tell us
      cache = {};
    }
    return cache;
  }

  function serialise<T>(task: () => Promise<T>): Promise<T> {
    const next = chain.then(task, task);
    chain = next.catch(() => undefined);
    return next;
  }

  return {
    read(key) {
      return serialise(async () => (await load())[key]);
    },
    write(key, value) {
      return serialise(async () => {
        const data = { ...(await load()), [key]: value };
        await mkdir(dirname(path), { recursive: true });
        const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
        await writeFile(tmp, JSON.stringify(data), { mode: 0o600 });
        await rename(tmp, path);
        cache = data;
      });
    },
  };
}
