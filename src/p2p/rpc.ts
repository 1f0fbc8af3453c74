/**
 * Request/response over `/rbee/rpc/1.0.0`. Opening a libp2p stream costs ~10× the CPU of a frame
 * round trip, and heartbeats are most of the calls, so each side keeps one long-lived stream (a
 * session) per peer and multiplexes calls on it: `{ id, method, params, deadlineMs }` out,
 * `{ id, result }` or `{ id, error }` back, `{ id, cancel: true }` when the caller gives up. The
 * caller's deadline travels with the request, so the handler's signal fires when the caller would
 * give up anyway; a cancel or a lost session aborts it too.
 */
import { z } from 'zod';
import type { AbortOptions, Stream } from '@libp2p/interface';
import { RbeeError, toRbeeError } from '../shared/errors.js';
import { errorJsonSchema } from '../shared/wire.js';
import { raceSignal } from '../shared/abort.js';
import { createFrameChannel, type FrameChannel } from './codec.js';
import type { P2pHost } from './host.js';
import { compiled } from '../shared/compiled-schema.js';

export const RPC_PROTOCOL = '/rbee/rpc/1.0.0';
export const DEFAULT_RPC_TIMEOUT_MS = 5_000;
const MAX_DEADLINE_MS = 10 * 60_000;
/** Requests served at once per session; more wait unread, which holds the caller back. */
const MAX_CONCURRENT = 64;

export interface RpcMethod<P, R> {
  readonly name: string;
  readonly params: z.ZodType<P>;
  readonly result: z.ZodType<R>;
}

export function defineMethod<P, R>(
  name: string,
  params: z.ZodType<P>,
  result: z.ZodType<R>,
): RpcMethod<P, R> {
  return { name, params, result };
}

export interface RpcContext {
  /** The calling peer's id. */
  peer: string;
  /** Aborted when the caller's deadline passes, the caller cancels or its session is lost. */
  signal: AbortSignal;
}

export type RpcHandler<P, R> = (params: P, context: RpcContext) => R | Promise<R>;

export interface RpcCallOptions extends AbortOptions {
  /** Defaults to the rpc's `defaultTimeoutMs` (5 s). */
  timeoutMs?: number;
  /** Dial when not connected. Defaults to true. */
  dial?: boolean;
}

export interface RpcInit {
  host: P2pHost;
  defaultTimeoutMs?: number;
  /** Defaults to the codec's 1 MiB. */
  maxFrameBytes?: number;
}

export interface RpcStats {
  calls: number;
  served: number;
  failed: number;
  timeouts: number;
}

export interface Rpc {
  /** Registers the protocol with the host. */
  start(): Promise<void>;
  /** Adds a handler; returns its removal. A second handler for the same method replaces the first. */
  handle<P, R>(method: RpcMethod<P, R>, handler: RpcHandler<P, R>): () => void;
  call<P, R>(peer: string, method: RpcMethod<P, R>, params: P, options?: RpcCallOptions): Promise<R>;
  /** Closes every session. */
  stop(): void;
  readonly stats: RpcStats;
}

const requestSchema = z.object({
  id: z.number().int().min(0),
  method: z.string().min(1).max(200).optional(),
  params: z.unknown(),
  deadlineMs: z.number().int().positive().max(MAX_DEADLINE_MS).optional(),
  cancel: z.literal(true).optional(),
});
type Request = z.infer<typeof requestSchema>;
const responseSchema = z.object({
  id: z.number().int().min(0),
  result: z.unknown(),
  error: errorJsonSchema.optional(),
});
type Response = z.infer<typeof responseSchema>;

interface Pending {
  resolve: (response: Response) => void;
  reject: (error: RbeeError) => void;
}

interface Session {
  channel: FrameChannel<Response, Request>;
  pending: Map<number, Pending>;
  nextId: number;
  closed: boolean;
}

export function createRpc(init: RpcInit): Rpc {
  const { host } = init;
  const defaultTimeoutMs = init.defaultTimeoutMs ?? DEFAULT_RPC_TIMEOUT_MS;
  const handlers = new Map<
    string,
    { method: RpcMethod<unknown, unknown>; handler: RpcHandler<unknown, unknown> }
  >();
  const stats: RpcStats = { calls: 0, served: 0, failed: 0, timeouts: 0 };
  // errors travel inside answers (`{ id, error }`): an error frame is no part of a session
  const channelInit = { stats: host.frameStats, maxFrameBytes: init.maxFrameBytes, errorFrames: false };
  const sessions = new Map<string, Promise<Session>>();
  const served = new Set<Stream>();

  const handleRequest = async (
    request: Request,
    peer: string,
    signal: AbortSignal,
  ): Promise<{ result: unknown } | { error: RbeeError }> => {
    try {
      const entry = request.method === undefined ? undefined : handlers.get(request.method);
      if (entry === undefined) {
        host.frameStats.unknown += 1;
        throw new RbeeError('NOT_FOUND', `unknown rpc method ${request.method ?? '(none)'}`);
      }
      const params = compiled(entry.method.params).safeParse(request.params);
      if (!params.success) {
        host.frameStats.malformed += 1;
        throw new RbeeError('BAD_REQUEST', `bad params for ${request.method}`, { cause: params.error });
      }
      const result = await entry.handler(params.data, { peer, signal });
      stats.served += 1;
      return { result: result ?? null };
    } catch (error) {
      stats.failed += 1;
      return { error: toRbeeError(error) };
    }
  };

  /** One inbound session: requests are served concurrently, answers go back as they are ready. */
  const serve = async (stream: Stream, peer: string): Promise<void> => {
    const channel = createFrameChannel<Request, Response>(stream, { ...channelInit, schema: requestSchema });
    const running = new Map<number, AbortController>();
    served.add(stream);
    const onClose = (): void => {
      for (const controller of running.values())
        controller.abort(new RbeeError('JOB_CANCELLED', 'the caller went away'));
    };
    stream.addEventListener('close', onClose);
    try {
      for (;;) {
        while (running.size >= MAX_CONCURRENT)
          await Promise.race([...running.values()].map((c) => onAbortOrDone(c)));
        let request: Request | undefined;
        try {
          request = await channel.read();
        } catch {
          if (stream.status !== 'open') return;
          continue; // a malformed frame: counted by the codec, the session goes on
        }
        if (request === undefined) return;
        if (host.partition.isDropped(peer)) continue;
        if (request.cancel === true) {
          running.get(request.id)?.abort(new RbeeError('JOB_CANCELLED', 'the caller cancelled'));
          continue;
        }
        const { id } = request;
        const controller = new AbortController();
        running.set(id, controller);
        const signal = AbortSignal.any([
          controller.signal,
          AbortSignal.timeout(request.deadlineMs ?? defaultTimeoutMs),
        ]);
        void handleRequest(request, peer, signal).then(async (outcome) => {
          running.delete(id);
          controller.abort(); // wakes the concurrency wait
          if (host.partition.isDropped(peer) || stream.writeStatus !== 'writable') return;
          const frame: Response =
            'error' in outcome
              ? { id, result: null, error: errorJsonSchema.parse(outcome.error.toJSON()) }
              : { id, result: outcome.result };
          await channel.write(frame).catch(() => undefined);
        });
      }
    } finally {
      stream.removeEventListener('close', onClose);
      served.delete(stream);
      onClose();
      if (stream.status === 'open') await channel.close().catch(() => channel.abort(new Error('closing')));
    }
  };

  const openSession = async (
    peer: string,
    options: RpcCallOptions,
    signal: AbortSignal,
  ): Promise<Session> => {
    const stream = await host.openStream(peer, RPC_PROTOCOL, { signal, dial: options.dial });
    const session: Session = {
      channel: createFrameChannel<Response, Request>(stream, { ...channelInit, schema: responseSchema }),
      pending: new Map(),
      nextId: 0,
      closed: false,
    };
    void readResponses(peer, session);
    return session;
  };

  const readResponses = async (peer: string, session: Session): Promise<void> => {
    let failure: RbeeError = new RbeeError('NODE_UNREACHABLE', `the rpc session with ${peer} ended`);
    for (;;) {
      let response: Response | undefined;
      try {
        response = await session.channel.read();
      } catch (error) {
        if (session.channel.stream.status === 'open') continue; // a malformed answer, counted
        failure = toRbeeError(error, 'NODE_UNREACHABLE');
        break;
      }
      if (response === undefined) break;
      const pending = session.pending.get(response.id);
      session.pending.delete(response.id);
      pending?.resolve(response);
    }
    session.closed = true;
    sessions.delete(peer);
    for (const pending of session.pending.values()) pending.reject(failure);
    session.pending.clear();
    if (session.channel.stream.status === 'open') session.channel.abort(failure);
  };

  const sessionFor = async (peer: string, options: RpcCallOptions, signal: AbortSignal): Promise<Session> => {
    let opening = sessions.get(peer);
    if (opening === undefined) {
      opening = openSession(peer, options, signal);
      sessions.set(peer, opening);
      opening.catch(() => sessions.delete(peer));
    }
    const session = await raceSignal(opening, signal);
    if (session.closed) {
      sessions.delete(peer);
      return sessionFor(peer, options, signal);
    }
    return session;
  };

  async function call<P, R>(
    peer: string,
    method: RpcMethod<P, R>,
    params: P,
    options: RpcCallOptions = {},
  ): Promise<R> {
    stats.calls += 1;
    const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
    const deadline = AbortSignal.timeout(timeoutMs);
    const signal = options.signal === undefined ? deadline : AbortSignal.any([options.signal, deadline]);
    let session: Session | undefined;
    let id = -1;
    try {
      if (host.partition.isDropped(peer)) await raceSignal(new Promise<never>(() => undefined), signal);
      session = await sessionFor(peer, options, signal);
      id = session.nextId++;
      const answer = Promise.withResolvers<Response>();
      session.pending.set(id, { resolve: answer.resolve, reject: answer.reject });
      await session.channel.write(
        { id, method: method.name, params, deadlineMs: Math.max(1, timeoutMs) },
        { signal },
      );
      const response = await raceSignal(answer.promise, signal);
      if (response.error !== undefined) throw RbeeError.fromJSON(response.error);
      const result = compiled(method.result).safeParse(response.result);
      if (!result.success) {
        host.frameStats.malformed += 1;
        throw new RbeeError('BAD_REQUEST', `malformed answer to ${method.name} from ${peer}`, {
          cause: result.error,
        });
      }
      return result.data;
    } catch (error) {
      if (session !== undefined && session.pending.delete(id) && !session.closed) {
        // tell the handler to stop; the session itself stays up for other calls
        session.channel.write({ id, cancel: true, params: null }).catch(() => undefined);
      }
      if (options.signal?.aborted === true) throw toRbeeError(options.signal.reason);
      if (deadline.aborted) {
        stats.timeouts += 1;
        throw new RbeeError('TIMEOUT', `${method.name} to ${peer} timed out after ${timeoutMs} ms`, {
          cause: error,
        });
      }
      throw toRbeeError(error, 'NODE_UNREACHABLE');
    }
  }

  return {
    stats,
    async start() {
      await host.handle(RPC_PROTOCOL, serve);
    },
    handle(method, handler) {
      const entry = {
        method: method as RpcMethod<unknown, unknown>,
        handler: handler as RpcHandler<unknown, unknown>,
      };
      handlers.set(method.name, entry);
      return () => {
        if (handlers.get(method.name) === entry) handlers.delete(method.name);
      };
    },
    call,
    stop() {
      for (const opening of sessions.values()) {
        opening.then(
          (s) => s.channel.abort(new RbeeError('NODE_SHUTTING_DOWN', 'rpc stopped')),
          () => undefined,
        );
      }
      sessions.clear();
      for (const stream of served) stream.abort(new RbeeError('NODE_SHUTTING_DOWN', 'rpc stopped'));
    },
  };
}

function onAbortOrDone(controller: AbortController): Promise<void> {
  return new Promise((resolve) => {
    if (controller.signal.aborted) resolve();
    else controller.signal.addEventListener('abort', () => resolve(), { once: true });
  });
}
