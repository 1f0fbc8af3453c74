/**
 * Long-lived streams over `/rbee/stream/1.0.0` (inference tokens, narration, model bytes). The opener
 * sends `{ kind, params }`, the other side answers `{ ok: true }` or an error frame, and then both
 * directions carry frames of the kind's schemas with back-pressure (see codec.ts): a slow reader
 * pauses the stream, so a fast writer waits in `write` instead of filling memory.
 *
 * Opening a libp2p stream costs a protocol negotiation round trip and the peer store's bookkeeping
 * on both sides: milliseconds of CPU, which a job's first token should not wait on. So once a peer
 * has been opened to, a stream to it is kept on standby (its opener sent a standby frame and the
 * other side waits, without a deadline, for the real open frame); the next `open` takes it and
 * only its own open frame crosses, and a new standby stream is made after the open, off its path.
 */
import { z } from 'zod';
import type { AbortOptions, Stream } from '@libp2p/interface';
import { RbeeError, toRbeeError } from '../shared/errors.js';
import { createFrameChannel, type FrameChannel } from './codec.js';
import type { P2pHost } from './host.js';
import { compiled } from '../shared/compiled-schema.js';

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
/** The kind of a standby stream's first frame: the real open frame follows when it is used. */
const STANDBY = '~standby';
/** Standby streams kept per peer: enough for a burst of jobs starting together. */
const STANDBY_PER_PEER = 2;
/** A standby stream is made this long after an open, so that it does not compete with the job. */
const STANDBY_DELAY_MS = 100;

type AnyHandler = StreamHandler<unknown, unknown, unknown>;
type AnyKind = StreamKind<unknown, unknown, unknown>;

export function createStreams(init: StreamsInit): Streams {
  const { host } = init;
  const handlers = new Map<string, { kind: AnyKind; handler: AnyHandler }>();
  const serving = new Set<AbortController>();
  const standby = new Map<string, FrameChannel<z.infer<typeof acceptSchema>, unknown>[]>();
  const refilling = new Set<string>();
  let stopped = false;
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
      let open = await opening.read({
        signal: AbortSignal.any([controller.signal, AbortSignal.timeout(5_000)]),
      });
      // a standby stream: its opener uses it when it next opens a stream to this node
      if (open?.kind === STANDBY) open = await opening.read({ signal: controller.signal });
      if (open === undefined) return;
      const entry = handlers.get(open.kind);
      if (entry === undefined) {
        host.frameStats.unknown += 1;
        throw new RbeeError('NOT_FOUND', `unknown stream kind ${open.kind}`);
      }
      const params = compiled(entry.kind.params).safeParse(open.params);
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
      stopped = true;
      for (const controller of serving)
        controller.abort(new RbeeError('NODE_SHUTTING_DOWN', 'the node is stopping'));
      for (const channels of standby.values()) {
        for (const channel of channels) channel.abort(new Error('the node is stopping'));
      }
      standby.clear();
    },
  };

  /** A standby stream to `peer` that is still usable, taken out of the pool. */
  function takeStandby(peer: string): FrameChannel<z.infer<typeof acceptSchema>, unknown> | undefined {
    const channels = standby.get(peer);
    // a test partition black-holes new streams: a standby one must not cross it either
    if (channels === undefined || host.partition.isDropped(peer)) return undefined;
    for (let channel = channels.shift(); channel !== undefined; channel = channels.shift()) {
      const { stream } = channel;
      if (stream.status === 'open' && stream.writeStatus === 'writable' && stream.readStatus === 'readable') {
        return channel;
      }
      channel.abort(new Error('stale standby stream'));
    }
    return undefined;
  }

  /** Tops up `peer`'s standby streams, a moment after an open. */
  function refillStandby(peer: string): void {
    if (stopped || refilling.has(peer)) return;
    refilling.add(peer);
    setTimeout(() => {
      void (async () => {
        const channels = standby.get(peer) ?? [];
        standby.set(peer, channels);
        while (!stopped && channels.length < STANDBY_PER_PEER && !host.partition.isDropped(peer)) {
          const stream = await host.openStream(peer, STREAM_PROTOCOL, {
            signal: AbortSignal.timeout(5_000),
            dial: false,
          });
          const channel = createFrameChannel<z.infer<typeof acceptSchema>, unknown>(stream, {
            ...base,
            schema: acceptSchema,
          });
          await channel.write({ kind: STANDBY, params: null });
          if (stopped) {
            channel.abort(new Error('the node is stopping'));
            return;
          }
          channels.push(channel);
          stream.addEventListener(
            'close',
            () => {
              const at = channels.indexOf(channel);
              if (at !== -1) channels.splice(at, 1);
            },
            { once: true },
          );
        }
      })()
        // no standby stream this time: the next open makes its own
        .catch(() => undefined)
        .finally(() => refilling.delete(peer));
    }, STANDBY_DELAY_MS).unref();
  }

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
      // a standby stream has the default high-water mark: a caller asking for another opens its own
      const ready = options.highWaterMarkBytes === undefined ? takeStandby(peer) : undefined;
      let channel: FrameChannel<z.infer<typeof acceptSchema>, unknown>;
      if (ready !== undefined) {
        channel = ready;
        stream = ready.stream;
      } else {
        stream = await host.openStream(peer, STREAM_PROTOCOL, { signal });
        channel = createFrameChannel<z.infer<typeof acceptSchema>, unknown>(stream, {
          ...base,
          highWaterMarkBytes: options.highWaterMarkBytes ?? init.highWaterMarkBytes,
          schema: acceptSchema,
        });
      }
      refillStandby(peer);
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
