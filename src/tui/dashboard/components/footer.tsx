/** Footer: the last action's result, else the keys that work right now (from the keymap). */
import { Text } from 'ink';
import { hintsFor } from '../keymap.js';
import type { DashboardState } from '../state.js';
import { useTheme } from '../theme.js';

export function Footer({ state }: { state: DashboardState }): React.JSX.Element {
  const theme = useTheme();
  if (state.notice !== undefined) {
    const token = state.notice.level === 'error' ? 'error' : state.notice.level === 'ok' ? 'ok' : 'accent';
    return (
      <Text wrap="truncate-end">
        <Text {...theme.tokens[token]}>{state.notice.text}</Text>
        <Text {...theme.tokens.muted}> (Esc clears)</Text>
      </Text>
    );
  }
  return (
    <Text wrap="truncate-end">
      {hintsFor(state).map((h, i) => (
        <Text key={`${h.keys}-${i}`}>
          <Text {...theme.tokens.accent}>{h.keys}</Text>
          <Text {...theme.tokens.muted}>{` ${h.help}  `}</Text>
        </Text>
      ))}
    </Text>
  );
}
