/**
 * Length-prefixed frames over a libp2p stream. A frame is `varint(length) ‖ kind ‖ body`: kind 0 is
 * UTF-8 JSON, kind 1 raw bytes (model chunks need no base64), kind 2 an RbeeError as JSON (a typed
 * failure that ends a stream). Every frame that comes in is checked against a zod schema (bytes
 * frames reach it as a Uint8Array), and malformed, oversized or unknown frames are refused and
 * counted, never thrown out of an event handler.
 *
 * Back-pressure is real in both directions: `write` waits for 'drain' when the stream's send buffer
 * is full, and the reader pauses the stream (yamux then stops granting window to the sender) once
 * `highWaterMarkBytes` of decoded frames wait for a consumer.
 */
import type { AbortOptions, Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface';
import { Uint8ArrayList } from 'uint8arraylist';
import type { z } from 'zod';
import { raceSignal } from '../shared/abort.js';
import { RbeeError } from '../shared/errors.js';
import { errorJsonSchema } from '../shared/wire.js';
import { compiled } from '../shared/compiled-schema.js';

export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;
export const DEFAULT_HIGH_WATER_MARK_BYTES = 256 * 1024;
const KIND_JSON = 0;
const KIND_BYTES = 1;
const KIND_ERROR = 2;
const MAX_VARINT_BYTES = 5; // enough for 2^35: any larger prefix is oversized anyway

/** Counters shared by every channel of one host; the node exposes them as metrics. */
export interface FrameStats {
  framesIn: number;
  framesOut: number;
  malformed: number;
  oversized: number;
  unknown: number;
}

export function createFrameStats(): FrameStats {
  return { framesIn: 0, framesOut: 0, malformed: 0, oversized: 0, unknown: 0 };
}

function encodeVarint(value: number): Uint8Array {
  const out: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    out.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Uint8Array.from(out);
}

/** Encodes one frame. A Uint8Array becomes a bytes frame, anything else JSON. */
export function encodeFrame(
  value: unknown,
  maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
  jsonKind: number = KIND_JSON,
): Uint8Array {
  const body = value instanceof Uint8Array ? value : new TextEncoder().encode(JSON.stringify(value));
  const length = body.byteLength + 1;
  if (length > maxFrameBytes) {
    throw new RbeeError('BAD_REQUEST', `frame of ${length} bytes exceeds the ${maxFrameBytes}-byte limit`);
  }
  const prefix = encodeVarint(length);
  const frame = new Uint8Array(prefix.byteLength + length);
  frame.set(prefix, 0);
  frame[prefix.byteLength] = value instanceof Uint8Array ? KIND_BYTES : jsonKind;
  frame.set(body, prefix.byteLength + 1);
  return frame;
}

/** Bytes frames from this size on are sent as their header and the caller's array side by side. */
const LIST_MIN_BYTES = 16 * 1024;

/**
 * One frame as a stream sends it. A large bytes frame is its header (length and kind) followed by the
 * caller's own array in a Uint8ArrayList: copying a 128 KiB model chunk into a new frame buffer cost
 * a model's holder about 4% of its CPU (a fresh allocation per frame). The array is sent as it is, so
 * it must not change after the write. Anything else is `encodeFrame`'s one buffer.
 */
export function frameToSend(
  value: unknown,
  maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
  jsonKind: number = KIND_JSON,
): Uint8Array | Uint8ArrayList {
  if (!(value instanceof Uint8Array) || value.byteLength < LIST_MIN_BYTES) {
    return encodeFrame(value, maxFrameBytes, jsonKind);
  }
  const length = value.byteLength + 1;
  if (length > maxFrameBytes) {
    throw new RbeeError('BAD_REQUEST', `frame of ${length} bytes exceeds the ${maxFrameBytes}-byte limit`);
  }
  const prefix = encodeVarint(length);
  const header = new Uint8Array(prefix.byteLength + 1);
  header.set(prefix, 0);
  header[prefix.byteLength] = KIND_BYTES;
  return new Uint8ArrayList(header, value);
}

class OversizedFrameError extends Error {
  override readonly name = 'OversizedFrameError';
}

/**
 * Splits a byte stream into frame payloads (kind ‖ body). A frame that spans several chunks is
 * copied once, when it is complete (not the buffer so far at every chunk); a large one inside one
 * chunk is handed out as a view of it, a small one as a copy (so that a small frame kept for long
 * does not keep a whole chunk alive).
 */
export class FrameDecoder {
  /** Chunks not yet consumed, the first one from `offset` on. */
  private chunks: Uint8Array[] = [];
  private offset = 0;
  private buffered = 0;

  constructor(private readonly maxFrameBytes = DEFAULT_MAX_FRAME_BYTES) {}

  get pendingBytes(): number {
    return this.buffered;
  }

  *push(chunk: Uint8Array): Generator<Uint8Array> {
    if (chunk.byteLength > 0) {
      this.chunks.push(chunk);
      this.buffered += chunk.byteLength;
    }
    for (;;) {
      let length = 0;
      let scale = 1;
      let read = 0;
      let complete = false;
      while (read < this.buffered && read < MAX_VARINT_BYTES) {
        const byte = this.byteAt(read++);
        length += (byte & 0x7f) * scale;
        scale *= 128;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        if (read >= MAX_VARINT_BYTES) throw new OversizedFrameError('length prefix too long');
        return;
      }
      if (length > this.maxFrameBytes || length === 0) {
        throw new OversizedFrameError(
          `frame of ${length} bytes exceeds the ${this.maxFrameBytes}-byte limit`,
        );
      }
      if (this.buffered - read < length) return;
      this.consume(read);
      yield this.take(length);
    }
  }

  /** The byte `index` places past the consumed ones (index < buffered). */
  private byteAt(index: number): number {
    let at = this.offset + index;
    for (const chunk of this.chunks) {
      if (at < chunk.byteLength) return chunk[at] ?? 0;
      at -= chunk.byteLength;
    }
    return 0;
  }

  private consume(bytes: number): void {
    let rest = bytes;
    this.buffered -= bytes;
    while (rest > 0) {
      const first = this.chunks[0]!;
      const left = first.byteLength - this.offset;
      if (rest < left) {
        this.offset += rest;
        return;
      }
      rest -= left;
      this.chunks.shift();
      this.offset = 0;
    }
  }

  /** The next `length` bytes (all buffered), consumed. */
  private take(length: number): Uint8Array {
    const first = this.chunks[0]!;
    const start = this.offset;
    let out: Uint8Array;
    if (first.byteLength - start >= length) {
      const view = first.subarray(start, start + length);
      out = length >= VIEW_MIN_BYTES ? view : view.slice();
    } else {
      out = new Uint8Array(length);
      let filled = 0;
      let at = start;
      for (const chunk of this.chunks) {
        const part = chunk.subarray(at, at + length - filled);
        out.set(part, filled);
        filled += part.byteLength;
        at = 0;
        if (filled === length) break;
      }
    }
    this.consume(length);
    return out;
  }
}

/** Frames at least this large inside one chunk are handed out as views of it, not copies. */
const VIEW_MIN_BYTES = 16 * 1024;

function toBytes(data: StreamMessageEvent['data']): Uint8Array {
  return data instanceof Uint8Array ? data : data.subarray();
}

/**
 * Waits for the stream's next 'drain' (or its close). Not `stream.onDrain()`: in @libp2p/utils 7.4
 * that keeps the promise of the first drain and hands it, already resolved, to every later caller,
 * so from the second wait on a writer never waits again and a fast one piles everything it writes
 * into the muxer's send buffer (a 200 MiB transfer sat whole in the sender's memory). The 'drain'
 * event itself is sent each time the stream can take more.
 */
async function drained(stream: Stream, options?: AbortOptions): Promise<void> {
  if (!stream.writableNeedsDrain) return;
  const { promise, resolve, reject } = Promise.withResolvers<void>();
  const onDrain = (): void => resolve();
  const onClose = (event: StreamCloseEvent): void =>
    reject(event.error ?? new Error('the stream closed while waiting to write'));
  stream.addEventListener('drain', onDrain);
  stream.addEventListener('close', onClose);
  try {
    await raceSignal(promise, options?.signal);
  } finally {
    stream.removeEventListener('drain', onDrain);
    stream.removeEventListener('close', onClose);
  }
}

export interface FrameChannelInit<In> {
  /** Applied to every incoming frame; bytes frames reach it as a Uint8Array. */
  schema: z.ZodType<In>;
  /** Defaults to 1 MiB. */
  maxFrameBytes?: number;
  /** Decoded-but-unread bytes after which the stream is paused. Defaults to 256 KiB. */
  highWaterMarkBytes?: number;
  stats?: FrameStats;
  /**
   * Whether the remote may end the stream with an error frame. Defaults to true; a side whose
   * protocol has no such frame (an rpc session, the serving side of a stream) sets false, and an
   * error frame is then refused and counted like any unknown frame, not thrown as the remote's error.
   */
  errorFrames?: boolean;
}

export interface FrameChannel<In, Out> extends AsyncIterable<In> {
  readonly stream: Stream;
  /**
   * The next frame; `undefined` once the remote closed its end. Throws an RbeeError for an invalid
   * frame (BAD_REQUEST), for an error frame (the remote's error) and for a reset stream.
   */
  read(options?: AbortOptions): Promise<In | undefined>;
  /**
   * Resolves once the frame is handed to the transport, waiting for 'drain' when it is full. A large
   * Uint8Array is sent without a copy: it must not change afterwards.
   */
  write(frame: Out, options?: AbortOptions): Promise<void>;
  /** Sends `error` as the stream's last frame and half-closes. */
  fail(error: RbeeError, options?: AbortOptions): Promise<void>;
  /** Half-closes: no more writes from this side. */
  close(options?: AbortOptions): Promise<void>;
  abort(error: Error): void;
  /** The same channel, reading the frames still to come with another schema (protocol phases). */
  withSchema<Next, NextOut = Out>(schema: z.ZodType<Next>): FrameChannel<Next, NextOut>;
  /** Bytes of decoded frames waiting for `read` (bounded by the high-water mark plus one chunk). */
  readonly queuedBytes: number;
  /** How many times `write` had to wait for the remote to catch up. */
  readonly drainWaits: number;
}

type Item = { raw: unknown; bytes: number } | { error: RbeeError; bytes: 0 };

interface ChannelState {
  queue: Item[];
  queuedBytes: number;
  drainWaits: number;
  ended: boolean;
  endError: RbeeError | undefined;
  wake: { promise: Promise<void>; resolve: () => void } | undefined;
}

export function createFrameChannel<In, Out = In>(
  stream: Stream,
  init: FrameChannelInit<In>,
): FrameChannel<In, Out> {
  const maxFrameBytes = init.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  const highWater = init.highWaterMarkBytes ?? DEFAULT_HIGH_WATER_MARK_BYTES;
  const stats = init.stats ?? createFrameStats();
  const errorFrames = init.errorFrames ?? true;
  const decoder = new FrameDecoder(maxFrameBytes);
  const state: ChannelState = {
    queue: [],
    queuedBytes: 0,
    drainWaits: 0,
    ended: false,
    endError: undefined,
    wake: undefined,
  };

  /**
   * Resumes a paused stream; a pause the bytes it hands over call for comes after, not inside it.
   * `resume()` (@libp2p/utils 7.4) dispatches what it buffered while paused and only then tells the
   * muxer to resume: a pause from inside that dispatch was overridden, yamux granted window for every
   * frame again while the stream stayed paused, and its read buffer grew until the stream was aborted
   * at 4 MiB (16 KiB frames on the in-memory transport: cut off after 11-17 MB).
   */
  let resuming = false;
  const resume = (): void => {
    resuming = true;
    try {
      stream.resume();
    } finally {
      resuming = false;
    }
    if (state.queuedBytes >= highWater && stream.readStatus === 'readable') stream.pause();
  };

  const notify = (): void => {
    state.wake?.resolve();
    state.wake = undefined;
  };

  const refuse = (kind: 'malformed' | 'unknown', message: string, cause?: unknown): void => {
    stats[kind] += 1;
    state.queue.push({
      error: new RbeeError('BAD_REQUEST', message, { cause, details: { frame: kind } }),
      bytes: 0,
    });
  };

  const accept = (payload: Uint8Array): void => {
    const kind = payload[0];
    if (kind === KIND_BYTES) {
      state.queue.push({ raw: payload.subarray(1), bytes: payload.byteLength });
      state.queuedBytes += payload.byteLength;
      return;
    }
    if (kind !== KIND_JSON && kind !== KIND_ERROR) {
      refuse('unknown', `unknown frame kind ${kind}`);
      return;
    }
    if (kind === KIND_ERROR && !errorFrames) {
      refuse('unknown', 'error frame where the protocol has none');
      return;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload.subarray(1)));
    } catch (error) {
      refuse('malformed', 'frame is not valid JSON', error);
      return;
    }
    if (kind === KIND_ERROR) {
      const parsed = errorJsonSchema.safeParse(raw);
      if (!parsed.success) refuse('malformed', 'error frame does not match its schema', parsed.error);
      else state.queue.push({ error: RbeeError.fromJSON(parsed.data), bytes: 0 });
      return;
    }
    state.queue.push({ raw, bytes: payload.byteLength });
    state.queuedBytes += payload.byteLength;
  };

  const finish = (error?: RbeeError): void => {
    if (state.ended) return;
    state.ended = true;
    state.endError = error;
    if (error === undefined && decoder.pendingBytes > 0) {
      refuse('malformed', `stream ended inside a frame (${decoder.pendingBytes} bytes left)`);
    }
    stream.removeEventListener('message', onMessage);
    stream.removeEventListener('end', onEnd);
    stream.removeEventListener('close', onClose);
    notify();
  };

  const onMessage = (event: StreamMessageEvent): void => {
    if (state.ended) return;
    try {
      for (const payload of decoder.push(toBytes(event.data))) accept(payload);
    } catch (error) {
      // the rest of the stream cannot be re-synchronised after a bad length prefix
      stats.oversized += 1;
      const refused = new RbeeError('BAD_REQUEST', (error as Error).message, {
        cause: error,
        details: { frame: 'oversized' },
      });
      finish(refused);
      stream.abort(refused);
    }
    if (!resuming && state.queuedBytes >= highWater && stream.readStatus === 'readable') stream.pause();
    notify();
  };
  const onEnd = (): void => finish();
  const onClose = (event: StreamCloseEvent): void => {
    finish(
      event.error === undefined
        ? undefined
        : new RbeeError('NODE_UNREACHABLE', `stream closed: ${event.error.message}`, { cause: event.error }),
    );
  };

  stream.addEventListener('message', onMessage);
  stream.addEventListener('end', onEnd);
  stream.addEventListener('close', onClose);
  if (stream.readableEnded) finish();

  const readRaw = async (options?: AbortOptions): Promise<{ raw: unknown } | undefined> => {
    for (;;) {
      options?.signal?.throwIfAborted();
      const item = state.queue.shift();
      if (item !== undefined) {
        state.queuedBytes -= item.bytes;
        if (stream.readStatus === 'paused' && state.queuedBytes <= highWater / 2) resume();
        if ('error' in item) throw item.error;
        return item;
      }
      if (state.ended) {
        if (state.endError !== undefined) throw state.endError;
        return undefined;
      }
      state.wake ??= Promise.withResolvers<void>();
      await raceSignal(state.wake.promise, options?.signal);
    }
  };

  const send = async (bytes: Uint8Array | Uint8ArrayList, options?: AbortOptions): Promise<void> => {
    try {
      options?.signal?.throwIfAborted();
      stats.framesOut += 1;
      if (!stream.send(bytes)) {
        state.drainWaits += 1;
        await drained(stream, options);
      }
    } catch (error) {
      if (options?.signal?.aborted === true) throw error;
      throw new RbeeError('NODE_UNREACHABLE', 'cannot write to the stream: it is closed', { cause: error });
    }
  };

  const view = <I, O>(schema: z.ZodType<I>): FrameChannel<I, O> => {
    const channel: FrameChannel<I, O> = {
      stream,
      get queuedBytes() {
        return state.queuedBytes;
      },
      get drainWaits() {
        return state.drainWaits;
      },
      async read(options) {
        const item = await readRaw(options);
        if (item === undefined) return undefined;
        const parsed = compiled(schema).safeParse(item.raw);
        if (!parsed.success) {
          stats.malformed += 1;
          throw new RbeeError('BAD_REQUEST', 'frame does not match the protocol schema', {
            cause: parsed.error,
            details: { frame: 'malformed' },
          });
        }
        stats.framesIn += 1;
        return parsed.data;
      },
      async write(frame, options) {
        await send(frameToSend(frame, maxFrameBytes), options);
      },
      async fail(error, options) {
        await send(encodeFrame(error.toJSON(), maxFrameBytes, KIND_ERROR), options);
        await stream.close(options);
      },
      close: (options) => stream.close(options),
      abort(error) {
        stream.abort(error);
      },
      withSchema: <N, NO>(next: z.ZodType<N>) => view<N, NO>(next),
      async *[Symbol.asyncIterator]() {
        for (;;) {
          const frame = await channel.read();
          if (frame === undefined) return;
          yield frame;
        }
      },
    };
    return channel;
  };
  return view<In, Out>(init.schema);
}
