/**
 * Jobs of the whole cluster: unfinished ones first, then recent ones; for each, the node it entered
 * through, the hive it runs on, its state (a queued job with its place in the queue), time to first
 * token and speed. Below them, while anything waits, the queen's queue: per model, the jobs waiting
 * and the estimated wait. Other nodes' jobs come from polling the cluster's list while this view is
 * shown; this node's are live.
 */
import { Box, Text } from 'ink';
import type { JobRecord } from '../../../shared/view.js';
import { cell, formatDuration, formatMs, formatTokensPerSecond } from '../format.js';
import {
  jobStateLabel,
  jobsGaps,
  modelLabel,
  queueLines,
  selectedIndex,
  sortedJobs,
  type QueueLine,
} from '../selectors.js';
import { useTheme, type ThemeToken } from '../theme.js';
import type { ViewProps } from './cluster-view.js';
import { Table, type Column, type TableRow } from './table.js';

const WIDE = 120;
/** Models of the queue listed at most; the rest are counted. */
const QUEUE_SHOWN = 4;

/** The queen's queue: a title line, then a line per model (the first few). */
function QueueSection({ lines, width }: { lines: QueueLine[]; width: number }): React.JSX.Element {
  const theme = useTheme();
  const total = lines.reduce((n, l) => n + l.queued, 0);
  const shown = lines.slice(0, QUEUE_SHOWN);
  const modelWidth = Math.min(28, Math.max(...shown.map((l) => l.model.length)));
  return (
    <Box flexDirection="column" width={width}>
      <Text wrap="truncate-end" {...theme.tokens.title}>
        {` Queue: ${total} waiting`}
        {lines.length > shown.length ? (
          <Text {...theme.tokens.muted}>{` (${lines.length - shown.length} more models)`}</Text>
        ) : null}
      </Text>
      {shown.map((l) => (
        <Text key={l.model} wrap="truncate-end">
          {`  ${cell(l.model, modelWidth)}  ${String(l.queued).padStart(3)} waiting`}
          <Text {...theme.tokens.muted}>{l.split === '' ? '' : ` (${l.split})`}</Text>
          {`  est. wait ${l.wait}`}
        </Text>
      ))}
    </Box>
  );
}

const STATE_TOKEN: Readonly<Record<JobRecord['state'], ThemeToken>> = {
  queued: 'muted',
  placing: 'accent',
  running: 'accent',
  done: 'ok',
  failed: 'error',
  cancelled: 'warn',
};

export function JobsPanel({ state, width, height }: ViewProps): React.JSX.Element {
  const theme = useTheme();
  const wide = width >= WIDE;
  const gaps = jobsGaps(state.clusterJobs);
  const jobs = sortedJobs(state);
  // wide enough for "cancelled", or for a queued job's place ("queued 12/30")
  const stateWidth = Math.max(9, ...jobs.map((j) => jobStateLabel(j).length));
  const columns: Column[] = [
    { title: 'JOB', width: wide ? 10 : 8 },
    { title: 'ENTRY', width: wide ? 10 : 8 },
    { title: 'HIVE', width: wide ? 10 : 8 },
    { title: 'MODEL', width: 'flex' },
    { title: 'STATE', width: stateWidth },
    { title: 'AGE', width: 6, align: 'right' },
    ...(wide ? [{ title: 'TIME', width: 6, align: 'right' } as const] : []),
    { title: 'TTFT', width: 8, align: 'right' },
    { title: 'TOK/S', width: 6, align: 'right' },
    ...(wide
      ? [{ title: 'TOKENS', width: 6, align: 'right' } as const, { title: 'ERROR', width: 'flex' } as const]
      : []),
  ];
  const rows: TableRow[] = jobs.map((j) => ({
    key: j.id,
    cells: [
      { text: j.id },
      { text: j.entry },
      { text: j.hive ?? '–' },
      { text: wide ? j.model : modelLabel(state.cluster, j.model) },
      { text: jobStateLabel(j), token: STATE_TOKEN[j.state] },
      { text: formatDuration(state.now - j.acceptedAt) },
      ...(wide ? [{ text: formatDuration((j.finishedAt ?? state.now) - j.acceptedAt) }] : []),
      { text: formatMs(j.timeToFirstTokenMs) },
      { text: formatTokensPerSecond(j.tokensPerSecond) },
      ...(wide
        ? [
            { text: j.completionTokens === undefined ? '–' : String(j.completionTokens) },
            { text: j.error ?? '', token: 'error' as const },
          ]
        : []),
    ],
  }));
  const queue = queueLines(state);
  // the queue keeps at least a few rows for the jobs themselves
  const queueHeight =
    queue.length === 0 ? 0 : Math.max(0, Math.min(1 + Math.min(queue.length, QUEUE_SHOWN), height - 5));
  const tableHeight = height - queueHeight - (gaps === undefined ? 0 : 1);
  return (
    <Box flexDirection="column" height={height} overflowY="hidden">
      <Table
        columns={columns}
        rows={rows}
        selected={selectedIndex(state, 'jobs')}
        width={width}
        height={tableHeight}
        empty="no jobs yet: chat in Chat (5), or run `rbee infer`"
      />
      {queueHeight === 0 ? null : (
        <Box height={queueHeight} overflowY="hidden">
          <QueueSection lines={queue} width={width} />
        </Box>
      )}
      {gaps === undefined ? null : (
        <Text wrap="truncate-end" {...theme.tokens.warn}>
          {gaps}
        </Text>
      )}
    </Box>
  );
}
