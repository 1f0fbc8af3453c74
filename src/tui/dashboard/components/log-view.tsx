/**
 * Log: narration from every part of the cluster with its provenance `[source@node]`, filterable
 * by source. A windowed tail, not <Static>, for the reason given in chat-view.tsx.
 */
import { Box, Text } from 'ink';
import { formatClock } from '../format.js';
import { LOG_SOURCES, type DashboardState, type LogEntry } from '../state.js';
import { useTheme } from '../theme.js';
import type { ViewProps } from './cluster-view.js';

export function visibleLog(state: DashboardState): LogEntry[] {
  const { filter, entries } = state.log;
  return filter === undefined ? entries : entries.filter((e) => e.source === filter);
}

export function LogLines({ entries, height }: { entries: LogEntry[]; height: number }): React.JSX.Element {
  const theme = useTheme();
  return (
    <Box flexDirection="column" height={height} overflowY="hidden">
      {entries.map((e) => (
        <Text key={e.seq} wrap="truncate-end">
          <Text {...theme.tokens.muted}>{formatClock(e.ts)} </Text>
          <Text {...theme.sources[e.source]}>{`[${e.source}@${e.node}]`}</Text> {e.text}
        </Text>
      ))}
    </Box>
  );
}

export function LogPanel({ state, height }: ViewProps): React.JSX.Element {
  const theme = useTheme();
  const all = visibleLog(state);
  const rows = Math.max(1, height - 1);
  const end = Math.max(0, all.length - state.log.scroll);
  const shown = all.slice(Math.max(0, end - rows), end);
  const filters = [undefined, ...LOG_SOURCES];
  return (
    <Box flexDirection="column" height={height} overflowY="hidden">
      <Text wrap="truncate-end">
        <Text {...theme.tokens.muted}>{'filter (f): '}</Text>
        {filters.map((f) => (
          <Text key={f ?? 'all'} {...(f === state.log.filter ? theme.tokens.activeTab : theme.tokens.muted)}>
            {` ${f ?? 'all'} `}
          </Text>
        ))}
        {state.log.scroll > 0 ? (
          <Text {...theme.tokens.warn}>{`  ↓ ${state.log.scroll} newer (End to follow)`}</Text>
        ) : null}
      </Text>
      {shown.length === 0 ? (
        <Text {...theme.tokens.muted}>no narration yet</Text>
      ) : (
        <LogLines entries={shown} height={rows} />
      )}
    </Box>
  );
}
