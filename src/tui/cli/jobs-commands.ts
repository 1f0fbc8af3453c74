/**
 * `rbee jobs ls | show | cancel`: the jobs this node accepted (its jobs table), where each ran —
 * this hive or another the queen picked — and how it ended.
 */
import type { Command, Option } from 'commander';
import { RbeeError } from '../../shared/errors.js';
import type { JobRecord } from '../../shared/view.js';
import { intArg, type CommonOptions, type Keeper } from './keeper.js';

export function registerJobs(root: Command, keeper: Keeper, json: () => Option, port: () => Option): void {
  const jobs = root
    .command('jobs')
    .description('the jobs this node accepted: where each ran and how it ended');
  jobs
    .command('ls')
    .description('list jobs, newest first')
    .option('--limit <n>', 'at most this many (default 20)', intArg('--limit', 1))
    .addOption(json())
    .addOption(port())
    .action((opts: CommonOptions & { limit?: number }) =>
      keeper.withNode(opts, async (client, output) => {
        const rows = await client.jobHistory({ limit: opts.limit ?? 20 });
        output.result(rows, rows.length === 0 ? 'no jobs yet' : rows.map(line).join('\n'));
      }),
    );
  jobs
    .command('show')
    .description('one job: its model, hive, worker, the queen’s reason, timings and how it ended')
    .argument('<id>', 'the job id (a prefix is enough when it is unique)')
    .addOption(json())
    .addOption(port())
    .action((id: string, opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        const row = find(await client.jobHistory({ limit: 10_000 }), id);
        output.result(row, details(row));
      }),
    );
  jobs
    .command('cancel')
    .description('cancel a running job (its worker stops generating, wherever it runs)')
    .argument('<id>', 'the job id (a prefix is enough when it is unique)')
    .addOption(json())
    .addOption(port())
    .action((id: string, opts: CommonOptions) =>
      keeper.withNode(opts, async (client, output) => {
        const row = find(await client.jobHistory({ limit: 10_000 }), id);
        await client.cancelJob(row.id);
        output.result({ id: row.id, cancelling: true }, `cancelling ${row.id}`);
      }),
    );
}

function find(rows: JobRecord[], id: string): JobRecord {
  const matches = rows.filter((r) => r.id === id || r.id.startsWith(id));
  const exact = matches.find((r) => r.id === id);
  if (exact !== undefined) return exact;
  if (matches.length === 1) return matches[0]!;
  if (matches.length === 0) throw new RbeeError('JOB_NOT_FOUND', `no job ${id} on this node`);
  throw new RbeeError('BAD_REQUEST', `${id} matches ${matches.length} jobs; give more of the id`);
}

function line(row: JobRecord): string {
  const where = row.hiveName ?? '-';
  const end = row.errorCode === undefined ? '' : `\t${row.errorCode}`;
  const tokens = row.completionTokens === undefined ? '' : `\t${row.completionTokens} tokens`;
  return `${row.id.slice(0, 8)}\t${row.state}\t${row.model}\ton ${where}${tokens}${end}`;
}

function details(row: JobRecord): string {
  const ms = (at: number | undefined): string => (at === undefined ? '-' : `${at - row.acceptedAt} ms`);
  return [
    `job ${row.id}: ${row.state}`,
    `model      ${row.model}`,
    `hive       ${row.hiveName ?? '-'}${row.hive === undefined ? '' : ` (${row.hive})`}`,
    `worker     ${row.worker ?? '-'}`,
    `placed     ${row.reason ?? '-'}`,
    `accepted   ${new Date(row.acceptedAt).toISOString()}`,
    `first token ${ms(row.firstTokenAt)}, finished ${ms(row.finishedAt)}`,
    ...(row.completionTokens === undefined ? [] : [`tokens     ${row.completionTokens}`]),
    ...(row.errorCode === undefined ? [] : [`error      ${row.errorCode}: ${row.errorMessage ?? ''}`]),
  ].join('\n');
}
