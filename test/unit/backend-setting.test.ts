/**
 * A node's `backend` setting: read from config.json or RBEE_BACKEND, and turned into the backends
 * its hive publishes (the queen's scheduler uses only those).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadNodeConfig } from '../../src/node/config.js';
import { allowedBackends } from '../../src/node/hive/index.js';

const homes: string[] = [];
afterEach(() => {
  for (const home of homes.splice(0)) rmSync(home, { recursive: true, force: true });
});

function config(file: Record<string, unknown> | undefined, env: NodeJS.ProcessEnv = {}) {
  const home = mkdtempSync(join(tmpdir(), 'rbee-config-'));
  homes.push(home);
  if (file !== undefined) writeFileSync(join(home, 'config.json'), JSON.stringify(file));
  return loadNodeConfig({ dataDir: home }, { RBEE_CLUSTER: '0', ...env });
}

describe('the backend setting', () => {
  it('is auto by default, else config.json’s, else RBEE_BACKEND’s', () => {
    expect(config(undefined).backend).toBe('auto');
    expect(config({ backend: 'cpu' }).backend).toBe('cpu');
    expect(config({ backend: 'cpu' }, { RBEE_BACKEND: 'cuda' }).backend).toBe('cuda');
  });

  it('refuses a backend it does not know', () => {
    expect(() => config(undefined, { RBEE_BACKEND: 'rocm' })).toThrow(
      /RBEE_BACKEND must be one of auto, cpu/,
    );
    expect(() => config({ backend: 'gpu' })).toThrow(/backend/);
  });
});

describe('the backends a hive publishes', () => {
  const found = ['cpu', 'cuda'];
  it('are every one found with auto', () => {
    expect(allowedBackends(found, 'auto')).toEqual(['cpu', 'cuda']);
  });
  it('are the CPU alone when set to cpu, though a GPU is there', () => {
    expect(allowedBackends(found, 'cpu')).toEqual(['cpu']);
  });
  it('are the set backend and the CPU (the fallback), or the CPU alone when it is not here', () => {
    expect(allowedBackends(found, 'cuda')).toEqual(['cpu', 'cuda']);
    expect(allowedBackends(found, 'vulkan')).toEqual(['cpu']);
  });
});
