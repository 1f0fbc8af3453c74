/**
 * The keeper's view of a node: its HTTP API as typed calls. Loads no native code, so the CLI and
 * the TUI can use it without pulling in llama.cpp or SQLite.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { z } from 'zod';
import { RbeeError, type RbeeErrorJson } from '../../shared/errors.js';
import {
  errorJsonSchema,
  healthSchema,
  jobAcceptedSchema,
  jobEventSchema,
  isTerminal,
  type Health,
  type JobAccepted,
  type JobEvent,
  type JobRequest,
} from '../../shared/wire.js';
import {
  clusterStatusSchema,
  jobRecordSchema,
  placePreviewSchema,
  type JobRecord,
  type PlacePreview,
  doctorReportSchema,
  nodeEventSchema,
  pullEventSchema,
  type ClusterStatus,
  type DoctorReport,
  type NodeEvent,
  type PullEvent,
} from '../../shared/view.js';

const clusterShutdownSchema = z.object({ queen: z.string(), term: z.number(), hives: z.array(z.string()) });
export type ClusterShutdown = z.infer<typeof clusterShutdownSchema>;
/** What a node sends last on a live stream it ends early (e.g. CLIENT_TOO_SLOW). */
const streamErrorSchema = z.object({ type: z.literal('error'), error: errorJsonSchema });

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
      signal?: AbortSignal;
      onProgress?: (progress: Extract<PullEvent, { type: 'progress' }>) => void;
    },
  ): Promise<Extract<PullEvent, { type: 'done' }>>;
  /** Loads a worker for a model (fetching the model first if needed); resolves once it is ready. */
  spawnWorker(
    model: string,
    options?: { signal?: AbortSignal },
  ): Promise<{ worker: { id: string; pid: number; model: string } & Record<string, unknown> }>;
  /** Removes a model from the catalog and the disk; MODEL_IN_USE while a worker has it loaded. */
  deleteModel(id: string, options?: { signal?: AbortSignal }): Promise<{ removed: string }>;
  stopWorker(id: string, options?: { signal?: AbortSignal }): Promise<void>;
  /** Where a job for the model would run (only `hive` with one), and every hive's option; nothing loads. */
  place(model: string, options?: { hive?: string; signal?: AbortSignal }): Promise<PlacePreview>;
  /** Members, queen and hives of the cluster this node belongs to. */
  cluster(options?: { signal?: AbortSignal }): Promise<ClusterStatus>;
  /** What `rbee doctor` checks on this node (loads llama.cpp there the first time, about a second). */
  doctor(options?: { signal?: AbortSignal }): Promise<DoctorReport>;
  get<T>(path: string, options?: { signal?: AbortSignal }): Promise<T>;
  post<T>(path: string, body: unknown, options?: { signal?: AbortSignal }): Promise<T>;
  delete<T>(path: string, options?: { signal?: AbortSignal }): Promise<T>;
}

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

  return {
    url: base,
    async health(options = {}) {
      const timeout = AbortSignal.timeout(HEALTH_TIMEOUT_MS);
      const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
      try {
        const response = await request('/health', { signal });
        return healthSchema.parse(await response.json());
      } catch (error) {
        if (options.signal?.aborted === true) throw error;
        if (error instanceof RbeeError) throw error;
        throw new RbeeError('NODE_UNREACHABLE', `no rbee node answers at ${base}`, { cause: error });
      }
    },
    async submitJob(job, options = {}) {
      const response = await request('/v1/jobs', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(job),
        ...signalOf(options.signal),
      });
      return jobAcceptedSchema.parse(await response.json());
    },
    async *jobEvents(id, options = {}) {
      const path = `/v1/jobs/${encodeURIComponent(id)}/events`;
      for await (const data of eventStream(base, path, { ...signalOf(options.signal), headers })) {
        const event = jobEventSchema.parse(JSON.parse(data));
        yield event;
        if (isTerminal(event)) return;
      }
      throw new RbeeError('NODE_UNREACHABLE', 'the node closed the event stream before the job ended');
    },
    async cancelJob(id, options = {}) {
      await request(`/v1/jobs/${encodeURIComponent(id)}`, { method: 'DELETE', ...signalOf(options.signal) });
    },
    async shutdown(options = {}) {
      await request('/v1/shutdown', { method: 'POST', ...signalOf(options.signal) });
    },
    async shutdownCluster(options = {}) {
      const response = await postJson('/v1/shutdown', { cluster: true }, options.signal);
      return z.object({ cluster: clusterShutdownSchema }).parse(await response.json()).cluster;
    },
    async *nodeEvents(options = {}) {
      for await (const data of eventStream(base, '/v1/events', {
        ...signalOf(options.signal),
        headers,
      })) {
        const raw: unknown = JSON.parse(data);
        // the node's last word on a stream it drops (this client fell too far behind)
        const failed = streamErrorSchema.safeParse(raw);
        if (failed.success) throw RbeeError.fromJSON(failed.data.error);
        yield nodeEventSchema.parse(raw);
      }
    },
    async pullModel(ref, options = {}) {
      const stream = eventStream(base, '/v1/models/pull', {
        headers,
        method: 'POST',
        body: { model: ref },
        ...signalOf(options.signal),
      });
      for await (const data of stream) {
        const event = pullEventSchema.parse(JSON.parse(data));
        if (event.type === 'progress') options.onProgress?.(event);
        else if (event.type === 'error') throw RbeeError.fromJSON(event.error);
        else return event;
      }
      throw new RbeeError('NODE_UNREACHABLE', 'the node closed the pull stream before it ended');
    },
    async spawnWorker(model, options = {}) {
      const response = await postJson('/v1/workers', { model }, options.signal);
      return (await response.json()) as { worker: { id: string; pid: number; model: string } };
    },
    async deleteModel(id, options = {}) {
      const response = await request(`/v1/models/${encodeURIComponent(id)}`, {
        method: 'DELETE',
        ...signalOf(options.signal),
      });
      return (await response.json()) as { removed: string };
    },
    async stopWorker(id, options = {}) {
      await request(`/v1/workers/${encodeURIComponent(id)}`, {
        method: 'DELETE',
        ...signalOf(options.signal),
      });
    },
    async cluster(options = {}) {
      const response = await request('/v1/cluster', signalOf(options.signal));
      return clusterStatusSchema.parse(await response.json());
    },
    async doctor(options = {}) {
      const response = await request('/v1/doctor', signalOf(options.signal));
      return doctorReportSchema.parse(await response.json());
    },
    async place(model, options = {}) {
      const query = new URLSearchParams({
        model,
        ...(options.hive === undefined ? {} : { hive: options.hive }),
      });
      const response = await request(`/v1/place?${query.toString()}`, signalOf(options.signal));
      return placePreviewSchema.parse(await response.json());
    },
    async jobHistory(options = {}) {
      const query = options.limit === undefined ? '' : `?limit=${options.limit}`;
      const response = await request(`/v1/jobs/history${query}`, signalOf(options.signal));
      return z.object({ jobs: z.array(jobRecordSchema) }).parse(await response.json()).jobs;
    },
    async get<T>(path: string, options: { signal?: AbortSignal } = {}) {
      const response = await request(path, signalOf(options.signal));
      return (await response.json()) as T;
    },
    async post<T>(path: string, body: unknown, options: { signal?: AbortSignal } = {}) {
      const response = await postJson(path, body, options.signal);
      return (await response.json()) as T;
    },
    async delete<T>(path: string, options: { signal?: AbortSignal } = {}) {
      const response = await request(path, { method: 'DELETE', ...signalOf(options.signal) });
      return (await response.json()) as T;
    },
  };
}
