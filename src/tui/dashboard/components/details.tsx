/** Enter on a row: everything known about that hive, worker, model or job. */
import { Box, Text } from 'ink';
import type { ReactNode } from 'react';
import { formatBytes, formatClock, formatDuration, formatMs, formatTokensPerSecond } from '../format.js';
import { hiveName, selectedRow } from '../selectors.js';
import type { DashboardState } from '../state.js';
import { useTheme } from '../theme.js';
import { hiveLines } from './cluster-view.js';
import { deviceLabel } from './status.js';

type Field = [label: string, value: string];

function fieldsFor(
  state: DashboardState,
): { title: string; fields: Field[]; extra?: ReactNode[] } | undefined {
  const row = selectedRow(state, state.view);
  const { cluster, now } = state;
  if (row === undefined) return undefined;
  switch (row.view) {
    case 'cluster': {
      const h = row.hive;
      const workers = cluster?.workers.filter((w) => w.hive === h.id) ?? [];
      const models = cluster?.models.filter((m) => m.hive === h.id) ?? [];
      return {
        title: `hive ${h.name}`,
        fields: [
          ['id', h.id],
          ['workers', workers.map((w) => `${w.model} (${w.state})`).join(', ') || '–'],
          ['models', models.map((m) => m.name).join(', ') || '–'],
          ['last seen', formatClock(h.lastSeen)],
        ],
      };
    }
    case 'workers': {
      const w = row.worker;
      return {
        title: `worker ${w.id}`,
        fields: [
          ['hive', hiveName(cluster, w.hive)],
          ['model', w.model],
          ['device', deviceLabel(w)],
          ['state', w.state],
          ['slots', `${w.slotsBusy} busy of ${w.slots}`],
          ['speed', `${formatTokensPerSecond(w.tokensPerSecond)} tok/s`],
          ['memory', formatBytes(w.memoryBytes)],
          ['pid', String(w.pid)],
          ['started', `${formatClock(w.startedAt)} (${formatDuration(now - w.startedAt)} ago)`],
          ['last used', `${formatClock(w.lastUsedAt)} (${formatDuration(now - w.lastUsedAt)} ago)`],
        ],
      };
    }
    case 'models': {
      const m = row.model;
      const workers =
        cluster?.workers.filter((w) => w.model === m.ref || w.model === m.name || w.model === m.id) ?? [];
      return {
        title: `model ${m.name}`,
        fields: [
          ['ref', m.ref],
          ['id', m.id],
          ['hive', hiveName(cluster, m.hive)],
          ['size', formatBytes(m.bytes)],
          ['quantization', m.quantization],
          ['architecture', m.architecture],
          ['context', `${m.contextLength} tokens`],
          ['source', m.source],
          ['last used', m.lastUsedAt === null ? 'never' : `${formatDuration(now - m.lastUsedAt)} ago`],
          ['workers', workers.map((w) => `${w.id} (${w.state})`).join(', ') || 'none (s spawns one)'],
        ],
      };
    }
    case 'jobs': {
      const j = row.job;
      return {
        title: `job ${j.id}`,
        fields: [
          ['model', j.model],
          ['state', j.state],
          ...(j.queuePosition === undefined
            ? []
            : [
                [
                  'queue',
                  `position ${j.queuePosition.position} of ${j.queuePosition.queued}, wait ${
                    j.queuePosition.estimatedWaitS === undefined
                      ? 'unknown'
                      : `about ${formatDuration(j.queuePosition.estimatedWaitS * 1000)}`
                  }`,
                ] satisfies Field,
              ]),
          ['entered through', j.entry],
          ['hive', j.hive ?? '–'],
          ['worker', j.worker ?? '–'],
          ['placed', j.reason ?? '–'],
          ['accepted', formatClock(j.acceptedAt)],
          ['finished', j.finishedAt === undefined ? '–' : formatClock(j.finishedAt)],
          ['time to first token', formatMs(j.timeToFirstTokenMs)],
          ['speed', `${formatTokensPerSecond(j.tokensPerSecond)} tok/s`],
          ['tokens', j.completionTokens === undefined ? '–' : String(j.completionTokens)],
          ['error', j.error ?? '–'],
        ],
      };
    }
    case 'chat':
      return undefined;
  }
}

export function DetailsPanel({
  state,
  width,
  height,
}: {
  state: DashboardState;
  width: number;
  height: number;
}): React.JSX.Element {
  const theme = useTheme();
  const details = fieldsFor(state);
  if (details === undefined) return <Text {...theme.tokens.muted}>nothing selected</Text>;
  const row = selectedRow(state, state.view);
  const head =
    row?.view === 'cluster' ? hiveLines(row.hive, { now: state.now, width, selected: false, theme }) : [];
  const labelWidth = Math.max(...details.fields.map(([l]) => l.length)) + 2;
  return (
    <Box flexDirection="column" height={height} overflowY="hidden">
      <Text {...theme.tokens.title}>{details.title}</Text>
      {head}
      {details.fields.map(([label, value]) => (
        <Text key={label} wrap="truncate-end">
          <Text {...theme.tokens.muted}>{`  ${label}`.padEnd(labelWidth + 2)}</Text>
          <Text {...(label === 'error' && value !== '–' ? theme.tokens.error : {})}>{value}</Text>
        </Text>
      ))}
    </Box>
  );
}
