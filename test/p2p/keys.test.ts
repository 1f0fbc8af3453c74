import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  clusterKeyToPsk,
  decodeJoinCode,
  encodeJoinCode,
  generateClusterKey,
  loadClusterKey,
  loadOrCreateClusterKey,
  loadOrCreatePeerKey,
  saveClusterKey,
} from '../../src/p2p/keys.js';
import { createJsonFileStore } from '../../src/p2p/store.js';
import { createScope, rejection } from './helpers.js';

const scope = createScope();
afterEach(() => scope.cleanup());

describe('peer key', () => {
  it('is created once with mode 0600 and gives the same id on every load', async () => {
    const path = join(await scope.dir(), 'sub', 'peer.key');
    const first = await loadOrCreatePeerKey(path);
    expect(first.created).toBe(true);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const again = await loadOrCreatePeerKey(path);
    expect(again.created).toBe(false);
    expect(again.peerId).toBe(first.peerId);
  });

  it('a corrupt key file is CONFIG_INVALID, not a silent new identity', async () => {
    const path = join(await scope.dir(), 'peer.key');
    await writeFile(path, 'garbage');
    expect((await rejection(loadOrCreatePeerKey(path))).code).toBe('CONFIG_INVALID');
  });
});

describe('cluster key', () => {
  it('is created on first start in the swarm.key format (0600) and read back after', async () => {
    const path = join(await scope.dir(), 'cluster.key');
    expect(await loadClusterKey(path)).toBeUndefined();
    const created = await loadOrCreateClusterKey(path);
    expect(created.created).toBe(true);
    expect(created.key.byteLength).toBe(32);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readFile(path, 'utf8')).toMatch(
      /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/,
    );
    const loaded = await loadOrCreateClusterKey(path);
    expect(loaded.created).toBe(false);
    expect(Buffer.from(loaded.key).equals(Buffer.from(created.key))).toBe(true);
    expect(new TextDecoder().decode(clusterKeyToPsk(created.key))).toContain(
      Buffer.from(created.key).toString('hex'),
    );
  });

  it('joining replaces the key; a damaged file is CONFIG_INVALID', async () => {
    const path = join(await scope.dir(), 'cluster.key');
    await loadOrCreateClusterKey(path);
    const other = generateClusterKey();
    await saveClusterKey(path, other);
    expect(Buffer.from((await loadClusterKey(path))!).equals(Buffer.from(other))).toBe(true);
    await writeFile(path, '/key/swarm/psk/1.0.0/\n/base16/\nabc\n');
    expect((await rejection(loadClusterKey(path))).code).toBe('CONFIG_INVALID');
  });
});

describe('join code', () => {
  it('round-trips a key, tolerating whitespace from copy and paste', () => {
    const key = generateClusterKey();
    const code = encodeJoinCode(key);
    expect(code).toMatch(/^rbee-[A-Za-z0-9_-]+$/);
    expect(
      Buffer.from(decodeJoinCode(`  ${code.slice(0, 20)}\n${code.slice(20)} `)).equals(Buffer.from(key)),
    ).toBe(true);
  });

  it('rejects a typo, a truncated code and a foreign string with CONFIG_INVALID', async () => {
    const code = encodeJoinCode(generateClusterKey());
    const typo = code.slice(0, 10) + (code[10] === 'A' ? 'B' : 'A') + code.slice(11);
    for (const bad of [typo, code.slice(0, -3), 'hello', '', 'rbee-', `x${code}`]) {
      expect((await rejection(Promise.resolve().then(() => decodeJoinCode(bad)))).code).toBe(
        'CONFIG_INVALID',
      );
    }
  });
});

describe('json file store', () => {
  it('keeps values across instances and survives a torn file', async () => {
    const path = join(await scope.dir(), 'cluster.json');
    const store = createJsonFileStore(path);
    await Promise.all([store.write('a', { term: 3 }), store.write('b', [1, 2])]);
    const again = createJsonFileStore(path);
    expect(await again.read('a')).toEqual({ term: 3 });
    expect(await again.read('b')).toEqual([1, 2]);
    await writeFile(path, '{"a": {"ter');
    expect(await createJsonFileStore(path).read('a')).toBeUndefined();
  });
});
