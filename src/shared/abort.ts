/**
 * The one helper for waiting on something that a signal may cut short.
 */

/**
 * Resolves with `promise`, or rejects once `signal` aborts, whichever comes first; the promise itself
 * goes on. Rejects with `reason(signal.reason)` (the signal's reason as is by default). No listener
 * is left on the signal either way.
 */
export async function raceSignal<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  reason: (abortReason: unknown) => Error = (r) => r as Error,
): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) {
    promise.catch(() => undefined);
    throw reason(signal.reason);
  }
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(reason(signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, aborted]);
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
  }
}
