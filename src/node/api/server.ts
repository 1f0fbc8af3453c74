/**
 * The node's HTTP API. Every error leaves as `{error: {code, message}}` with the code's HTTP status.
 */
import Fastify, { type FastifyReply } from 'fastify';
import { z } from 'zod';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { isTerminal, jobRequestSchema, type Health, type JobEvent } from '../../shared/wire.js';
import type { JobManager } from '../jobs/index.js';
import type { Logger } from '../logger.js';
import type { ApiKeyStore, JobStore, ModelCatalog } from '../store/index.js';
import type { WorkerPool } from '../hive/index.js';
import type { ModelRef, Provisioner } from '../models/index.js';
import type { LiveView, Metrics } from '../view/index.js';
import { registerOpenAiRoutes } from './openai.js';
import { openSse } from './sse.js';
import { LOCAL_OWNER, createAuthHook, type ApiClient, type AuthMode } from './auth.js';
import { createJobAccess } from './job-access.js';
import { createModelAccessCheck, type RemoteModelRefs } from './model-access.js';
import { createOriginHook, type OriginPolicy } from './origin.js';
import type { ClusterStatus, DoctorReport, NodeEvent, PullEvent } from '../../shared/view.js';

export interface ApiInit {
  log: Logger;
  health: () => Health;
  jobs: JobManager;
  /** The jobs table: every job this node accepted, where it ran and how it ended. */
  jobHistory: Pick<JobStore, 'list'>;
  catalog: ModelCatalog;
  workers: WorkerPool;
  provisioner: Provisioner;
  parseModelRef: (input: string) => ModelRef;
  live: LiveView;
  metrics: Metrics;
  /** The worker catalog: backends this machine can run, as last detected. */
  backends: () => unknown[];
  /** What `rbee doctor` reports about this node. */
  doctor: () => Promise<DoctorReport>;
  keys: ApiKeyStore;
  /** Who needs an API key: clients beyond this machine (`remote`), or every client (`always`). */
  auth: AuthMode;
  /** Which Host and Origin headers the API answers: what keeps web pages out (origin.ts). */
  origin: OriginPolicy;
  /** Which model refs clients beyond this machine may name (model-access.ts). */
  remoteModelRefs: RemoteModelRefs;
  /** Members, queen and every hive of the cluster (this hive alone when clustering is off). */
  cluster: () => ClusterStatus;
  /** Called once the shutdown request has been answered. */
  onShutdown: () => void;
  /** A worker on another hive of the cluster (NOT_FOUND when none runs it). */
  stopRemoteWorker: (id: string) => Promise<{ forced: boolean; hive: string }>;
  /** `{cluster: true}`: the queen tells every other hive to stop (this node stops after answering). */
  shutdownCluster: () => Promise<{ queen: string; term: number; hives: string[] }>;
}

/** Largest request body accepted; prompts are text, so 4 MiB is generous. */
const BODY_LIMIT = 4 * 2 ** 20;

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new RbeeError('BAD_REQUEST', z.prettifyError(parsed.error));
  return parsed.data;
}

const modelBodySchema = z.object({ model: z.string().min(1).max(2048) });
const shutdownBodySchema = z.object({ cluster: z.boolean().optional() });
const keyBodySchema = z.object({ name: z.string().min(1).max(100).optional() });

function writeSse(reply: FastifyReply, index: number, event: JobEvent | NodeEvent | PullEvent): void {
  reply.raw.write(`id: ${index}\nevent: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
}

/** SSE comments keep idle streams open through proxies; clients ignore them. */
const SSE_KEEPALIVE_MS = 15_000;

export function createApi(init: ApiInit) {
  // No fastify logger: requests are counted in metrics, and errors are logged below through pino.
  const app = Fastify({
    bodyLimit: BODY_LIMIT,
    // Event streams stay open until the client leaves; closing the node must not wait for them.
    forceCloseConnections: true,
  });

  app.setErrorHandler((error, _request, reply) => {
    const rbee =
      error instanceof RbeeError
        ? error
        : typeof (error as { statusCode?: unknown }).statusCode === 'number' &&
            (error as { statusCode: number }).statusCode < 500
          ? new RbeeError('BAD_REQUEST', (error as Error).message, { cause: error })
          : toRbeeError(error);
    if (rbee.httpStatus >= 500) init.log.error({ err: error }, 'request failed');
    void reply.status(rbee.httpStatus).send({ error: rbee.toJSON() });
  });
  app.setNotFoundHandler((request, reply) => {
    void reply
      .status(404)
      .send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` } });
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
  const checkModel = createModelAccessCheck({
    catalog: init.catalog,
    parseModelRef: init.parseModelRef,
    policy: init.remoteModelRefs,
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

  app.post('/v1/jobs', (request, reply) => {
    const body = parseBody(jobRequestSchema, request.body);
    checkModel(body.model, request.apiClient);
    const { id } = init.jobs.submit(body, { owner: request.apiClient.owner });
    void reply.status(202).send({ id, events: `/v1/jobs/${id}/events` });
  });

  app.get('/v1/jobs', (request) => ({ jobs: jobAccess.list(request.apiClient) }));
  app.get<{ Querystring: { limit?: string } }>('/v1/jobs/history', (request) => {
    const limit = z.coerce.number().int().min(1).max(10_000).default(100).safeParse(request.query.limit);
    if (!limit.success) throw new RbeeError('BAD_REQUEST', 'limit must be a whole number from 1 to 10000');
    // the machine's own user sees every job; a key, the jobs it submitted
    const owner = request.apiClient.owner === LOCAL_OWNER ? undefined : request.apiClient.owner;
    return { jobs: init.jobHistory.list({ limit: limit.data, owner }) };
  });
  app.get<{ Params: { id: string } }>('/v1/jobs/:id', (request) =>
    jobAccess.get(request.apiClient, request.params.id),
  );

  app.get<{ Params: { id: string } }>('/v1/jobs/:id/events', (request, reply) => {
    jobAccess.get(request.apiClient, request.params.id); // 404 before the stream starts
    openSse(reply);
    let index = 0;
    let unsubscribe = (): void => undefined;
    let ended = false;
    unsubscribe = init.jobs.subscribe(request.params.id, (event) => {
      writeSse(reply, index++, event);
      if (isTerminal(event)) {
        ended = true;
        reply.raw.end();
      }
    });
    if (ended) return;
    // A keeper that goes away stops listening; the job goes on unless it is cancelled.
    reply.raw.on('close', () => unsubscribe());
  });

  app.delete<{ Params: { id: string } }>('/v1/jobs/:id', (request, reply) => {
    jobAccess.get(request.apiClient, request.params.id);
    init.jobs.cancel(request.params.id);
    void reply.status(202).send({ id: request.params.id, cancelling: true });
  });

  app.get('/v1/events', (request, reply) => {
    openSse(reply);
    let index = 0;
    const send = (event: NodeEvent): void => {
      const visible = jobAccess.view(request.apiClient, event);
      if (visible !== undefined) writeSse(reply, index++, visible);
    };
    send({ type: 'snapshot', view: init.live.snapshot() });
    const unsubscribe = init.live.subscribe(send);
    const keepAlive = setInterval(() => reply.raw.write(': keep-alive\n\n'), SSE_KEEPALIVE_MS);
    reply.raw.on('close', () => {
      clearInterval(keepAlive);
      unsubscribe();
    });
  });

  registerOpenAiRoutes(app, {
    jobs: init.jobs,
    catalog: init.catalog,
    provisioner: init.provisioner,
    workers: init.workers,
    parseModelRef: init.parseModelRef,
    checkModel,
  });

  app.post('/v1/models/pull', (request, reply) => {
    const { model: input } = parseBody(modelBodySchema, request.body);
    const ref = init.parseModelRef(input);
    checkModel(input, request.apiClient);
    // Progress streams back as SSE; a client that leaves does not stop the download (others may share it).
    openSse(reply);
    let index = 0;
    const write = (event: PullEvent): void => {
      if (!reply.raw.writableEnded) writeSse(reply, index++, event);
    };
    init.provisioner
      .ensure(ref, { onProgress: (progress) => write({ type: 'progress', ...progress }) })
      .then(
        ({ model, cached }) => write({ type: 'done', model: { ...model }, cached }),
        (error: unknown) => write({ type: 'error', error: toRbeeError(error).toJSON() }),
      )
      .finally(() => reply.raw.end());
  });

  app.delete<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    const model = init.catalog.get(request.params.id);
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

  app.get('/v1/cluster', () => init.cluster());
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

  app.get('/v1/keys', () => ({ keys: init.keys.list() }));
  app.post('/v1/keys', (request, reply) => {
    const { name } = parseBody(keyBodySchema, request.body ?? {});
    void reply.status(201).send(init.keys.create(name ?? 'unnamed'));
  });
  app.delete<{ Params: { id: string } }>('/v1/keys/:id', (request) => {
    init.keys.remove(request.params.id);
    return { removed: request.params.id };
  });
  app.get('/v1/workers', () => ({ workers: init.workers.list(), breakers: init.workers.breakers() }));

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
