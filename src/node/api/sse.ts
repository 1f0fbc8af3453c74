/**
 * Server-sent event streams with a bound on what one client may cost. A client that reads slower
 * than the node writes makes `write` return false: routes whose source can wait (a job's history
 * and tokens) wait for `drained()`; live feeds cannot wait, so their bytes queue in the socket. A
 * client is dropped once more than `maxBufferedBytes` wait for it, or once it has kept a waiting
 * route waiting for `stallMs`: it gets a last error event (if it ever reads that far), its socket is
 * destroyed, and the node logs and counts why.
 */
import type { FastifyReply } from 'fastify';
import { RbeeError } from '../../shared/errors.js';

/** Bytes queued for one client before it is dropped: minutes of tokens, seconds of a busy view. */
export const DEFAULT_SSE_MAX_BUFFERED_BYTES = 4 * 2 ** 20;
/** A client that reads nothing for this long, while a route waits for it, is dropped. */
export const DEFAULT_SSE_STALL_MS = 60_000;
/** How long a dropped client has to take its last event before its socket is destroyed. */
const DROP_GRACE_MS = 2_000;

export interface SseInit {
  maxBufferedBytes?: number;
  stallMs?: number;
  /** Called once per dropped client (the node logs it and counts it). */
  onDrop?: (drop: { route: string; bufferedBytes: number; why: 'buffer' | 'stall' }) => void;
}

export interface SseStream {
  /** True until the stream ends, the client leaves, or the client is dropped. */
  readonly open: boolean;
  /**
   * Queues one chunk (nothing once closed). False means the client is behind: write again after
   * `drained()`, or keep writing and let the limit drop the client.
   */
  write(chunk: string): boolean;
  /** Resolves once the client has caught up, or the stream is closed (a stalled client is dropped). */
  drained(): Promise<void>;
  end(chunk?: string): void;
  onClose(listener: () => void): void;
}

/** One `id`/`event`/`data` block. */
export function sseEvent(type: string, data: unknown, id?: number): string {
  return `${id === undefined ? '' : `id: ${id}\n`}event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

export type OpenSse = (
  reply: FastifyReply,
  /** What the client gets last when it is dropped, in the stream's own format. */
  dropEvent: (error: RbeeError) => string,
  /** Another streamed format with the same limits (NDJSON: `application/x-ndjson`). */
  options?: { contentType?: string },
) => SseStream;

/** Returns `openSse`, which takes the response over from fastify and starts an event stream on it. */
export function createSse(init: SseInit = {}): OpenSse {
  const limit = init.maxBufferedBytes ?? DEFAULT_SSE_MAX_BUFFERED_BYTES;
  const stallMs = init.stallMs ?? DEFAULT_SSE_STALL_MS;
  return (reply, dropEvent, options = {}) => {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      'content-type': options.contentType ?? 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    let open = true;
    // whoever waits in `drained()`: woken by 'drain', by 'close' and by a drop
    const waiting = new Set<() => void>();
    const wake = (): void => {
      for (const resolve of waiting) resolve();
      waiting.clear();
    };
    raw.on('drain', wake);
    raw.once('close', () => {
      open = false;
      wake();
    });

    const drop = (why: 'buffer' | 'stall'): void => {
      if (!open) return;
      open = false;
      wake();
      const bufferedBytes = raw.writableLength;
      const error = new RbeeError(
        'CLIENT_TOO_SLOW',
        why === 'buffer'
          ? `dropped: ${bufferedBytes} bytes were waiting for this client (limit ${limit})`
          : `dropped: this client read nothing for ${stallMs} ms`,
      );
      const route = reply.request.routeOptions.url ?? reply.request.url;
      init.onDrop?.({ route, bufferedBytes, why });
      // A client that catches up in time still learns why; one that never reads is cut off. The
      // socket itself goes either way: a finished response would otherwise hand it back to
      // keep-alive, and this client is not one to keep.
      const socket = raw.socket;
      const cut = (): void => void socket?.destroy();
      const timer = setTimeout(cut, DROP_GRACE_MS).unref();
      socket?.once('close', () => clearTimeout(timer));
      raw.end(dropEvent(error), cut);
    };

    return {
      get open() {
        return open && !raw.writableEnded && !raw.destroyed;
      },
      write(chunk) {
        if (!this.open) return false;
        const ready = raw.write(chunk);
        if (raw.writableLength > limit) {
          drop('buffer');
          return false;
        }
        return ready;
      },
      drained() {
        if (!this.open || !raw.writableNeedDrain) return Promise.resolve();
        return new Promise<void>((resolve) => {
          const stalled = setTimeout(() => drop('stall'), stallMs).unref();
          waiting.add(() => {
            clearTimeout(stalled);
            resolve();
          });
        });
      },
      end(chunk) {
        if (!this.open) return;
        open = false;
        raw.end(chunk);
      },
      onClose(listener) {
        if (raw.destroyed) listener();
        else raw.once('close', listener);
      },
    };
  };
}
