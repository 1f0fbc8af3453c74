/**
 * What a streaming command (`rbee infer`, `rbee models pull`) shows on a terminal while it waits:
 * narration lines as they come (Ink's <Static>) and, under them, one spinner line with the latest
 * step and, while a download runs, its progress bar (percent, bytes, speed, ETA). It is drawn on
 * stderr and cleared the moment output begins (the first token on stdout, or the pull's result), so
 * output never mixes with redraws. Only used when stderr is a TTY and --json is off.
 */
import { Box, render, Static, Text } from 'ink';
import { useEffect, useState } from 'react';
import type { Progress } from '../../shared/wire.js';
import { bar, formatBytes, formatRate } from '../dashboard/format.js';

export interface LiveStatus {
  /** A finished line (narration) above the spinner. */
  line(text: string): void;
  /** The spinner's label: what is happening now. */
  status(text: string): void;
  /** A download's progress, drawn as a bar under the label; undefined removes the bar. */
  progress(progress: Progress | undefined): void;
  /** Clears the spinner (finished lines stay) and gives the terminal back. Idempotent. */
  stop(): void;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const FRAME_MS = 80;

interface Store {
  lines: { key: number; text: string }[];
  label: string;
  progress: Progress | undefined;
  listener?: () => void;
}

const BAR_WIDTH = 30;

/** "██████░░░░  40%  12.0 MB / 30.0 MB  5.1 MB/s  ETA 4 s"; without a total, bytes and speed only. */
export function progressLine(p: Progress, width = BAR_WIDTH): string {
  const parts: string[] = [];
  if (p.totalBytes !== undefined && p.totalBytes > 0) {
    const fraction = Math.min(1, p.bytes / p.totalBytes);
    parts.push(`${bar(fraction, width)} ${String(Math.floor(100 * fraction)).padStart(3)}%`);
    parts.push(`${formatBytes(p.bytes)} / ${formatBytes(p.totalBytes)}`);
  } else parts.push(formatBytes(p.bytes));
  if (p.bytesPerSecond !== undefined) parts.push(formatRate(p.bytesPerSecond));
  if (p.etaSeconds !== undefined) parts.push(`ETA ${Math.ceil(p.etaSeconds)} s`);
  return parts.join('  ');
}

function StatusView({ store }: { store: Store }): React.JSX.Element {
  const [, redraw] = useState(0);
  const [frame, setFrame] = useState(0);
  useEffect(() => {
    store.listener = () => redraw((n) => n + 1);
    const timer = setInterval(() => setFrame((f) => (f + 1) % FRAMES.length), FRAME_MS);
    return () => {
      clearInterval(timer);
      store.listener = undefined;
    };
  }, [store]);
  return (
    <Box flexDirection="column">
      <Static items={[...store.lines]}>{(item) => <Text key={item.key}>{item.text}</Text>}</Static>
      <Text wrap="truncate-end">
        <Text color="cyan">{FRAMES[frame]}</Text> {store.label}
      </Text>
      {store.progress === undefined ? null : (
        <Text wrap="truncate-end">
          {'  '}
          <Text color="cyan">{progressLine(store.progress)}</Text>
        </Text>
      )}
    </Box>
  );
}

export function createLiveStatus(stream: NodeJS.WriteStream): LiveStatus {
  const store: Store = { lines: [], label: 'starting', progress: undefined };
  let next = 0;
  const app = render(<StatusView store={store} />, {
    stdout: stream,
    // Ctrl-C must reach the command's own handler (it cancels the job), and nothing here reads keys.
    exitOnCtrlC: false,
    patchConsole: false,
  });
  let stopped = false;
  return {
    line(text) {
      if (stopped) return void stream.write(`${text}\n`);
      store.lines.push({ key: next++, text });
      store.listener?.();
    },
    status(text) {
      if (stopped) return;
      store.label = text;
      store.listener?.();
    },
    progress(progress) {
      if (stopped) return;
      store.progress = progress;
      store.listener?.();
    },
    stop() {
      if (stopped) return;
      stopped = true;
      app.clear();
      app.unmount();
    },
  };
}
