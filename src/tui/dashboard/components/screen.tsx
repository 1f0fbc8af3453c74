/**
 * The whole frame as a pure function of state and terminal size: header, tabs, the current view
 * (or help, details, the waking screen), a dialog when one is open, and the footer. The frame is
 * one line shorter than the terminal: a frame as tall as the terminal makes Ink clear the whole
 * screen on every render (flicker), and the line left over is where its trailing newline goes.
 */
import { Box, Text } from 'ink';
import type { DashboardState } from '../state.js';
import { useTheme } from '../theme.js';
import { ChatPanel } from './chat-view.js';
import { ClusterPanel } from './cluster-view.js';
import { DetailsPanel } from './details.js';
import { DialogBox, dialogHeight } from './dialog.js';
import { Footer } from './footer.js';
import { Header } from './header.js';
import { HelpOverlay } from './help-overlay.js';
import { JobsPanel } from './jobs-view.js';
import { LogLines, LogPanel } from './log-view.js';
import { ModelsPanel } from './models-view.js';
import { PlacePanel } from './place-view.js';
import { TabBar } from './tab-bar.js';
import { WorkersPanel } from './workers-view.js';

export interface ScreenProps {
  state: DashboardState;
  /** Terminal columns. */
  width: number;
  /** Terminal rows. */
  height: number;
}

/** Smallest size laid out; smaller terminals get a clipped frame rather than a broken one. */
const MIN_WIDTH = 40;
const MIN_HEIGHT = 10;

function Waiting({ state, width, height }: ScreenProps): React.JSX.Element {
  const theme = useTheme();
  const c = state.connection;
  const title =
    c.status === 'wake-failed'
      ? `Could not reach the node: ${c.error}`
      : c.status === 'waking'
        ? 'Waking the node…'
        : 'Connecting to the node…';
  const tail = state.log.entries.slice(-(height - 3));
  return (
    <Box flexDirection="column" height={height} width={width} overflowY="hidden">
      <Text wrap="truncate-end" {...(c.status === 'wake-failed' ? theme.tokens.error : theme.tokens.accent)}>
        {title}
      </Text>
      {c.status === 'wake-failed' ? <Text {...theme.tokens.muted}>r retries, q quits</Text> : <Text> </Text>}
      <LogLines entries={tail} height={Math.max(1, height - 2)} />
    </Box>
  );
}

function Body({ state, width, height }: ScreenProps): React.JSX.Element {
  if (state.help) return <HelpOverlay width={width} height={height} />;
  if (state.cluster === undefined && state.view !== 'log')
    return <Waiting state={state} width={width} height={height} />;
  if (state.place !== undefined) return <PlacePanel place={state.place} width={width} height={height} />;
  if (state.details && state.view !== 'chat' && state.view !== 'log') {
    return <DetailsPanel state={state} width={width} height={height} />;
  }
  const props = { state, width, height };
  switch (state.view) {
    case 'cluster':
      return <ClusterPanel {...props} />;
    case 'workers':
      return <WorkersPanel {...props} />;
    case 'models':
      return <ModelsPanel {...props} />;
    case 'jobs':
      return <JobsPanel {...props} />;
    case 'chat':
      return <ChatPanel {...props} />;
    case 'log':
      return <LogPanel {...props} />;
  }
}

export function Screen({ state, width: columns, height: rows }: ScreenProps): React.JSX.Element {
  const width = Math.max(MIN_WIDTH, columns);
  const height = Math.max(MIN_HEIGHT, rows) - 1;
  const dialog = state.dialog;
  const bodyHeight = height - 3 - dialogHeight(dialog);
  return (
    <Box flexDirection="column" width={width} height={height} overflowY="hidden">
      <Header state={state} width={width} />
      <TabBar state={state} width={width} />
      <Box height={bodyHeight} flexDirection="column" overflowY="hidden">
        <Body state={state} width={width} height={bodyHeight} />
      </Box>
      {dialog === undefined ? null : <DialogBox dialog={dialog} width={width} />}
      <Footer state={state} />
    </Box>
  );
}
