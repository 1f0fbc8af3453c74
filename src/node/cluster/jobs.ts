/**
 * Jobs across the cluster, on the wire: this node answers `node.jobs` and `node.cancelJob` from its
 * own jobs table, and asks the other live members for theirs (all at once, each for a short while).
 * What a viewer may see is decided by jobs/cluster-jobs.ts; this file only carries it.
 */
import type { ClusterNode } from '../../p2p/index.js';
import { toRbeeError } from '../../shared/errors.js';
import type { JobRecord } from '../../shared/view.js';
import { cancelHere, type LocalJobs, type MemberJobs } from '../jobs/index.js';
import { NODE_JOBS_MAX, nodeCancelJob, nodeJobs } from './protocol.js';

/** JSON bytes of rows one answer carries: the frame limit (1 MiB) less room for the envelope. */
const ANSWER_BYTES = 768 * 1024;

/** Registers this node's answers to other members' job questions. */
export function serveJobs(node: ClusterNode, local: LocalJobs): void {
  node.rpc.handle(nodeJobs, ({ limit, prefix, viewer }) => {
    const options = { limit: Math.min(limit, NODE_JOBS_MAX), owner: viewer };
    const rows = prefix === undefined ? local.list(options) : local.find(prefix, options);
    const jobs: JobRecord[] = [];
    let bytes = 0;
    for (const row of rows) {
      // the owner stays on this node: the asking node filtered by it already
      const { owner: _owner, ...shown } = row as JobRecord & { owner?: string };
      bytes += JSON.stringify(shown).length;
      if (bytes > ANSWER_BYTES) return { jobs, truncated: true };
      jobs.push(shown);
    }
    return { jobs };
  });
  node.rpc.handle(nodeCancelJob, ({ id, viewer }) => cancelHere(local, id, viewer));
}

/** Asks the other live members about their jobs. */
export function createMemberJobs(node: ClusterNode, nameOf: (id: string) => string | undefined): MemberJobs {
  return {
    async ask(query, { timeoutMs, signal }) {
      const live = node.members().filter((m) => m.live);
      return Promise.all(
        live.map(async (member) => {
          const name = nameOf(member.id);
          try {
            const { jobs } = await node.rpc.call(member.id, nodeJobs, withoutUndefined(query), {
              timeoutMs,
              ...(signal === undefined ? {} : { signal }),
            });
            return { id: member.id, name, jobs };
          } catch (error) {
            return { id: member.id, name, error: toRbeeError(error, 'NODE_UNREACHABLE').toJSON() };
          }
        }),
      );
    },
    cancel: (member, id, viewer) =>
      node.rpc.call(member, nodeCancelJob, viewer === undefined ? { id } : { id, viewer }, {
        timeoutMs: 5_000,
      }),
  };
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
