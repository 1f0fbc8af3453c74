/**
 * The node's HTTP API. Every error leaves in OpenAI's shape, `{error: {message, type, param, code}}`
 * with rbee's stable code as `code` (error-body.ts), and the code's HTTP status.
 */
import { requestError, sendErrorBody } from './error-body.js';
import Fastify from 'fastify';
import { z } from 'zod';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import {
  jobRequestSchema,
  MAX_CONTEXT_SIZE,
  MIN_CONTEXT_SIZE,
  type Health,
  type WorkerRecord,
} from '../../shared/wire.js';
import type { ClusterJobsApi, JobManager, PlacePreviewer } from '../jobs/index.js';
import type { Logger } from '../logger.js';
import type { ApiKeyStore, JobStore, KeyLimits, ModelAliases, ModelCatalog } from '../store/index.js';
import type { KeyReplication } from '../cluster/index.js';
import type { WorkerPool } from '../hive/index.js';
import { canonicalRef, checkAliasName, type ModelRef, type Provisioner } from '../models/index.js';
import { clusterModels, createModelList } from './model-list.js';
import type { LiveView, Metrics } from '../view/index.js';
import { registerOpenAiRoutes } from './openai.js';
import { registerRerankRoutes } from './rerank.js';
import { registerAnthropicRoutes } from './anthropic.js';
import { ollamaRoutes } from './ollama.js';
import { createSse, sseEvent } from './sse.js';
import { capConnections, DEFAULT_MAX_CONNECTIONS } from './connections.js';
import { followJob } from './job-events.js';
import { LOCAL_OWNER, createAuthHook, type ApiClient, type AuthMode } from './auth.js';
import { createJobAccess } from './job-access.js';
import { createKeyLimiter, releaseWhenDone } from './key-limits.js';
import { createModelAccessCheck, type RemoteModelRefs } from './model-access.js';
import { createOriginHook, type OriginPolicy } from './origin.js';
import type {
  ClusterStatus,
  DoctorFixCancel,
  DoctorFixEvent,
  DoctorReport,
  HiveState,
  NodeEvent,
  PullEvent,
} from '../../shared/view.js';
import { compiled } from '../../shared/compiled-schema.js';

export interface ApiInit {
  log: Logger;
  health: () => Health;
  jobs: JobManager;
  /** The jobs table: every job this node accepted, where it ran and how it ended. */
  jobHistory: Pick<JobStore, 'list'>;
  /** The workers this hive started, newest first, as its worker catalog recorded them. */
  workerHistory: (limit: number) => Omit<WorkerRecord, 'running'>[];
  /** The jobs of every node of the cluster: listed, found by id or prefix, cancelled by their entry node. */
  clusterJobs: ClusterJobsApi;
  catalog: ModelCatalog;
  workers: WorkerPool;
  provisioner: Provisioner;
  /** A ref, or a name of a model (short name, alias, catalog id of any hive), to its ref. */
  parseModelRef: (input: string) => ModelRef;
  /** This node's aliases of models (`rbee models alias`). */
  aliases: ModelAliases;
  /** Every hive's published state, this node's first: what `/v1/models` lists. */
  hiveStates: () => readonly HiveState[];
  live: LiveView;
  metrics: Metrics;
  /** The worker catalog: backends this machine can run, as last detected. */
  backends: () => unknown[];
  /** What `rbee doctor` reports about this node. */
  doctor: () => Promise<DoctorReport>;
  /**
   * `rbee doctor --fix`: builds and measures the native llama.cpp binary, narrating each step, then
   * reports as `doctor` does. Aborting `signal` cancels it and keeps nothing half-built.
   */
  /** `rbee doctor --fix --cancel`: cancels the native build running on this node, whoever started it. */
  doctorFixCancel: () => Promise<DoctorFixCancel>;
  doctorFix: (options: {
    presets?: ('tiny' | 'small')[];
    signal: AbortSignal;
    onProgress: (text: string) => void;
  }) => Promise<DoctorReport>;
  keys: ApiKeyStore;
  /**
   * A key was created or revoked here: replicate it (to the queen, and from it to every node).
   * Resolves with where the change stands; undefined for a node that is not in a cluster.
   */
  keysChanged?: () => Promise<KeyReplication | undefined>;
  /** Limits of keys that set none of their own (`keyLimits` in config.json); none by default. */
  keyLimits?: KeyLimits;
  /** Who needs an API key: clients beyond this machine (`remote`), or every client (`always`). */
  auth: AuthMode;
  /** Which Host and Origin headers the API answers: what keeps web pages out (origin.ts). */
  origin: OriginPolicy;
  /** Which model refs clients beyond this machine may name (model-access.ts). */
  remoteModelRefs: RemoteModelRefs;
  /** Where a job for a model would run, and every hive's option (`GET /v1/place`); nothing loads. */
  place: PlacePreviewer;
  /** Members, queen and every hive of the cluster (this hive alone when clustering is off). */
  cluster: () => ClusterStatus;
  /** Called once the shutdown request has been answered. */
  onShutdown: () => void;
  /** A worker on another hive of the cluster (NOT_FOUND when none runs it). */
  stopRemoteWorker: (id: string) => Promise<{ forced: boolean; hive: string }>;
  /** `{cluster: true}`: the queen tells every other hive to stop (this node stops after answering). */
  shutdownCluster: () => Promise<{ queen: string; term: number; hives: string[] }>;
  /** Connections served at once; more are answered 503 TOO_MANY_CONNECTIONS. Defaults to 1024. */
  maxConnections?: number;
  /** Bytes queued for one event-stream client before it is dropped. Defaults to 4 MiB. */
  sseMaxBufferedBytes?: number;
}

/** Who asks about jobs: the machine's own user (every job), or a key (its own jobs). */
const viewerOf = (client: ApiClient): string | undefined =>
  client.owner === LOCAL_OWNER ? undefined : client.owner;

/** Largest request body accepted; prompts are text, so 4 MiB is generous. */
const BODY_LIMIT = 4 * 2 ** 20;

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = compiled(schema).safeParse(body);
  if (!parsed.success) throw new RbeeError('BAD_REQUEST', z.prettifyError(parsed.error));
  return parsed.data;
}

const modelBodySchema = z.object({ model: z.string().min(1).max(2048) });
/** `rbee models pull`: `from` is a hive of the cluster (its name or id) to fetch the model from. */
const pullBodySchema = modelBodySchema.extend({ from: z.string().min(1).max(256).optional() });
/** `rbee doctor --fix`: the generated models to measure the native build on (default: tiny). */
const doctorFixBodySchema = z.object({
  presets: z
    .array(z.enum(['tiny', 'small']))
    .min(1)
    .max(2)
    .optional(),
});
const aliasBodySchema = z.object({ name: z.string().min(1).max(64), model: z.string().min(1).max(2048) });
const shutdownBodySchema = z.object({ cluster: z.boolean().optional() });
const keyBodySchema = z.object({
  name: z.string().min(1).max(100).optional(),
  maxConcurrent: z.number().int().positive().max(10_000).optional(),
  rpm: z.number().int().positive().max(1_000_000).optional(),
});
const placeQuerySchema = z.object({
  model: z.string().min(1).max(2048),
  hive: z.string().min(1).max(256).optional(),
  /** The least context the job would ask for (a job's `contextSize`). */
  contextSize: z.coerce.number().int().min(MIN_CONTEXT_SIZE).max(MAX_CONTEXT_SIZE).optional(),
});

/** The last event of a dropped stream whose events carry a `type` (not the OpenAI ones). */
const typedError = (error: RbeeError): string => sseEvent('error', { type: 'error', error: error.toJSON() });

const REFUSAL_LOG_INTERVAL_MS = 10_000;

/** SSE comments keep idle streams open through proxies; clients ignore them. */
const SSE_KEEPALIVE_MS = 15_000;

export function createApi(init: ApiInit) {
  // No fastify logger: requests are counted in metrics, and errors are logged below through pino.
  const app = Fastify({
    bodyLimit: BODY_LIMIT,
    // Event streams stay open until the client leaves; closing the node must not wait for them.
    forceCloseConnections: true,
  });
  const maxConnections = init.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  // a flood of refusals is logged once per interval, with how many there were
  let refusedSinceLog = 0;
  let refusalLoggedAt = -Infinity;
  const connections = capConnections(app.server, {
    max: maxConnections,
    onOpen: () => init.metrics.connectionOpened(),
    onClose: () => init.metrics.connectionClosed(),
    onRefused: () => {
      init.metrics.connectionRefused();
      refusedSinceLog += 1;
      if (performance.now() - refusalLoggedAt < REFUSAL_LOG_INTERVAL_MS) return;
      init.log.warn(
        { maxConnections, refused: refusedSinceLog },
        'refused connections: the node serves its maximum already',
      );
      refusedSinceLog = 0;
      refusalLoggedAt = performance.now();
    },
  });
  app.addHook('preClose', (done) => {
    connections.close();
    done();
  });
  const openSse = createSse({
    maxBufferedBytes: init.sseMaxBufferedBytes,
    onDrop: ({ route, bufferedBytes, why }) => {
      init.metrics.sseDropped(route);
      init.log.warn({ route, bufferedBytes, why }, 'dropped an event-stream client that does not keep up');
    },
  });

  app.setErrorHandler((error, _request, reply) => {
    const rbee = requestError(error);
    if (rbee.httpStatus >= 500) init.log.error({ err: error }, 'request failed');
    sendErrorBody(reply, rbee);
  });
  app.setNotFoundHandler((request, reply) => {
    sendErrorBody(reply, new RbeeError('NOT_FOUND', `no route ${request.method} ${request.url}`));
  });

  const port = (): number | undefined => {
    const address = app.server.address();
    return typeof address === 'object' && address !== null ? address.port : undefined;
  };
  // A page's request is refused before anything else reads it, key checks included.
  app.addHook('onRequest', createOriginHook({ policy: init.origin, port }));
  // a slot on every request for fastify's sake (objects cannot be shared defaults); the auth hook
  // fills it before any route runs
  app.decorateRequest('apiClient', null as unknown as ApiClient);
  app.addHook('onRequest', createAuthHook({ keys: init.keys, mode: init.auth }));
  const jobAccess = createJobAccess(init.jobs);
  const limiter = createKeyLimiter({ defaults: init.keyLimits });
  const checkModel = createModelAccessCheck({
    catalog: init.catalog,
    resolveModel: init.parseModelRef,
    policy: init.remoteModelRefs,
  });
  const models = createModelList({
    hives: init.hiveStates,
    aliases: () => init.aliases.list(),
    resolve: init.parseModelRef,
  });

  app.addHook('onResponse', (request, reply, done) => {
    init.metrics.observeRequest(request.routeOptions.url ?? 'unmatched', request.method, reply.statusCode);
    done();
  });

  app.get('/health', () => init.health());

  app.get('/metrics', async (_request, reply) => {
    void reply.header('content-type', init.metrics.registry.contentType);
    return init.metrics.registry.metrics();
  });

  app.post('/v1/jobs', async (request, reply) => {
    const body = parseBody(jobRequestSchema, request.body);
    checkModel(body.model, request.apiClient);
    const release = limiter.admit(request.apiClient);
    let submitted: ReturnType<typeof init.jobs.submit>;
    try {
      submitted = init.jobs.submit(body, { owner: request.apiClient.owner });
    } catch (error) {
      release();
      throw error;
    }
    const { id, admitted } = submitted;
    releaseWhenDone(init.jobs, id, release);
    // answered once the queen placed or queued the job, so that a full queue is a 429 here;
    // any other failure reaches the client as the job's last event, as failures after it do
    const refused = await admitted;
    if (refused?.code === 'QUEUE_FULL') throw refused;
    return reply.status(202).send({ id, events: `/v1/jobs/${id}/events` });
  });

  app.get('/v1/jobs', (request) => ({ jobs: jobAccess.list(request.apiClient) }));
  app.get<{ Querystring: { limit?: string } }>('/v1/jobs/history', (request) => {
    const limit = z.coerce.number().int().min(1).max(10_000).default(100).safeParse(request.query.limit);
    if (!limit.success) throw new RbeeError('BAD_REQUEST', 'limit must be a whole number from 1 to 10000');
    // the machine's own user sees every job; a key, the jobs it submitted
    const owner = request.apiClient.owner === LOCAL_OWNER ? undefined : request.apiClient.owner;
    return { jobs: init.jobHistory.list({ limit: limit.data, owner }) };
  });
  // one row of this node's table, by id or a unique prefix of it
  app.get<{ Params: { id: string } }>('/v1/jobs/history/:id', (request) =>
    init.clusterJobs.findHere(viewerOf(request.apiClient), request.params.id),
  );
  app.get<{ Params: { id: string } }>('/v1/jobs/:id', (request) =>
    jobAccess.get(request.apiClient, request.params.id),
  );

  app.get<{ Params: { id: string } }>('/v1/jobs/:id/events', async (request, reply) => {
    const { id } = request.params;
    jobAccess.get(request.apiClient, id); // 404 for another client's job, before the stream starts
    const events = followJob(init.jobs, id);
    const sse = openSse(reply, (error) =>
      sseEvent('error', { type: 'error', error: error.toJSON(), ts: Date.now(), jobId: id }),
    );
    // A keeper that goes away stops listening; the job goes on unless it is cancelled.
    sse.onClose(() => events.stop());
    let index = 0;
    for await (const event of events) {
      // the history replays at the client's pace: the job keeps it anyway, the socket need not
      if (!sse.write(sseEvent(event.type, event, index++))) await sse.drained();
      if (!sse.open) return events.stop();
    }
    sse.end();
  });

  app.delete<{ Params: { id: string } }>('/v1/jobs/:id', (request, reply) => {
    jobAccess.get(request.apiClient, request.params.id);
    init.jobs.cancel(request.params.id);
    void reply.status(202).send({ id: request.params.id, cancelling: true });
  });

  app.get('/v1/events', (request, reply) => {
    // live: the view cannot wait for a slow client, so one that falls too far behind is dropped
    const sse = openSse(reply, typedError);
    let index = 0;
    const send = (event: NodeEvent): void => {
      // other clients' jobs and their narration are left out
      const visible = jobAccess.view(request.apiClient, event);
      if (visible !== undefined) sse.write(sseEvent(visible.type, visible, index++));
    };
    send({ type: 'snapshot', view: init.live.snapshot() });
    const unsubscribe = init.live.subscribe(send);
    const keepAlive = setInterval(() => sse.write(': keep-alive\n\n'), SSE_KEEPALIVE_MS);
    sse.onClose(() => {
      clearInterval(keepAlive);
      unsubscribe();
    });
  });

  registerOpenAiRoutes(app, {
    jobs: init.jobs,
    catalog: init.catalog,
    models,
    checkModel,
    admit: (client) => limiter.admit(client),
    maxChoices: () => Math.max(1, ...init.hiveStates().map((h) => h.hive.slotsPerWorker ?? 1)),
    openSse,
  });

  registerRerankRoutes(app, { jobs: init.jobs, checkModel, admit: (client) => limiter.admit(client) });
  registerAnthropicRoutes(app, { ...init, checkModel, admit: (c) => limiter.admit(c), openSse });
  void app.register(ollamaRoutes, { ...init, models, checkModel, openSse, admit: (c) => limiter.admit(c) });

  app.post('/v1/models/pull', (request, reply) => {
    const { model: input, from } = parseBody(pullBodySchema, request.body);
    const ref = init.parseModelRef(input);
    checkModel(input, request.apiClient);
    // Progress streams back as SSE; a client that leaves does not stop the download (others may share it).
    const sse = openSse(reply, typedError);
    let index = 0;
    const write = (event: PullEvent): void => void sse.write(sseEvent(event.type, event, index++));
    init.provisioner
      .ensure(ref, {
        onProgress: (progress) => write({ type: 'progress', ...progress }),
        ...(from === undefined ? {} : { from }),
      })
      .then(
        ({ model, cached }) => write({ type: 'done', model: { ...model }, cached }),
        (error: unknown) => write({ type: 'error', error: toRbeeError(error).toJSON() }),
      )
      .finally(() => sse.end());
  });

  app.delete<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    const model = init.catalog.get(request.params.id) ?? catalogRowByName(request.params.id);
    if (model === undefined)
      throw new RbeeError('MODEL_NOT_FOUND', `no model ${request.params.id} in the catalog`);
    const users = init.workers.usersOf(model.id);
    if (users.length > 0) {
      throw new RbeeError(
        'MODEL_IN_USE',
        `model ${model.id} is loaded by worker ${users.map((w) => w.id).join(', ')}`,
      );
    }
    await init.provisioner.remove(model.id);
    init.live.markDirty('models');
    return { removed: model.id };
  });

  // Aliases: names for refs on this node. Whoever sets one must be allowed to name its ref, so an
  // alias never lets a client name what it could not name itself.
  app.get('/v1/aliases', () => ({ aliases: init.aliases.list() }));
  app.post('/v1/aliases', (request) => {
    const { name, model } = parseBody(aliasBodySchema, request.body);
    checkAliasName(name);
    checkModel(model, request.apiClient);
    const ref = canonicalRef(init.parseModelRef(model));
    return init.aliases.set(name, ref);
  });
  app.delete<{ Params: { name: string } }>('/v1/aliases/:name', (request) => {
    if (!init.aliases.remove(request.params.name)) {
      throw new RbeeError('NOT_FOUND', `no alias ${request.params.name}`, {
        details: { alias: request.params.name },
      });
    }
    return { removed: request.params.name };
  });

  /** This node's row for a model's short name or alias, if it holds that model. */
  function catalogRowByName(name: string): ReturnType<ModelCatalog['get']> {
    try {
      return init.catalog.get(canonicalRef(init.parseModelRef(name)));
    } catch {
      return undefined;
    }
  }

  app.get('/v1/cluster', () => init.cluster());
  app.get('/v1/cluster/models', () => clusterModels(init.hiveStates()));
  // The jobs of every node (each node keeps the jobs that entered through it), newest first
  app.get<{ Querystring: { limit?: string; here?: string } }>('/v1/cluster/jobs', (request) => {
    const limit = z.coerce.number().int().min(1).max(1000).default(100).safeParse(request.query.limit);
    if (!limit.success) throw new RbeeError('BAD_REQUEST', 'limit must be a whole number from 1 to 1000');
    const here = request.query.here === '1' || request.query.here === 'true';
    return init.clusterJobs.list(viewerOf(request.apiClient), { limit: limit.data, here });
  });
  app.get<{ Params: { id: string } }>('/v1/cluster/jobs/:id', (request) =>
    init.clusterJobs.find(viewerOf(request.apiClient), request.params.id),
  );
  app.delete<{ Params: { id: string } }>('/v1/cluster/jobs/:id', async (request, reply) => {
    const cancelled = await init.clusterJobs.cancel(viewerOf(request.apiClient), request.params.id);
    void reply.status(cancelled.cancelling ? 202 : 200).send(cancelled);
  });
  app.get<{ Querystring: { model?: string; hive?: string; contextSize?: string } }>(
    '/v1/place',
    (request) => {
      const query = parseBody(placeQuerySchema, request.query);
      checkModel(query.model, request.apiClient);
      return init.place(query);
    },
  );
  // Every worker of the cluster, each with its hive's name: what `rbee workers ls` lists.
  app.get('/v1/cluster/workers', () => {
    const view = init.live.snapshot();
    const names = new Map(view.hives.map((h) => [h.id, h]));
    return {
      workers: view.workers.map((w) => ({
        ...w,
        hiveName: names.get(w.hive)?.name ?? w.hive,
        local: names.get(w.hive)?.local ?? false,
      })),
    };
  });
  app.get('/v1/backends', () => ({ backends: init.backends() }));
  app.get('/v1/doctor', () => init.doctor());
  // Progress streams back as SSE; a client that leaves (Ctrl-C) cancels the fix, unlike a pull.
  app.post('/v1/doctor/fix', (request, reply) => {
    // It compiles and runs code on this machine for many minutes: its own user's to ask for.
    if (!request.apiClient.local) {
      throw new RbeeError('UNAUTHORIZED', "`rbee doctor --fix` runs on the node's own machine only");
    }
    const { presets } = parseBody(doctorFixBodySchema, request.body ?? {});
    const sse = openSse(reply, typedError);
    let index = 0;
    const write = (event: DoctorFixEvent): void => void sse.write(sseEvent(event.type, event, index++));
    const cancel = new AbortController();
    sse.onClose(() => cancel.abort(new RbeeError('JOB_CANCELLED', 'the client left')));
    init
      .doctorFix({
        ...(presets === undefined ? {} : { presets }),
        signal: cancel.signal,
        onProgress: (text) => {
          init.log.info({ source: 'hive' }, `doctor --fix: ${text}`);
          write({ type: 'progress', text });
        },
      })
      .then(
        (report) => write({ type: 'done', report }),
        (error: unknown) => write({ type: 'error', error: toRbeeError(error).toJSON() }),
      )
      .finally(() => sse.end());
  });
  // Cancels the native build running here, whoever started it (doctor --fix, or the node at an idle moment).
  app.delete('/v1/doctor/fix', async (request) => {
    if (!request.apiClient.local) {
      throw new RbeeError('UNAUTHORIZED', "`rbee doctor --fix --cancel` runs on the node's own machine only");
    }
    return init.doctorFixCancel();
  });

  app.get('/v1/keys', () => ({ keys: init.keys.list(), set: init.keys.version() }));
  // A change is in force here at once; the answer waits (a few seconds at most) until the queen
  // has it and has given it to every node, and says so in `cluster`.
  app.post('/v1/keys', async (request, reply) => {
    const { name, maxConcurrent, rpm } = parseBody(keyBodySchema, request.body ?? {});
    const created = init.keys.create(name ?? 'unnamed', {
      ...(maxConcurrent === undefined ? {} : { maxConcurrent }),
      ...(rpm === undefined ? {} : { rpm }),
    });
    const cluster = await init.keysChanged?.();
    return reply.status(201).send({ ...created, ...(cluster === undefined ? {} : { cluster }) });
  });
  app.delete<{ Params: { id: string } }>('/v1/keys/:id', async (request) => {
    init.keys.remove(request.params.id);
    const cluster = await init.keysChanged?.();
    return { removed: request.params.id, ...(cluster === undefined ? {} : { cluster }) };
  });
  app.get('/v1/workers', () => ({ workers: init.workers.list(), breakers: init.workers.breakers() }));
  app.get<{ Querystring: { limit?: string } }>('/v1/workers/history', (request) => {
    const limit = z.coerce.number().int().min(1).max(1000).default(50).safeParse(request.query.limit);
    if (!limit.success) throw new RbeeError('BAD_REQUEST', 'limit must be a whole number from 1 to 1000');
    const running = new Set(init.workers.list().map((w) => w.id));
    return { workers: init.workerHistory(limit.data).map((w) => ({ ...w, running: running.has(w.id) })) };
  });

  app.post('/v1/workers', async (request, reply) => {
    const { model: input } = parseBody(modelBodySchema, request.body);
    const ref = init.parseModelRef(input);
    checkModel(input, request.apiClient);
    const { model } = await init.provisioner.ensure(ref);
    const lease = await init.workers.acquire(model);
    lease.release(); // the worker stays loaded for its keep-alive
    void reply.status(201).send({ worker: lease.worker });
  });

  app.delete<{ Params: { id: string } }>('/v1/workers/:id', async (request) => {
    const { id } = request.params;
    if (init.workers.list().some((w) => w.id === id)) {
      const { forced } = await init.workers.stop(id, 'asked by the user');
      return { stopped: id, forced };
    }
    // not here: the hive that runs it stops it (the dashboard shows every hive's workers)
    const { forced, hive } = await init.stopRemoteWorker(id);
    return { stopped: id, forced, hive };
  });

  app.post('/v1/shutdown', async (request, reply) => {
    const { cluster } = parseBody(shutdownBodySchema, request.body ?? {});
    const stopped = cluster === true ? { cluster: await init.shutdownCluster() } : {};
    reply.raw.once('finish', () => init.onShutdown());
    return reply.status(202).send({ shuttingDown: true, ...stopped });
  });

  return app;
}
