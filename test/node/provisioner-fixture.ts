/**
 * Shared set-up for the provisioner's test files: a real HTTP server on 127.0.0.1, a temporary data
 * directory with a real SQLite catalog, and the tiny GGUF as the thing to download.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, expect } from 'vitest';
import {
  createProvisioner,
  type Provisioner,
  type ProvisionerInit,
} from '../../src/node/models/provisioner.js';
import { openDatabase, type Database } from '../../src/node/store/db.js';
import { createModelCatalog, type ModelCatalog } from '../../src/node/store/model-catalog.js';
import type { RbeeError } from '../../src/shared/errors.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { startServer, type TestServer } from './gguf-http-server.js';

export interface Fixture {
  tiny: Buffer;
  tinySha: string;
  server: TestServer;
  /** This test's temporary directory (removed after it). */
  dir: string;
  modelsDir: string;
  db: Database;
  catalog: ModelCatalog;
  /** A provisioner on this test's catalog and models dir, with retries that do not wait. */
  make(overrides?: Partial<ProvisionerInit>): Provisioner;
}

/** Registers the hooks; the returned object's fields are valid inside tests. */
export function setupProvisionerTests(): Fixture {
  const fx = { catalog: undefined as unknown } as Fixture;
  fx.make = (overrides = {}) =>
    createProvisioner({
      catalog: fx.catalog,
      modelsDir: fx.modelsDir,
      hfEndpoint: fx.server.origin,
      hfToken: 'hf_secret',
      retryDelayMs: 5,
      ...overrides,
    });
  beforeAll(async () => {
    fx.tiny = await readFile(await tinyModelPath());
    fx.tinySha = sha256(fx.tiny);
    fx.server = await startServer();
  });
  afterAll(async () => {
    await fx.server.close();
  });
  beforeEach(async () => {
    fx.dir = await mkdtemp(join(tmpdir(), 'rbee-prov-'));
    fx.modelsDir = join(fx.dir, 'models');
    fx.db = openDatabase(join(fx.dir, 'rbee.db'));
    fx.catalog = createModelCatalog(fx.db);
    fx.server.hits.clear();
    fx.server.aborted.length = 0;
    fx.server.requests.length = 0;
  });
  afterEach(async () => {
    fx.db.close();
    await rm(fx.dir, { recursive: true, force: true });
  });
  return fx;
}

export const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

export const shaOfFile = async (path: string): Promise<string> => sha256(await readFile(path));

export async function filesUnder(root: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(root, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const entry of entries) {
    const path = join(root, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(path)));
    else out.push(path);
  }
  return out.sort();
}

export async function failure(promise: Promise<unknown>): Promise<RbeeError> {
  try {
    await promise;
  } catch (error) {
    return error as RbeeError;
  }
  throw new Error('expected a failure');
}

/** What a user notices after a failed ensure: nothing on disk, nothing in the catalog. */
export async function expectNothingLeft(fx: Fixture, root = fx.modelsDir): Promise<void> {
  expect(await filesUnder(root)).toEqual([]);
  expect(fx.catalog.list()).toEqual([]);
}
