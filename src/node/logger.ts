import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino, type Logger } from 'pino';
import { rotateIfLarge, type LogRotation } from '../shared/log-files.js';

export type { Logger };

export interface LoggerInit {
  file: string;
  level: string;
  /** Also write to stderr (foreground `rbee node`). Never stdout: it belongs to the user. */
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
  if (init.stderr === true) streams.push({ level: init.level as pino.Level, stream: pino.destination(2) });
  const timer = setInterval(() => {
    if (rotateIfLarge(init.file, init.rotation)) file.reopen();
  }, init.rotation?.checkMs ?? 60_000);
  timer.unref();
  return { log: pino({ level: init.level }, pino.multistream(streams)), close: () => clearInterval(timer) };
}
