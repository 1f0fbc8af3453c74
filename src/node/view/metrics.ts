/**
 * Prometheus metrics on one registry per node (never prom-client's global one). Gauges are read
 * from their sources at scrape time; counters and histograms are fed by job events.
 */
import { statfsSync } from 'node:fs';
import { freemem, totalmem } from 'node:os';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { JobEvent } from '../../shared/wire.js';
import type { Provisioner } from '../models/index.js';
import type { WorkerEventKind, WorkerPool } from '../hive/index.js';
import type { ModelCatalog } from '../store/index.js';

export interface MetricsInit {
  workers: WorkerPool;
  catalog: ModelCatalog;
  provisioner: Provisioner;
  modelsDir: string;
  /** The p2p host's frame counters, once the node is in a cluster. */
  p2pFrames?: () => P2pFrameCounts | undefined;
  /** This node's placement queue, per model (jobs wait in it on the queen, or on a node alone). */
  queue?: () => { model: string; queued: number; estimatedWaitS?: number | undefined }[];
}

export interface P2pFrameCounts {
  framesIn: number;
  framesOut: number;
  malformed: number;
  unknown: number;
  oversized: number;
}

export interface Metrics {
  registry: Registry;
  /** Feed every job event here. */
  observeJobEvent(event: JobEvent): void;
  observeRequest(route: string, method: string, status: number): void;
  /** Worker lifecycle events: crashes, restarts, breaker openings, graceful and forced stops. */
  workerEvent(kind: WorkerEventKind): void;
  /** Bytes that arrived for a download since its previous progress report. */
  downloadBytes(bytes: number): void;
  /** A finished fetch (download or generation) and how long it took. */
  downloadDone(outcome: 'done' | 'failed', seconds: number): void;
  connectionOpened(): void;
  connectionClosed(): void;
  /** A connection past the cap, answered 503 and closed. */
  connectionRefused(): void;
  /** An event-stream client dropped because too many bytes waited for it. */
  sseDropped(route: string): void;
}

const WORKER_STATES = ['loading', 'idle', 'busy', 'unhealthy', 'stopping'] as const;
/** Inter-token gaps kept for the histogram before it is next scraped. */
const MAX_PENDING_GAPS = 4096;
const DEFAULT_TOTAL_GAUGES = [
  'rbee_nodejs_active_handles_total',
  'rbee_nodejs_active_requests_total',
  'rbee_nodejs_active_resources_total',
];

export function createMetrics(init: MetricsInit): Metrics {
  const registry = new Registry();
  // prom-client names its defaults `process_*` and `nodejs_*` already: the prefix only adds `rbee_`.
  // The event-loop lag histogram samples with a libuv timer: at prom-client's default 10 ms that
  // timer woke an idle node 100 times a second (~11 ms of CPU a second on a 2-core VM); 100 ms
  // keeps the lag figures and lets an idle node sleep.
  collectDefaultMetrics({ register: registry, prefix: 'rbee_', eventLoopMonitoringPrecision: 100 });
  // Gauges named `*_total` read as counters to Prometheus (promtool refuses them), and each is
  // the sum over `type` of its unsuffixed twin, which stays.
  for (const name of DEFAULT_TOTAL_GAUGES) registry.removeSingleMetric(name);

  new Gauge({
    name: 'rbee_workers',
    help: 'Workers on this hive by state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const counts = new Map<string, number>(WORKER_STATES.map((s) => [s, 0]));
      for (const w of init.workers.list()) counts.set(w.state, (counts.get(w.state) ?? 0) + 1);
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'rbee_worker_slots',
    help: 'Worker slots on this hive, busy or total',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      const list = init.workers.list();
      this.set(
        { kind: 'total' },
        list.reduce((n, w) => n + w.slots, 0),
      );
      this.set(
        { kind: 'busy' },
        list.reduce((n, w) => n + w.slotsBusy, 0),
      );
    },
  });
  new Gauge({
    name: 'rbee_queue_jobs',
    help: "Jobs waiting in this node's placement queue (the queen's holds the cluster's), by model",
    labelNames: ['model'],
    registers: [registry],
    collect() {
      this.reset();
      for (const q of init.queue?.() ?? []) this.set({ model: q.model }, q.queued);
    },
  });
  new Gauge({
    name: 'rbee_queue_wait_seconds',
    help: 'Estimated wait of the last job in the placement queue, by model (absent before any job ended)',
    labelNames: ['model'],
    registers: [registry],
    collect() {
      this.reset();
      for (const q of init.queue?.() ?? []) {
        if (q.estimatedWaitS !== undefined) this.set({ model: q.model }, q.estimatedWaitS);
      }
    },
  });
  new Gauge({
    name: 'rbee_worker_memory_bytes',
    help: 'Resident memory of all workers on this hive',
    registers: [registry],
    collect() {
      this.set(init.workers.list().reduce((n, w) => n + w.memoryBytes, 0));
    },
  });
  new Gauge({
    name: 'rbee_models_on_disk',
    help: 'Models in the catalog',
    registers: [registry],
    collect() {
      this.set(init.catalog.list().length);
    },
  });
  new Gauge({
    name: 'rbee_models_bytes',
    help: 'Bytes of model files in the catalog',
    registers: [registry],
    collect() {
      this.set(init.catalog.list().reduce((n, m) => n + m.bytes, 0));
    },
  });
  new Gauge({
    name: 'rbee_downloads_active',
    help: 'Model downloads under way',
    registers: [registry],
    collect() {
      this.set(init.provisioner.inProgress().length);
    },
  });
  new Gauge({
    name: 'rbee_memory_free_bytes',
    help: 'Free RAM on this machine',
    registers: [registry],
    collect() {
      this.set(freemem());
    },
  });
  new Gauge({
    name: 'rbee_memory_total_bytes',
    help: 'Total RAM on this machine',
    registers: [registry],
    collect() {
      this.set(totalmem());
    },
  });
  new Gauge({
    name: 'rbee_disk_free_bytes',
    help: 'Free space on the disk that holds the models directory',
    registers: [registry],
    collect() {
      try {
        const fs = statfsSync(init.modelsDir);
        this.set(fs.bavail * fs.bsize);
      } catch {
        // the directory is gone: leave the last value
      }
    },
  });

  const jobs = new Counter({
    name: 'rbee_jobs_total',
    help: 'Jobs that ended, by outcome',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const tokens = new Counter({
    name: 'rbee_tokens_generated_total',
    help: 'Completion tokens generated',
    registers: [registry],
  });
  const promptTokens = new Counter({
    name: 'rbee_prompt_tokens_total',
    help: 'Prompt tokens evaluated',
    registers: [registry],
  });
  const ttft = new Histogram({
    name: 'rbee_time_to_first_token_seconds',
    help: 'From job acceptance to its first token (includes any download and load)',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  // Observed when scraped (or once many wait), not per token: a histogram observation cost ~15 µs
  // of the node's CPU per streamed token; a number pushed here costs next to nothing, and a
  // scrape sees every gap all the same.
  const pendingGaps: number[] = [];
  const flushGaps = (): void => {
    for (const gap of pendingGaps) interToken.observe(gap);
    pendingGaps.length = 0;
  };
  const interToken = new Histogram({
    name: 'rbee_inter_token_latency_seconds',
    help: 'Time between two streamed text chunks of one job',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [registry],
    collect: flushGaps,
  });
  const requests = new Counter({
    name: 'rbee_http_requests_total',
    help: 'HTTP requests answered, by route and status class',
    labelNames: ['route', 'method', 'status'],
    registers: [registry],
  });
  const workerEvents = new Counter({
    name: 'rbee_worker_events_total',
    help: 'Worker lifecycle events: crash, restart, breaker_open, unhealthy, graceful_stop, force_kill',
    labelNames: ['kind'],
    registers: [registry],
  });

  const downloadedBytes = new Counter({
    name: 'rbee_download_bytes_total',
    help: 'Model bytes downloaded',
    registers: [registry],
  });
  const downloadSeconds = new Counter({
    name: 'rbee_download_seconds_total',
    help: 'Time spent making models usable (download, verification), by outcome',
    labelNames: ['outcome'],
    registers: [registry],
  });

  const connections = new Gauge({
    name: 'rbee_http_connections',
    help: 'HTTP connections being served',
    registers: [registry],
  });
  const refused = new Counter({
    name: 'rbee_http_connections_refused_total',
    help: 'HTTP connections refused because the node served its maximum already',
    registers: [registry],
  });
  const sseDropped = new Counter({
    name: 'rbee_sse_clients_dropped_total',
    help: 'Event-stream clients dropped because too many bytes waited for them, by route',
    labelNames: ['route'],
    registers: [registry],
  });

  // The host counts frames itself; each scrape adds what it counted since the previous one.
  const seen: P2pFrameCounts = { framesIn: 0, framesOut: 0, malformed: 0, unknown: 0, oversized: 0 };
  const sinceSeen = (now: P2pFrameCounts, key: keyof P2pFrameCounts): number => {
    const delta = now[key] - seen[key];
    seen[key] = now[key];
    return Math.max(0, delta);
  };
  new Counter({
    name: 'rbee_p2p_frames_total',
    help: 'Cluster protocol frames read and written, by direction',
    labelNames: ['direction'],
    registers: [registry],
    collect() {
      const now = init.p2pFrames?.();
      if (now === undefined) return;
      this.inc({ direction: 'in' }, sinceSeen(now, 'framesIn'));
      this.inc({ direction: 'out' }, sinceSeen(now, 'framesOut'));
    },
  });
  new Counter({
    name: 'rbee_p2p_frames_refused_total',
    help: 'Cluster protocol frames refused: malformed, unknown (kind, method or stream) or oversized',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      const now = init.p2pFrames?.();
      if (now === undefined) return;
      for (const reason of ['malformed', 'unknown', 'oversized'] as const)
        this.inc({ reason }, sinceSeen(now, reason));
    },
  });

  const lastTokenAt = new Map<string, number>();

  return {
    registry,
    observeJobEvent(event) {
      switch (event.type) {
        case 'token': {
          const last = lastTokenAt.get(event.jobId);
          if (last !== undefined && pendingGaps.push((event.ts - last) / 1000) >= MAX_PENDING_GAPS)
            flushGaps();
          lastTokenAt.set(event.jobId, event.ts);
          return;
        }
        case 'done':
          lastTokenAt.delete(event.jobId);
          jobs.inc({ outcome: 'done' });
          tokens.inc(event.usage.completionTokens);
          promptTokens.inc(event.usage.promptTokens);
          // an embedding or ranking job has no first token
          if (event.embeddings === undefined && event.scores === undefined) {
            ttft.observe(event.timings.timeToFirstTokenMs / 1000);
          }
          return;
        case 'error':
          lastTokenAt.delete(event.jobId);
          jobs.inc({ outcome: event.error.code === 'JOB_CANCELLED' ? 'cancelled' : 'failed' });
          return;
        case 'narration':
          return;
      }
    },
    observeRequest(route, method, status) {
      requests.inc({ route, method, status: `${Math.floor(status / 100)}xx` });
    },
    workerEvent(kind) {
      workerEvents.inc({ kind });
    },
    downloadBytes(bytes) {
      if (bytes > 0) downloadedBytes.inc(bytes);
    },
    downloadDone(outcome, seconds) {
      downloadSeconds.inc({ outcome }, seconds);
    },
    connectionOpened: () => connections.inc(),
    connectionClosed: () => connections.dec(),
    connectionRefused: () => refused.inc(),
    sseDropped: (route) => sseDropped.inc({ route }),
  };
}
