import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino, type Logger } from 'pino';
import { rotateIfLarge, type LogRotation } from '../shared/log-files.js';

export type { Logger };

export interface LoggerInit {
  file: string;
  level: string;
  /**
   * Also write to stderr, as lines for a person (foreground `rbee node` on a terminal; the file keeps
   * the JSON). Never stdout: it belongs to the user.
   */
  stderr?: boolean;
  /** When the file is rotated (shared/log-files.ts); checked at start and every `checkMs` (60 s). */
  rotation?: LogRotation & { checkMs?: number };
}

export interface NodeLogger {
  log: Logger;
  /** Stops the rotation checks. */
  close(): void;
}

/** JSON logs to a file under the data directory (and stderr in the foreground), rotated by size. */
export function createLogger(init: LoggerInit): NodeLogger {
  mkdirSync(dirname(init.file), { recursive: true });
  rotateIfLarge(init.file, init.rotation);
  const file = pino.destination({ dest: init.file, sync: true });
  const streams: pino.StreamEntry[] = [{ level: init.level as pino.Level, stream: file }];
  if (init.stderr === true) {
    const stderr = process.stderr;
    streams.push({
      level: init.level as pino.Level,
      stream: { write: (line: string) => stderr.write(humanLine(line)) },
    });
  }
  const timer = setInterval(() => {
    if (rotateIfLarge(init.file, init.rotation)) file.reopen();
  }, init.rotation?.checkMs ?? 60_000);
  timer.unref();
  return { log: pino({ level: init.level }, pino.multistream(streams)), close: () => clearInterval(timer) };
}

const LEVELS: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: '',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};
/** Fields every line has, or that the line's own words already carry. */
const PLAIN = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'err']);

/**
 * One JSON log line as a person reads it: `14:03:07 warn message (key=value …): error message`.
 * Anything that is not a JSON object is passed on as it is.
 */
export function humanLine(json: string): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  if (typeof record !== 'object' || record === null) return json;
  const at = typeof record.time === 'number' ? new Date(record.time).toTimeString().slice(0, 8) : '--:--:--';
  const level = typeof record.level === 'number' ? (LEVELS[record.level] ?? `level ${record.level}`) : '';
  const fields = Object.entries(record)
    .filter(
      ([key, value]) =>
        !PLAIN.has(key) && value !== undefined && (typeof value !== 'object' || value === null),
    )
    .map(([key, value]) => `${key}=${String(value)}`);
  const err = record.err as { message?: unknown } | undefined;
  const error = typeof err?.message === 'string' ? `: ${err.message}` : '';
  const msg = typeof record.msg === 'string' ? record.msg : '';
  return `${at} ${level === '' ? '' : `${level} `}${msg}${fields.length === 0 ? '' : ` (${fields.join(' ')})`}${error}\n`;
}
