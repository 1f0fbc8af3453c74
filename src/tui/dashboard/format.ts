/**
 * Pure text helpers for the dashboard: sizes, rates, durations, bars, fixed-width cells and word
 * wrapping. Views lay out rows as padded strings so that a row never wraps and breaks the
 * full-screen height budget.
 */

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'] as const;

/** 1536 → "1.5 KB"; decimal units, as download sizes and disk tools show them. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '?';
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** Memory in GiB with one decimal: RAM and VRAM are sold and reported in binary units. */
export function formatGiB(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(1);
}

export function formatRate(bytesPerSecond: number | undefined): string {
  return bytesPerSecond === undefined ? '–' : `${formatBytes(bytesPerSecond)}/s`;
}

/** 0 → "0s", 75_000 → "1m15s", 3_700_000 → "1h01m", 2 days → "2d03h". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

export function formatMs(ms: number | undefined): string {
  if (ms === undefined) return '–';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function formatTokensPerSecond(value: number | undefined): string {
  return value === undefined || value === 0 ? '–' : value.toFixed(1);
}

/** HH:MM:SS in local time. */
export function formatClock(ts: number): string {
  const d = new Date(ts);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/** A bar of `width` cells for `fraction` in [0, 1]. */
export function bar(fraction: number, width: number): string {
  const cells = Math.max(0, width);
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const filled = Math.round(f * cells);
  return '█'.repeat(filled) + '░'.repeat(cells - filled);
}

/** Truncates with an ellipsis and pads to exactly `width` characters. */
export function cell(text: string, width: number, align: 'left' | 'right' = 'left'): string {
  if (width <= 0) return '';
  const fitted = text.length > width ? `${text.slice(0, Math.max(0, width - 1))}…` : text;
  return align === 'left' ? fitted.padEnd(width) : fitted.padStart(width);
}

/** Truncates to `width` without padding. */
export function clip(text: string, width: number): string {
  return cell(text, width).trimEnd();
}

/** Word-wrapped lines, and where each one starts in the text. */
export interface WrappedText {
  lines: string[];
  starts: number[];
}

/** Word-wraps `text` to lines of at most `width` characters, keeping explicit newlines. */
export function wrapTextAt(text: string, width: number): WrappedText {
  const w = Math.max(1, width);
  const lines: string[] = [];
  const starts: number[] = [];
  let base = 0;
  for (const paragraph of text.split('\n')) {
    let line = '';
    let lineStart = base;
    let pos = base;
    for (const word of paragraph.split(/(\s+)/)) {
      const at = pos;
      pos += word.length;
      if (word === '') continue;
      if (line.length + word.length <= w) {
        if (line === '') lineStart = at;
        line += word;
        continue;
      }
      if (line.trim() !== '') {
        lines.push(line.trimEnd());
        starts.push(lineStart);
      }
      const blank = /^\s+$/.test(word);
      line = blank ? '' : word;
      lineStart = blank ? pos : at;
      while (line.length > w) {
        lines.push(line.slice(0, w));
        starts.push(lineStart);
        line = line.slice(w);
        lineStart += w;
      }
    }
    lines.push(line.trimEnd());
    starts.push(lineStart);
    base += paragraph.length + 1;
  }
  return { lines, starts };
}

export function wrapText(text: string, width: number): string[] {
  return wrapTextAt(text, width).lines;
}

/**
 * Word-wraps a text that only grows, such as a streaming answer, with the same result as
 * `wrapText`: the lines before the last are final (a word that did not fit stays on the next line
 * however long it grows), so each call wraps only the last line and what was appended since.
 */
export function createGrowingWrap(): (text: string, width: number) => string[] {
  let last: { text: string; width: number; wrapped: WrappedText } | undefined;
  return (text, width) => {
    let wrapped: WrappedText;
    if (last !== undefined && last.width === width && text.startsWith(last.text)) {
      const { lines, starts } = last.wrapped;
      // Re-wrap from the last line's start; a line that is empty at the very end of the text may
      // be followed by more whitespace that merges with the run before it, so start one earlier.
      let keep = lines.length - 1;
      if ((starts[keep] ?? 0) >= last.text.length && keep > 0) keep -= 1;
      const cut = starts[keep] ?? 0;
      const tail = wrapTextAt(text.slice(cut), width);
      wrapped = {
        lines: lines.slice(0, keep).concat(tail.lines),
        starts: starts.slice(0, keep).concat(tail.starts.map((s) => s + cut)),
      };
    } else wrapped = wrapTextAt(text, width);
    last = { text, width, wrapped };
    return wrapped.lines;
  };
}

/** The start of a `height`-row window over `count` rows that keeps row `selected` visible, centred-ish. */
export function windowStart(count: number, selected: number, height: number): number {
  if (count <= height || height <= 0) return 0;
  const start = selected - Math.floor(height / 2);
  return Math.max(0, Math.min(start, count - height));
}
