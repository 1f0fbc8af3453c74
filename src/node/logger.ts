import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino, type Logger } from 'pino';

export type { Logger };

export interface LoggerInit {
  file: string;
  level: string;
  /** Also write to stderr (foreground `rbee node`). Never stdout: it belongs to the user. */
  stderr?: boolean;
}

/** JSON logs to a file under the data directory (and stderr in the foreground). */
export function createLogger(init: LoggerInit): Logger {
  mkdirSync(dirname(init.file), { recursive: true });
  const streams: pino.StreamEntry[] = [
    { level: init.level as pino.Level, stream: pino.destination({ dest: init.file, sync: true }) },
  ];
  if (init.stderr === true) streams.push({ level: init.level as pino.Level, stream: pino.destination(2) });
  return pino({ level: init.level }, pino.multistream(streams));
}
