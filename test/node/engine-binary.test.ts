/**
 * A real node's CPU workers and the binary decision of `rbee doctor --fix`: `rbee workers ls --json`
 * and `rbee doctor` say which binary each worker runs and why; a decision for a native build that
 * is gone (a fresh npm install) starts workers on the prebuilt binary, with a warning in doctor.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decide, writeBinaryDecision } from '../../src/engine/binary-choice.js';
import { findNativeBuild } from '../../src/engine/native-build.js';
import { createNodeClient, type NodeClient } from '../../src/node/client/index.js';
import { createWorkerCatalog, openDatabase } from '../../src/node/store/index.js';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';

let node: TestNode;
let client: NodeClient;
beforeAll(async () => {
  await tinyModelPath();
  // one thread: on a small shared machine two spin-waiting threads are far slower
  node = await startTestNode('rbee-binary-', {}, { threads: 1 });
  client = createNodeClient({ url: node.url });
});
afterAll(async () => {
  await node.stop();
});

/** The worker catalog's CPU row (`rbee workers backends`), once device detection has filled it. */
async function cpuBackend(): Promise<unknown> {
  const rows = await waitFor(
    async () => {
      const found = await client.backends();
      return found.length > 0 ? found : undefined;
    },
    { what: 'device detection' },
  );
  return rows.find((b) => b.name === 'cpu');
}

async function workerBinary(): Promise<unknown> {
  const { worker } = await client.spawnWorker('demo');
  const listed = (await client.clusterWorkers()).find((w) => w.id === worker.id);
  await client.stopWorker(worker.id);
  return listed?.binary;
}

describe("a node's CPU workers and their llama.cpp binary", () => {
  it('runs the prebuilt binary by default and lists it with each worker', async () => {
    expect(await workerBinary()).toMatchObject({
      kind: 'prebuilt',
      label: expect.stringMatching(/^prebuilt cpu/) as string,
      why: expect.stringMatching(/^the default: no native build here|not measured yet/) as string,
    });
    expect(await cpuBackend()).toMatchObject({ workersLoad: { binary: 'prebuilt' } });
  }, 180_000);

  it("records each worker in the node's worker catalog with its binary and why, and when it exited", async () => {
    const { worker } = await client.spawnWorker('demo');
    const listed = (await client.clusterWorkers()).find((w) => w.id === worker.id);
    await client.stopWorker(worker.id);
    // the node's own SQLite, read as the node wrote it
    const db = openDatabase(node.config.paths.db);
    try {
      const row = createWorkerCatalog(db)
        .workers()
        .find((w) => w.id === worker.id);
      expect(row).toMatchObject({
        model: listed?.model,
        backend: 'cpu',
        device: -1,
        pid: worker.pid,
        binary: listed?.binary,
      });
      expect(row?.binary).toMatchObject({ kind: 'prebuilt', why: expect.any(String) as string });
      expect(row?.exitedAt).toBeGreaterThanOrEqual(row?.readyAt ?? Infinity);
    } finally {
      db.close();
    }
  }, 180_000);

  it('falls back to the prebuilt binary when the native build chosen is gone, and doctor warns', async () => {
    const gone = { folder: 'linux-x64-removed-by-npm-install', release: 'v0.5.0', builtAt: 1 };
    writeBinaryDecision(
      node.config.paths.binaryDecision,
      decide(gone, [
        { preset: 'tiny', tokens: 512, threads: 1, nativeTokS: [120], prebuiltTokS: [100], ratio: 1.2 },
      ]),
    );
    // on a machine where `rbee doctor --fix` left a native build of its own, the decision's build is
    // not gone but another one: the fallback is the same, its reason says so
    const why =
      findNativeBuild() === undefined ? 'the native build chosen (v0.5.0) is gone' : 'rebuilt since';
    expect(await workerBinary()).toMatchObject({
      kind: 'prebuilt',
      why: expect.stringContaining(why) as string,
    });
    expect(await cpuBackend()).toMatchObject({
      workersLoad: { binary: 'prebuilt', why: expect.stringContaining(why) as string },
    });
    const report = await client.doctor();
    expect(report.binary).toMatchObject({ workers: 'prebuilt', decision: { choice: 'native' } });
    expect(report.checks.find((c) => c.id === 'native-build')).toMatchObject({
      status: 'warn',
      fix: expect.stringContaining('`rbee doctor --fix`') as string,
    });
  }, 180_000);
});
