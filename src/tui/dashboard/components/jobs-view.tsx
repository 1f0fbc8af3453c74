/** Jobs: running ones first, then recent ones, with time to first token and speed. */
import { formatDuration, formatMs, formatTokensPerSecond } from '../format.js';
import { modelLabel, selectedIndex, sortedJobs } from '../selectors.js';
import type { ThemeToken } from '../theme.js';
import type { JobView } from '../../../shared/view.js';
import type { ViewProps } from './cluster-view.js';
import { Table, type Column, type TableRow } from './table.js';

const WIDE = 120;

const STATE_TOKEN: Readonly<Record<JobView['state'], ThemeToken>> = {
  running: 'accent',
  done: 'ok',
  failed: 'error',
  cancelled: 'warn',
};

export function JobsPanel({ state, width, height }: ViewProps): React.JSX.Element {
  const wide = width >= WIDE;
  const columns: Column[] = [
    { title: 'JOB', width: wide ? 14 : 10 },
    { title: 'MODEL', width: 'flex' },
    { title: 'STATE', width: 9 },
    { title: 'AGE', width: 6, align: 'right' },
    { title: 'TIME', width: 6, align: 'right' },
    { title: 'TTFT', width: 8, align: 'right' },
    { title: 'TOK/S', width: 6, align: 'right' },
    { title: 'TOKENS', width: 6, align: 'right' },
    ...(wide ? [{ title: 'ERROR', width: 'flex' } as const] : []),
  ];
  const rows: TableRow[] = sortedJobs(state.cluster).map((j) => ({
    key: j.id,
    cells: [
      { text: j.id },
      { text: wide ? j.model : modelLabel(state.cluster, j.model) },
      { text: j.state, token: STATE_TOKEN[j.state] },
      { text: formatDuration(state.now - j.acceptedAt) },
      { text: formatDuration((j.finishedAt ?? state.now) - j.acceptedAt) },
      { text: formatMs(j.timeToFirstTokenMs) },
      { text: formatTokensPerSecond(j.tokensPerSecond) },
      { text: j.completionTokens === undefined ? '–' : String(j.completionTokens) },
      ...(wide ? [{ text: j.error ?? '', token: 'error' as const }] : []),
    ],
  }));
  return (
    <Table
      columns={columns}
      rows={rows}
      selected={selectedIndex(state, 'jobs')}
      width={width}
      height={height}
      empty="no jobs yet: chat in Chat (5), or run `rbee infer`"
    />
  );
}
