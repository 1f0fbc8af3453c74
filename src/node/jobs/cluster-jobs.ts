/**
 * The jobs of the whole cluster, as a client of this node sees them. Every node keeps the rows of
 * the jobs that entered through it (its jobs table); this node answers from its own table and asks
 * every other live member for theirs at once, each for a short while, and merges the answers newest
 * first, saying which members did not answer, with the queen's queue (what she publishes: per model,
 * the jobs waiting). A job is found by its id or a unique prefix on whichever node holds it, and
 * cancelled by that node (its entry node), as `DELETE /v1/jobs/:id` cancels it there.
 *
 * Who sees what stays as on one node: the machine's own user (no key) sees every job; a key sees
 * the jobs it submitted, through whichever node (a key is the cluster's: every node knows it by the
 * same id), so the asking client's owner crosses the cluster with the question and each member
 * answers with that owner's jobs only.
 */
import { RbeeError, toRbeeError, type RbeeErrorJson } from '../../shared/errors.js';
import type {
  ClusterJobCancel,
  ClusterJobRecord,
  ClusterJobs,
  JobRecord,
  QueueDepthView,
  UnansweredNode,
} from '../../shared/view.js';

const TERMINAL: ReadonlySet<JobRecord['state']> = new Set(['done', 'failed', 'cancelled']);

/** This node's jobs table and its job manager's cancel: what this node answers for. */
export interface LocalJobs {
  /** Newest first; only `owner`'s when given. */
  list(options: { limit: number; owner?: string | undefined }): JobRecord[];
  /** Rows whose id starts with `prefix`, by id; only `owner`'s when given. */
  find(prefix: string, options: { limit: number; owner?: string | undefined }): JobRecord[];
  /** Cancels an unfinished job (as `DELETE /v1/jobs/:id` does). */
  cancel(id: string): void;
}

/**
 * Who asks: a key's owner string (`key:ID`, the same on every node of the cluster), or undefined for
 * the machine's own user of the node asked, who sees every job.
 */
export type Viewer = string | undefined;

/** A member's answer for its jobs, or why there is none. */
export type MemberAnswer = { id: string; name?: string | undefined } & (
  { jobs: JobRecord[] } | { error: RbeeErrorJson }
);

/** The other live members of the cluster, asked over the cluster (the link implements it). */
export interface MemberJobs {
  /** Asks every other live member at once; each answers within `timeoutMs` or is an error. */
  ask(
    query: { limit: number; prefix?: string; viewer?: string | undefined },
    options: { timeoutMs: number; signal?: AbortSignal },
  ): Promise<MemberAnswer[]>;
  /** Asks `member`, the job's entry node, to cancel it. */
  cancel(
    member: string,
    id: string,
    viewer: string | undefined,
  ): Promise<{ cancelling: boolean; state: JobRecord['state'] }>;
}

export interface ClusterJobsInit {
  local: LocalJobs;
  /** This node: its peer id (its name alone when clustering is off) and its name. */
  self(): { id: string; name: string };
  /** The other members; undefined while this node is not (yet) in a cluster. */
  members(): MemberJobs | undefined;
  /** How long a member has to answer. Defaults to 2 s. */
  timeoutMs?: number;
  /** The queen's queue, per model, as the queen publishes it (this node's own while it is queen or alone). */
  queue?: () => QueueDepthView[];
}

export interface ClusterJobsApi {
  /** Newest first, at most `limit`; `here`: this node's only. */
  list(viewer: Viewer, options: { limit: number; here?: boolean }): Promise<ClusterJobs>;
  /** One job of this node's table by id or unique prefix (BAD_REQUEST ambiguous, JOB_NOT_FOUND none). */
  findHere(viewer: Viewer, idOrPrefix: string): JobRecord;
  /** One job of any node, by id or unique prefix. */
  find(viewer: Viewer, idOrPrefix: string): Promise<ClusterJobRecord>;
  /** Cancels a job of any node: its entry node cancels it. */
  cancel(viewer: Viewer, idOrPrefix: string): Promise<ClusterJobCancel>;
}

/** The answer to another member's `node.cancelJob`, and to a cancel of one of this node's own jobs. */
export function cancelHere(
  local: LocalJobs,
  id: string,
  viewer: Viewer,
): { cancelling: boolean; state: JobRecord['state'] } {
  const row = local.find(id, { limit: 1, owner: viewer }).find((r) => r.id === id);
  if (row === undefined) throw new RbeeError('JOB_NOT_FOUND', `no job with id ${id}`);
  if (TERMINAL.has(row.state)) return { cancelling: false, state: row.state };
  local.cancel(id);
  return { cancelling: true, state: row.state };
}

const DEFAULT_TIMEOUT_MS = 2_000;
/** Longest id (or prefix) looked up: job ids are UUIDs. */
const MAX_ID_LENGTH = 128;

function checkId(idOrPrefix: string): void {
  if (idOrPrefix.length === 0 || idOrPrefix.length > MAX_ID_LENGTH) {
    throw new RbeeError('BAD_REQUEST', `a job id (or prefix) has 1 to ${MAX_ID_LENGTH} characters`);
  }
}

/** Who owns a job stays on its node: the viewer's filter already applied it. */
function withoutOwner<T extends JobRecord>(row: T): T {
  const { owner: _owner, ...rest } = row as T & { owner?: unknown };
  return rest as T;
}
/** How many candidates an ambiguous prefix names. */
const CANDIDATES = 10;

/** Newest first; among equals, by id, so that the order is the same on every call. */
function newestFirst(a: JobRecord, b: JobRecord): number {
  return b.acceptedAt - a.acceptedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

function unanswered(answers: MemberAnswer[]): UnansweredNode[] {
  return answers.flatMap((a) =>
    'error' in a ? [{ id: a.id, ...(a.name === undefined ? {} : { name: a.name }), error: a.error }] : [],
  );
}

function entryOf(answer: { id: string; name?: string | undefined }): { id: string; name: string } {
  return { id: answer.id, name: answer.name ?? answer.id };
}

/** The one row a prefix names, or why not. */
function pick<T extends JobRecord>(
  idOrPrefix: string,
  rows: T[],
  describe: (row: T) => string,
  missing: () => string,
): T {
  const exact = rows.filter((r) => r.id === idOrPrefix);
  if (exact.length === 1) return exact[0]!;
  const candidates = exact.length > 1 ? exact : rows;
  if (candidates.length === 1) return candidates[0]!;
  if (candidates.length === 0) {
    throw new RbeeError('JOB_NOT_FOUND', `no job ${idOrPrefix}${missing()}`);
  }
  const named = candidates.slice(0, CANDIDATES);
  throw new RbeeError(
    'BAD_REQUEST',
    `${idOrPrefix} matches ${candidates.length > CANDIDATES ? `more than ${CANDIDATES}` : candidates.length} jobs: ` +
      `${named.map(describe).join(', ')}; give more of the id`,
    { details: { candidates: named.map((r) => r.id) } },
  );
}

export function createClusterJobs(init: ClusterJobsInit): ClusterJobsApi {
  const timeoutMs = init.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const { local } = init;
  const owned = (viewer: Viewer): { owner?: string } => (viewer === undefined ? {} : { owner: viewer });

  /** This node's rows and every other member's, each with its entry node. */
  async function gather(
    viewer: Viewer,
    query: { limit: number; prefix?: string },
    here: boolean,
  ): Promise<{ rows: ClusterJobRecord[]; unanswered: UnansweredNode[] }> {
    const self = init.self();
    const mine = (
      query.prefix === undefined
        ? local.list({ limit: query.limit, ...owned(viewer) })
        : local.find(query.prefix, { limit: query.limit, ...owned(viewer) })
    ).map((row) => ({ ...withoutOwner(row), entry: self }));
    const members = here ? undefined : init.members();
    if (members === undefined) return { rows: mine, unanswered: [] };
    const answers = await members.ask({ ...query, viewer }, { timeoutMs });
    const theirs = answers.flatMap((a) =>
      'jobs' in a ? a.jobs.map((row) => ({ ...row, entry: entryOf(a) })) : [],
    );
    return { rows: [...mine, ...theirs], unanswered: unanswered(answers) };
  }

  const silent = (nodes: UnansweredNode[]): string =>
    nodes.length === 0
      ? ' on any node of the cluster'
      : ` on the nodes that answered (${nodes.map((n) => n.name ?? n.id).join(', ')} did not)`;

  async function find(viewer: Viewer, idOrPrefix: string): Promise<ClusterJobRecord> {
    checkId(idOrPrefix);
    const self = init.self();
    // a whole id of this node's needs no other member
    const here = local.find(idOrPrefix, { limit: 1, ...owned(viewer) }).find((r) => r.id === idOrPrefix);
    if (here !== undefined) return { ...withoutOwner(here), entry: self };
    const { rows, unanswered: nodes } = await gather(
      viewer,
      { limit: CANDIDATES + 1, prefix: idOrPrefix },
      false,
    );
    return pick(
      idOrPrefix,
      rows.sort(newestFirst),
      (r) => `${r.id} (${r.entry.name}, ${r.state})`,
      () => silent(nodes),
    );
  }

  return {
    async list(viewer, options) {
      const { rows, unanswered: nodes } = await gather(
        viewer,
        { limit: options.limit },
        options.here === true,
      );
      return {
        jobs: rows.sort(newestFirst).slice(0, options.limit),
        unanswered: nodes,
        queue: init.queue?.() ?? [],
      };
    },
    findHere(viewer, idOrPrefix) {
      checkId(idOrPrefix);
      const rows = local.find(idOrPrefix, { limit: CANDIDATES + 1, ...owned(viewer) });
      return pick(
        idOrPrefix,
        rows,
        (r) => `${r.id} (${r.state})`,
        () => ' on this node',
      );
    },
    find,
    async cancel(viewer, idOrPrefix) {
      const job = await find(viewer, idOrPrefix);
      const self = init.self();
      if (job.entry.id === self.id) {
        return { id: job.id, entry: self, ...cancelHere(local, job.id, viewer) };
      }
      const members = init.members();
      if (members === undefined) {
        throw new RbeeError(
          'NODE_UNREACHABLE',
          `node ${job.entry.name} holds job ${job.id}, but this node left the cluster`,
        );
      }
      try {
        const done = await members.cancel(job.entry.id, job.id, viewer);
        return { id: job.id, entry: job.entry, ...done };
      } catch (error) {
        throw toRbeeError(error, 'NODE_UNREACHABLE');
      }
    },
  };
}
