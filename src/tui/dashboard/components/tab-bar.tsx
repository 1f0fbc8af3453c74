/** The six views, numbered for the 1–6 keys; counts appear when the terminal is wide enough. */
import { Box, Text } from 'ink';
import { VIEWS, VIEW_TITLES, type DashboardState, type ViewId } from '../state.js';
import { isUnfinished, jobLines } from '../selectors.js';
import { useTheme } from '../theme.js';

function count(state: DashboardState, view: ViewId): number | undefined {
  const c = state.cluster;
  if (c === undefined) return undefined;
  switch (view) {
    case 'cluster':
      return c.hives.length;
    case 'workers':
      return c.workers.length;
    case 'models':
      return c.models.length;
    case 'jobs':
      // unfinished jobs of the cluster, as far as the dashboard knows them
      return jobLines(state).filter((j) => isUnfinished(j.state)).length;
    default:
      return undefined;
  }
}

export function TabBar({ state, width }: { state: DashboardState; width: number }): React.JSX.Element {
  const theme = useTheme();
  const showCounts = width >= 100;
  return (
    <Box width={width}>
      <Text wrap="truncate-end">
        {VIEWS.map((view, i) => {
          const n = showCounts ? count(state, view) : undefined;
          const label = ` ${i + 1} ${VIEW_TITLES[view]}${n === undefined ? '' : ` ${n}`} `;
          return (
            <Text key={view}>
              <Text {...(view === state.view ? theme.tokens.activeTab : theme.tokens.muted)}>{label}</Text>
              {i < VIEWS.length - 1 ? ' ' : ''}
            </Text>
          );
        })}
      </Text>
    </Box>
  );
}
