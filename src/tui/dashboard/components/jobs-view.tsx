/**
 * Jobs of the whole cluster: unfinished ones first, then recent ones; for each, the node it entered
 * through, the hive it runs on, its state, time to first token and speed. Other nodes' jobs come
 * from polling the cluster's list while this view is shown; this node's are live.
 */
import { Box, Text } from 'ink';
import type { JobRecord } from '../../../shared/view.js';
import { formatDuration, formatMs, formatTokensPerSecond } from '../format.js';
import { jobsGaps, modelLabel, selectedIndex, sortedJobs } from '../selectors.js';
import { useTheme, type ThemeToken } from '../theme.js';
import type { ViewProps } from './cluster-view.js';
import { Table, type Column, type TableRow } from './table.js';

const WIDE = 120;

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
  const columns: Column[] = [
    { title: 'JOB', width: wide ? 10 : 8 },
    { title: 'ENTRY', width: wide ? 10 : 8 },
    { title: 'HIVE', width: wide ? 10 : 8 },
    { title: 'MODEL', width: 'flex' },
    { title: 'STATE', width: 9 },
    { title: 'AGE', width: 6, align: 'right' },
    ...(wide ? [{ title: 'TIME', width: 6, align: 'right' } as const] : []),
    { title: 'TTFT', width: 8, align: 'right' },
    { title: 'TOK/S', width: 6, align: 'right' },
    ...(wide
      ? [{ title: 'TOKENS', width: 6, align: 'right' } as const, { title: 'ERROR', width: 'flex' } as const]
      : []),
  ];
  const rows: TableRow[] = sortedJobs(state).map((j) => ({
    key: j.id,
    cells: [
      { text: j.id },
      { text: j.entry },
      { text: j.hive ?? '–' },
      { text: wide ? j.model : modelLabel(state.cluster, j.model) },
      { text: j.state, token: STATE_TOKEN[j.state] },
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
  const tableHeight = gaps === undefined ? height : height - 1;
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
      {gaps === undefined ? null : (
        <Text wrap="truncate-end" {...theme.tokens.warn}>
          {gaps}
        </Text>
      )}
    </Box>
  );
}
