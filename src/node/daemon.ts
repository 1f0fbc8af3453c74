/**
 * `rbee node`: one hive on this machine, serving the HTTP API until it is asked to stop.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { arch, platform } from 'node:os';
import {
  defaultThreads,
  describeBackends,
  detectDevices,
  diagnoseEngine,
  estimateWorkerMemory,
  physicalCores,
  spawnWorker,
} from '../engine/index.js';
import type { DeviceInfo } from '../engine/types.js';
import { RbeeError, toRbeeError } from '../shared/errors.js';
import type { Health } from '../shared/wire.js';
import { createApi } from './api/server.js';
import type { NodeConfig } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { parseModelRef } from './hive/model-ref.js';
import { createProvisioner } from './hive/provisioner.js';
import { createMemoryChecker } from './hive/memory-checker.js';
import { createRestartPolicy } from './hive/restart-policy.js';
import { createMemoryObservations } from './store/memory-observations.js';
import { createWorkerCatalog } from './store/worker-catalog.js';
import { createApiKeyStore } from './store/api-keys.js';
import { createWorkerPool } from './hive/worker-pool.js';
import { createJobManager } from './jobs/job-manager.js';
import { createJobRunner } from './jobs/run-job.js';
import { createLiveView, type LiveView } from './live-view.js';
import type { ClusterLink } from './cluster-link.js';
import type { ClusterStatus } from '../shared/view.js';
import { createMetrics, type Metrics } from './metrics.js';
import { openDatabase } from './store/db.js';
import { createModelCatalog } from './store/model-catalog.js';
import { VERSION } from '../shared/version.js';
import { doctorReport } from './doctor.js';
import { freeDiskBytes } from './hive/disk-space.js';

export interface RunningNode {
  url: string;
  log: Logger;
  /** Stops jobs and workers, closes the API and the database. Idempotent. */
  close(reason: string): Promise<void>;
  /** Resolves once the node has fully stopped, whoever asked. */
  readonly closed: Promise<void>;
}

export interface PidFile {
  pid: number;
  host: string;
  port: number;
  url: string;
  startedAt: number;
}

export function readPidFile(path: string): PidFile | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as PidFile;
  } catch {
    return undefined;
  }
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
const WORKER_STOP_TIMEOUT_MS = 5_000;

export async function startNode(
  config: NodeConfig,
  options: { foreground?: boolean } = {},
): Promise<RunningNode> {
  mkdirSync(config.paths.models, { recursive: true });
  const log = createLogger({
    file: config.paths.nodeLog,
    level: config.logLevel,
    stderr: options.foreground ?? false,
  });
  const startedAt = Date.now();
  let state: Health['state'] = 'starting';

  const db = openDatabase(config.paths.db);
  const catalog = createModelCatalog(db);
  const workerCatalog = createWorkerCatalog(db);
  // The live view and the metrics watch the pool and the jobs, which are created first and
  // report their changes through these late-bound observers.
  const observers: { live?: LiveView; metrics?: Metrics; cluster?: ClusterLink } = {};
  // The pool logs its own narration; this forwards it to dashboards.
  const narrateHive = (text: string): void => {
    observers.live?.narration({
      type: 'narration',
      source: 'hive',
      node: config.nodeName,
      text,
      ts: Date.now(),
      jobId: '-',
    });
  };
  const baseProvisioner = createProvisioner({ catalog, modelsDir: config.paths.models });
  const provisioner: typeof baseProvisioner = {
    ...baseProvisioner,
    ensure: (ref, opts = {}) => {
      const started = Date.now();
      let lastBytes = 0;
      let fetched = false;
      return baseProvisioner
        .ensure(ref, {
          ...opts,
          onProgress: (p) => {
            opts.onProgress?.(p);
            if (p.phase === 'downloading') {
              fetched = true;
              // A resumed or retried download may report fewer bytes than before: count only growth.
              observers.metrics?.downloadBytes(Math.max(0, p.bytes - lastBytes));
              lastBytes = Math.max(lastBytes, p.bytes);
            }
            observers.live?.markDirty('downloads');
          },
        })
        .then(
          (result) => {
            if (fetched) observers.metrics?.downloadDone('done', (Date.now() - started) / 1000);
            return result;
          },
          (error: unknown) => {
            if (fetched) observers.metrics?.downloadDone('failed', (Date.now() - started) / 1000);
            throw error;
          },
        )
        .finally(() => {
          observers.live?.markDirty('downloads');
          observers.live?.markDirty('models');
        });
    },
  };
  const workers = createWorkerPool({
    spawn: spawnWorker,
    log,
    logsDir: config.paths.logs,
    threads: config.threads,
    slots: config.slots,
    contextSize: config.contextSize,
    keepAliveS: config.keepAliveS,
    memory: createMemoryChecker({
      estimate: (path, shape) => estimateWorkerMemory(path, shape),
      observations: createMemoryObservations(db),
      reserveBytes: config.minFreeRamBytes,
    }),
    restartPolicy: createRestartPolicy({
      failures: config.restart.failures,
      windowMs: config.restart.windowS * 1000,
      cooldownMs: config.restart.cooldownS * 1000,
      baseDelayMs: config.restart.baseDelayMs,
    }),
    heartbeatTimeoutMs: config.heartbeatTimeoutMs,
    stopTimeoutMs: WORKER_STOP_TIMEOUT_MS,
    onNarration: narrateHive,
    onChange: () => observers.live?.markDirty('workers'),
    onWorkerEvent: (kind) => observers.metrics?.workerEvent(kind),
  });
  const jobs = createJobManager({
    run: createJobRunner({ nodeName: config.nodeName, parseModelRef, provisioner, workers }),
    onChange: () => observers.live?.markDirty('jobs'),
    onEvent: (event) => {
      observers.metrics?.observeJobEvent(event);
      if (event.type === 'narration') observers.live?.narration(event);
    },
  });
  let devices: DeviceInfo | undefined;
  const health = (): Health => ({
    state,
    uptimeS: Math.round((Date.now() - startedAt) / 1000),
    version: VERSION,
    node: config.nodeName,
    pid: process.pid,
  });
  const liveView = createLiveView({
    nodeName: config.nodeName,
    health,
    devices: () => devices,
    workers,
    catalog,
    provisioner,
    jobs,
    cluster: () => observers.cluster,
    onLocalChange: () => observers.cluster?.localChanged(),
  });
  const metrics = createMetrics({ workers, catalog, provisioner, modelsDir: config.paths.models });
  observers.live = liveView;
  observers.metrics = metrics;

  let clusterState: ClusterStatus['state'] = config.cluster.enabled ? 'starting' : 'disabled';
  let clusterError: ClusterStatus['error'];
  const clusterStatus = (): ClusterStatus => {
    const hives = liveView.hives();
    if (observers.cluster !== undefined) return { ...observers.cluster.status(), hives };
    return {
      enabled: config.cluster.enabled,
      state: clusterState,
      self: { id: config.nodeName, name: config.nodeName },
      // a hive alone is its own queen
      queen: clusterState === 'disabled' ? { id: config.nodeName, name: config.nodeName, term: 0 } : null,
      isQueen: clusterState === 'disabled',
      term: 0,
      mdns: config.cluster.enabled && config.cluster.mdns,
      listen: [],
      staticPeers: config.cluster.peers,
      members: [],
      hives,
      duplicates: [],
      ...(clusterError === undefined ? {} : { error: clusterError }),
    };
  };

  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => (resolveClosed = resolve));
  let closing: Promise<void> | undefined;
  let clusterStarting: Promise<void> = Promise.resolve();

  const apiKeys = createApiKeyStore(db);
  const api = createApi({
    log,
    health,
    jobs,
    catalog,
    workers,
    provisioner,
    parseModelRef,
    live: liveView,
    metrics,
    backends: () => workerCatalog.list(),
    keys: apiKeys,
    auth: config.auth,
    doctor: async () => {
      const [engine, found, free] = await Promise.all([
        diagnoseEngine().catch((error: unknown) => ({ error: toRbeeError(error).message })),
        detectDevices(),
        freeDiskBytes(config.paths.models),
      ]);
      return doctorReport({
        nodeName: config.nodeName,
        nodeVersion: process.versions.node,
        platform: platform(),
        arch: arch(),
        engine,
        configuredThreads: config.threads,
        physicalCores: physicalCores(),
        defaultThreads: defaultThreads(),
        devices: found,
        backends: describeBackends(found),
        modelsDir: config.paths.models,
        freeDiskBytes: free,
      });
    },
    cluster: clusterStatus,
    onShutdown: () => void close('asked over the API'),
    stopRemoteWorker: async (id) => {
      if (observers.cluster === undefined) throw new RbeeError('NOT_FOUND', `no worker ${id}`);
      return observers.cluster.stopRemoteWorker(id);
    },
    shutdownCluster: async () => {
      if (observers.cluster === undefined) {
        throw new RbeeError('NO_QUEEN', `this node is not in a cluster (${clusterState}); stop it alone`);
      }
      return observers.cluster.shutdownCluster();
    },
  });

  /** libp2p loads after the API is up; a failure leaves this hive running alone, and says why. */
  async function joinCluster(): Promise<void> {
    try {
      const { startClusterLink } = await import('./cluster-link.js');
      const link = await startClusterLink({
        config: config.cluster,
        paths: config.paths,
        db,
        log,
        nodeName: config.nodeName,
        localState: () => liveView.localState(),
        onViewChange: () => {
          for (const section of ['hives', 'workers', 'models', 'downloads'] as const) {
            liveView.markDirty(section, 'cluster');
          }
        },
        narrate: narrateHive,
        onShutdown: (reason) => void close(reason),
        stopWorker: (id, reason) => workers.stop(id, reason),
      });
      if (closing !== undefined) {
        await link.stop();
        return;
      }
      observers.cluster = link;
      clusterState = 'running';
      liveView.markDirty('hives');
    } catch (error) {
      const rbee = toRbeeError(error);
      clusterState = 'failed';
      clusterError = rbee.toJSON();
      log.error({ err: error }, 'cannot join the cluster; this hive runs alone');
      narrateHive(`cannot join the cluster (${rbee.message}); this hive runs alone`);
    }
  }

  async function close(reason: string): Promise<void> {
    closing ??= (async () => {
      log.info({ reason }, 'node stopping');
      state = 'degraded';
      const leaving = clusterStarting.then(() => observers.cluster?.stop());
      await Promise.allSettled([jobs.close(), workers.stopAll(), leaving]);
      liveView.close();
      await api.close().catch((error: unknown) => log.warn({ err: error }, 'closing the API failed'));
      db.close();
      const pid = readPidFile(config.paths.pidFile);
      if (pid?.pid === process.pid) rmSync(config.paths.pidFile, { force: true });
      log.info('node stopped');
      log.flush();
      resolveClosed();
    })();
    return closing;
  }

  try {
    const reconciled = await provisioner.reconcile();
    if (
      reconciled.removedPartials.length + reconciled.removedRows.length + reconciled.keptPartials.length >
      0
    ) {
      log.info(
        reconciled,
        `reconciled the catalog with the disk; ${reconciled.keptPartials.length} interrupted download(s) can resume`,
      );
    }
    await api.listen({ host: config.host, port: config.port });
  } catch (error) {
    await api.close().catch(() => undefined);
    db.close();
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new RbeeError(
        'PORT_IN_USE',
        `port ${config.port} on ${config.host} is already in use (another rbee node? try \`rbee node status\`); ` +
          'choose another with --port or RBEE_PORT',
        { cause: error },
      );
    }
    throw error;
  }
  const address = api.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  const host = isIP(config.host) === 6 ? `[${config.host}]` : config.host;
  const url = `http://${host}:${port}`;
  const pidFile: PidFile = { pid: process.pid, host: config.host, port, url, startedAt };
  writeFileSync(config.paths.pidFile, JSON.stringify(pidFile));
  state = 'ready';
  if (!LOOPBACK.has(config.host)) {
    // Reachable from the LAN: every client there needs an API key (src/node/api/auth.ts).
    log.warn(
      { host: config.host, keys: apiKeys.count() },
      apiKeys.count() === 0
        ? `listening on ${config.host}: clients on other machines need an API key, and none exists yet (rbee keys create)`
        : `listening on ${config.host}: clients on other machines need an API key`,
    );
  }
  // GPU probing can take seconds: the API is up meanwhile and the hive view fills in when done.
  detectDevices()
    .then((found) => {
      devices = found;
      if (state === 'ready') workerCatalog.record(describeBackends(found));
      liveView.markDirty('hives');
      log.info({ devices: found }, 'devices detected');
    })
    .catch((error: unknown) => log.warn({ err: error }, 'device detection failed'));
  if (config.cluster.enabled) clusterStarting = joinCluster();
  log.info({ url, node: config.nodeName, pid: process.pid }, 'node ready');
  return { url, log, close, closed };
}
