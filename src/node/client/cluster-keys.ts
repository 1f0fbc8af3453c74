/**
 * The keeper's side of joining: `rbee cluster code` reads (or, before a node ever started here,
 * creates) this machine's cluster key and prints it as a join code; `rbee join CODE` stores the key
 * from another machine's code. Keys are files (mode 0600) in the data directory, never sent over HTTP.
 */
import { existsSync } from 'node:fs';
import {
  decodeJoinCode,
  encodeJoinCode,
  loadClusterKey,
  loadOrCreateClusterKey,
  saveClusterKey,
} from '../../p2p/keys.js';
import type { DataPaths } from '../../shared/paths.js';

export async function clusterJoinCode(paths: DataPaths): Promise<{ code: string; created: boolean }> {
  const { key, created } = await loadOrCreateClusterKey(paths.clusterKey);
  return { code: encodeJoinCode(key), created };
}

/** Stores the key in `code` (CONFIG_INVALID when it is not a valid code); says whether it changed. */
export async function joinWithCode(paths: DataPaths, code: string): Promise<{ changed: boolean }> {
  const key = decodeJoinCode(code);
  const previous = existsSync(paths.clusterKey) ? await loadClusterKey(paths.clusterKey) : undefined;
  const changed = previous === undefined || Buffer.compare(previous, key) !== 0;
  if (changed) await saveClusterKey(paths.clusterKey, key);
  return { changed };
}
