/**
 * What a streaming command (`rbee infer`) shows on a terminal while it waits: narration lines as
 * they come (Ink's <Static>) and, under them, one spinner line with the latest step or a download's
 * progress bar. It is drawn on stderr and cleared the moment output begins (the first token on
 * stdout), so tokens never mix with redraws. Only used when stderr is a TTY and --json is off.
 */
import { Box, render, Static, Text } from 'ink';
import { useEffect, useState } from 'react';

export interface LiveStatus {
  /** A finished line (narration) above the spinner. */
  line(text: string): void;
  /** The spinner's label: what is happening now. */
  status(text: string): void;
  /** Clears the spinner (finished lines stay) and gives the terminal back. Idempotent. */
  stop(): void;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const FRAME_MS = 80;

interface Store {
  lines: { key: number; text: string }[];
  label: string;
  listener?: () => void;
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
    </Box>
  );
}

export function createLiveStatus(stream: NodeJS.WriteStream): LiveStatus {
  const store: Store = { lines: [], label: 'starting' };
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
    stop() {
      if (stopped) return;
      stopped = true;
      app.clear();
      app.unmount();
    },
  };
}
