/**
 * Follows the node's live view: `client.nodeEvents` delivers a snapshot then section updates and
 * narration; a dropped stream is re-opened with exponential backoff, the header saying
 * "reconnecting" meanwhile. Batching to the frame rate is the caller's (the app's frame batcher).
 */
import { useEffect } from 'react';
import { setTimeout as sleep } from 'node:timers/promises';
import { toRbeeError } from '../../shared/errors.js';
import type { NodeEvent } from '../../shared/view.js';
import type { NodeClient } from '../../node/client/index.js';
import type { ConnectionState, DashboardAction } from './state.js';

export interface FollowNodeEventsInit {
  client: NodeClient;
  onEvent: (event: NodeEvent) => void;
  onConnection: (connection: ConnectionState) => void;
  /** Defaults: first retry after 250 ms, doubling to at most 5 s. */
  backoff?: { initialMs?: number; maxMs?: number };
  signal: AbortSignal;
}

/** Runs until `signal` aborts; never rejects. */
export async function followNodeEvents(init: FollowNodeEventsInit): Promise<void> {
  const { client, signal } = init;
  const initialMs = init.backoff?.initialMs ?? 250;
  const maxMs = init.backoff?.maxMs ?? 5_000;
  let delay = initialMs;
  let attempt = 0;
  init.onConnection({ status: 'connecting' });
  while (!signal.aborted) {
    let reason = 'the node closed the event stream';
    try {
      for await (const event of client.nodeEvents({ signal })) {
        init.onEvent(event);
        if (event.type !== 'snapshot') continue;
        init.onConnection({ status: 'live' });
        attempt = 0;
        delay = initialMs;
      }
    } catch (error) {
      if (!signal.aborted) reason = toRbeeError(error).message;
    }
    if (signal.aborted) return;
    attempt += 1;
    init.onConnection({ status: 'reconnecting', attempt, retryInMs: delay, error: reason });
    try {
      await sleep(delay, undefined, { signal });
    } catch {
      return;
    }
    delay = Math.min(delay * 2, maxMs);
  }
}

export interface UseNodeEventsInit {
  client: NodeClient;
  /** False until the node is awake. */
  enabled: boolean;
  /** Receives node events and connection changes (the app passes its frame batcher). */
  dispatch: (action: DashboardAction) => void;
  backoff?: FollowNodeEventsInit['backoff'];
}

export function useNodeEvents({ client, enabled, dispatch, backoff }: UseNodeEventsInit): void {
  const initialMs = backoff?.initialMs;
  const maxMs = backoff?.maxMs;
  useEffect(() => {
    if (!enabled) return undefined;
    const controller = new AbortController();
    void followNodeEvents({
      client,
      signal: controller.signal,
      onEvent: (event) => dispatch({ type: 'node-events', events: [event] }),
      onConnection: (connection) => dispatch({ type: 'connection', connection }),
      backoff: {
        ...(initialMs === undefined ? {} : { initialMs }),
        ...(maxMs === undefined ? {} : { maxMs }),
      },
    });
    return () => controller.abort();
  }, [client, enabled, dispatch, initialMs, maxMs]);
}
