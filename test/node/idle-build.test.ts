/**
 * The native llama.cpp build at a node's first idle moment, on real nodes with the build itself
 * replaced by a short fake child process (RBEE_TEST_ENGINE_BUILD_MS: progress lines like a
 * compiler's, a folder it fills, the completion marker last) and a half-second idle threshold: the
 * node starts it when idle and shows it on its view, a job cancels it (the child killed, its
 * half-built folder removed) and runs, a decision on disk or the setting off means it never starts,
 * and a user cancels it or follows it with `doctor --fix`.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { getPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decide, writeBinaryDecision } from '../../src/engine/binary-choice.js';
import { bundledLlamaCppRelease } from '../../src/engine/native-build.js';
import { createNodeClient, type NodeClient } from '../../src/node/client/index.js';
import { loadNodeConfig, type NodeConfig } from '../../src/node/config.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';
import type { EngineBuildView } from '../../src/shared/view.js';
import type { JobEvent } from '../../src/shared/wire.js';
import { TEST_NODE_ENV } from '../helpers/test-node.js';
import { isAlive } from '../helpers/processes.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';

const RELEASE = bundledLlamaCppRelease() ?? 'unknown';
let saved: string | undefined;
beforeAll(async () => {
  await tinyModelPath();
  saved = process.env.RBEE_TEST_ENGINE_BUILD_MS;
});
afterAll(() => {
  if (saved === undefined) delete process.env.RBEE_TEST_ENGINE_BUILD_MS;
  else process.env.RBEE_TEST_ENGINE_BUILD_MS = saved;
});

interface IdleNode {
  node: RunningNode;
  home: string;
  config: NodeConfig;
  client: NodeClient;
  /** The fake build's folder while it builds. */
  buildFolder: string;
}
let running: { node: RunningNode; home: string } | undefined;
afterEach(async () => {
  if (running === undefined) return;
  await running.node.close('test done');
  rmSync(running.home, { recursive: true, force: true });
  running = undefined;
});

/** A node with the idle build on, a half-second threshold and a fake build of `buildMs`. */
async function idleNode(
  buildMs: number,
  options: { env?: NodeJS.ProcessEnv; before?: (config: NodeConfig) => void } = {},
): Promise<IdleNode> {
  process.env.RBEE_TEST_ENGINE_BUILD_MS = String(buildMs);
  const home = mkdtempSync(join(tmpdir(), 'rbee-idle-build-'));
  const config = loadNodeConfig(
    { dataDir: home, port: 0, logLevel: 'info', mdns: false },
    { ...TEST_NODE_ENV, RBEE_ENGINE_BUILD: 'idle', RBEE_ENGINE_BUILD_IDLE_S: '0.5', ...options.env },
  );
  options.before?.(config);
  const node = await startNode(config);
  running = { node, home };
  return {
    node,
    home,
    config,
    client: createNodeClient({ url: node.url }),
    buildFolder: join(config.paths.engineDir, 'test-builds', 'test-native-build'),
  };
}

/** The local hive's native build as the cluster view shows it. */
async function buildView(client: NodeClient): Promise<EngineBuildView | undefined> {
  const status = await client.cluster();
  return status.hives.find((h) => h.local)?.engineBuild;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function runJob(client: NodeClient): Promise<JobEvent[]> {
  const { id } = await client.submitJob({ model: 'demo', prompt: 'Hello', maxTokens: 8, temperature: 0 });
  const events: JobEvent[] = [];
  for await (const event of client.jobEvents(id)) events.push(event);
  return events;
}

describe('the native build at an idle moment', () => {
  it('starts once the node is idle, shows its phase and progress on the view, and keeps its decision', async () => {
    const { client, config } = await idleNode(2_000);
    const building = await waitFor(
      async () => {
        const view = await buildView(client);
        return view?.state === 'building' && view.percent !== undefined ? view : undefined;
      },
      { what: 'the idle build to compile', timeoutMs: 20_000, intervalMs: 100 },
    );
    expect(building).toMatchObject({
      trigger: 'idle',
      text: expect.stringMatching(/compiling llama.cpp/) as unknown,
    });
    const done = await waitFor(
      async () => {
        const view = await buildView(client);
        return view?.state === 'done' ? view : undefined;
      },
      { what: 'the idle build to end', timeoutMs: 30_000, intervalMs: 200 },
    );
    expect(done.text).toMatch(/CPU workers keep the prebuilt binary/);
    const decision = JSON.parse(readFileSync(config.paths.binaryDecision, 'utf8')) as {
      build: { release: string };
    };
    expect(decision.build.release).toBe(RELEASE);
    // narrated in the node's log
    await waitFor(
      () =>
        existsSync(config.paths.nodeLog) &&
        readFileSync(config.paths.nodeLog, 'utf8').includes('building llama.cpp for this CPU'),
      { what: 'the narration in the log' },
    );
    // once decided, never again: still done after several idle thresholds
    await sleep(2_000);
    expect((await buildView(client))?.state).toBe('done');
  }, 90_000);

  it('is cancelled by a job arriving, which runs, and starts again at the next idle moment', async () => {
    const { client, buildFolder } = await idleNode(60_000);
    await waitFor(
      async () => (await buildView(client))?.state === 'building' && existsSync(join(buildFolder, 'pid')),
      { what: 'the idle build to start', timeoutMs: 20_000, intervalMs: 100 },
    );
    const pid = Number(readFileSync(join(buildFolder, 'pid'), 'utf8'));
    expect(isAlive(pid)).toBe(true);
    // niced: the machine's other work goes first
    expect(getPriority(pid)).toBe(19);
    const job = runJob(client);
    const cancelled = await waitFor(
      async () => {
        const view = await buildView(client);
        return view?.state === 'cancelled' ? view : undefined;
      },
      { what: 'the job to cancel the idle build', timeoutMs: 20_000, intervalMs: 50 },
    );
    expect(cancelled.text).toMatch(/cancelled \(a job arrived\); it builds again at the next idle moment/);
    expect(isAlive(pid)).toBe(false);
    expect(existsSync(buildFolder)).toBe(false);
    const events = await job;
    expect(events.at(-1)).toMatchObject({ type: 'done', usage: { completionTokens: 8 } });
    // idle again (the worker stays loaded, doing nothing): it builds again
    await waitFor(async () => (await buildView(client))?.state === 'building', {
      what: 'the idle build to start again',
      timeoutMs: 30_000,
      intervalMs: 100,
    });
  }, 180_000);

  it('never starts when a decision exists for the bundled release, and starts for an older one', async () => {
    const measured = [
      { preset: 'tiny', tokens: 512, threads: 1, nativeTokS: [100], prebuiltTokS: [100], ratio: 1 },
    ];
    const decided = await idleNode(1_000, {
      before: (config) =>
        writeBinaryDecision(
          config.paths.binaryDecision,
          decide({ folder: 'linux-x64-measured', release: RELEASE, builtAt: 1 }, measured),
        ),
    });
    await sleep(2_500);
    expect(await buildView(decided.client)).toBeUndefined();
    expect(existsSync(decided.buildFolder)).toBe(false);
    // the next node of this test replaces it: stopped, and its data directory removed, here
    await decided.node.close('next');
    rmSync(decided.home, { recursive: true, force: true });
    running = undefined;

    const older = await idleNode(60_000, {
      before: (config) =>
        writeBinaryDecision(
          config.paths.binaryDecision,
          decide({ folder: 'linux-x64-older', release: 'b0001-older', builtAt: 1 }, measured),
        ),
    });
    await waitFor(async () => (await buildView(older.client))?.state === 'building', {
      what: 'the idle build for the new release',
      timeoutMs: 20_000,
      intervalMs: 100,
    });
  }, 60_000);

  it('keeps a failure, removes what it left, and does not try again at the next idle moments', async () => {
    const { client, config, buildFolder } = await idleNode(-500);
    const failed = await waitFor(
      async () => {
        const view = await buildView(client);
        return view?.state === 'failed' ? view : undefined;
      },
      { what: 'the idle build to fail', timeoutMs: 20_000, intervalMs: 100 },
    );
    expect(failed.text).toMatch(
      /failed: the native llama.cpp build failed .*ran out of memory.*tried again at an idle moment after/s,
    );
    expect(failed.retryAt).toBeGreaterThan(Date.now() + 60 * 60 * 1000);
    expect(existsSync(buildFolder)).toBe(false);
    expect(existsSync(config.paths.binaryDecision)).toBe(false);
    await sleep(2_500);
    expect((await buildView(client))?.state).toBe('failed');
    expect(existsSync(buildFolder)).toBe(false);
  }, 30_000);

  it('never starts with engineBuild off', async () => {
    const { client, buildFolder } = await idleNode(1_000, { env: { RBEE_ENGINE_BUILD: 'off' } });
    await sleep(2_500);
    expect(await buildView(client)).toBeUndefined();
    expect(existsSync(buildFolder)).toBe(false);
  }, 30_000);

  it('is cancelled by the user (doctor --fix --cancel), kept, and not started again at once', async () => {
    const { client, config, buildFolder } = await idleNode(60_000);
    await waitFor(
      async () => (await buildView(client))?.state === 'building' && existsSync(join(buildFolder, 'pid')),
      { what: 'the idle build to start', timeoutMs: 20_000, intervalMs: 100 },
    );
    const pid = Number(readFileSync(join(buildFolder, 'pid'), 'utf8'));
    const answer = await client.doctorFixCancel();
    expect(answer).toMatchObject({ cancelled: true, trigger: 'idle' });
    expect(answer.text).toMatch(/tries again at an idle moment after/);
    expect(isAlive(pid)).toBe(false);
    expect(existsSync(buildFolder)).toBe(false);
    const view = await buildView(client);
    expect(view).toMatchObject({ state: 'cancelled', trigger: 'idle' });
    expect(view?.retryAt).toBeGreaterThan(Date.now() + 60 * 60 * 1000);
    await sleep(2_500);
    expect((await buildView(client))?.state).toBe('cancelled');
    expect(existsSync(buildFolder)).toBe(false);
    expect(await client.doctorFixCancel()).toMatchObject({ cancelled: false });
    expect(existsSync(join(config.paths.engineDir, 'idle-build.json'))).toBe(true);
  }, 60_000);

  it('doctor --fix follows the idle build running, which a job then no longer cancels', async () => {
    const { client } = await idleNode(15_000);
    await waitFor(async () => (await buildView(client))?.state === 'building', {
      what: 'the idle build to start',
      timeoutMs: 20_000,
      intervalMs: 100,
    });
    const progress: string[] = [];
    const fixed = client.doctorFix({ onProgress: (text) => progress.push(text) });
    await waitFor(() => progress.length > 0, { what: 'doctor --fix to follow the build' });
    expect(progress[0]).toMatch(/following the build this node started at an idle moment/);
    expect((await buildView(client))?.trigger).toBe('doctor');
    const events = await runJob(client);
    expect(events.at(-1)).toMatchObject({ type: 'done' });
    const report = await fixed;
    expect(report.binary?.decision?.choice).toBe('prebuilt');
    expect(progress.some((text) => /compiling llama.cpp: \d+%/.test(text))).toBe(true);
    expect((await buildView(client))?.state).toBe('done');
  }, 120_000);
});
