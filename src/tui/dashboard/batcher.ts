/**
 * Coalesces high-rate items (tokens, download progress, section updates) into one flush per
 * interval, so that React reduces and Ink renders at most ~30 times a second however fast the
 * node talks.
 */

export interface Batcher<T> {
  push(item: T): void;
  /** Delivers whatever is queued now. */
  flush(): void;
  /** Drops the timer; queued items are delivered first unless `discard` is set. */
  dispose(options?: { discard?: boolean }): void;
}

export interface BatcherInit<T> {
  deliver: (items: T[]) => void;
  /** Defaults to 33 ms (≈30 flushes a second). */
  intervalMs?: number;
}

export function createBatcher<T>(init: BatcherInit<T>): Batcher<T> {
  const intervalMs = init.intervalMs ?? 33;
  let queue: T[] = [];
  let timer: NodeJS.Timeout | undefined;
  let disposed = false;

  const flush = (): void => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (queue.length === 0) return;
    const items = queue;
    queue = [];
    init.deliver(items);
  };

  return {
    push(item) {
      if (disposed) return;
      queue.push(item);
      timer ??= setTimeout(flush, intervalMs);
    },
    flush,
    dispose(options = {}) {
      if (options.discard === true) queue = [];
      flush();
      disposed = true;
    },
  };
}
