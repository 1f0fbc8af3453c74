/**
 * Chat: pick a model (catalog or typed ref), pin a hive or let the queen place each message, type,
 * and watch tokens stream in. The transcript is a
 * windowed tail rather than Ink's <Static>: <Static> writes finished output once, above the live
 * frame, relying on the terminal's scrollback; in the alternate screen there is no scrollback, so
 * static lines would push the header off the top, and they could not be hidden when another tab
 * is shown. Wrapping ourselves and slicing the last lines keeps the frame exactly screen-sized.
 */
import { Box, Text } from 'ink';
import type { ReactNode } from 'react';
import { cell, createGrowingWrap, formatBytes, formatMs, wrapText } from '../format.js';
import { chatModel, rowsFor, selectedIndex } from '../selectors.js';
import type { ChatTurn } from '../state.js';
import { useTheme, type Theme } from '../theme.js';
import type { ViewProps } from './cluster-view.js';
import { Table, type TableRow } from './table.js';

const WIDE = 110;
const PICKER_WIDTH = 40;

function summary(turn: ChatTurn): string {
  if (turn.done === undefined) return '';
  const { usage, timings, finishReason } = turn.done;
  return `${usage.completionTokens} tokens · ${timings.tokensPerSecond.toFixed(1)} tok/s · TTFT ${formatMs(
    timings.timeToFirstTokenMs,
  )} · ${finishReason}`;
}

/** Answers' wraps, by turn id, for the newest turns: an answer is wrapped once, then only as it grows. */
const answerWraps = new Map<number, ReturnType<typeof createGrowingWrap>>();
const WRAPS_KEPT = 16;

/**
 * The answer's last `maxLines` lines. While tokens stream, the lines already shown stay exactly as
 * they were (no re-flow), and only the newest text is wrapped, however long the answer grows.
 */
function answerTail(turn: ChatTurn, width: number, maxLines: number, cursor: boolean): string[] {
  let wrap = answerWraps.get(turn.id);
  if (wrap === undefined) {
    wrap = createGrowingWrap();
    answerWraps.set(turn.id, wrap);
    for (const id of answerWraps.keys()) if (answerWraps.size > WRAPS_KEPT) answerWraps.delete(id);
  }
  const lines = wrap(turn.answer, width).slice(-maxLines);
  if (!cursor) return lines;
  const last = lines.at(-1) ?? '';
  return last.length < width ? [...lines.slice(0, -1), `${last}▍`] : [...lines, '▍'].slice(-maxLines);
}

function turnLines(turn: ChatTurn, width: number, maxLines: number, theme: Theme): ReactNode[] {
  const lines: ReactNode[] = [];
  const push = (key: string, text: string, style: object = {}): void => {
    lines.push(
      <Text key={key} wrap="truncate-end" {...style}>
        {text}
      </Text>,
    );
  };
  const k = `t${turn.id}`;
  wrapText(`› ${turn.prompt}`, width).forEach((l, i) => push(`${k}p${i}`, l, theme.tokens.accent));
  push(`${k}m`, `  ${turn.model}${turn.hive === undefined ? '' : ` on ${turn.hive}`}`, theme.tokens.muted);
  const streaming = turn.state === 'sending' || turn.state === 'streaming';
  if (turn.answer !== '')
    answerTail(turn, width, maxLines, streaming).forEach((l, i) => push(`${k}a${i}`, l));
  if (turn.cancelling === true) push(`${k}s`, 'cancelling…', theme.tokens.warn);
  else if (streaming && turn.answer === '')
    push(`${k}s`, `waiting… ${turn.status ?? ''}`, theme.tokens.muted);
  else if (turn.state === 'done') push(`${k}s`, summary(turn), theme.tokens.muted);
  else if (turn.state === 'cancelled')
    push(`${k}s`, `cancelled${turn.done ? ` · ${summary(turn)}` : ''}`, theme.tokens.warn);
  else if (turn.state === 'failed')
    push(`${k}s`, `failed: ${turn.error ?? 'unknown error'}`, theme.tokens.error);
  push(`${k}gap`, ' ');
  return lines;
}

/** The last `height` transcript lines, each exactly one terminal line; older turns are not laid out. */
export function transcriptTail(turns: ChatTurn[], width: number, height: number, theme: Theme): ReactNode[] {
  const tail: ReactNode[][] = [];
  let count = 0;
  for (let i = turns.length - 1; i >= 0 && count < height; i -= 1) {
    const turn = turns[i];
    if (turn === undefined) continue;
    const lines = turnLines(turn, width, height, theme);
    tail.unshift(lines);
    count += lines.length;
  }
  return tail.flat().slice(-height);
}

function Picker({ state, width, height }: ViewProps): React.JSX.Element {
  const rows: TableRow[] = rowsFor(state, 'chat').flatMap((row) =>
    row.view === 'chat'
      ? [
          {
            key: row.key,
            cells: [
              { text: row.model.name },
              { text: formatBytes(row.model.bytes) },
              { text: row.hives.join(',') },
            ],
          },
        ]
      : [],
  );
  return (
    <Table
      columns={[
        { title: 'PICK A MODEL', width: 'flex' },
        { title: 'SIZE', width: 7, align: 'right' },
        { title: 'ON', width: 10 },
      ]}
      rows={rows}
      selected={state.chat.focus === 'models' ? selectedIndex(state, 'chat') : -1}
      width={width}
      height={height}
      empty="no models: m, then demo or a ref"
    />
  );
}

export function ChatPanel({ state, width, height }: ViewProps): React.JSX.Element {
  const theme = useTheme();
  const { chat } = state;
  const model = chatModel(state);
  const wide = width >= WIDE;
  const picking = chat.focus === 'models';
  // Wide terminals show the picker beside the transcript; narrow ones only while picking.
  const pickerWidth = wide ? PICKER_WIDTH : width;
  const pickerHeight = wide
    ? height - 2
    : picking
      ? Math.min(Math.max(4, rowsFor(state, 'chat').length + 2), Math.floor(height / 2))
      : 0;
  const textWidth = wide ? width - PICKER_WIDTH - 2 : width;
  const transcriptHeight = Math.max(1, height - 2 - (wide ? 0 : pickerHeight));
  const tail = transcriptTail(chat.turns, textWidth - 1, transcriptHeight, theme);
  const input =
    chat.focus === 'input' ? (
      <Text wrap="truncate-start">
        <Text {...theme.tokens.accent}>{'› '}</Text>
        {chat.input}
        <Text {...theme.tokens.accent}>▍</Text>
      </Text>
    ) : (
      <Text {...theme.tokens.muted}>
        {'  j/k and Enter pick the model, m types a ref, h pins a hive, i returns to the input'}
      </Text>
    );
  return (
    <Box flexDirection="column" height={height} overflowY="hidden">
      <Text wrap="truncate-end">
        <Text {...theme.tokens.muted}>{'model '}</Text>
        {model === undefined ? (
          <Text {...theme.tokens.warn}>none yet (Esc, then pick one)</Text>
        ) : (
          <Text {...theme.tokens.title}>{model}</Text>
        )}
        {chat.model !== undefined ? <Text {...theme.tokens.muted}> (typed ref)</Text> : null}
        <Text {...theme.tokens.muted}>{'  hive '}</Text>
        {chat.hive === undefined ? (
          <Text {...theme.tokens.muted}>any (the queen places it)</Text>
        ) : (
          <>
            <Text {...theme.tokens.accent}>{chat.hive}</Text>
            <Text {...theme.tokens.muted}>
              {state.cluster?.hives.some((h) => h.name === chat.hive) === false
                ? ' (pinned, not in the cluster now)'
                : ' (pinned)'}
            </Text>
          </>
        )}
      </Text>
      <Box flexDirection={wide ? 'row' : 'column'} height={height - 2}>
        {pickerHeight > 0 ? (
          <Box width={pickerWidth} height={pickerHeight} marginRight={wide ? 2 : 0}>
            <Picker state={state} width={pickerWidth} height={pickerHeight} />
          </Box>
        ) : null}
        <Box flexDirection="column" width={textWidth} height={transcriptHeight} overflowY="hidden">
          {tail.length === 0 ? (
            <Text {...theme.tokens.muted}>{cell('Type a message and press Enter.', textWidth)}</Text>
          ) : (
            tail
          )}
        </Box>
      </Box>
      {input}
    </Box>
  );
}
