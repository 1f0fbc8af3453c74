/**
 * Which llama.cpp binary a real worker loads and reports: the prebuilt one by default (and the CPU
 * variant llama.cpp picked from it), and the prebuilt one again, with a warning and the reason,
 * when the native build it was asked for does not load — never a failed worker.
 */
import { arch, platform } from 'node:os';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { WorkerHandle, WorkerInit } from '../../src/engine/types.js';
import { spawnWorker } from '../../src/engine/worker/client.js';
import { tinyModelPath } from '../helpers/tiny-model.js';

let modelPath: string;
beforeAll(async () => {
  modelPath = await tinyModelPath();
});

const started: WorkerHandle[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((w) => w.stop()));
});

async function start(init: Partial<WorkerInit> = {}): Promise<WorkerHandle> {
  const worker = await spawnWorker({ modelPath, threads: 1, ...init });
  started.push(worker);
  return worker;
}

async function generates(worker: WorkerHandle): Promise<number> {
  for await (const chunk of worker.generate({ prompt: 'Hello', maxTokens: 8, temperature: 0 })) {
    if (chunk.type === 'done') return chunk.usage.completionTokens;
  }
  return 0;
}

describe('the llama.cpp binary a worker runs', () => {
  it('is the prebuilt one by default, named with the CPU variant llama.cpp picked', async () => {
    const worker = await start();
    expect(worker.info.binary).toMatchObject({ kind: 'prebuilt', why: 'the default' });
    if (platform() === 'linux' && arch() === 'x64') {
      // the x64 package ships one library per CPU generation; the one mapped is the one used
      expect(worker.info.binary?.label).toMatch(/^prebuilt cpu \([a-z0-9_]+ variant\)$/);
    } else {
      expect(worker.info.binary?.label).toMatch(/^prebuilt cpu/);
    }
    const asked = await start({
      binary: { binary: 'prebuilt', why: 'native build v0.5.0 not faster by 5%' },
    });
    expect(asked.info.binary).toMatchObject({
      kind: 'prebuilt',
      why: 'native build v0.5.0 not faster by 5%',
    });
  }, 180_000);

  it('falls back to the prebuilt binary, saying why, when the native build does not load', async () => {
    // A CMake option of its own makes the worker look for a build folder that cannot exist here,
    // whether or not this machine has a native build (node-llama-cpp adds these variables to the
    // options a build is looked up by).
    const key = 'NODE_LLAMA_CPP_CMAKE_OPTION_RBEE_TEST_NO_SUCH_BUILD';
    process.env[key] = '1';
    let worker: WorkerHandle;
    try {
      worker = await start({
        binary: { binary: 'native', why: 'native build v0.5.0: 1.10× prebuilt on tiny' },
      });
    } finally {
      delete process.env[key];
    }
    expect(worker.info.binary?.kind).toBe('prebuilt');
    expect(worker.info.binary?.why).toMatch(
      /^the native build did not load \(.+\): the prebuilt binary instead$/,
    );
    expect(await generates(worker)).toBeGreaterThan(0);
  }, 180_000);
});
