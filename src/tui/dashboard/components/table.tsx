/**
 * A fixed-height table: a header line and a window of rows that keeps the selection in view. Cells
 * are padded strings so a row is always exactly one terminal line.
 */
import { Box, Text } from 'ink';
import { cell, windowStart } from '../format.js';
import { useTheme, type ThemeToken } from '../theme.js';

export interface Column {
  title: string;
  /** Characters, or 'flex' to take what the fixed columns leave (at least 8). */
  width: number | 'flex';
  align?: 'left' | 'right';
}

export interface TableCell {
  text: string;
  token?: ThemeToken;
}

export interface TableRow {
  key: string;
  cells: TableCell[];
}

export interface TableProps {
  columns: Column[];
  rows: TableRow[];
  /** -1 for none. */
  selected: number;
  width: number;
  height: number;
  empty: string;
}

const GAP = 1;
const MARK = 2;

export function columnWidths(columns: Column[], width: number): number[] {
  const fixed = columns.reduce((sum, c) => sum + (c.width === 'flex' ? 0 : c.width) + GAP, MARK);
  const flexCount = columns.filter((c) => c.width === 'flex').length;
  const flex = flexCount === 0 ? 0 : Math.max(8, Math.floor((width - fixed) / flexCount));
  return columns.map((c) => (c.width === 'flex' ? flex : c.width));
}

export function Table({ columns, rows, selected, width, height, empty }: TableProps): React.JSX.Element {
  const theme = useTheme();
  const widths = columnWidths(columns, width);
  // One line for the header, and one for "x–y of n" when the rows do not all fit.
  const fits = rows.length <= height - 1;
  const bodyHeight = Math.max(1, height - (fits ? 1 : 2));
  const start = windowStart(rows.length, Math.max(0, selected), bodyHeight);
  const visible = rows.slice(start, start + bodyHeight);
  const header = columns.map((c, i) => cell(c.title, widths[i] ?? 0, c.align)).join(' ');
  return (
    <Box flexDirection="column" height={height} overflowY="hidden">
      <Text wrap="truncate-end" {...theme.tokens.muted}>
        {' '.repeat(MARK)}
        {header}
      </Text>
      {rows.length === 0 ? (
        <Text {...theme.tokens.muted}>{`  ${empty}`}</Text>
      ) : (
        visible.map((row, i) => {
          const isSelected = start + i === selected;
          return (
            <Text key={row.key} wrap="truncate-end" {...(isSelected ? theme.tokens.selected : {})}>
              {isSelected ? '▸ ' : '  '}
              {row.cells.map((c, j) => (
                <Text key={j} {...(c.token === undefined ? {} : theme.tokens[c.token])}>
                  {cell(c.text, widths[j] ?? 0, columns[j]?.align)}
                  {j < row.cells.length - 1 ? ' ' : ''}
                </Text>
              ))}
            </Text>
          );
        })
      )}
      {rows.length > visible.length ? (
        <Text {...theme.tokens.muted}>{`  ${start + 1}–${start + visible.length} of ${rows.length}`}</Text>
      ) : null}
    </Box>
  );
}
