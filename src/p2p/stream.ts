/**
 * Long-lived streams over `/rbee/stream/1.0.0` (inference tokens, narration, model bytes). The opener
 * sends `{ kind, params }`, the other side answers `{ ok: true }` or an error frame, and then both
 * directions carry frames of the kind's schemas with back-pressure (see codec.ts): a slow reader
 * pauses the stream, so a fast writer waits in `write` instead of filling memory.
 */
import { z } from 'zod';
import type { AbortOptions, Stream } from '@libp2p/interface';
import { RbeeError, toRbeeError } from '../shared/errors.js';
import { createFrameChannel, type FrameChannel } from './codec.js';
import type { P2pHost } from './host.js';

export const STREAM_PROTOCOL = '/rbee/stream/1.0.0';

/** A kind of stream: its open parameters, frames from the opener (`up`) and to the opener (`down`). */
export interface StreamKind<P, Up, Down> {
  readonly name: string;
  readonly params: z.ZodType<P>;
  readonly up: z.ZodType<Up>;
  readonly down: z.ZodType<Down>;
}

export function defineStream<P, Up, Down>(
  name: string,
  schemas: { params: z.ZodType<P>; up: z.ZodType<Up>; down: z.ZodType<Down> },
): StreamKind<P, Up, Down> {
  return { name, ...schemas };
}

export interface StreamContext<P, Up, Down> {
  peer: string;
  params: P;
  /** Frames from the opener, and `write` for frames to it. */
  channel: FrameChannel<Up, Down>;
  /** Aborted when the opener resets the stream or the node stops. */
  signal: AbortSignal;
}

/** Returning ends the stream cleanly; throwing ends it with an error frame the opener receives. */
export type StreamHandler<P, Up, Down> = (context: StreamContext<P, Up, Down>) => Promise<void>;

export interface OpenStreamOptions extends AbortOptions {
  /** How long the other side may take to accept. Defaults to 5 s. */
  openTimeoutMs?: number;
  /** Defaults to the codec's 256 KiB. */
  highWaterMarkBytes?: number;
}

export interface StreamsInit {
  host: P2pHost;
  maxFrameBytes?: number;
  highWaterMarkBytes?: number;
}

export interface Streams {
  start(): Promise<void>;
  handle<P, Up, Down>(kind: StreamKind<P, Up, Down>, handler: StreamHandler<P, Up, Down>): () => void;
  /** Opens a stream of `kind` to `peer`: read its `down` frames, write `up` frames, close when done. */
  open<P, Up, Down>(
    peer: string,
    kind: StreamKind<P, Up, Down>,
    params: P,
    options?: OpenStreamOptions,
  ): Promise<FrameChannel<Down, Up>>;
  /** Aborts every stream this side is serving. */
  stop(): void;
}

const openSchema = z.object({ kind: z.string().min(1).max(200), params: z.unknown() });
const acceptSchema = z.object({ ok: z.literal(true) });

type AnyHandler = StreamHandler<unknown, unknown, unknown>;
type AnyKind = StreamKind<unknown, unknown, unknown>;

export function createStreams(init: StreamsInit): Streams {
  const { host } = init;
  const handlers = new Map<string, { kind: AnyKind; handler: AnyHandler }>();
  const serving = new Set<AbortController>();
  const base = {
    stats: host.frameStats,
    maxFrameBytes: init.maxFrameBytes,
    highWaterMarkBytes: init.highWaterMarkBytes,
  };

  const serve = async (stream: Stream, peer: string): Promise<void> => {
    const opening = createFrameChannel<z.infer<typeof openSchema>, unknown>(stream, {
      ...base,
      schema: openSchema,
      // only the serving side ends a stream with an error frame; one from the opener is refused
      errorFrames: false,
    });
    const controller = new AbortController();
    serving.add(controller);
    const onClose = (): void => controller.abort(new RbeeError('JOB_CANCELLED', 'the stream was closed'));
    stream.addEventListener('close', onClose);
    try {
      const open = await opening.read({
        signal: AbortSignal.any([controller.signal, AbortSignal.timeout(5_000)]),
      });
      if (open === undefined) return;
      const entry = handlers.get(open.kind);
      if (entry === undefined) {
        host.frameStats.unknown += 1;
        throw new RbeeError('NOT_FOUND', `unknown stream kind ${open.kind}`);
      }
      const params = entry.kind.params.safeParse(open.params);
      if (!params.success) {
        host.frameStats.malformed += 1;
        throw new RbeeError('BAD_REQUEST', `bad params for stream ${open.kind}`, { cause: params.error });
      }
      await opening.write({ ok: true });
      const channel = opening.withSchema<unknown, unknown>(entry.kind.up);
      await entry.handler({ peer, params: params.data, channel, signal: controller.signal });
      if (stream.writeStatus === 'writable') await channel.close();
    } catch (error) {
      if (stream.writeStatus === 'writable' && !controller.signal.aborted) {
        await opening.fail(toRbeeError(error)).catch(() => opening.abort(error as Error));
      } else if (stream.status === 'open') {
        opening.abort(error as Error);
      }
    } finally {
      stream.removeEventListener('close', onClose);
      serving.delete(controller);
    }
  };

  return {
    async start() {
      await host.handle(STREAM_PROTOCOL, serve);
    },
    handle(kind, handler) {
      const entry = { kind: kind as AnyKind, handler: handler as AnyHandler };
      handlers.set(kind.name, entry);
      return () => {
        if (handlers.get(kind.name) === entry) handlers.delete(kind.name);
      };
    },
    open,
    stop() {
      for (const controller of serving)
        controller.abort(new RbeeError('NODE_SHUTTING_DOWN', 'the node is stopping'));
    },
  };

  async function open<P, Up, Down>(
    peer: string,
    kind: StreamKind<P, Up, Down>,
    params: P,
    options: OpenStreamOptions = {},
  ): Promise<FrameChannel<Down, Up>> {
    const openSignal = AbortSignal.timeout(options.openTimeoutMs ?? 5_000);
    const signal = options.signal === undefined ? openSignal : AbortSignal.any([options.signal, openSignal]);
    let stream: Stream | undefined;
    try {
      stream = await host.openStream(peer, STREAM_PROTOCOL, { signal });
      const channel = createFrameChannel<z.infer<typeof acceptSchema>, unknown>(stream, {
        ...base,
        highWaterMarkBytes: options.highWaterMarkBytes ?? init.highWaterMarkBytes,
        schema: acceptSchema,
      });
      await channel.write({ kind: kind.name, params }, { signal });
      const accepted = await channel.read({ signal });
      if (accepted === undefined) throw new RbeeError('NODE_UNREACHABLE', `${peer} refused the stream`);
      const opened = channel.withSchema<Down, Up>(kind.down);
      if (options.signal !== undefined) {
        // the caller's signal keeps governing the stream after it is open
        const caller = options.signal;
        const onAbort = (): void => opened.abort(toRbeeError(caller.reason));
        caller.addEventListener('abort', onAbort, { once: true });
        stream.addEventListener('close', () => caller.removeEventListener('abort', onAbort), { once: true });
      }
      return opened;
    } catch (error) {
      stream?.abort(error instanceof Error ? error : new Error(String(error)));
      if (options.signal?.aborted === true) throw toRbeeError(options.signal.reason);
      if (openSignal.aborted)
        throw new RbeeError('TIMEOUT', `opening ${kind.name} on ${peer} timed out`, { cause: error });
      throw toRbeeError(error, 'NODE_UNREACHABLE');
    }
  }
}
