/**
 * The placement preview (w in Models): where a job for the selected model would run and why — the
 * scheduler's own table over every hive of the cluster, as `rbee place` prints it: per hive what
 * it would do (warm worker, on disk, fetch, wait, no room), what the model needs there and on what
 * basis, what is free, the time to first token and speed to expect, then each device with whether
 * the model fits. Nothing loads; Esc closes it, r asks again.
 */
import { Box, Text } from 'ink';
import { cell } from '../format.js';
import { placeRows, type PlaceRow } from '../selectors.js';
import type { PlaceState } from '../state.js';
import { useTheme, type ThemeToken } from '../theme.js';

const KIND_TOKEN: Readonly<Record<PlaceRow['kind'], ThemeToken>> = {
  warm: 'ok',
  'on-disk': 'ok',
  provision: 'accent',
  wait: 'warn',
  'no-room': 'error',
  unavailable: 'error',
};

/** The widest option: "unavailable". */
const KIND_WIDTH = 11;

export function PlacePanel({
  place,
  width,
  height,
}: {
  place: PlaceState;
  width: number;
  height: number;
}): React.JSX.Element {
  const theme = useTheme();
  const { preview } = place;
  const title = `Where a job for ${place.name} would run`;
  const lines: React.JSX.Element[] = [];
  if (place.error !== undefined) {
    lines.push(
      <Text key="error" wrap="truncate-end" {...theme.tokens.error}>
        {`  cannot tell: ${place.error}`}
      </Text>,
    );
  }
  if (preview === undefined) {
    if (place.error === undefined) {
      lines.push(
        <Text key="asking" {...theme.tokens.muted}>
          {'  asking the node…'}
        </Text>,
      );
    }
  } else {
    lines.push(
      <Text key="verdict" wrap="truncate-end" {...(preview.placement === null ? theme.tokens.warn : {})}>
        {preview.placement === null
          ? '  no hive can take it now'
          : `  → hive ${preview.placement.name} (${preview.placement.kind}): ${preview.placement.reason}`}
      </Text>,
    );
    const hiveWidth = Math.min(20, Math.max(8, ...preview.options.map((o) => o.name.length)));
    for (const row of placeRows(preview)) {
      lines.push(
        <Text key={`hive-${row.hive}`} wrap="truncate-end">
          <Text {...(row.chosen ? theme.tokens.accent : theme.tokens.title)}>
            {`${row.chosen ? '▸' : ' '} ${cell(row.hive, hiveWidth)}  `}
          </Text>
          <Text {...theme.tokens[KIND_TOKEN[row.kind]]}>{cell(row.kind, KIND_WIDTH)}</Text>
          {`  needs ${row.needs}${row.free === '–' ? '' : `, ${row.free} free`}`}
        </Text>,
        <Text key={`expect-${row.hive}`} wrap="truncate-end">
          {`    first token ${row.ttft}, speed ${row.speed}`}
        </Text>,
      );
      for (const d of row.devices) {
        lines.push(
          <Text key={`dev-${row.hive}-${d.name}`} wrap="truncate-end">
            {`    ${d.chosen ? '→' : ' '} ${cell(d.name, 16)} ${d.free.padStart(9)} free  `}
            <Text {...(d.verdict === 'fits' ? theme.tokens.ok : theme.tokens.muted)}>{d.verdict}</Text>
          </Text>,
        );
      }
      lines.push(
        <Text key={`why-${row.hive}`} wrap="truncate-end" {...theme.tokens.muted}>
          {`    ${row.why}`}
        </Text>,
      );
    }
  }
  return (
    <Box flexDirection="column" width={width} height={height} overflowY="hidden">
      <Text wrap="truncate-end">
        <Text {...theme.tokens.title}>{title}</Text>
        <Text {...theme.tokens.muted}>
          {preview === undefined ? '' : ` (table computed on ${preview.node}; nothing loads)`}
          {place.pending && preview !== undefined ? ' asking again…' : ''}
        </Text>
      </Text>
      {lines.slice(0, Math.max(0, height - 1))}
    </Box>
  );
}
