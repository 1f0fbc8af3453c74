/** Models: the catalog of every hive, and downloads in progress with progress, speed and ETA. */
import { Box, Text } from 'ink';
import type { DownloadView } from '../../../shared/view.js';
import { bar, formatBytes, formatDuration, formatRate } from '../format.js';
import { hiveNames, selectedIndex, sortedDownloads, sortedModels } from '../selectors.js';
import { useTheme } from '../theme.js';
import type { ViewProps } from './cluster-view.js';
import { Table, type Column, type TableRow } from './table.js';

const WIDE = 110;

/** Two lines per download: what and where, then the bar with %, sizes, speed and ETA. */
function DownloadLines({
  download,
  hive,
  width,
}: {
  download: DownloadView;
  hive: string;
  width: number;
}): React.JSX.Element {
  const theme = useTheme();
  const total = download.totalBytes;
  const fraction = total !== undefined && total > 0 ? download.bytes / total : undefined;
  const percent = fraction === undefined ? '?%' : `${Math.floor(fraction * 100)}%`;
  const sizes = `${formatBytes(download.bytes)}/${total === undefined ? '?' : formatBytes(total)}`;
  const eta = download.etaSeconds === undefined ? '–' : formatDuration(download.etaSeconds * 1000);
  const tail = ` ${percent.padStart(4)} ${sizes.padStart(17)} ${formatRate(download.bytesPerSecond).padStart(11)}  ETA ${eta}`;
  const barWidth = Math.max(6, Math.min(60, width - tail.length - 6));
  const filled = bar(fraction ?? 0, barWidth);
  const cut = filled.indexOf('░');
  return (
    <>
      <Text wrap="truncate-end">
        {'  '}
        {download.file ?? download.ref}
        <Text {...theme.tokens.muted}>
          {` @${hive} · ${download.phase}${download.from === undefined ? '' : ` from ${download.from}`}`}
        </Text>
      </Text>
      <Text wrap="truncate-end">
        {'    '}
        <Text {...theme.tokens.bar}>{cut === -1 ? filled : filled.slice(0, cut)}</Text>
        <Text {...theme.tokens.barEmpty}>{cut === -1 ? '' : filled.slice(cut)}</Text>
        {tail}
      </Text>
    </>
  );
}

export function ModelsPanel({ state, width, height }: ViewProps): React.JSX.Element {
  const theme = useTheme();
  const wide = width >= WIDE;
  const names = hiveNames(state.cluster);
  const downloads = sortedDownloads(state.cluster);
  // Downloads get up to half the panel; the catalog keeps the rest.
  const shown = Math.min(downloads.length, Math.floor((Math.floor(height / 2) - 1) / 2));
  const downloadLines = downloads.length === 0 ? 0 : 1 + 2 * Math.max(1, shown);
  const columns: Column[] = [
    { title: 'HIVE', width: wide ? 14 : 10 },
    { title: 'MODEL', width: 'flex' },
    { title: 'QUANT', width: 7 },
    { title: 'SIZE', width: 8, align: 'right' },
    { title: 'ARCH', width: wide ? 10 : 7 },
    { title: 'CTX', width: 6, align: 'right' },
    { title: 'USED', width: 6, align: 'right' },
    ...(wide ? [{ title: 'REF', width: 'flex' } as const] : []),
  ];
  const rows: TableRow[] = sortedModels(state.cluster).map((m) => ({
    key: `${m.hive}/${m.id}`,
    cells: [
      { text: names.get(m.hive) ?? m.hive },
      { text: m.name },
      { text: m.quantization },
      { text: formatBytes(m.bytes) },
      { text: m.architecture },
      { text: String(m.contextLength) },
      { text: m.lastUsedAt === null ? 'never' : formatDuration(state.now - m.lastUsedAt), token: 'muted' },
      ...(wide ? [{ text: m.ref, token: 'muted' as const }] : []),
    ],
  }));
  return (
    <Box flexDirection="column" height={height} overflowY="hidden">
      <Table
        columns={columns}
        rows={rows}
        selected={selectedIndex(state, 'models')}
        width={width}
        height={height - downloadLines}
        empty="no models on disk: press p to pull one (demo: a generated test model)"
      />
      {downloadLines > 0 ? (
        <Box flexDirection="column" height={downloadLines} overflowY="hidden">
          <Text {...theme.tokens.title}>
            {` Downloads (${downloads.length})`}
            {downloads.length > shown ? <Text {...theme.tokens.muted}>{`, ${shown} shown`}</Text> : null}
          </Text>
          {downloads.slice(0, Math.max(1, shown)).map((d) => (
            <DownloadLines
              key={`${d.hive}/${d.ref}`}
              download={d}
              hive={names.get(d.hive) ?? d.hive}
              width={width}
            />
          ))}
        </Box>
      ) : null}
    </Box>
  );
}
