/** The `?` overlay: every key, generated from the keymap so it can never drift from it. */
import { Box, Text } from 'ink';
import { helpSections } from '../keymap.js';
import { cell } from '../format.js';
import { useTheme } from '../theme.js';

export function HelpOverlay({ width, height }: { width: number; height: number }): React.JSX.Element {
  const theme = useTheme();
  const lines: { key: string; keys?: string; text: string; title?: boolean }[] = [];
  for (const section of helpSections()) {
    lines.push({ key: section.title, text: section.title, title: true });
    section.rows.forEach((r, i) => lines.push({ key: `${section.title}${i}`, keys: r.keys, text: r.help }));
  }
  // Two columns when one does not fit and the terminal is wide enough for both.
  const columns = lines.length > height - 1 && width >= 70 ? 2 : 1;
  const perColumn = Math.ceil(lines.length / columns);
  const colWidth = Math.floor(width / columns) - 1;
  return (
    <Box flexDirection="column" height={height} overflowY="hidden">
      <Text {...theme.tokens.title}>Keys (? or Esc closes)</Text>
      <Box flexDirection="row">
        {Array.from({ length: columns }, (_, c) => (
          <Box key={c} flexDirection="column" width={colWidth} marginRight={1}>
            {lines.slice(c * perColumn, (c + 1) * perColumn).map((l) =>
              l.title === true ? (
                <Text key={l.key} {...theme.tokens.accent} wrap="truncate-end">
                  {l.text}
                </Text>
              ) : (
                <Text key={l.key} wrap="truncate-end">
                  <Text {...theme.tokens.title}>{cell(l.keys ?? '', 12)}</Text>
                  {l.text}
                </Text>
              ),
            )}
          </Box>
        ))}
      </Box>
    </Box>
  );
}
