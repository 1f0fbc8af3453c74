/**
 * Ollama's API on every node, so that an app or editor plugin made for Ollama works against rbee by
 * its URL alone (`http://host:port`, no `/v1`). Chats and generations are jobs like any other: they
 * enter the cluster's router here, run wherever the queen places them, and stream back as NDJSON
 * (one JSON object per line, the last with `done: true`), or as one object with `stream: false`.
 * Models are named as everywhere in rbee (short names like `smollm-135m:q8_0`, aliases, refs such
 * as `demo`); Ollama's `:latest` tag is read as no tag. Errors are Ollama's `{"error": "…"}` with
 * the error's HTTP status; an unknown model is 404 `model 'x' not found`.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { requestError } from './error-body.js';
import { parseKeepAlive } from '../../shared/duration.js';
import type { HiveState } from '../../shared/view.js';
import type { Health, JobRequest } from '../../shared/wire.js';
import { readModelInfo } from '../../engine/index.js';
import type { JobManager } from '../jobs/index.js';
import type { WorkerPool } from '../hive/index.js';
import {
  canonicalRef,
  checkAliasName,
  type ModelRef,
  type ProvisionProgress,
  type Provisioner,
} from '../models/index.js';
import type { ModelAliases, ModelCatalog } from '../store/index.js';
import type { LiveView } from '../view/index.js';
import type { Logger } from '../logger.js';
import type { ApiClient } from './auth.js';
import { embedAsJob, submitFollowed } from './job-events.js';
import type { ModelAccessCheck } from './model-access.js';
import type { ModelList, OpenAiModel } from './model-list.js';
import { toolAnswer, toolJobFields, toolPlan, ToolStream, type OpenAiToolCall } from './openai-tools.js';
import { setRetryAfter } from './retry-after.js';
import type { OpenSse, SseStream } from './sse.js';
import {
  chatSchema,
  checkedJob,
  detailsOf,
  digestOf,
  doneFields,
  embeddingsSchema,
  embedSchema,
  generateSchema,
  namedSchema,
  parse,
  pullSchema,
  copySchema,
  refuseImages,
  samplingOf,
  sha256Hex,
  tagRow,
  toMessages,
  type ModelFacts,
} from './ollama-shapes.js';

export interface OllamaInit {
  log: Logger;
  health: () => Health;
  jobs: JobManager;
  catalog: ModelCatalog;
  /** The models of every hive, by the names clients use (model-list.ts). */
  models: ModelList;
  provisioner: Provisioner;
  workers: WorkerPool;
  parseModelRef: (input: string) => ModelRef;
  /** Every hive's published state, this node's first: the workers `/api/ps` lists. */
  hiveStates: () => readonly HiveState[];
  /** Stops a worker on another hive of the cluster (`keep_alive: 0`). */
  stopRemoteWorker: (id: string) => Promise<unknown>;
  checkModel: ModelAccessCheck;
  admit: (client: ApiClient) => () => void;
  openSse: OpenSse;
  /** This node's aliases: `/api/copy` makes one, `/api/delete` removes one. */
  aliases: ModelAliases;
  live: LiveView;
}

/** The Ollama release whose API these routes follow: clients check it before using newer fields. */
export const OLLAMA_API_VERSION = '0.9.0';

const NDJSON = 'application/x-ndjson';

const notFound = (model: string): RbeeError =>
  new RbeeError('MODEL_NOT_FOUND', `model '${model}' not found`, { details: { model } });

/** Namespaced Ollama names (`library/llama3:8b`) are names, even though rbee reads `/` as a path. */
const OLLAMA_NAME = /^[A-Za-z0-9][\w.-]*\/[\w.-]+(?::[\w.-]+)?$/;

function ollamaError(error: RbeeError, model: string | undefined): RbeeError {
  if (model === undefined) return error;
  if (error.code === 'MODEL_NOT_FOUND') return notFound(model);
  if (error.code === 'MODEL_REF_INVALID' && OLLAMA_NAME.test(model) && !/\.gguf$/i.test(model))
    return notFound(model);
  return error;
}

const modelOfBody = (body: unknown): string | undefined => {
  if (typeof body !== 'object' || body === null) return undefined;
  const { model, name } = body as { model?: unknown; name?: unknown };
  return typeof model === 'string' ? model : typeof name === 'string' ? name : undefined;
};

/** Ollama's error body, `{error: "…"}`, with the error's status (and Retry-After when it has one). */
function sendOllamaError(reply: FastifyReply, error: RbeeError): void {
  setRetryAfter(reply, error);
  void reply.status(error.httpStatus).send({ error: error.message });
}

/** The routes, in their own fastify context so that every error here leaves in Ollama's shape. */
export function ollamaRoutes(app: FastifyInstance, init: OllamaInit): Promise<void> {
  app.setErrorHandler((error, request, reply) => {
    const rbee = requestError(error);
    if (rbee.httpStatus >= 500) init.log.error({ err: error }, 'request failed');
    sendOllamaError(reply, ollamaError(rbee, modelOfBody(request.body)));
  });

  /**
   * The name rbee knows a model by, or MODEL_NOT_FOUND as Ollama words it. `name:latest` is `name`
   * when only that resolves (`demo:latest`, an alias without a tag).
   */
  const resolve = (input: string, client: ApiClient): string => {
    try {
      init.checkModel(input, client);
      return input;
    } catch (error) {
      const bare = input.replace(/:latest$/i, '');
      if (bare !== input) {
        try {
          init.checkModel(bare, client);
          return bare;
        } catch {
          // the error of the name as sent is the one to report
        }
      }
      throw ollamaError(toRbeeError(error), input);
    }
  };

  /** What the GGUF header says about a model of this hive, read once per file. */
  const facts = new Map<string, Promise<ModelFacts>>();
  const factsOf = (model: OpenAiModel): Promise<ModelFacts> => {
    const row = init.catalog.get(model.model_id);
    const digest = digestOf(model, row?.sha256);
    // another hive's model: what its published state says is all there is
    if (row === undefined) return Promise.resolve({ digest });
    // a model fetched again may be another file: the key changes with it
    const key = `${row.id}\n${row.addedAt}\n${row.bytes}`;
    let known = facts.get(key);
    if (known === undefined) {
      known = readModelInfo(row.path).then(
        (info) => ({
          digest,
          ...(info.parameterCount === undefined ? {} : { parameterCount: info.parameterCount }),
          ...(info.chatTemplate === undefined ? {} : { chatTemplate: info.chatTemplate }),
        }),
        () => ({ digest }),
      );
      facts.set(key, known);
      if (facts.size > 1024) facts.delete(facts.keys().next().value ?? '');
    }
    return known;
  };

  const findModel = (input: string): OpenAiModel => {
    const model = init.models.find(input) ?? init.models.find(input.replace(/:latest$/i, ''));
    if (model === undefined) throw notFound(input);
    return model;
  };

  // apps probe the root before anything else
  app.get('/', () => "rbee is running (it speaks Ollama's API under /api)");
  app.get('/api/version', () => ({ version: OLLAMA_API_VERSION, rbee: init.health().version }));

  app.get('/api/tags', async () => {
    const models = init.models.list();
    const rows = await Promise.all(
      models.map(async (m) => {
        const f = await factsOf(m);
        // an alias is listed as a model of its own, as Ollama lists a copy (`ollama cp`)
        return [m.id, ...m.aliases].map((name) => tagRow(m, name, f));
      }),
    );
    return { models: rows.flat() };
  });

  app.get('/api/ps', async () => {
    const models = new Map(init.models.list().map((m) => [m.model_id, m]));
    const running = init
      .hiveStates()
      .flatMap((s) => s.workers)
      .filter((w) => w.state !== 'exited' && w.state !== 'stopping');
    const rows = await Promise.all(
      running.map(async (w) => {
        const model = models.get(w.model);
        if (model === undefined) return [];
        const f = await factsOf(model);
        return [
          {
            ...tagRow(model, model.id, f),
            size: w.memoryBytes,
            size_vram: w.backend === 'cpu' ? 0 : w.memoryBytes,
            context_length: w.contextSize ?? model.context_length,
            expires_at: expiresAt(w).toISOString(),
          },
        ];
      }),
    );
    return { models: rows.flat() };
  });

  app.post('/api/show', async (request) => {
    const body = parse(namedSchema, request.body);
    const model = findModel(body.model ?? body.name ?? '');
    const f = await factsOf(model);
    return {
      license: '',
      modelfile: `# Modelfile of rbee's model ${model.name}\nFROM ${model.ref ?? model.name}\n`,
      parameters: '',
      template: f.chatTemplate ?? '',
      details: detailsOf(model, f),
      model_info: {
        'general.architecture': model.architecture,
        'general.basename': model.description,
        ...(f.parameterCount === undefined ? {} : { 'general.parameter_count': f.parameterCount }),
        [`${model.architecture}.context_length`]: model.context_length,
      },
      capabilities: ['completion', 'tools'],
      modified_at: new Date(model.created * 1000).toISOString(),
    };
  });

  app.post('/api/chat', async (request, reply) => {
    const body = parse(chatSchema, request.body);
    const model = resolve(body.model, request.apiClient);
    const messages = toMessages(body.messages ?? []);
    if (messages.length === 0) return loadOrUnload(request, reply, model, body, 'chat');
    const tools = toolPlan({ tools: body.tools });
    const job = checkedJob({
      model,
      messages,
      ...samplingOf(body),
      ...(tools === undefined ? {} : toolJobFields(tools)),
    });
    const name = body.model;
    const at = (): Record<string, unknown> => ({ model: name, created_at: new Date().toISOString() });
    const calls = tools === undefined ? undefined : new ToolStream(tools);
    const message = (content: string): Record<string, unknown> => ({ role: 'assistant', content });
    await serve(init, request, reply, job, body.stream !== false, {
      chunk: (text) => textPieces(calls, text).map((t) => ({ ...at(), message: message(t), done: false })),
      end: (done) => {
        const rest = calls === undefined ? [] : textPieces(calls, undefined);
        const called = toolCalls(calls?.calls);
        return [
          ...rest.map((t) => ({ ...at(), message: message(t), done: false })),
          ...(called === undefined
            ? []
            : [{ ...at(), message: { ...message(''), tool_calls: called }, done: false }]),
          { ...at(), message: message(''), ...doneFields(done) },
        ];
      },
      whole: (text, done) => {
        if (tools === undefined) return { ...at(), message: message(text), ...doneFields(done) };
        const answer = toolAnswer(text, tools, 'stop').message as { content: string | null } & ToolCalls;
        const called = toolCalls(answer.tool_calls);
        return {
          ...at(),
          message:
            called === undefined ? message(text) : { ...message(answer.content ?? ''), tool_calls: called },
          ...doneFields(done),
        };
      },
    });
  });

  app.post('/api/generate', async (request, reply) => {
    const body = parse(generateSchema, request.body);
    const model = resolve(body.model, request.apiClient);
    refuseImages(body.images);
    if (body.suffix !== undefined && body.suffix !== '')
      throw new RbeeError('BAD_REQUEST', '`suffix` (fill-in-the-middle) is not supported');
    if (body.template !== undefined && body.template !== '')
      throw new RbeeError(
        'BAD_REQUEST',
        "`template` is not supported: rbee renders the model's own template",
      );
    if ((body.prompt ?? '') === '') return loadOrUnload(request, reply, model, body, 'generate');
    const job = checkedJob({
      model,
      prompt: body.prompt ?? '',
      ...(body.raw === true ? { raw: true } : {}),
      ...(body.system === undefined || body.raw === true ? {} : { system: body.system }),
      ...samplingOf(body),
    });
    const at = (): Record<string, unknown> => ({ model: body.model, created_at: new Date().toISOString() });
    await serve(init, request, reply, job, body.stream !== false, {
      chunk: (text) => [{ ...at(), response: text, done: false }],
      end: (done) => [{ ...at(), response: '', ...doneFields(done) }],
      whole: (text, done) => ({ ...at(), response: text, ...doneFields(done) }),
    });
  });

  /**
   * A chat without messages or a generation without a prompt loads the model (Ollama's way to warm
   * it), or unloads it with `keep_alive: 0`.
   */
  async function loadOrUnload(
    request: FastifyRequest,
    reply: FastifyReply,
    model: string,
    body: {
      model: string;
      keep_alive?: number | string | undefined;
      options?: { num_ctx?: number | undefined } | null | undefined;
    },
    kind: 'chat' | 'generate',
  ): Promise<void> {
    const name = body.model;
    const keepAliveS = body.keep_alive === undefined ? undefined : parseKeepAlive(body.keep_alive);
    const contextSize = body.options?.num_ctx ?? undefined;
    const answer = (reason: string): Record<string, unknown> => ({
      model: name,
      created_at: new Date().toISOString(),
      ...(kind === 'chat' ? { message: { role: 'assistant', content: '' } } : { response: '' }),
      done: true,
      done_reason: reason,
    });
    if (keepAliveS === 0) {
      // every hive's workers of the model: this one's stopped here, the others' by their hives
      const id = init.models.find(model)?.model_id;
      const local = new Set(init.workers.list().map((w) => w.id));
      const workers = init
        .hiveStates()
        .flatMap((s) => s.workers)
        .filter((w) => w.model === id && w.state !== 'exited' && w.state !== 'stopping');
      await Promise.all(
        workers.map((w) =>
          local.has(w.id)
            ? init.workers.stop(w.id, 'keep_alive 0 from an Ollama client')
            : init.stopRemoteWorker(w.id),
        ),
      );
      return void reply.send(answer('unload'));
    }
    // loaded on this hive, as `rbee workers spawn` does
    const ref = init.parseModelRef(model);
    const release = init.admit(request.apiClient);
    try {
      const { model: row } = await init.provisioner.ensure(ref);
      const lease = await init.workers.acquire(row, contextSize === undefined ? {} : { contextSize });
      lease.release(keepAliveS === undefined ? {} : { keepAliveS });
    } finally {
      release();
    }
    return void reply.send(answer('load'));
  }

  app.post('/api/embed', async (request, reply) => {
    const body = parse(embedSchema, request.body);
    const model = resolve(body.model, request.apiClient);
    const texts = typeof body.input === 'string' ? [body.input] : body.input;
    const started = performance.now();
    const result = await embedWith(request, reply, model, texts, body.keep_alive);
    return {
      model: body.model,
      embeddings: result.embeddings.map((v) =>
        body.dimensions === undefined ? v : v.slice(0, body.dimensions),
      ),
      total_duration: Math.round((performance.now() - started) * 1e6),
      load_duration: Math.round(result.loadMs * 1e6),
      prompt_eval_count: result.promptTokens,
    };
  });

  app.post('/api/embeddings', async (request, reply) => {
    const body = parse(embeddingsSchema, request.body);
    const model = resolve(body.model, request.apiClient);
    const result = await embedWith(request, reply, model, [body.prompt], body.keep_alive);
    return { embedding: result.embeddings[0] ?? [] };
  });

  /** Ollama's embeddings run as jobs, as OpenAI's do (see embedAsJob). */
  function embedWith(
    request: FastifyRequest,
    reply: FastifyReply,
    model: string,
    texts: string[],
    keepAlive: number | string | undefined,
  ): ReturnType<typeof embedAsJob> {
    const release = init.admit(request.apiClient);
    return embedAsJob(init.jobs, { model, texts, keepAlive }, request.apiClient.owner, reply, release);
  }

  /**
   * A copy is an alias under the new name (Ollama's copies share their blobs too): it names the
   * source's ref, on this node. Answered as Ollama does, 200 with no body.
   */
  app.post('/api/copy', async (request, reply) => {
    const body = parse(copySchema, request.body);
    const source = resolve(body.source, request.apiClient);
    const name = body.destination.replace(/:latest$/i, '');
    checkAliasName(name);
    init.aliases.set(name, canonicalRef(init.parseModelRef(source)));
    init.live.markDirty('models');
    return reply.status(200).send();
  });

  /**
   * Deletes a name: an alias of this node (the model stays), else a model on this node's disk, as
   * `rbee models rm` does (refused while a worker has it loaded). 200 with no body, as Ollama.
   */
  app.delete('/api/delete', async (request, reply) => {
    const body = parse(namedSchema, request.body);
    const input = body.model ?? body.name ?? '';
    if (init.aliases.remove(input) || init.aliases.remove(input.replace(/:latest$/i, ''))) {
      init.live.markDirty('models');
      return reply.status(200).send();
    }
    const model = findModel(input);
    const row = init.catalog.get(model.model_id);
    // another hive's model: Ollama deletes what its own server holds
    if (row === undefined) throw notFound(input);
    const users = init.workers.usersOf(row.id);
    if (users.length > 0) {
      throw new RbeeError(
        'MODEL_IN_USE',
        `model '${input}' is loaded by worker ${users.map((w) => w.id).join(', ')}; stop it first`,
      );
    }
    await init.provisioner.remove(row.id);
    init.live.markDirty('models');
    return reply.status(200).send();
  });

  app.post('/api/pull', async (request, reply) => {
    const body = parse(pullSchema, request.body);
    const name = body.model ?? body.name ?? '';
    const ref = init.parseModelRef(resolve(name, request.apiClient));
    const key = canonicalRef(ref);
    const pulling = (progress: {
      file?: string | undefined;
      bytes: number;
      totalBytes?: number | undefined;
    }) => {
      const file = progress.file ?? key;
      const digest = `sha256:${sha256Hex(file)}`;
      return {
        status: `pulling ${digest.slice(7, 19)}`,
        digest,
        ...(progress.totalBytes === undefined ? {} : { total: progress.totalBytes }),
        completed: progress.bytes,
      };
    };
    if (body.stream === false) {
      await init.provisioner.ensure(ref);
      return reply.send({ status: 'success' });
    }
    const out = init.openSse(reply, (error) => `${JSON.stringify({ error: error.message })}\n`, {
      contentType: NDJSON,
    });
    // a client that leaves does not stop the download (others may share it), as with /v1/models/pull
    const write = (line: Record<string, unknown>): void => void out.write(`${JSON.stringify(line)}\n`);
    write({ status: 'pulling manifest' });
    let last: string | undefined;
    await init.provisioner
      .ensure(ref, {
        onProgress: (p: ProvisionProgress) => {
          // a line before the server said the length would have no total: clients divide by it
          if (
            (p.phase === 'downloading' || p.phase === 'retrying') &&
            (p.totalBytes !== undefined || p.bytes > 0)
          )
            write(pulling(p));
          else if (p.phase === 'verifying' && last !== 'verifying')
            write({ status: 'verifying sha256 digest' });
          last = p.phase;
        },
      })
      .then(
        ({ model, cached }) => {
          // a model already on disk is one whole layer, as Ollama shows a pull of what it has
          if (cached)
            write({
              ...pulling({ bytes: model.bytes, totalBytes: model.bytes }),
              digest: `sha256:${model.sha256 ?? sha256Hex(key)}`,
            });
          write({ status: 'writing manifest' });
          write({ status: 'success' });
        },
        (error: unknown) => write({ error: ollamaError(toRbeeError(error), name).message }),
      )
      .finally(() => out.end());
  });
  return Promise.resolve();
}

/** The node's keep-alive when a hive of an older version does not publish its workers' own. */
const DEFAULT_KEEP_ALIVE_S = 300;
/** What Ollama clients read as "never" (a worker with keep-alive -1). */
const NEVER = new Date(Date.UTC(9999, 11, 31));

/** When an idle worker unloads: its keep-alive after its last use (after now while it is busy). */
function expiresAt(worker: HiveState['workers'][number]): Date {
  const keepAliveS = worker.keepAliveS ?? DEFAULT_KEEP_ALIVE_S;
  if (keepAliveS < 0) return NEVER;
  const busy = worker.state === 'busy' || worker.slotsBusy > 0;
  return new Date((busy ? Date.now() : worker.lastUsedAt) + keepAliveS * 1000);
}

/** The text pieces of a streamed answer (all of it without tools; with tools, what is not a call). */
function textPieces(calls: ToolStream | undefined, text: string | undefined): string[] {
  if (calls === undefined) return text === undefined || text === '' ? [] : [text];
  const events = text === undefined ? calls.end() : calls.feed(text);
  return events.flatMap((e) => (e.type === 'text' && e.text !== '' ? [e.text] : []));
}

/** The answer's calls in Ollama's shape (arguments as an object), or undefined when it made none. */
function toolCalls(calls: ToolCalls['tool_calls']): Record<string, unknown>[] | undefined {
  if (calls === undefined || calls.length === 0) return undefined;
  return calls.map((c, index) => ({
    id: c.id,
    function: { index, name: c.function.name, arguments: JSON.parse(c.function.arguments) as unknown },
  }));
}

type ToolCalls = { tool_calls?: OpenAiToolCall[] };

interface Shape {
  /** The lines of one generated piece of text (none while a possible tool call is held back). */
  chunk(text: string): Record<string, unknown>[];
  /** The last lines: what was held back, then the one with `done: true`. */
  end(done: Parameters<typeof doneFields>[0]): Record<string, unknown>[];
  /** The whole answer, with `stream: false`. */
  whole(text: string, done: Parameters<typeof doneFields>[0]): Record<string, unknown>;
}

/**
 * Submits the job and answers with its tokens: NDJSON lines as they come, or one object at the
 * end. The status line waits for the first line, so a failure before any token is a proper HTTP
 * error; after it, the error is the stream's last line, `{"error": "…"}`. A client that goes away
 * cancels its job.
 */
async function serve(
  init: OllamaInit,
  request: FastifyRequest,
  reply: FastifyReply,
  job: JobRequest,
  stream: boolean,
  shape: Shape,
): Promise<void> {
  const release = init.admit(request.apiClient);
  const { events, leave } = submitFollowed(init.jobs, job, request.apiClient.owner, reply, release);
  const errorLine = (error: RbeeError): string =>
    `${JSON.stringify({ error: ollamaError(error, modelOfBody(request.body)).message })}\n`;
  let out: SseStream | undefined;
  const send = async (lines: Record<string, unknown>[]): Promise<void> => {
    for (const line of lines) {
      out ??= init.openSse(reply, errorLine, { contentType: NDJSON });
      // the job waits for a slow reader (its tokens are kept anyway) instead of filling the socket
      if (!out.write(`${JSON.stringify(line)}\n`)) await out.drained();
    }
  };
  let text = '';
  for await (const event of events) {
    if (event.type === 'narration') continue;
    if (out !== undefined && !out.open) return leave();
    if (event.type === 'error') {
      const error = RbeeError.fromJSON(event.error);
      if (out === undefined) throw error;
      return out.end(errorLine(error));
    }
    if (event.type === 'token') {
      text += event.text;
      if (stream) await send(shape.chunk(event.text));
      continue;
    }
    if (!stream) return void reply.send(shape.whole(text, event));
    await send(shape.end(event));
    return out?.end();
  }
}
