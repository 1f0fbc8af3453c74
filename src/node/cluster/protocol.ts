/**
 * Every method and stream that nodes of one cluster speak to each other on top of the p2p layer's
 * rpc and stream protocols: one place to read what crosses the wire between nodes, and its schemas.
 */
import { z } from 'zod';
import { defineMethod, defineStream } from '../../p2p/index.js';
import { jobRecordSchema } from '../../shared/view.js';
import { jobEventSchema, jobRequestSchema, promptSizeFields, tokenLogprobSchema } from '../../shared/wire.js';
import { MAX_KEYS, MAX_MODEL_PIECES, MAX_TOMBSTONES } from '../store/index.js';
import { MAX_TOKENS_PER_FRAME } from './token-relay.js';

/** Node → the hive that runs a worker: stop it (what `rbee workers stop` and the dashboard send). */
export const hiveStopWorker = defineMethod(
  'hive.stopWorker',
  z.object({ id: z.string().min(1).max(128) }),
  z.object({ forced: z.boolean() }),
);

/** Queen → hive: stop. Carries the queen's term; hives refuse older terms (fencing). */
export const hiveShutdown = defineMethod(
  'hive.shutdown',
  z.object({ term: z.number().int().min(0), reason: z.string().max(200) }),
  z.object({ stopping: z.literal(true) }),
);
/** Any node → queen: stop the whole cluster (the caller stops itself). */
export const queenShutdown = defineMethod(
  'queen.shutdown',
  z.object({}),
  z.object({ queen: z.string(), term: z.number().int(), hives: z.array(z.string()) }),
);

export interface ClusterShutdown {
  queen: string;
  term: number;
  /** Peer ids of the hives that stop besides the node that asked (the queen among them). */
  hives: string[];
}

/** What a hive emits while it runs a job: narration, tokens, then `done` (failures are error frames). */
const hiveJobEventSchema = z.discriminatedUnion('type', [
  jobEventSchema.options[0].omit({ ts: true, jobId: true }),
  jobEventSchema.options[1]
    .omit({ ts: true, jobId: true })
    .extend({ tokens: z.array(z.number().int().min(0)).max(4096) }),
  jobEventSchema.options[2].omit({ ts: true, jobId: true }),
  /** Tokens generated within one relay interval, in order (see token-relay.ts). */
  z.object({
    type: z.literal('tokens'),
    tokens: z
      .array(
        z.object({
          text: z.string(),
          tokens: z.array(z.number().int().min(0)).max(4096),
          logprobs: z.array(tokenLogprobSchema).optional(),
          ...promptSizeFields,
        }),
      )
      .min(1)
      .max(MAX_TOKENS_PER_FRAME),
  }),
]);

/**
 * Entry node → the hive the queen picked: run this job and stream its events back, with
 * back-pressure. Closing or resetting the stream cancels the job there and frees its slot.
 */
export const hiveRun = defineStream('hive.run', {
  params: z.object({
    job: z.object({
      id: z.string().min(1).max(128),
      request: jobRequestSchema,
      /** The device the queen chose there; absent, the hive picks its own. */
      device: z.object({ backend: z.string().max(32), index: z.number().int() }).optional(),
    }),
    /** The entry node reads `tokens` frames; a hive sends them only then (older nodes read none). */
    tokenRuns: z.boolean().optional(),
  }),
  up: z.never(),
  down: hiveJobEventSchema,
});

const deviceSchema = z.object({
  backend: z.string().max(32),
  index: z.number().int(),
  freeBytes: z.number(),
});

const placementSchema = z.object({
  hive: z.string(),
  name: z.string(),
  kind: z.enum(['warm', 'on-disk', 'provision', 'wait']),
  worker: z.string().optional(),
  device: deviceSchema.optional(),
  evicts: z.array(z.string()).max(64).optional(),
  reason: z.string(),
  /** The queen's node name, for the narration's provenance. */
  queen: z.string(),
});

/**
 * Entry node → queen: where should this job run? The queen answers with its scheduler's placement
 * at once, or first with the job's position in its queue (again each time it changes). The stream
 * stays open while the job runs: the queen counts the job's slot as taken until it closes.
 */
export const queenPlace = defineStream('queen.place', {
  params: z.object({
    job: z.string().min(1).max(128),
    modelId: z.string().min(1).max(256),
    entry: z.string().min(1).max(128),
    provisionable: z.enum(['any', 'entry']),
    pin: z.string().min(1).max(256).optional(),
    exclude: z.array(z.string().max(128)).max(16).optional(),
    affinity: z
      .array(z.object({ worker: z.string().max(128), tokens: z.number().int().min(0) }))
      .max(16)
      .optional(),
    priority: z.enum(['interactive', 'batch']),
    acceptedAt: z.number(),
    contextSize: z.number().int().positive().optional(),
  }),
  up: z.never(),
  down: z.discriminatedUnion('type', [
    z.object({
      type: z.literal('queued'),
      position: z.number().int().min(1),
      queued: z.number().int().min(1),
      estimatedWaitS: z.number().optional(),
    }),
    z.object({ type: z.literal('placed'), placement: placementSchema }),
  ]),
});

/** One API key as the cluster holds it: its sha256, never the key. */
const keyRecordSchema = z.object({
  id: z.string().min(1).max(32),
  name: z.string().max(100),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: z.number().int().min(0),
  maxConcurrent: z.number().int().positive().optional(),
  rpm: z.number().int().positive().optional(),
  /** A revoked key's tombstone: revocations win every merge. */
  revokedAt: z.number().int().min(0).optional(),
});
const keyRecordsSchema = z.array(keyRecordSchema).max(MAX_KEYS + MAX_TOMBSTONES);

/**
 * Queen → every hive: the cluster's API key set, version `version` of the queen of `term`. Taken
 * only from the queen the hive follows, for exactly that term (fenced like `hive.shutdown`); the
 * hive merges it into its own set and answers the digest it holds then.
 */
export const hiveKeys = defineMethod(
  'hive.keys',
  z.object({ term: z.number().int().min(0), version: z.number().int().min(0), records: keyRecordsSchema }),
  z.object({ digest: z.string() }),
);

/**
 * Any node → queen: the digest of its key set and, when it may hold keys or revocations the queen
 * lacks (made here, or made while it had no queen), its records. The queen merges them (pushing a
 * new version to every hive when that changed anything) and answers its set when the digests differ.
 */
export const queenKeys = defineMethod(
  'queen.keys',
  z.object({
    version: z.number().int().min(0),
    digest: z.string().max(128),
    records: keyRecordsSchema.optional(),
  }),
  z.object({
    term: z.number().int().min(0),
    version: z.number().int().min(0),
    digest: z.string(),
    /**
     * Hives that took a new version for this call (the queen, the asking node, and those that took
     * its push); 0 when the call changed nothing.
     */
    hives: z.number().int().min(0),
    records: keyRecordsSchema.optional(),
  }),
);

/** Rows a member sends for one `node.jobs` call: a frame holds at most 1 MiB. */
export const NODE_JOBS_MAX = 1000;

/**
 * Any node → another member: the jobs that entered through you (your jobs table), newest first, or
 * those whose id starts with `prefix`. `viewer` is the asking client, a key (`key:ID`, the same on
 * every node): only its jobs; absent, the asking node's own user, who sees every job.
 */
export const nodeJobs = defineMethod(
  'node.jobs',
  z.object({
    limit: z.number().int().min(1).max(NODE_JOBS_MAX),
    prefix: z.string().min(1).max(128).optional(),
    viewer: z.string().min(1).max(300).optional(),
  }),
  z.object({
    jobs: z.array(jobRecordSchema).max(NODE_JOBS_MAX),
    /** Fewer rows than asked for, to fit the frame. */
    truncated: z.boolean().optional(),
  }),
);

/** Any node → a job's entry node: cancel it, as `DELETE /v1/jobs/:id` there would. */
export const nodeCancelJob = defineMethod(
  'node.cancelJob',
  z.object({ id: z.string().min(1).max(128), viewer: z.string().min(1).max(300).optional() }),
  z.object({ cancelling: z.boolean(), state: jobRecordSchema.shape.state }),
);

/**
 * Any hive → a hive whose catalog holds a model: stream the bytes of the model file with this
 * sha256, from `offset` (to its end, or `length` bytes), as bytes frames; the stream ends cleanly
 * only after the last one. Only files of the catalog are served, by their sha256; a model removed
 * meanwhile ends the stream with an error. Each hive serves a bounded number at once (the others
 * wait their turn).
 */
export const modelRead = defineStream('model.read', {
  params: z.object({
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    offset: z.number().int().min(0),
    length: z.number().int().positive().optional(),
  }),
  up: z.never(),
  down: z.custom<Uint8Array>((value) => value instanceof Uint8Array, 'bytes of a model'),
});

/**
 * Any hive → a hive whose catalog holds a model: the sha256 of each fixed-size piece of the file with
 * this sha256, computed in the pass that checked the whole file against that sha256 (a file that
 * fails it is refused with CHECKSUM_MISMATCH), and how many `model.read` streams it serves now. A
 * hive fetching from several holders checks every piece against it as it arrives.
 */
export const modelPieces = defineMethod(
  'model.pieces',
  z.object({ sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
  z.object({
    pieceBytes: z.number().int().positive(),
    hashes: z.array(z.string().regex(/^[0-9a-f]{64}$/)).max(MAX_MODEL_PIECES),
    serving: z.number().int().min(0),
  }),
);
