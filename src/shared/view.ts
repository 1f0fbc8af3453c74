/**
 * The live view of a node (and, once clustered, of the whole cluster) that the dashboard renders.
 * `GET /v1/events` sends one `snapshot`, then an event each time a section changes; each section
 * event carries the whole section (they are small), so a client never has to merge deltas.
 */
import { z } from 'zod';
import { prefixKeySchema } from './prefix.js';
import { errorJsonSchema, healthSchema, jobEventSchema } from './wire.js';

export const gpuViewSchema = z.object({
  index: z.number().int(),
  name: z.string(),
  backend: z.string(),
  vramTotalBytes: z.number(),
  vramFreeBytes: z.number(),
});

export const hiveViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  /** True for the node this client is connected to. */
  local: z.boolean(),
  queen: z.boolean(),
  term: z.number().int(),
  health: z.enum(['ready', 'degraded', 'unreachable']),
  cpu: z.object({ model: z.string(), physicalCores: z.number().int(), logicalCores: z.number().int() }),
  ramTotalBytes: z.number(),
  ramFreeBytes: z.number(),
  /** The 1-minute load average (runnable processes; compare with the cores). */
  loadAverage: z.number().optional(),
  gpus: z.array(gpuViewSchema),
  backends: z.array(z.string()),
  /** RAM the hive keeps free for everything else (its `minFreeRamBytes`). */
  reserveBytes: z.number().optional(),
  /** Slots each of its workers starts with. */
  slotsPerWorker: z.number().int().optional(),
  /** The native llama.cpp build there, while one is due, runs, or last ended (hive/idle-build.ts). */
  engineBuild: z
    .object({
      /**
       * `pending`: it builds at the node's first idle moment; `building` (compiling) and
       * `measuring` (against the prebuilt binary) while it runs; then how it last ended.
       */
      state: z.enum(['pending', 'building', 'measuring', 'done', 'failed', 'cancelled']),
      /** `idle`: the node started it at an idle moment; `doctor`: `rbee doctor --fix`. */
      trigger: z.enum(['idle', 'doctor']),
      /** One line for a person: the step, or how it ended and what happens next. */
      text: z.string().max(2000),
      /** The compilation's share done, 0–100, while the compiler says. */
      percent: z.number().min(0).max(100).optional(),
      startedAt: z.number().optional(),
      /** When it is tried again after a failure or a cancel. */
      retryAt: z.number().optional(),
    })
    .optional(),
  lastSeen: z.number(),
});
export type HiveView = z.infer<typeof hiveViewSchema>;
export type EngineBuildView = NonNullable<HiveView['engineBuild']>;

export const workerViewSchema = z.object({
  id: z.string(),
  hive: z.string(),
  pid: z.number().int(),
  model: z.string(),
  backend: z.string(),
  device: z.number().int(),
  state: z.enum(['loading', 'idle', 'busy', 'stopping', 'exited', 'unhealthy']),
  slots: z.number().int(),
  slotsBusy: z.number().int(),
  tokensPerSecond: z.number(),
  memoryBytes: z.number(),
  startedAt: z.number(),
  lastUsedAt: z.number(),
  /** Seconds it stays loaded once idle; -1: until stopped (absent from hives of older versions). */
  keepAliveS: z.number().optional(),
  /** Tokens of context each slot has (absent from hives of older versions). */
  contextSize: z.number().int().optional(),
  /** What its slots keep in their KV caches (shared/prefix.ts): where a prompt's start is cached. */
  prefixes: z.array(prefixKeySchema).max(64).optional(),
  /**
   * The llama.cpp binary it runs and why: `native` (built on its hive for that CPU), `prebuilt`
   * (from npm), `localBuild` (another build made there). Absent from hives of older versions.
   */
  binary: z
    .object({
      kind: z.enum(['native', 'prebuilt', 'localBuild']),
      label: z.string().max(200),
      why: z.string().max(2000),
    })
    .optional(),
  /** Whether its context uses flash attention (absent from hives of older versions). */
  flashAttention: z.boolean().optional(),
});
export type WorkerView = z.infer<typeof workerViewSchema>;

/** `GET /v1/cluster/workers`: every worker of the cluster, each with its hive's name. */
export const clusterWorkersSchema = z.object({
  workers: z.array(workerViewSchema.extend({ hiveName: z.string(), local: z.boolean() })),
});
export type ClusterWorker = z.infer<typeof clusterWorkersSchema>['workers'][number];

export const modelViewSchema = z.object({
  id: z.string(),
  hive: z.string(),
  name: z.string(),
  ref: z.string(),
  bytes: z.number(),
  quantization: z.string(),
  architecture: z.string(),
  contextLength: z.number().int(),
  source: z.string(),
  lastUsedAt: z.number().nullable(),
  /** When the model came onto its hive's disk (absent from hives of older versions). */
  addedAt: z.number().optional(),
  /**
   * sha256 of the model's file, when its hive knows it (downloads and demo models; not a user's own
   * file): what other hives fetch it by over the LAN. Absent from hives of older versions.
   */
  sha256: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .nullable()
    .optional(),
});
export type ModelView = z.infer<typeof modelViewSchema>;

/**
 * `GET /v1/cluster/models` (`rbee models ls --cluster`): every model file of the cluster, once per
 * content (its sha256; a model whose hive does not know it is an entry of its own), with the live
 * hives that hold it.
 */
export const clusterModelsSchema = z.object({
  models: z.array(
    z.object({
      /** The catalog id. */
      id: z.string(),
      /** The short name (`tiny:q8_0`). */
      name: z.string(),
      /** The ref it was fetched by (absent for a user's own file). */
      ref: z.string().optional(),
      sha256: z.string().nullable(),
      bytes: z.number(),
      quantization: z.string(),
      hives: z.array(z.object({ id: z.string(), name: z.string() })),
    }),
  ),
});
export type ClusterModels = z.infer<typeof clusterModelsSchema>;

export const downloadViewSchema = z.object({
  ref: z.string(),
  hive: z.string(),
  file: z.string().optional(),
  phase: z.string(),
  bytes: z.number(),
  totalBytes: z.number().optional(),
  bytesPerSecond: z.number().optional(),
  etaSeconds: z.number().optional(),
  /** Where the bytes come from when not the model's own source: `hive beta over the LAN`. */
  from: z.string().optional(),
});
export type DownloadView = z.infer<typeof downloadViewSchema>;

export const jobViewSchema = z.object({
  id: z.string(),
  model: z.string(),
  state: z.enum(['running', 'done', 'failed', 'cancelled']),
  acceptedAt: z.number(),
  finishedAt: z.number().optional(),
  timeToFirstTokenMs: z.number().optional(),
  tokensPerSecond: z.number().optional(),
  completionTokens: z.number().optional(),
  error: z.string().optional(),
});
export type JobView = z.infer<typeof jobViewSchema>;

/** Jobs of one model waiting in the queen's queue. */
export const queueDepthSchema = z.object({
  model: z.string(),
  queued: z.number().int(),
  /** Of those, interactive jobs (they go first) and batch jobs (absent from queens of older versions). */
  interactive: z.number().int().optional(),
  batch: z.number().int().optional(),
  /** The wait of the last in line, from how long the model's jobs held their slots lately. */
  estimatedWaitS: z.number().optional(),
});
export type QueueDepthView = z.infer<typeof queueDepthSchema>;

/** Where a waiting job stands in the queen's queue, as its entry node was last told. */
export const queuePositionSchema = z.object({
  /** 1 = next. */
  position: z.number().int(),
  /** Jobs waiting in all (every model). */
  queued: z.number().int(),
  /** Until its turn, from how long its model's jobs held their slots lately. */
  estimatedWaitS: z.number().optional(),
});
export type QueuePositionView = z.infer<typeof queuePositionSchema>;

/** A row of the node's jobs table (`GET /v1/jobs/history`, `rbee jobs ls`): where a job ran and how it ended. */
export const jobRecordSchema = z.object({
  id: z.string(),
  model: z.string(),
  state: z.enum(['queued', 'placing', 'running', 'done', 'failed', 'cancelled']),
  hive: z.string().optional(),
  hiveName: z.string().optional(),
  worker: z.string().optional(),
  /** Why the queen placed it there. */
  reason: z.string().optional(),
  acceptedAt: z.number(),
  startedAt: z.number().optional(),
  firstTokenAt: z.number().optional(),
  finishedAt: z.number().optional(),
  completionTokens: z.number().optional(),
  errorCode: z.string().optional(),
  errorMessage: z.string().optional(),
  /** A queued job's place in the queen's queue, while its entry node knows it. */
  queuePosition: queuePositionSchema.optional(),
});
export type JobRecord = z.infer<typeof jobRecordSchema>;

/** A job of the cluster (`GET /v1/cluster/jobs`, `rbee jobs ls`): a jobs-table row and the node that holds it. */
export const clusterJobRecordSchema = jobRecordSchema.extend({
  /** The node the job entered through: it keeps the job's row, streams its tokens and cancels it. */
  entry: z.object({ id: z.string(), name: z.string() }),
});
export type ClusterJobRecord = z.infer<typeof clusterJobRecordSchema>;

/** A live member that did not answer for its jobs in time: they are missing from the list. */
export const unansweredNodeSchema = z.object({
  id: z.string(),
  name: z.string().optional(),
  error: errorJsonSchema,
});
export type UnansweredNode = z.infer<typeof unansweredNodeSchema>;

/**
 * `GET /v1/cluster/jobs`: every node's jobs, newest first, the nodes that did not answer, and the
 * queen's queue as the queen publishes it (per model; empty while nothing waits or no queen is known).
 */
export const clusterJobsSchema = z.object({
  jobs: z.array(clusterJobRecordSchema),
  unanswered: z.array(unansweredNodeSchema),
  /** Absent from nodes of older versions. */
  queue: z.array(queueDepthSchema).optional(),
});
export type ClusterJobs = z.infer<typeof clusterJobsSchema>;

/** `DELETE /v1/cluster/jobs/:id`: the job's entry node was asked to cancel it (`cancelling`) or it had ended. */
export const clusterJobCancelSchema = z.object({
  id: z.string(),
  entry: z.object({ id: z.string(), name: z.string() }),
  /** False when the job had already ended (its state says how). */
  cancelling: z.boolean(),
  state: jobRecordSchema.shape.state,
});
export type ClusterJobCancel = z.infer<typeof clusterJobCancelSchema>;

/** Time to first token and generation speed of a jobs-table row, once it has them. */
export function jobRecordTimings(row: JobRecord): { timeToFirstTokenMs?: number; tokensPerSecond?: number } {
  const ttft = row.firstTokenAt === undefined ? undefined : row.firstTokenAt - row.acceptedAt;
  const span =
    row.firstTokenAt === undefined || row.finishedAt === undefined ? 0 : row.finishedAt - row.firstTokenAt;
  // measured from the first token to the last, as the engine measures it: the first token opens it
  const speed =
    row.completionTokens !== undefined && row.completionTokens > 1 && span > 0
      ? ((row.completionTokens - 1) * 1000) / span
      : undefined;
  return {
    ...(ttft === undefined ? {} : { timeToFirstTokenMs: ttft }),
    ...(speed === undefined ? {} : { tokensPerSecond: speed }),
  };
}
/** One device of a hive in `rbee place`: its free memory, and whether the model fits there. */
export const placeDeviceSchema = z.object({
  backend: z.string(),
  /** GPU index; -1 for the CPU. */
  index: z.number().int(),
  /** "GPU0 (cuda)", "the CPU". */
  name: z.string(),
  /** Free for a model: VRAM, or RAM less what the hive keeps in reserve. */
  freeBytes: z.number(),
  fits: z.boolean(),
  /** False for a GPU of a backend the hive is set not to use. */
  allowed: z.boolean(),
  /** The device the scheduler picks on this hive. */
  chosen: z.boolean(),
});

/** A figure expected from what was observed: a warm worker's recent rate, or past jobs' median. */
export const placeExpectedSchema = z.object({
  value: z.number(),
  basis: z.enum(['worker', 'jobs']),
  /** How many past jobs the median is of (basis `jobs`). */
  jobs: z.number().int().optional(),
});

/** One hive's row of the scheduler's table (`rbee place`, `GET /v1/place`). */
export const placeOptionSchema = z.object({
  hive: z.string(),
  name: z.string(),
  kind: z.enum(['warm', 'on-disk', 'provision', 'wait', 'no-room', 'unavailable']),
  why: z.string(),
  worker: z.string().optional(),
  /** Where it would run: the chosen device, or the warm worker's. */
  device: z.object({ backend: z.string(), index: z.number().int() }).optional(),
  /** What the model needs there: a worker's observed memory, or the estimate from the model's size. */
  needed: z.object({ bytes: z.number(), basis: z.enum(['estimated', 'observed']) }).optional(),
  /** Free on the chosen device (or the most free anywhere on the hive, when none has room). */
  freeBytes: z.number().optional(),
  devices: z.array(placeDeviceSchema),
  expected: z.object({
    tokensPerSecond: placeExpectedSchema.optional(),
    timeToFirstTokenMs: placeExpectedSchema.optional(),
  }),
});
export type PlaceOption = z.infer<typeof placeOptionSchema>;

/** Where a job for a model would run, and every hive's option, without loading anything. */
export const placePreviewSchema = z.object({
  /** The model's catalog id (the same on every hive). */
  model: z.string(),
  /** What was asked for. */
  ref: z.string(),
  /** The node that computed the table, from every member's published state. */
  node: z.string(),
  placement: z
    .object({
      hive: z.string(),
      name: z.string(),
      kind: z.enum(['warm', 'on-disk', 'provision', 'wait']),
      reason: z.string(),
    })
    .nullable(),
  options: z.array(placeOptionSchema),
});
export type PlacePreview = z.infer<typeof placePreviewSchema>;

export const clusterViewSchema = z.object({
  health: healthSchema,
  hives: z.array(hiveViewSchema),
  workers: z.array(workerViewSchema),
  models: z.array(modelViewSchema),
  downloads: z.array(downloadViewSchema),
  jobs: z.array(jobViewSchema),
});
export type ClusterView = z.infer<typeof clusterViewSchema>;

/**
 * What each node publishes to the cluster about its own hive; every node turns the members' states
 * into the hives, workers, models and downloads of its live view. Validated on receipt: a peer's
 * state that does not parse is left out of the view, never trusted.
 */
export const hiveStateSchema = z.object({
  hive: hiveViewSchema.omit({ id: true, local: true, queen: true, term: true, lastSeen: true }),
  workers: z.array(workerViewSchema),
  models: z.array(modelViewSchema),
  downloads: z.array(downloadViewSchema),
  /** Published by the queen only: its queue, per model. */
  queue: z.array(queueDepthSchema).optional(),
});
export type HiveState = z.infer<typeof hiveStateSchema>;

export const memberViewSchema = z.object({
  id: z.string(),
  /** The member's node name, once its state arrived. */
  name: z.string().optional(),
  addrs: z.array(z.string()),
  live: z.boolean(),
  lastSeen: z.number(),
});

/** `GET /v1/cluster`: who is in the cluster, who is queen, and how this node finds the others. */
export const clusterStatusSchema = z.object({
  /** False when this node runs alone (RBEE_CLUSTER=0). */
  enabled: z.boolean(),
  /** 'starting' until the p2p host listens; 'failed' when it could not start (see error). */
  state: z.enum(['starting', 'running', 'failed', 'disabled']),
  self: z.object({ id: z.string(), name: z.string() }),
  queen: z.object({ id: z.string(), name: z.string().optional(), term: z.number().int() }).nullable(),
  isQueen: z.boolean(),
  term: z.number().int(),
  mdns: z.boolean(),
  listen: z.array(z.string()),
  staticPeers: z.array(z.string()),
  members: z.array(memberViewSchema),
  hives: z.array(hiveViewSchema),
  /** Peer ids that another live process also answers for (a copied data directory). */
  duplicates: z.array(z.string()),
  error: errorJsonSchema.optional(),
});
export type ClusterStatus = z.infer<typeof clusterStatusSchema>;

const narrationSchema = jobEventSchema.options[0];

export const nodeEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('snapshot'), view: clusterViewSchema }),
  z.object({ type: z.literal('hives'), hives: z.array(hiveViewSchema) }),
  z.object({ type: z.literal('workers'), workers: z.array(workerViewSchema) }),
  z.object({ type: z.literal('models'), models: z.array(modelViewSchema) }),
  z.object({ type: z.literal('downloads'), downloads: z.array(downloadViewSchema) }),
  z.object({ type: z.literal('jobs'), jobs: z.array(jobViewSchema) }),
  narrationSchema,
]);
export type NodeEvent = z.infer<typeof nodeEventSchema>;

/**
 * `rbee --json`: one line, what the dashboard shows — the node's health, every hive (with its
 * devices: CPU, RAM, GPUs), workers, models, downloads, jobs, and the queen. `rbee --json --watch`
 * writes this line first, then one line per change: a section update (`hives`, `workers`, `models`,
 * `downloads`, `jobs`; each carries its whole section, which replaces the one before) or a
 * `narration` line, each with `ts`.
 */
export const statusSnapshotSchema = clusterViewSchema.extend({
  type: z.literal('snapshot'),
  ts: z.number(),
  /** The hive that places the cluster's jobs (this node while it runs alone); null while none is elected. */
  queen: z.object({ id: z.string(), name: z.string(), term: z.number().int() }).nullable(),
});
export type StatusSnapshot = z.infer<typeof statusSnapshotSchema>;

/** The stream that `POST /v1/models/pull` answers with. */
export const pullEventSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('progress'),
    phase: z.string(),
    bytes: z.number(),
    totalBytes: z.number().optional(),
    bytesPerSecond: z.number().optional(),
    etaSeconds: z.number().optional(),
    file: z.string().optional(),
    message: z.string().optional(),
    /** Where the bytes come from when not the model's own source: `hive beta over the LAN`. */
    from: z.string().optional(),
  }),
  z.object({
    type: z.literal('done'),
    cached: z.boolean(),
    model: z.looseObject({ id: z.string(), path: z.string(), bytes: z.number(), name: z.string() }),
  }),
  z.object({ type: z.literal('error'), error: errorJsonSchema }),
]);
export type PullEvent = z.infer<typeof pullEventSchema>;

/** `GET /v1/doctor`: what `rbee doctor` checks on a node, each check with a fix when it has one. */
export const doctorCheckSchema = z.object({
  id: z.string(),
  /** ok: fine; hint: fine, but something could be better; warn: likely to hurt; fail: broken. */
  status: z.enum(['ok', 'hint', 'warn', 'fail']),
  summary: z.string(),
  fix: z.string().optional(),
});
export type DoctorCheck = z.infer<typeof doctorCheckSchema>;

export const doctorReportSchema = z.object({
  node: z.object({ name: z.string(), version: z.string(), nodeVersion: z.string(), platform: z.string() }),
  engine: z.union([
    z.object({
      binary: z.enum(['prebuilt', 'localBuild']),
      llamaCpp: z.object({ repo: z.string(), release: z.string() }),
      systemInfo: z.string(),
      cpuFeatures: z.array(z.string()),
    }),
    z.object({ error: z.string() }),
  ]),
  /**
   * Which llama.cpp binary CPU workers load (`native`: built here for this CPU, chosen by `rbee
   * doctor --fix` because it measured faster; else `prebuilt`), the native build if there is one,
   * and the decision with its figures. Absent from nodes of older versions.
   */
  binary: z
    .object({
      workers: z.enum(['native', 'prebuilt']),
      why: z.string(),
      nativeBuild: z.object({ folder: z.string(), release: z.string(), builtAt: z.number() }).optional(),
      decision: z
        .looseObject({
          choice: z.enum(['native', 'prebuilt']),
          why: z.string(),
          decidedAt: z.number(),
          measurements: z.array(
            z.looseObject({
              preset: z.string(),
              tokens: z.number(),
              threads: z.number(),
              ratio: z.number(),
              nativeTokS: z.array(z.number()),
              prebuiltTokS: z.array(z.number()),
            }),
          ),
        })
        .optional(),
    })
    .optional(),
  threads: z.object({ configured: z.number().optional(), effective: z.number(), physicalCores: z.number() }),
  checks: z.array(doctorCheckSchema),
});
export type DoctorReport = z.infer<typeof doctorReportSchema>;

/** `POST /v1/doctor/fix`'s events: progress lines, then the report after the fix, or its error. */
export const doctorFixEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('progress'), text: z.string() }),
  z.object({ type: z.literal('done'), report: doctorReportSchema }),
  z.object({ type: z.literal('error'), error: errorJsonSchema }),
]);
export type DoctorFixEvent = z.infer<typeof doctorFixEventSchema>;

/** `DELETE /v1/doctor/fix`: whether a native build was running here and is now cancelled. */
export const doctorFixCancelSchema = z.object({
  cancelled: z.boolean(),
  /** Who had started the build that was cancelled. */
  trigger: z.enum(['idle', 'doctor']).optional(),
  /** What happens next, for a person. */
  text: z.string(),
});
export type DoctorFixCancel = z.infer<typeof doctorFixCancelSchema>;
