/**
 * `rbee node`: one hive on this machine, serving the HTTP API until it is asked to stop.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { describeBackends, detectDevices, estimateWorkerMemory, spawnWorker } from '../engine/index.js';
import type { DeviceInfo } from '../engine/types.js';
import { createDisposeChain } from '../shared/dispose.js';
import { RbeeError, toRbeeError } from '../shared/errors.js';
import { VERSION } from '../shared/version.js';
import type { ClusterStatus, JobRecord, QueueDepthView } from '../shared/view.js';
import type { Health, NarrationEvent } from '../shared/wire.js';
import { createApi } from './api/index.js';
import { aloneStatus, type ClusterLink } from './cluster/index.js';
import type { NodeConfig } from './config.js';
import {
  allowedBackends,
  bestDevice,
  createLocalHive,
  createMemoryChecker,
  createRestartPolicy,
  createCpuBinaryChooser,
  createEngineBuilds,
  createWorkerPool,
  diagnoseNode,
  type EngineBuilds,
} from './hive/index.js';
import {
  createClusterJobs,
  createJobManager,
  createPlacePreview,
  createRouter,
  type LocalJobs,
} from './jobs/index.js';
import { createPlacementQueue, type HiveCandidate, type QueuePosition } from './queen/index.js';
import { createLogger, type Logger } from './logger.js';
import { createModelResolver, createProvisioner, modelId, observeProvisioner } from './models/index.js';
import {
  createApiKeyStore,
  createJobStore,
  createMemoryObservations,
  createModelAliases,
  createModelCatalog,
  createModelPieces,
  createWorkerCatalog,
  openDatabase,
} from './store/index.js';
import { createLiveView, createMetrics, type LiveView, type Metrics } from './view/index.js';

export interface RunningNode {
  url: string;
  log: Logger;
  /** Stops jobs and workers, closes the API and the database. Idempotent. */
  close(reason: string): Promise<void>;
  /** Resolves once the node has fully stopped, whoever asked. */
  readonly closed: Promise<void>;
  /**
   * Answers one HTTP request in process, through every hook and route but without a socket: how
   * tests act as a client on another machine (`remoteAddress`) or send thousands of requests (the
   * fuzzer) without a packet.
   */
  inject(request: InjectOptions): Promise<LightMyRequestResponse>;
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
/** Rows of the jobs table kept (the newest); older ones are pruned. */
const JOBS_KEPT = 10_000;

export async function startNode(
  config: NodeConfig,
  options: { foreground?: boolean } = {},
): Promise<RunningNode> {
  mkdirSync(config.paths.models, { recursive: true });
  const logger = createLogger({
    file: config.paths.nodeLog,
    level: config.logLevel,
    stderr: options.foreground ?? false,
  });
  const { log } = logger;
  const startedAt = Date.now();
  let state: Health['state'] = 'starting';
  let acceptedSincePrune = 0;
  let devices: DeviceInfo | undefined;
  // Every part registers its teardown as it is created; close() runs them in reverse.
  const teardown = createDisposeChain((name, error) => log.warn({ err: error }, `closing ${name} failed`));
  teardown.add('the log rotation', () => logger.close());

  const db = openDatabase(config.paths.db);
  teardown.add('the database', () => db.close());
  const catalog = createModelCatalog(db);
  const aliases = createModelAliases(db);
  const workerCatalog = createWorkerCatalog(db);
  /** The llama.cpp binary CPU workers load now (the prebuilt one, or the native build doctor --fix chose). */
  const cpuBinary = createCpuBinaryChooser(config.paths.binaryDecision);
  const apiKeys = createApiKeyStore(db);
  const jobStore = createJobStore(db, {
    onWriteError: (error) => log.warn({ err: error }, 'a record of the jobs table could not be written'),
  });
  // after every job has ended (teardowns run in reverse), before the database closes
  teardown.add('the jobs table', () => jobStore.flush());
  const unfinished = jobStore.failUnfinished(
    { code: 'NODE_RESTARTED', message: 'the node stopped before the job finished' },
    Date.now(),
  );
  if (unfinished > 0)
    log.warn({ jobs: unfinished }, 'jobs left unfinished by the last run are marked failed');
  jobStore.prune(JOBS_KEPT);
  // The live view, the metrics and the cluster link watch parts created before them, which report
  // to them through these late-bound observers.
  const observers: { live?: LiveView; metrics?: Metrics; cluster?: ClusterLink; builds?: EngineBuilds } = {};
  // Refs, and names of models: aliases, then this node's catalog, then the other hives' models.
  const parseModelRef = createModelResolver({
    alias: (name) => aliases.get(name)?.ref,
    local: () => catalog.list(),
    remote: () => (observers.cluster?.remotes() ?? []).flatMap((r) => r.state.models),
  });
  const narrateHive = (text: string): void =>
    observers.live?.narration(narration('hive', config.nodeName, text));

  const provisioner = observeProvisioner(
    createProvisioner({
      catalog,
      modelsDir: config.paths.models,
      peers: () => observers.cluster?.peers,
      pieces: createModelPieces(db),
      ...testPieceBytes(),
    }),
    () => ({
      bytes: (delta) => observers.metrics?.downloadBytes(delta),
      finished: (outcome, seconds) => observers.metrics?.downloadDone(outcome, seconds),
      changed: (section) => {
        observers.live?.markDirty(section);
        observers.builds?.changed();
      },
    }),
  );
  const workers = createWorkerPool({
    spawn: spawnWorker,
    cpuBinary,
    log,
    logsDir: config.paths.logs,
    threads: config.threads,
    slots: config.slots,
    contextSize: config.contextSize,
    prefixReuse: config.prefixReuse,
    ...(config.flashAttention === undefined ? {} : { flashAttention: config.flashAttention }),
    keepAliveS: config.keepAliveS,
    memory: createMemoryChecker({
      estimate: (path, shape) => estimateWorkerMemory(path, shape),
      observations: createMemoryObservations(db),
      reserveBytes: config.minFreeRamBytes,
      vram: ({ backend, index }) => {
        const gpu = devices?.gpus.find((g) => g.backend === backend && g.index === index);
        return gpu?.vramFreeBytes === undefined || gpu.vramTotalBytes === undefined
          ? undefined
          : { freeBytes: gpu.vramFreeBytes, totalBytes: gpu.vramTotalBytes };
      },
    }),
    // a worker asked for without a device (a job the queen placed without one, `rbee workers spawn`)
    pickDevice: (model) => bestDevice(localHive.state(), model),
    restartPolicy: createRestartPolicy({
      failures: config.restart.failures,
      windowMs: config.restart.windowS * 1000,
      cooldownMs: config.restart.cooldownS * 1000,
      baseDelayMs: config.restart.baseDelayMs,
    }),
    heartbeatTimeoutMs: config.heartbeatTimeoutMs,
    stopTimeoutMs: WORKER_STOP_TIMEOUT_MS,
    onNarration: narrateHive,
    onChange: () => {
      observers.live?.markDirty('workers');
      observers.builds?.changed();
    },
    onWorkerEvent: (kind) => observers.metrics?.workerEvent(kind),
    // the worker catalog: each worker with the binary it runs and why
    onWorkerReady: (w) => {
      try {
        workerCatalog.workerReady({
          id: w.id,
          model: w.model,
          backend: w.backend,
          device: w.device,
          pid: w.pid,
          ...(w.binary === undefined ? {} : { binary: w.binary }),
          readyAt: Date.now(),
        });
      } catch (error) {
        log.warn({ err: error, worker: w.id }, 'could not record the worker in the catalog');
      }
    },
    onWorkerExit: (id) => {
      try {
        workerCatalog.workerExited(id);
      } catch (error) {
        log.warn({ err: error, worker: id }, 'could not record the worker exit in the catalog');
      }
    },
  });
  const health = (): Health => ({
    state,
    uptimeS: Math.round((Date.now() - startedAt) / 1000),
    version: VERSION,
    node: config.nodeName,
    pid: process.pid,
  });
  const localHive = createLocalHive({
    id: () => observers.cluster?.selfId() ?? config.nodeName,
    name: config.nodeName,
    health,
    devices: () => devices,
    backend: config.backend,
    parseModelRef,
    provisioner,
    catalog,
    workers,
    reserveBytes: config.minFreeRamBytes,
    slotsPerWorker: config.slots,
    engineBuild: () => observers.builds?.view(),
  });
  /** Every hive's published state: this one's and, once joined, the members'. */
  const hiveStates = (): HiveCandidate[] => [
    { id: localHive.id, state: localHive.state() },
    ...(observers.cluster?.remotes() ?? []),
  ];
  // this node's queue: its own jobs' while it runs alone, the cluster's while it is queen
  const queue = createPlacementQueue({
    name: config.nodeName,
    hives: hiveStates,
    maxQueued: config.maxQueued,
    onChange: () => {
      observers.live?.markDirty('jobs');
      // the queen publishes its queue with its hive's state
      observers.cluster?.localChanged();
    },
  });
  teardown.add('the placement queue', () =>
    queue.rejectAll(new RbeeError('NODE_SHUTTING_DOWN', 'the node is shutting down')),
  );
  /** Where each of this node's waiting jobs stands in the queen's queue, as the queen last told. */
  const queuePositions = new Map<string, QueuePosition>();
  const jobs = createJobManager({
    run: createRouter({
      local: localHive,
      cluster: () => observers.cluster,
      queue,
      hiveStates,
      parseModelRef,
      modelId,
      journal: jobStore,
      onQueuePosition: (id, position) => {
        if (position === undefined) queuePositions.delete(id);
        else queuePositions.set(id, position);
      },
    }),
    onChange: () => {
      observers.live?.markDirty('jobs');
      observers.builds?.changed();
    },
    onAccepted: (job) => {
      // the user's work has the CPU: a native build started at an idle moment stops for it
      observers.builds?.work('a job arrived');
      jobStore.accepted({
        id: job.id,
        model: job.request.model,
        acceptedAt: job.acceptedAt,
        owner: job.owner,
      });
      if (++acceptedSincePrune >= JOBS_KEPT / 10) {
        acceptedSincePrune = 0;
        jobStore.prune(JOBS_KEPT);
      }
    },
    onEvent: (event) => {
      if (event.type === 'done') {
        jobStore.finished(event.jobId, {
          state: 'done',
          at: event.ts,
          completionTokens: event.usage.completionTokens,
        });
      } else if (event.type === 'error') {
        jobStore.finished(event.jobId, {
          state: event.error.code === 'JOB_CANCELLED' ? 'cancelled' : 'failed',
          at: event.ts,
          error: event.error,
        });
      }
      observers.metrics?.observeJobEvent(event);
      if (event.type === 'narration') observers.live?.narration(event);
    },
  });
  // this node's jobs table, as other members and the cluster-wide routes ask about it
  const withPosition = <T extends JobRecord>(row: T): T => {
    const at = row.state === 'queued' ? queuePositions.get(row.id) : undefined;
    if (at === undefined) return row;
    const { position, queued, estimatedWaitS } = at;
    return {
      ...row,
      queuePosition: { position, queued, ...(estimatedWaitS === undefined ? {} : { estimatedWaitS }) },
    };
  };
  const localJobs: LocalJobs = {
    list: (options) => jobStore.list(options).map(withPosition),
    find: (prefix, options) => jobStore.find(prefix, options).map(withPosition),
    cancel: (id) => jobs.cancel(id),
  };
  /** The queen's queue: this node's own while it is queen (or alone), else what the queen publishes. */
  const queenQueue = (): QueueDepthView[] => {
    const link = observers.cluster;
    const queen = link?.queen();
    if (link === undefined || queen?.id === link.selfId()) return queue.depth();
    if (queen === null || queen === undefined) return [];
    return link.remotes().find((r) => r.id === queen.id)?.state.queue ?? [];
  };
  const clusterJobs = createClusterJobs({
    local: localJobs,
    self: () => ({ id: observers.cluster?.selfId() ?? config.nodeName, name: config.nodeName }),
    members: () => observers.cluster?.memberJobs,
    queue: () =>
      queenQueue().map(({ estimatedWaitS, ...depth }) =>
        estimatedWaitS === undefined ? depth : { ...depth, estimatedWaitS },
      ),
  });
  observers.builds = createEngineBuilds({
    mode: config.engineBuild,
    idleMs: config.engineBuildIdleS * 1000,
    decisionPath: config.paths.binaryDecision,
    engineDir: config.paths.engineDir,
    threads: config.threads,
    busy: () => {
      const { running } = jobs.retained();
      if (running > 0) return `${running} job${running === 1 ? '' : 's'} running or queued`;
      if (provisioner.inProgress().length > 0) return 'a model download';
      const worker = workers
        .list()
        .find((w) => w.activeJobs > 0 || w.state === 'loading' || w.state === 'busy');
      if (worker !== undefined)
        return `worker ${worker.id} ${worker.state === 'loading' ? 'loading' : 'generating'}`;
      return undefined;
    },
    narrate: (text) => {
      log.info({ source: 'hive' }, text);
      narrateHive(text);
    },
    onChange: () => observers.live?.markDirty('hives'),
    ...testBuildMs(),
  });
  const builds = observers.builds;
  const liveView = createLiveView({
    health,
    local: localHive,
    jobs,
    cluster: () => observers.cluster,
    onLocalChange: () => {
      observers.cluster?.localChanged();
      queue.changed();
    },
  });
  teardown.add('the live view', () => liveView.close());
  observers.live = liveView;
  observers.metrics = createMetrics({
    workers,
    catalog,
    provisioner,
    modelsDir: config.paths.models,
    p2pFrames: () => observers.cluster?.frameStats(),
    queue: () => queue.depth(),
  });

  let clusterState: Exclude<ClusterStatus['state'], 'running'> = config.cluster.enabled
    ? 'starting'
    : 'disabled';
  let clusterError: ClusterStatus['error'];
  const clusterStatus = (): ClusterStatus => {
    const hives = liveView.hives();
    if (observers.cluster !== undefined) return { ...observers.cluster.status(), hives };
    return aloneStatus({
      config: config.cluster,
      nodeName: config.nodeName,
      state: clusterState,
      error: clusterError,
      hives,
    });
  };

  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => (resolveClosed = resolve));
  let closing: Promise<void> | undefined;
  let clusterStarting: Promise<void> = Promise.resolve();

  const api = createApi({
    log,
    health,
    jobs,
    jobHistory: { list: (options) => jobStore.list(options).map(withPosition) },
    workerHistory: (limit) => workerCatalog.workers(limit),
    clusterJobs,
    catalog,
    workers,
    provisioner,
    parseModelRef,
    aliases,
    hiveStates: () => [localHive.state(), ...(observers.cluster?.remotes() ?? []).map((r) => r.state)],
    live: liveView,
    metrics: observers.metrics,
    // the CPU row says which binary its workers load now, and why (it changes with doctor --fix)
    backends: () =>
      workerCatalog.list().map((b) => (b.name === 'cpu' ? { ...b, workersLoad: cpuBinary() } : b)),
    keys: apiKeys,
    keysChanged: async () => {
      await clusterStarting;
      return observers.cluster?.keysChanged();
    },
    keyLimits: config.keyLimits,
    auth: config.auth,
    origin: {
      listenHost: config.host,
      allowedHosts: config.allowedHosts,
      allowedOrigins: config.allowedOrigins,
    },
    remoteModelRefs: config.remoteModelRefs,
    maxConnections: config.maxConnections,
    doctor: () =>
      diagnoseNode({
        nodeName: config.nodeName,
        configuredThreads: config.threads,
        modelsDir: config.paths.models,
        decisionPath: config.paths.binaryDecision,
        engineBuild: builds.view(),
      }),
    doctorFix: async (options) => {
      await builds.fix(options);
      return diagnoseNode({
        nodeName: config.nodeName,
        configuredThreads: config.threads,
        modelsDir: config.paths.models,
        decisionPath: config.paths.binaryDecision,
        engineBuild: builds.view(),
      });
    },
    doctorFixCancel: () => builds.cancel(),
    place: createPlacePreview({
      local: localHive,
      remotes: () => observers.cluster?.remotes() ?? [],
      catalog,
      parseModelRef,
      modelId,
      jobs: jobStore,
    }),
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
  teardown.add('the API', () => api.close());
  // Jobs end first (each cancelled and awaited), while workers drain and the node leaves the cluster.
  teardown.add('jobs, workers and the cluster link', () =>
    Promise.allSettled([
      jobs.close(),
      workers.stopAll(),
      clusterStarting.then(() => observers.cluster?.stop()),
    ]),
  );
  // First of all: a native build in progress (doctor --fix, or at an idle moment) is cancelled and
  // cleans up before the node goes.
  teardown.add('a native build in progress', () => builds.close());

  /** libp2p loads after the API is up; a failure leaves this hive running alone, and says why. */
  async function joinCluster(): Promise<void> {
    try {
      const { startClusterLink } = await import('./cluster/index.js');
      const link = await startClusterLink({
        config: config.cluster,
        paths: config.paths,
        db,
        log,
        nodeName: config.nodeName,
        local: localHive,
        queue,
        onViewChange: () => {
          for (const section of ['hives', 'workers', 'models', 'downloads'] as const) {
            liveView.markDirty(section, 'cluster');
          }
        },
        narrate: narrateHive,
        onShutdown: (reason) => void close(reason),
        stopWorker: (id, reason) => workers.stop(id, reason),
        keys: apiKeys,
        jobs: localJobs,
        readModel: (sha256, options) => provisioner.readModel(sha256, options),
        modelPieces: (sha256, options) => provisioner.modelPieces(sha256, options),
        maxModelReads: config.maxModelReads,
        ...(config.modelServeBytesPerSecond === undefined
          ? {}
          : { modelServeBytesPerSecond: config.modelServeBytesPerSecond }),
      });
      if (closing !== undefined) {
        await link.stop();
        return;
      }
      observers.cluster = link;
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
      await teardown.dispose();
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
      reconciled.removedPartials.length +
        reconciled.removedRows.length +
        reconciled.keptPartials.length +
        reconciled.removedFiles.length >
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
      if (config.backend !== 'auto' && config.backend !== 'cpu' && !found.backends.includes(config.backend)) {
        const allowed = allowedBackends(found.backends, config.backend).join(', ');
        log.warn({ backend: config.backend, found: found.backends }, 'the configured backend is not here');
        narrateHive(`backend is set to ${config.backend}, but this machine has none; workers use ${allowed}`);
      }
      if (state === 'ready') workerCatalog.record(describeBackends(found));
      liveView.markDirty('hives');
      log.info({ devices: found }, 'devices detected');
    })
    .catch((error: unknown) => log.warn({ err: error }, 'device detection failed'));
  if (config.cluster.enabled) clusterStarting = joinCluster();
  log.info({ url, node: config.nodeName, pid: process.pid }, 'node ready');
  return { url, log, close, closed, inject: (request) => api.inject(request) };
}

function narration(source: NarrationEvent['source'], node: string, text: string): NarrationEvent {
  return { type: 'narration', source, node, text, ts: Date.now(), jobId: '-' };
}

/**
 * Test hook: a fake native build of this many ms instead of compiling llama.cpp (and no
 * measurement; below 0, one that fails after -ms), so that tests of the idle build drive its real
 * paths in seconds, on mains or on battery alike (a laptop's test run must not wait for mains).
 * Never set outside tests.
 */
function testBuildMs(): { testBuildMs?: number; onBattery?: () => boolean } {
  const ms = Number(process.env.RBEE_TEST_ENGINE_BUILD_MS ?? 0);
  return Number.isInteger(ms) && ms !== 0 ? { testBuildMs: ms, onBattery: () => false } : {};
}

/**
 * Test hook: the piece size of this hive's piece lists, so that a test's small model spans several
 * pieces. Read from the node's environment; never set outside tests.
 */
function testPieceBytes(): { pieceBytes?: number } {
  const bytes = Number(process.env.RBEE_TEST_MODEL_PIECE_BYTES ?? 0);
  return Number.isInteger(bytes) && bytes > 0 ? { pieceBytes: bytes } : {};
}
