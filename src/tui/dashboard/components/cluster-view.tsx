/** Cluster: every hive with its devices, RAM and VRAM bars, the queen and its term, and health. */
import { Box, Text } from 'ink';
import type { ReactNode } from 'react';
import type { HiveView } from '../../../shared/view.js';
import { bar, formatDuration, formatGiB } from '../format.js';
import { selectedIndex, sortedHives } from '../selectors.js';
import type { DashboardState } from '../state.js';
import { useTheme, type Theme } from '../theme.js';
import { healthToken } from './status.js';

export interface ViewProps {
  state: DashboardState;
  width: number;
  height: number;
}

function MemoryLine(props: {
  label: string;
  name?: string;
  total: number;
  free: number;
  unit: string;
  barWidth: number;
  theme: Theme;
}): React.JSX.Element {
  const { theme, total, free } = props;
  const used = Math.max(0, total - free);
  const fraction = total > 0 ? used / total : 0;
  const filled = bar(fraction, props.barWidth);
  const cut = filled.indexOf('░');
  const full = cut === -1 ? filled : filled.slice(0, cut);
  const empty = cut === -1 ? '' : filled.slice(cut);
  const token = fraction >= 0.9 ? 'error' : fraction >= 0.75 ? 'warn' : 'bar';
  return (
    <Text wrap="truncate-end">
      {'    '}
      <Text {...theme.tokens.muted}>{props.label.padEnd(5)}</Text>
      {props.name === undefined ? '' : `${props.name} `}
      <Text {...theme.tokens[token]}>{full}</Text>
      <Text {...theme.tokens.barEmpty}>{empty}</Text>
      {` ${formatGiB(used)}/${formatGiB(total)} GiB ${props.unit}`}
    </Text>
  );
}

/** The lines of one hive's block; the first line is the one a selection highlights. */
export function hiveLines(
  hive: HiveView,
  opts: { now: number; width: number; selected: boolean; theme: Theme },
): ReactNode[] {
  const { theme, now } = opts;
  const barWidth = Math.max(10, Math.min(50, opts.width - 50));
  const lines: ReactNode[] = [];
  lines.push(
    <Text key="title" wrap="truncate-end">
      <Text {...(opts.selected ? theme.tokens.selected : {})}>{opts.selected ? '▸ ' : '  '}</Text>
      <Text {...theme.tokens[healthToken(hive.health)]}>● </Text>
      <Text {...(hive.local ? theme.tokens.local : theme.tokens.title)}>{hive.name}</Text>
      {hive.local ? <Text {...theme.tokens.muted}> (this node)</Text> : null}
      {hive.queen ? <Text {...theme.tokens.queen}>{` queen · term ${hive.term}`}</Text> : null}
      <Text {...theme.tokens[healthToken(hive.health)]}>{` ${hive.health}`}</Text>
      <Text {...theme.tokens.muted}>{` · seen ${formatDuration(now - hive.lastSeen)} ago`}</Text>
    </Text>,
  );
  lines.push(
    <Text key="cpu" wrap="truncate-end">
      {'    '}
      <Text {...theme.tokens.muted}>{'CPU  '}</Text>
      {`${hive.cpu.model} · ${hive.cpu.physicalCores}C/${hive.cpu.logicalCores}T`}
      {hive.loadAverage === undefined ? null : ` · load ${hive.loadAverage.toFixed(2)}`}
      <Text {...theme.tokens.muted}>{` · backends ${hive.backends.join(', ') || '–'}`}</Text>
    </Text>,
  );
  const build = hive.engineBuild;
  // the native llama.cpp build while it runs, or how it last ended when that did not decide
  if (build !== undefined && build.state !== 'pending' && build.state !== 'done') {
    const running = build.state === 'building' || build.state === 'measuring';
    const by = build.trigger === 'idle' ? 'at an idle moment' : 'doctor --fix';
    lines.push(
      <Text key="build" wrap="truncate-end">
        {'    '}
        <Text {...theme.tokens.muted}>{'llama'}</Text>
        <Text {...theme.tokens[build.state === 'failed' ? 'warn' : running ? 'bar' : 'muted']}>
          {running
            ? ` ${build.state} for this CPU${build.percent === undefined ? '' : ` ${build.percent}%`}`
            : ` native build ${build.state}`}
        </Text>
        <Text {...theme.tokens.muted}>
          {running && build.percent !== undefined ? ` · ${by}` : ` · ${build.text}`}
        </Text>
      </Text>,
    );
  }
  lines.push(
    <MemoryLine
      key="ram"
      label="RAM"
      total={hive.ramTotalBytes}
      free={hive.ramFreeBytes}
      unit="used"
      barWidth={barWidth}
      theme={theme}
    />,
  );
  for (const gpu of hive.gpus) {
    lines.push(
      <MemoryLine
        key={`gpu${gpu.index}`}
        label={`GPU${gpu.index}`}
        name={`${gpu.name} (${gpu.backend})`}
        total={gpu.vramTotalBytes}
        free={gpu.vramFreeBytes}
        unit="VRAM"
        barWidth={Math.max(8, barWidth - gpu.name.length - gpu.backend.length - 4)}
        theme={theme}
      />,
    );
  }
  return lines;
}

/** The range of blocks [start, end) to show so that block `selected` is fully visible. */
export function blockWindow(heights: number[], selected: number, height: number): [number, number] {
  let start = Math.max(0, selected);
  let used = heights[start] ?? 0;
  while (start > 0 && used + (heights[start - 1] ?? 0) <= height) {
    start -= 1;
    used += heights[start] ?? 0;
  }
  let end = Math.max(0, selected) + 1;
  while (end < heights.length && used + (heights[end] ?? 0) <= height) {
    used += heights[end] ?? 0;
    end += 1;
  }
  return [start, Math.min(end, heights.length)];
}

export function ClusterPanel({ state, width, height }: ViewProps): React.JSX.Element {
  const theme = useTheme();
  const hives = sortedHives(state.cluster);
  const selected = selectedIndex(state, 'cluster');
  if (hives.length === 0) return <Text {...theme.tokens.muted}>no hives yet</Text>;
  // One blank line separates blocks; it is counted in each block's height.
  const blocks = hives.map((hive, i) =>
    hiveLines(hive, { now: state.now, width, selected: i === selected, theme }),
  );
  const reserve = hives.length > 1 ? 1 : 0;
  const [start, end] = blockWindow(
    blocks.map((b) => b.length + 1),
    selected,
    height - reserve,
  );
  const hidden = hives.length - (end - start);
  return (
    <Box flexDirection="column" height={height} overflowY="hidden">
      {blocks.slice(start, end).map((lines, i) => (
        <Box key={hives[start + i]?.id ?? i} flexDirection="column" marginBottom={1}>
          {lines}
        </Box>
      ))}
      {hidden > 0 ? (
        <Text
          {...theme.tokens.muted}
        >{`  ${hidden} more hive${hidden === 1 ? '' : 's'} (j/k to scroll)`}</Text>
      ) : null}
    </Box>
  );
}
