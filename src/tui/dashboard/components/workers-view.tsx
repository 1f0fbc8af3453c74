/** Workers: every worker in the cluster with its model, device, state, slots, speed, memory, uptime. */
import { formatBytes, formatDuration, formatTokensPerSecond } from '../format.js';
import { hiveNames, modelLabel, selectedIndex, sortedWorkers } from '../selectors.js';
import type { ViewProps } from './cluster-view.js';
import { deviceLabel, workerStateToken } from './status.js';
import { Table, type Column, type TableRow } from './table.js';

/** Terminals at least this wide get the extra columns. */
const WIDE = 110;

export function WorkersPanel({ state, width, height }: ViewProps): React.JSX.Element {
  const wide = width >= WIDE;
  const names = hiveNames(state.cluster);
  const columns: Column[] = [
    { title: 'HIVE', width: wide ? 14 : 9 },
    { title: 'MODEL', width: 'flex' },
    { title: 'DEVICE', width: 11 },
    { title: 'STATE', width: 9 },
    { title: 'SLOTS', width: 5, align: 'right' },
    { title: 'TOK/S', width: 5, align: 'right' },
    { title: 'MEM', width: 7, align: 'right' },
    { title: 'UP', width: 6, align: 'right' },
    ...(wide
      ? [
          { title: 'PID', width: 7, align: 'right' } as const,
          { title: 'IDLE', width: 6, align: 'right' } as const,
          { title: 'ID', width: 10 } as const,
        ]
      : []),
  ];
  const rows: TableRow[] = sortedWorkers(state.cluster).map((w) => ({
    key: `${w.hive}/${w.id}`,
    cells: [
      { text: names.get(w.hive) ?? w.hive },
      { text: wide ? w.model : modelLabel(state.cluster, w.model) },
      { text: deviceLabel(w) },
      { text: w.state, token: workerStateToken(w.state) },
      {
        text: `${w.slotsBusy}/${w.slots}`,
        token: w.slotsBusy >= w.slots && w.slots > 0 ? 'warn' : undefined,
      },
      { text: formatTokensPerSecond(w.tokensPerSecond) },
      { text: formatBytes(w.memoryBytes) },
      { text: formatDuration(state.now - w.startedAt) },
      ...(wide
        ? [
            { text: String(w.pid) },
            { text: w.state === 'busy' ? '–' : formatDuration(state.now - w.lastUsedAt) },
            { text: w.id },
          ]
        : []),
    ],
  }));
  return (
    <Table
      columns={columns}
      rows={rows}
      selected={selectedIndex(state, 'workers')}
      width={width}
      height={height}
      empty="no workers running: select a model in Models (3) and press s to spawn one"
    />
  );
}
