/**
 * A hive on another machine, driven exactly like the local one: `run` opens a `hive.run` stream to
 * it and relays what it emits, waiting on each `emit` before reading the next frame (back-pressure
 * all the way to its worker). Aborting the signal resets the stream, which cancels the job there.
 */
import type { ClusterNode } from '../../p2p/index.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { HiveState } from '../../shared/view.js';
import type { Hive } from '../hive/index.js';
import { hiveRun } from './protocol.js';

export interface RemoteHiveInit {
  node: ClusterNode;
  id: string;
  name: string;
  /** Its last published state. */
  state: () => HiveState;
}

export function createRemoteHive(init: RemoteHiveInit): Hive {
  return {
    id: init.id,
    name: init.name,
    state: init.state,
    async run(job, { signal, emit }) {
      const channel = await init.node.streams.open(
        init.id,
        hiveRun,
        {
          job: {
            id: job.id,
            request: job.request,
            ...(job.device === undefined
              ? {}
              : { device: { backend: job.device.backend, index: job.device.index } }),
          },
          tokenRuns: true,
        },
        { signal },
      );
      let done = false;
      try {
        for await (const event of channel) {
          if (event.type === 'tokens') {
            // each token its own event again, as the hive emitted them
            for (const token of event.tokens) await emit({ type: 'token', ...token });
            continue;
          }
          done ||= event.type === 'done';
          await emit(event);
        }
      } catch (error) {
        if (signal.aborted) throw toRbeeError(signal.reason);
        // the hive's own errors (a bad model ref, a crashed worker) cross the wire with their codes
        throw toRbeeError(error, 'NODE_UNREACHABLE');
      }
      if (!done) {
        throw new RbeeError('NODE_UNREACHABLE', `hive ${init.name} ended the job without a result`);
      }
    },
  };
}
