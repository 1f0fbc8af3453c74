/**
 * The keeper's view of a node: its HTTP API as typed calls. Loads no native code, so the CLI and
 * the TUI can use it without pulling in llama.cpp or SQLite.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { z } from 'zod';
import { RbeeError, type RbeeErrorJson } from '../../shared/errors.js';
import {
  apiKeyListSchema,
  createdApiKeySchema,
  backendListSchema,
  errorJsonSchema,
  healthSchema,
  jobAcceptedSchema,
  jobEventSchema,
  isTerminal,
  modelListSchema,
  modelRowSchema,
  removedApiKeySchema,
  removedSchema,
  spawnedWorkerSchema,
  workerHistorySchema,
  workerListSchema,
  workerStoppedSchema,
  type ApiKeyView,
  type BackendInfoView,
  type CreatedApiKey,
  type Health,
  type JobAccepted,
  type JobEvent,
  type WorkerRecord,
  type JobRequest,
  type KeyReplicationView,
  type ModelRow,
  type WorkerInfo,
} from '../../shared/wire.js';
import {
  clusterJobCancelSchema,
  clusterJobRecordSchema,
  clusterJobsSchema,
  clusterStatusSchema,
  clusterModelsSchema,
  clusterWorkersSchema,
  type ClusterModels,
  jobRecordSchema,
  type ClusterJobCancel,
  type ClusterJobRecord,
  type ClusterJobs,
  type ClusterWorker,
  placePreviewSchema,
  type JobRecord,
  type PlacePreview,
  doctorFixCancelSchema,
  doctorFixEventSchema,
  doctorReportSchema,
  nodeEventSchema,
  pullEventSchema,
  type ClusterStatus,
  type DoctorFixCancel,
  type DoctorReport,
  type NodeEvent,
  type PullEvent,
} from '../../shared/view.js';

const clusterShutdownSchema = z.object({ queen: z.string(), term: z.number(), hives: z.array(z.string()) });
export type ClusterShutdown = z.infer<typeof clusterShutdownSchema>;
/** What a node sends last on a live stream it ends early (e.g. CLIENT_TOO_SLOW). */
const streamErrorSchema = z.object({ type: z.literal('error'), error: errorJsonSchema });

/**
 * A node's answer read through its schema: one that does not fit (another rbee version, or not a
 * node at all) is BAD_RESPONSE, naming the route and what did not fit, never a half-read object.
 */
export function parsePayload<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw new RbeeError(
    'BAD_RESPONSE',
    `the node's answer to ${what} does not fit: ${z.prettifyError(parsed.error)}`,
  );
}

/** Parses a JSON text (an event's data) through a schema; bad JSON is BAD_RESPONSE too. */
function parseJsonPayload<T>(schema: z.ZodType<T>, text: string, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new RbeeError('BAD_RESPONSE', `the node's answer to ${what} is not JSON: ${text.slice(0, 200)}`);
  }
  return parsePayload(schema, value, what);
}

export interface NodeClientInit {
  /** e.g. http://127.0.0.1:7833 */
  url: string;
  /** An API key of that node (`rbee keys create`): needed beyond its machine. */
  apiKey?: string | undefined;
}

export interface NodeClient {
  readonly url: string;
  /** Resolves with the node's health, or throws NODE_UNREACHABLE when nothing answers. */
  health(options?: { signal?: AbortSignal }): Promise<Health>;
  submitJob(request: JobRequest, options?: { signal?: AbortSignal }): Promise<JobAccepted>;
  /** The job's events from its first, ending after `done` or `error`. */
  jobEvents(id: string, options?: { signal?: AbortSignal }): AsyncIterable<JobEvent>;
  cancelJob(id: string, options?: { signal?: AbortSignal }): Promise<void>;
  /** The node's jobs table, newest first: where each job ran and how it ended. */
  jobHistory(options?: { limit?: number; signal?: AbortSignal }): Promise<JobRecord[]>;
  shutdown(options?: { signal?: AbortSignal }): Promise<void>;
  /** Asks the queen to stop every hive of the cluster; this node stops too once it has answered. */
  shutdownCluster(options?: { signal?: AbortSignal }): Promise<ClusterShutdown>;
  /** The node's live view: one `snapshot`, then section updates and narration, until `signal` aborts. */
  nodeEvents(options?: { signal?: AbortSignal }): AsyncIterable<NodeEvent>;
  /**
   * Makes sure a model is on the node's disk (downloading, or joining a download under way) and
   * resolves with its catalog row. Leaving early (`signal`) does not stop the download.
   */
  pullModel(
    ref: string,
    options?: {
      /** A hive of the cluster (name or id) to fetch it from, and from nowhere else. */
      from?: string;
      signal?: AbortSignal;
      onProgress?: (progress: Extract<PullEvent, { type: 'progress' }>) => void;
    },
  ): Promise<Extract<PullEvent, { type: 'done' }>>;
  /** Loads a worker for a model (fetching the model first if needed); resolves once it is ready. */
  spawnWorker(model: string, options?: { signal?: AbortSignal }): Promise<{ worker: WorkerInfo }>;
  /** Removes a model from the catalog and the disk; MODEL_IN_USE while a worker has it loaded. */
  deleteModel(id: string, options?: { signal?: AbortSignal }): Promise<{ removed: string }>;
  /** Stops a worker of any hive of the cluster. */
  stopWorker(id: string, options?: { signal?: AbortSignal }): Promise<void>;
  /** Where a job for the model would run (only `hive` with one), and every hive's option; nothing loads. */
  place(
    model: string,
    options?: { hive?: string; contextSize?: number; signal?: AbortSignal },
  ): Promise<PlacePreview>;
  /** Members, queen and hives of the cluster this node belongs to. */
  cluster(options?: { signal?: AbortSignal }): Promise<ClusterStatus>;
  /** What `rbee doctor` checks on this node (loads llama.cpp there the first time, about a second). */
  doctor(options?: { signal?: AbortSignal }): Promise<DoctorReport>;
  /**
   * `rbee doctor --fix`: the node builds llama.cpp for its CPU (once; minutes) and measures it
   * against the prebuilt binary, narrating through `onProgress`; resolves with the report after it.
   * Aborting `signal` closes the stream, which cancels the fix on the node.
   */
  doctorFix(options?: {
    presets?: ('tiny' | 'small')[];
    onProgress?: (text: string) => void;
    signal?: AbortSignal;
  }): Promise<DoctorReport>;
  /**
   * `rbee doctor --fix --cancel`: cancels the native build running on the node (doctor --fix, or
   * the one the node started at an idle moment), keeping nothing half-built.
   */
  doctorFixCancel(options?: { signal?: AbortSignal }): Promise<DoctorFixCancel>;
  /** One job of this node's jobs table, by id or a unique prefix of it (BAD_REQUEST when ambiguous). */
  jobRecord(id: string, options?: { signal?: AbortSignal }): Promise<JobRecord>;
  /**
   * The jobs of every node of the cluster (`here`: this node's only), newest first, and the live
   * members that did not answer in time.
   */
  clusterJobs(options?: { limit?: number; here?: boolean; signal?: AbortSignal }): Promise<ClusterJobs>;
  /** A job of any node of the cluster, by id or a unique prefix of it. */
  clusterJob(id: string, options?: { signal?: AbortSignal }): Promise<ClusterJobRecord>;
  /** Cancels a job of any node of the cluster: its entry node cancels it. */
  cancelClusterJob(id: string, options?: { signal?: AbortSignal }): Promise<ClusterJobCancel>;
  /** The models of this node's catalog. */
  models(options?: { signal?: AbortSignal }): Promise<ModelRow[]>;
  /** Every model file of the cluster, once per sha256, with the hives that hold it. */
  clusterModels(options?: { signal?: AbortSignal }): Promise<ClusterModels['models']>;
  /** One model of the catalog, by id, ref or alias. */
  model(id: string, options?: { signal?: AbortSignal }): Promise<ModelRow>;
  /** This node's own workers. */
  workers(options?: { signal?: AbortSignal }): Promise<WorkerInfo[]>;
  /** The workers this node's hive started, newest first: the binary each ran and why, its lifetime. */
  workerHistory(options?: { limit?: number; signal?: AbortSignal }): Promise<WorkerRecord[]>;
  /** Every worker of the cluster, each with its hive's name. */
  clusterWorkers(options?: { signal?: AbortSignal }): Promise<ClusterWorker[]>;
  /** The backends this machine can run, as last detected (empty until detection ends). */
  backends(options?: { signal?: AbortSignal }): Promise<BackendInfoView[]>;
  keys(options?: { signal?: AbortSignal }): Promise<ApiKeyView[]>;
  /** The key itself is in this answer only; `cluster` says how far it went through the cluster. */
  createKey(
    key: { name?: string | undefined; maxConcurrent?: number | undefined; rpm?: number | undefined },
    options?: { signal?: AbortSignal },
  ): Promise<CreatedApiKey>;
  removeKey(
    id: string,
    options?: { signal?: AbortSignal },
  ): Promise<{ removed: string; cluster?: KeyReplicationView | undefined }>;
  /** This node's model aliases (`rbee models alias`). */
  aliases(options?: { signal?: AbortSignal }): Promise<ModelAlias[]>;
  setAlias(name: string, model: string, options?: { signal?: AbortSignal }): Promise<ModelAlias>;
  removeAlias(name: string, options?: { signal?: AbortSignal }): Promise<{ removed: string }>;
  /** Any GET route, its answer read through `schema` (BAD_RESPONSE when it does not fit). */
  get<T>(path: string, schema: z.ZodType<T>, options?: { signal?: AbortSignal }): Promise<T>;
}

const modelAliasSchema = z.looseObject({ name: z.string(), ref: z.string() });
export type ModelAlias = z.infer<typeof modelAliasSchema>;

const HEALTH_TIMEOUT_MS = 2_000;

/** OpenAI's codes that the OpenAI routes answer with instead of rbee's. */
const FROM_OPENAI_CODES: Record<string, RbeeErrorJson['code']> = { model_not_found: 'MODEL_NOT_FOUND' };

/** The node's error bodies: `{error: {message, type, param, code, details?}}` (OpenAI's shape). */
function errorFromBody(status: number, text: string): RbeeError {
  try {
    const body = JSON.parse(text) as { error?: RbeeErrorJson };
    if (body.error !== undefined) {
      const code = FROM_OPENAI_CODES[body.error.code] ?? body.error.code;
      return RbeeError.fromJSON({ ...body.error, code });
    }
  } catch {
    // not JSON: fall through
  }
  return new RbeeError('INTERNAL', `the node answered HTTP ${status}: ${text.slice(0, 200)}`);
}

async function errorFrom(response: Response): Promise<RbeeError> {
  return errorFromBody(response.status, await response.text().catch(() => ''));
}

/** Splits an SSE body (decoded text chunks) into its `data:` payloads. */
async function* sseData(body: AsyncIterable<string>): AsyncGenerator<string> {
  let buffer = '';
  for await (const chunk of body) {
    buffer += chunk;
    let boundary: number;
    while ((boundary = buffer.indexOf('\n\n')) !== -1) {
      const block = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary + 2);
      const data = block
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n');
      if (data !== '') yield data;
    }
  }
}

async function readAll(response: IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of response as AsyncIterable<string>) text += chunk;
  return text;
}

/**
 * Opens a server-sent event stream with node:http rather than fetch and yields its `data:`
 * payloads. Reading fetch's web stream costs about twice the CPU per event (~170 vs ~85 µs here),
 * and the dashboard and `rbee infer` read one event per token, a thousand a second from a small
 * model (bench:tui).
 */
async function* eventStream(
  base: string,
  path: string,
  init: { method?: 'GET' | 'POST'; body?: unknown; signal?: AbortSignal; headers?: Record<string, string> },
): AsyncGenerator<string> {
  const url = new URL(`${base}${path}`);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const body = init.body === undefined ? undefined : JSON.stringify(init.body);
  let response: IncomingMessage;
  try {
    response = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = send(
        url,
        {
          method: init.method ?? 'GET',
          headers: {
            ...init.headers,
            accept: 'text/event-stream',
            ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          ...(init.signal === undefined ? {} : { signal: init.signal }),
        },
        resolve,
      );
      req.once('error', reject);
      req.end(body);
    });
  } catch (error) {
    if (init.signal?.aborted === true) throw error;
    throw new RbeeError('NODE_UNREACHABLE', `no rbee node answers at ${base}`, { cause: error });
  }
  try {
    response.setEncoding('utf8');
    const status = response.statusCode ?? 0;
    if (status < 200 || status > 299) throw errorFromBody(status, await readAll(response));
    yield* sseData(response as AsyncIterable<string>);
  } finally {
    response.destroy();
  }
}

export function createNodeClient(init: NodeClientInit): NodeClient {
  const base = init.url.replace(/\/+$/, '');
  // `x-rbee-client: 1` tells the node this is no web page: bodyless POSTs and DELETEs (shutdown,
  // cancel, rm) need it (src/node/api/origin.ts), and it costs nothing on the rest.
  const headers: Record<string, string> = {
    'x-rbee-client': '1',
    ...(init.apiKey === undefined || init.apiKey === '' ? {} : { authorization: `Bearer ${init.apiKey}` }),
  };

  async function request(path: string, initReq: RequestInit & { signal?: AbortSignal }): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(`${base}${path}`, {
        ...initReq,
        headers: { ...(initReq.headers as Record<string, string> | undefined), ...headers },
      });
    } catch (error) {
      if (initReq.signal?.aborted === true) throw error;
      throw new RbeeError('NODE_UNREACHABLE', `no rbee node answers at ${base}`, { cause: error });
    }
    if (!response.ok) throw await errorFrom(response);
    return response;
  }

  const signalOf = (signal?: AbortSignal): { signal?: AbortSignal } =>
    signal === undefined ? {} : { signal };
  const postJson = (path: string, body: unknown, signal?: AbortSignal): Promise<Response> =>
    request(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      ...signalOf(signal),
    });

  /** A route's JSON answer, read through its schema. */
  async function read<T>(
    path: string,
    schema: z.ZodType<T>,
    initReq: RequestInit & { signal?: AbortSignal } = {},
  ): Promise<T> {
    const response = await request(path, initReq);
    const what = `${initReq.method ?? 'GET'} ${path}`;
    return parseJsonPayload(schema, await response.text(), what);
  }
  const id = (value: string): string => encodeURIComponent(value);

  return {
    url: base,
    async health(options = {}) {
      const timeout = AbortSignal.timeout(HEALTH_TIMEOUT_MS);
      const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
      try {
        return await read('/health', healthSchema, { signal });
      } catch (error) {
        if (options.signal?.aborted === true) throw error;
        // another program on the port answers, but not as an rbee node: no node is there either
        const foreign =
          error instanceof RbeeError && (error.code === 'INTERNAL' || error.code === 'BAD_RESPONSE');
        if (error instanceof RbeeError && !foreign) throw error;
        throw new RbeeError(
          'NODE_UNREACHABLE',
          foreign
            ? `no rbee node answers at ${base}: something else does (${error.message.slice(0, 160)})`
            : `no rbee node answers at ${base}`,
          { cause: error },
        );
      }
    },
    submitJob: (job, options = {}) =>
      read('/v1/jobs', jobAcceptedSchema, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(job),
        ...signalOf(options.signal),
      }),
    async *jobEvents(jobId, options = {}) {
      const path = `/v1/jobs/${id(jobId)}/events`;
      for await (const data of eventStream(base, path, { ...signalOf(options.signal), headers })) {
        const event = parseJsonPayload(jobEventSchema, data, `GET ${path}`);
        yield event;
        if (isTerminal(event)) return;
      }
      throw new RbeeError('NODE_UNREACHABLE', 'the node closed the event stream before the job ended');
    },
    async cancelJob(jobId, options = {}) {
      await request(`/v1/jobs/${id(jobId)}`, { method: 'DELETE', ...signalOf(options.signal) });
    },
    async shutdown(options = {}) {
      await request('/v1/shutdown', { method: 'POST', ...signalOf(options.signal) });
    },
    async shutdownCluster(options = {}) {
      const response = await postJson('/v1/shutdown', { cluster: true }, options.signal);
      const answer = parseJsonPayload(
        z.object({ cluster: clusterShutdownSchema }),
        await response.text(),
        'POST /v1/shutdown',
      );
      return answer.cluster;
    },
    async *nodeEvents(options = {}) {
      for await (const data of eventStream(base, '/v1/events', {
        ...signalOf(options.signal),
        headers,
      })) {
        const raw = parseJsonPayload(z.unknown(), data, 'GET /v1/events');
        // the node's last word on a stream it drops (this client fell too far behind)
        const failed = streamErrorSchema.safeParse(raw);
        if (failed.success) throw RbeeError.fromJSON(failed.data.error);
        yield parsePayload(nodeEventSchema, raw, 'GET /v1/events');
      }
    },
    async pullModel(ref, options = {}) {
      const stream = eventStream(base, '/v1/models/pull', {
        headers,
        method: 'POST',
        body: options.from === undefined ? { model: ref } : { model: ref, from: options.from },
        ...signalOf(options.signal),
      });
      for await (const data of stream) {
        const event = parseJsonPayload(pullEventSchema, data, 'POST /v1/models/pull');
        if (event.type === 'progress') options.onProgress?.(event);
        else if (event.type === 'error') throw RbeeError.fromJSON(event.error);
        else return event;
      }
      throw new RbeeError('NODE_UNREACHABLE', 'the node closed the pull stream before it ended');
    },
    async spawnWorker(model, options = {}) {
      const response = await postJson('/v1/workers', { model }, options.signal);
      return parseJsonPayload(spawnedWorkerSchema, await response.text(), 'POST /v1/workers');
    },
    deleteModel: (modelId, options = {}) =>
      read(`/v1/models/${id(modelId)}`, removedSchema, { method: 'DELETE', ...signalOf(options.signal) }),
    async stopWorker(workerId, options = {}) {
      await read(`/v1/workers/${id(workerId)}`, workerStoppedSchema, {
        method: 'DELETE',
        ...signalOf(options.signal),
      });
    },
    cluster: (options = {}) => read('/v1/cluster', clusterStatusSchema, signalOf(options.signal)),
    doctor: (options = {}) => read('/v1/doctor', doctorReportSchema, signalOf(options.signal)),
    doctorFixCancel: (options = {}) =>
      read('/v1/doctor/fix', doctorFixCancelSchema, { method: 'DELETE', ...signalOf(options.signal) }),
    async doctorFix(options = {}) {
      const stream = eventStream(base, '/v1/doctor/fix', {
        headers,
        method: 'POST',
        body: options.presets === undefined ? {} : { presets: options.presets },
        ...signalOf(options.signal),
      });
      try {
        for await (const data of stream) {
          const event = parseJsonPayload(doctorFixEventSchema, data, 'POST /v1/doctor/fix');
          if (event.type === 'progress') options.onProgress?.(event.text);
          else if (event.type === 'error') throw RbeeError.fromJSON(event.error);
          else return event.report;
        }
      } catch (error) {
        // Ctrl-C: the stream closed, and the node cancels the fix (keeping nothing half-built)
        if (options.signal?.aborted === true) {
          throw new RbeeError('JOB_CANCELLED', 'doctor --fix cancelled; nothing half-built is kept', {
            cause: error,
          });
        }
        throw error;
      }
      throw new RbeeError('NODE_UNREACHABLE', 'the node closed the doctor --fix stream before it ended');
    },
    place(model, options = {}) {
      const query = new URLSearchParams({
        model,
        ...(options.hive === undefined ? {} : { hive: options.hive }),
        ...(options.contextSize === undefined ? {} : { contextSize: String(options.contextSize) }),
      });
      return read(`/v1/place?${query.toString()}`, placePreviewSchema, signalOf(options.signal));
    },
    async jobHistory(options = {}) {
      const query = options.limit === undefined ? '' : `?limit=${options.limit}`;
      const answer = await read(
        `/v1/jobs/history${query}`,
        z.object({ jobs: z.array(jobRecordSchema) }),
        signalOf(options.signal),
      );
      return answer.jobs;
    },
    async workerHistory(options = {}) {
      const query = options.limit === undefined ? '' : `?limit=${options.limit}`;
      return (await read(`/v1/workers/history${query}`, workerHistorySchema, signalOf(options.signal)))
        .workers;
    },
    jobRecord: (jobId, options = {}) =>
      read(`/v1/jobs/history/${id(jobId)}`, jobRecordSchema, signalOf(options.signal)),
    clusterJobs(options = {}) {
      const query = new URLSearchParams();
      if (options.limit !== undefined) query.set('limit', String(options.limit));
      if (options.here === true) query.set('here', '1');
      const search = query.size === 0 ? '' : `?${query.toString()}`;
      return read(`/v1/cluster/jobs${search}`, clusterJobsSchema, signalOf(options.signal));
    },
    clusterJob: (jobId, options = {}) =>
      read(`/v1/cluster/jobs/${id(jobId)}`, clusterJobRecordSchema, signalOf(options.signal)),
    cancelClusterJob: (jobId, options = {}) =>
      read(`/v1/cluster/jobs/${id(jobId)}`, clusterJobCancelSchema, {
        method: 'DELETE',
        ...signalOf(options.signal),
      }),
    models: async (options = {}) =>
      (await read('/v1/models', modelListSchema, signalOf(options.signal))).data,
    clusterModels: async (options = {}) =>
      (await read('/v1/cluster/models', clusterModelsSchema, signalOf(options.signal))).models,
    model: (modelId, options = {}) =>
      read(`/v1/models/${id(modelId)}`, modelRowSchema, signalOf(options.signal)),
    workers: async (options = {}) =>
      (await read('/v1/workers', workerListSchema, signalOf(options.signal))).workers,
    clusterWorkers: async (options = {}) =>
      (await read('/v1/cluster/workers', clusterWorkersSchema, signalOf(options.signal))).workers,
    backends: async (options = {}) =>
      (await read('/v1/backends', backendListSchema, signalOf(options.signal))).backends,
    keys: async (options = {}) => (await read('/v1/keys', apiKeyListSchema, signalOf(options.signal))).keys,
    async createKey(key, options = {}) {
      const body = Object.fromEntries(Object.entries(key).filter(([, v]) => v !== undefined));
      const response = await postJson('/v1/keys', body, options.signal);
      return parseJsonPayload(createdApiKeySchema, await response.text(), 'POST /v1/keys');
    },
    removeKey: (keyId, options = {}) =>
      read(`/v1/keys/${id(keyId)}`, removedApiKeySchema, { method: 'DELETE', ...signalOf(options.signal) }),
    aliases: async (options = {}) =>
      (await read('/v1/aliases', z.object({ aliases: z.array(modelAliasSchema) }), signalOf(options.signal)))
        .aliases,
    async setAlias(name, model, options = {}) {
      const response = await postJson('/v1/aliases', { name, model }, options.signal);
      return parseJsonPayload(modelAliasSchema, await response.text(), 'POST /v1/aliases');
    },
    removeAlias: (name, options = {}) =>
      read(`/v1/aliases/${id(name)}`, z.object({ removed: z.string() }), {
        method: 'DELETE',
        ...signalOf(options.signal),
      }),
    get: (path, schema, options = {}) => read(path, schema, signalOf(options.signal)),
  };
}
