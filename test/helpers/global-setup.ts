import { tinyModelPath } from './tiny-model.js';

/**
 * vitest globalSetup: (re)generate the tiny model once per run, before any test file looks for it,
 * so test files find it ready and never load one written by an older recipe.
 */
export default async function setup(): Promise<void> {
  await tinyModelPath({ refresh: true });
}
