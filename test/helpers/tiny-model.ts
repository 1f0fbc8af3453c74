/**
 * The tiny random-weights model every engine test loads, generated once into `<repo>/.cache/models`.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { generateTestModel } from '../../src/engine/gguf/index.js';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const TEST_MODELS_DIR = join(REPO_ROOT, '.cache', 'models');

export interface TinyModelOptions {
  /**
   * Write the file even if it exists, so a cache left by an older generator never outlives a
   * change to the recipe (costs ~0.2 s). Defaults to false.
   */
  refresh?: boolean;
  signal?: AbortSignal;
}

/**
 * Path of the tiny test model (seed 1), generating it if missing. Safe when several test processes
 * call it at once: each writes its own temporary file and renames it into place (atomic, and a
 * reader holding the old file keeps reading the old inode; contents are byte-identical anyway).
 */
export async function tinyModelPath(options: TinyModelOptions = {}): Promise<string> {
  return cachedModel('tiny-seed1.gguf', false, options);
}

/**
 * Path of the tiny reranker (seed 1): the tiny shape with a classifier head and rank pooling, which
 * node-llama-cpp's ranking context takes. Generated once, as tinyModelPath's.
 */
export async function tinyRerankerPath(options: TinyModelOptions = {}): Promise<string> {
  return cachedModel('tiny-rerank-seed1.gguf', true, options);
}

async function cachedModel(name: string, reranker: boolean, options: TinyModelOptions): Promise<string> {
  const path = join(TEST_MODELS_DIR, name);
  if (options.refresh !== true && (await isFile(path))) return path;
  await mkdir(TEST_MODELS_DIR, { recursive: true });
  const temp = `${path}.${process.pid}-${randomUUID()}.tmp`;
  try {
    await generateTestModel({
      path: temp,
      preset: 'tiny',
      seed: 1,
      reranker,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    await rename(temp, path);
  } finally {
    await rm(temp, { force: true });
  }
  return path;
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}
