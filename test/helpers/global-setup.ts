import { join } from 'node:path';
import { buildNativeLoop } from '../../src/engine/worker/native-loop.js';
import { tinyModelPath } from './tiny-model.js';

/**
 * vitest globalSetup: (re)generate the tiny model once per run, before any test file looks for it,
 * so test files find it ready and never load one written by an older recipe. Build rbee's native
 * token loop once as well, into the cache vitest.config.ts points workers at, so that every worker
 * a test starts finds it (rather than each compiling it beside the tests); where it cannot be
 * built, workers step in JavaScript and test/engine/token-loop.test.ts says so.
 */
export default async function setup(): Promise<void> {
  await tinyModelPath({ refresh: true });
  const cache = join(import.meta.dirname, '..', '..', '.cache', 'native');
  await buildNativeLoop({ env: { ...process.env, RBEE_NATIVE_CACHE: cache } }).catch(() => undefined);
}
