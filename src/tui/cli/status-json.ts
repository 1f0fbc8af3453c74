/**
 * `rbee --json`: what the dashboard shows, as one JSON line (statusSnapshotSchema in shared/view.ts),
 * from the node's live view (`GET /v1/events` starts with a snapshot). With `--watch`, the section
 * updates and narration that follow, one NDJSON line each, until Ctrl-C or the node goes away.
 */
import { RbeeError } from '../../shared/errors.js';
import type { ClusterView, HiveView, NodeEvent, StatusSnapshot } from '../../shared/view.js';
import type { NodeClient } from '../../node/client/index.js';

function queenOf(hives: readonly HiveView[]): StatusSnapshot['queen'] {
  const queen = hives.find((h) => h.queen);
  return queen === undefined ? null : { id: queen.id, name: queen.name, term: queen.term };
}

export function statusSnapshot(view: ClusterView, ts = Date.now()): StatusSnapshot {
  return { type: 'snapshot', ts, ...view, queen: queenOf(view.hives) };
}

export async function runStatusJson(init: {
  client: NodeClient;
  watch: boolean;
  write: (line: string) => void;
  signal: AbortSignal;
}): Promise<void> {
  const { signal } = init;
  const controller = new AbortController();
  const stop = (): void => controller.abort(signal.reason);
  signal.addEventListener('abort', stop, { once: true });
  let snapshotSeen = false;
  try {
    for await (const event of init.client.nodeEvents({ signal: controller.signal })) {
      if (event.type === 'snapshot') {
        init.write(JSON.stringify(statusSnapshot(event.view)));
        snapshotSeen = true;
        if (!init.watch) return;
        continue;
      }
      init.write(JSON.stringify(update(event)));
    }
  } catch (error) {
    if (controller.signal.aborted) return; // Ctrl-C: the stream ends here
    throw error;
  } finally {
    controller.abort();
    signal.removeEventListener('abort', stop);
  }
  if (!snapshotSeen || init.watch) {
    throw new RbeeError('NODE_UNREACHABLE', 'the node closed its live view');
  }
}

function update(event: Exclude<NodeEvent, { type: 'snapshot' }>): NodeEvent & { ts: number } {
  return event.type === 'narration' ? event : { ...event, ts: Date.now() };
}
