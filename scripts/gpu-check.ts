/**
 * Proof on a machine with an NVIDIA GPU that rbee runs workers there: `npx tsx scripts/gpu-check.ts`
 * (after `npm install`, which brings node-llama-cpp's prebuilt CUDA binary). Two steps, each
 * printed as one JSON line, exit code 0 only when both pass:
 *
 *   1. engine: a worker process on the tiny generated model with backend cuda, device 0, ready and
 *      generating (its WorkerInfo says cuda);
 *   2. node: a real node (temporary data directory, mDNS off, loopback) that detected the GPU places
 *      a demo job on it: the narration says "starting a worker on GPU0 (cuda)" and /v1/workers lists
 *      the worker with backend cuda.
 *
 * Env: RBEE_GPU_CHECK_BACKEND (default cuda; vulkan works too), RBEE_GPU_CHECK_DEVICE (default 0).
 */
import '../src/shared/polyfill.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectDevices, generateTestModel, spawnWorker, type Backend } from '../src/engine/index.js';
import { createNodeClient } from '../src/node/client/index.js';
import { loadNodeConfig } from '../src/node/config.js';
import { startNode } from '../src/node/daemon.js';

const backend = (process.env.RBEE_GPU_CHECK_BACKEND ?? 'cuda') as Exclude<Backend, 'cpu'>;
const index = Number(process.env.RBEE_GPU_CHECK_DEVICE ?? 0);
const home = mkdtempSync(join(tmpdir(), 'rbee-gpu-check-'));
const report = (step: string, ok: boolean, details: Record<string, unknown>): void =>
  console.log(JSON.stringify({ step, ok, ...details }));

let failed = false;
try {
  const devices = await detectDevices();
  report('devices', devices.backends.includes(backend), {
    backends: devices.backends,
    gpus: devices.gpus,
    ...(devices.gpuProbeError === undefined ? {} : { error: devices.gpuProbeError }),
  });

  // 1. the engine alone
  const modelPath = join(home, 'tiny.gguf');
  await generateTestModel({ path: modelPath, preset: 'tiny', seed: 1 });
  const worker = await spawnWorker({ modelPath, backend, device: index, logFile: join(home, 'worker.log') });
  let text = '';
  for await (const chunk of worker.generate({ prompt: 'Hello', maxTokens: 8, temperature: 0 })) {
    if (chunk.type === 'token') text += chunk.text;
  }
  await worker.stop();
  const engineOk = worker.info.backend === backend && text.length > 0;
  failed ||= !engineOk;
  report('engine', engineOk, {
    backend: worker.info.backend,
    device: worker.info.device,
    loadMs: Math.round(worker.info.loadMs),
    text,
  });

  // 2. a real node: the scheduler's device, through the hive, to the worker
  const config = loadNodeConfig(
    { dataDir: join(home, 'node'), port: 0, logLevel: 'warn', mdns: false },
    { RBEE_MDNS: '0', RBEE_CLUSTER: '0' },
  );
  const node = await startNode(config);
  try {
    const client = createNodeClient({ url: node.url });
    // devices are probed after the API is up: wait until the hive publishes the GPU
    const deadline = Date.now() + 60_000;
    while ((await client.cluster()).hives[0]?.gpus.length === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    const { id } = await client.submitJob({ model: 'demo', prompt: 'Hello', maxTokens: 8, temperature: 0 });
    const narration: string[] = [];
    let done = false;
    for await (const event of client.jobEvents(id)) {
      if (event.type === 'narration') narration.push(`[${event.source}] ${event.text}`);
      if (event.type === 'done') done = true;
      if (event.type === 'error') narration.push(`error ${event.error.code}: ${event.error.message}`);
    }
    const workers = await client.workers();
    const nodeOk =
      done &&
      narration.some((line) => line.includes(`starting a worker on GPU${index} (${backend})`)) &&
      workers.some((w) => w.backend === backend);
    failed ||= !nodeOk;
    report('node', nodeOk, { workers, narration });
  } finally {
    await node.close('gpu check done');
  }
} catch (error) {
  failed = true;
  report('error', false, { error: error instanceof Error ? error.message : String(error) });
} finally {
  rmSync(home, { recursive: true, force: true });
}
process.exitCode = failed ? 1 : 0;
