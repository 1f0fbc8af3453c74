/**
 * `rbee jobs ls | show | cancel`: the jobs of the whole cluster (each node keeps the jobs that
 * entered through it; the local node asks the others), where each runs or ran — this hive or
 * another the queen picked — and how it ended. `--here` limits them to the local node.
 */
import type { Command, Option } from 'commander';
import {
  jobRecordTimings,
  type ClusterJobRecord,
  type JobRecord,
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
    .command('ls')
    .description('list the jobs of every node of the cluster, newest first')
    .option('--limit <n>', 'at most this many (default 20, at most 1000)', intArg('--limit', 1))
    .option('--here', 'only the jobs that entered through this node (no other node is asked)')
    .addOption(json())
    .addOption(port())
    .action((opts: JobsOptions & { limit?: number }) =>
      keeper.withNode(opts, async (client, output) => {
        const limit = Math.min(opts.limit ?? 20, 1000);
        const answer = await client.clusterJobs({ limit, here: opts.here === true });
        output.result(answer, listing(answer.jobs, answer.unanswered, Date.now()));
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
    row.state,
    row.model,
    formatDuration(now - row.acceptedAt),
    formatMs(timeToFirstTokenMs),
    formatTokensPerSecond(tokensPerSecond),
    row.errorCode ?? (row.completionTokens === undefined ? '' : `${row.completionTokens} tokens`),
  ];
}

/** The table `rbee jobs ls` prints, columns padded to their widest cell, then who did not answer. */
export function listing(rows: ClusterJobRecord[], unanswered: UnansweredNode[], now: number): string {
  const silent = unanswered.map(
    (n) => `(${n.name ?? n.id} did not answer: ${n.error.code}; its jobs are missing)`,
  );
  if (rows.length === 0) return ['no jobs yet', ...silent].join('\n');
  const table = [[...COLUMNS], ...rows.map((r) => cells(r, now))];
  const widths = COLUMNS.map((_, i) => Math.max(...table.map((line) => (line[i] ?? '').length)));
  const lines = table.map((line) =>
    line
      .map((cell, i) => (i === line.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd(),
  );
  return [...lines, ...silent].join('\n');
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
