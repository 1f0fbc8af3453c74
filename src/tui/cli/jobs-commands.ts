/**
 * `rbee jobs ls | show | cancel`: the jobs of the whole cluster (each node keeps the jobs that
 * entered through it; the local node asks the others), where each runs or ran — this hive or
 * another the queen picked — and how it ended. `--here` limits them to the local node. The list
 * ends with the queen's queue (per model: jobs waiting, interactive and batch, the estimated wait)
 * while anything waits, and a queued job shows its place in it.
 */
import type { Command, Option } from 'commander';
import {
  jobRecordTimings,
  type ClusterJobRecord,
  type JobRecord,
  type QueueDepthView,
  type UnansweredNode,
} from '../../shared/view.js';
import { formatDuration, formatMs, formatTokensPerSecond } from '../dashboard/format.js';
import { intArg, type CommonOptions, type Keeper } from './keeper.js';

type JobsOptions = CommonOptions & { here?: boolean };

export function registerJobs(root: Command, keeper: Keeper, json: () => Option, port: () => Option): void {
  const jobs = root
    .command('jobs')
    .description('the jobs of the cluster: where each runs or ran and how it ended');
  jobs
    .command('ls', { isDefault: true })
    .description('list the jobs of every node of the cluster, newest first, and the queen’s queue')
    .option('--limit <n>', 'at most this many (default 20, at most 1000)', intArg('--limit', 1))
    .option('--here', 'only the jobs that entered through this node (no other node is asked)')
    .addOption(json())
    .addOption(port())
    .action((opts: JobsOptions & { limit?: number }) =>
      keeper.withNode(opts, async (client, output) => {
        const limit = Math.min(opts.limit ?? 20, 1000);
        const answer = await client.clusterJobs({ limit, here: opts.here === true });
        output.result(answer, listing(answer.jobs, answer.unanswered, Date.now(), answer.queue ?? []));
      }),
    );
  jobs
    .command('show')
    .description('one job, on whichever node holds it: model, hive, worker, the queen’s reason, timings')
    .argument('<id>', 'the job id (a prefix is enough when it is unique)')
    .option('--here', 'look only in this node’s jobs')
    .addOption(json())
    .addOption(port())
    .action((id: string, opts: JobsOptions) =>
      keeper.withNode(opts, async (client, output) => {
        const row = opts.here === true ? await client.jobRecord(id) : await client.clusterJob(id);
        output.result(row, details(row));
      }),
    );
  jobs
    .command('cancel')
    .description('cancel a job on whichever node holds it (its worker stops generating, wherever it runs)')
    .argument('<id>', 'the job id (a prefix is enough when it is unique)')
    .option('--here', 'look only in this node’s jobs')
    .addOption(json())
    .addOption(port())
    .action((id: string, opts: JobsOptions) =>
      keeper.withNode(opts, async (client, output) => {
        if (opts.here === true) {
          const row = await client.jobRecord(id);
          await client.cancelJob(row.id);
          output.result({ id: row.id, cancelling: true, state: row.state }, `cancelling ${row.id}`);
          return;
        }
        const cancelled = await client.cancelClusterJob(id);
        output.result(
          cancelled,
          cancelled.cancelling
            ? `cancelling ${cancelled.id} (entered through ${cancelled.entry.name})`
            : `job ${cancelled.id} had already ended: ${cancelled.state}`,
        );
      }),
    );
}

const COLUMNS = ['JOB', 'ENTRY', 'HIVE', 'STATE', 'MODEL', 'AGE', 'TTFT', 'TOK/S', 'END'] as const;

function cells(row: ClusterJobRecord, now: number): string[] {
  const { timeToFirstTokenMs, tokensPerSecond } = jobRecordTimings(row);
  return [
    row.id.slice(0, 8),
    row.entry.name,
    row.hiveName ?? '-',
    stateCell(row),
    row.model,
    formatDuration(now - row.acceptedAt),
    formatMs(timeToFirstTokenMs),
    formatTokensPerSecond(tokensPerSecond),
    row.errorCode ?? (row.completionTokens === undefined ? '' : `${row.completionTokens} tokens`),
  ];
}

/** A queued job's state with its place in the queue when its entry node knows it: `queued 2/5`. */
function stateCell(row: JobRecord): string {
  const at = row.queuePosition;
  return row.state === 'queued' && at !== undefined ? `queued ${at.position}/${at.queued}` : row.state;
}

/** Rows of cells, each column padded to its widest cell (the last one not padded). */
function columns(table: string[][]): string[] {
  const width = Math.max(...table.map((line) => line.length));
  const widths = Array.from({ length: width }, (_, i) =>
    Math.max(...table.map((line) => (line[i] ?? '').length)),
  );
  return table.map((line) =>
    line
      .map((cell, i) => (i === line.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
}

/** An estimated wait: `about 12s`, or `unknown` before any job of the model ended. */
export function formatWait(seconds: number | undefined): string {
  return seconds === undefined ? 'unknown' : `about ${formatDuration(seconds * 1000)}`;
}

/** The queen's queue as `rbee jobs ls` ends with it: nothing while nothing waits. */
export function queueSection(queue: readonly QueueDepthView[]): string[] {
  if (queue.length === 0) return [];
  const total = queue.reduce((sum, q) => sum + q.queued, 0);
  const table = [
    ['MODEL', 'WAITING', 'INTERACTIVE', 'BATCH', 'EST. WAIT'],
    ...queue.map((q) => [
      q.model,
      String(q.queued),
      q.interactive === undefined ? '-' : String(q.interactive),
      q.batch === undefined ? '-' : String(q.batch),
      formatWait(q.estimatedWaitS),
    ]),
  ];
  return [
    `queue: ${total} job${total === 1 ? '' : 's'} wait${total === 1 ? 's' : ''} for a slot`,
    ...columns(table),
  ];
}

/**
 * The table `rbee jobs ls` prints, columns padded to their widest cell, then who did not answer,
 * then the queen's queue while anything waits in it.
 */
export function listing(
  rows: ClusterJobRecord[],
  unanswered: UnansweredNode[],
  now: number,
  queue: readonly QueueDepthView[] = [],
): string {
  const silent = unanswered.map(
    (n) => `(${n.name ?? n.id} did not answer: ${n.error.code}; its jobs are missing)`,
  );
  const waiting = queueSection(queue);
  const tail = waiting.length === 0 ? silent : [...silent, '', ...waiting];
  if (rows.length === 0) return ['no jobs yet', ...tail].join('\n');
  return [...columns([[...COLUMNS], ...rows.map((r) => cells(r, now))]), ...tail].join('\n');
}

function details(row: JobRecord | ClusterJobRecord): string {
  const ms = (at: number | undefined): string => (at === undefined ? '-' : `${at - row.acceptedAt} ms`);
  const { tokensPerSecond } = jobRecordTimings(row);
  return [
    `job ${row.id}: ${row.state}`,
    `model      ${row.model}`,
    ...('entry' in row ? [`entry      ${row.entry.name} (${row.entry.id})`] : []),
    `hive       ${row.hiveName ?? '-'}${row.hive === undefined ? '' : ` (${row.hive})`}`,
    `worker     ${row.worker ?? '-'}`,
    `placed     ${row.reason ?? '-'}`,
    ...(row.queuePosition === undefined || row.state !== 'queued'
      ? []
      : [
          `queue      position ${row.queuePosition.position} of ${row.queuePosition.queued}, wait ${formatWait(row.queuePosition.estimatedWaitS)}`,
        ]),
    `accepted   ${new Date(row.acceptedAt).toISOString()}`,
    `first token ${ms(row.firstTokenAt)}, finished ${ms(row.finishedAt)}`,
    ...(row.completionTokens === undefined
      ? []
      : [
          `tokens     ${row.completionTokens}${tokensPerSecond === undefined ? '' : `, ${tokensPerSecond.toFixed(1)} tok/s`}`,
        ]),
    ...(row.errorCode === undefined ? [] : [`error      ${row.errorCode}: ${row.errorMessage ?? ''}`]),
  ].join('\n');
}
