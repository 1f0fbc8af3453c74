/**
 * Header: the node, its health and uptime, the queen and her term, the cluster's hives, workers and
 * jobs (running and queued on any node), and the connection.
 */
import { Box, Text } from 'ink';
import { formatDuration } from '../format.js';
import { jobCounts, queenOf } from '../selectors.js';
import { uptimeMs, type ConnectionState, type DashboardState } from '../state.js';
import { useTheme, type ThemeToken } from '../theme.js';
import { healthToken } from './status.js';

export function connectionLabel(connection: ConnectionState): { text: string; token: ThemeToken } {
  switch (connection.status) {
    case 'waking':
      return { text: 'waking node…', token: 'warn' };
    case 'wake-failed':
      return { text: 'node unavailable', token: 'error' };
    case 'connecting':
      return { text: 'connecting…', token: 'warn' };
    case 'live':
      return { text: '● live', token: 'ok' };
    case 'reconnecting':
      return {
        text: `reconnecting (try ${connection.attempt}, ${formatDuration(connection.retryInMs)})`,
        token: 'warn',
      };
  }
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

export function Header({ state, width }: { state: DashboardState; width: number }): React.JSX.Element {
  const theme = useTheme();
  const { cluster } = state;
  const connection = connectionLabel(state.connection);
  const queen = queenOf(cluster);
  const { running, queued } = jobCounts(state);
  return (
    <Box width={width} justifyContent="space-between">
      <Text wrap="truncate-end">
        <Text {...theme.tokens.accent} bold>
          rbee
        </Text>
        {cluster === undefined ? null : (
          <>
            <Text {...theme.tokens.muted}> node </Text>
            <Text {...theme.tokens.title}>{cluster.health.node}</Text>{' '}
            <Text {...theme.tokens[healthToken(cluster.health.state)]}>{cluster.health.state}</Text>
            <Text {...theme.tokens.muted}>{` up ${formatDuration(uptimeMs(state))} │ `}</Text>
            {queen === undefined ? (
              <Text {...theme.tokens.warn}>no queen</Text>
            ) : (
              <Text {...theme.tokens.queen}>{`queen ${queen.name} t${queen.term}`}</Text>
            )}
            {width >= 100 ? (
              <Text {...theme.tokens.muted}>
                {` │ ${plural(cluster.hives.length, 'hive')} ${plural(cluster.workers.length, 'worker')} ${running} running${queued === 0 ? '' : ` ${queued} queued`}`}
              </Text>
            ) : null}
          </>
        )}
      </Text>
      <Box flexShrink={0}>
        <Text {...theme.tokens[connection.token]}>{` ${connection.text}`}</Text>
      </Box>
    </Box>
  );
}
