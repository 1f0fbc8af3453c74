/**
 * How a subcommand talks to the terminal: `--json` writes one NDJSON record per event to stdout and
 * nothing else; plain mode writes results to stdout and narration to stderr.
 */
import { toRbeeError, type RbeeError } from '../../shared/errors.js';
import type { JobEvent, NarrationSource } from '../../shared/wire.js';
import type { LiveStatus } from './live-status.js';

export interface Output {
  readonly json: boolean;
  narrate(source: NarrationSource, text: string): void;
  event(event: JobEvent): void;
  /** A command's final result (one JSON document in --json mode). */
  result(value: unknown, plain: string): void;
  error(error: unknown): RbeeError;
}

export interface OutputInit {
  json: boolean;
  /**
   * A streaming command (infer, pull) writes every event as NDJSON. Any other command's --json
   * output is one JSON document, so its narration goes to stderr as text.
   */
  stream?: boolean;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Node name shown on keeper narration. */
  node?: string;
  /** On a terminal: narration above a spinner with the latest step, until output begins. */
  live?: LiveStatus | undefined;
}

const KEEPER_JOB = '-';

export function createOutput(init: OutputInit): Output {
  const { stdout, stderr } = init;
  const line = (value: unknown): void => void stdout.write(`${JSON.stringify(value)}\n`);
  let midLine = false; // tokens written without a final newline yet
  let lastProgressAt = 0;

  const { live } = init;
  const toStderr = (text: string): void => {
    live?.stop();
    if (midLine) {
      stdout.write('\n');
      midLine = false;
    }
    stderr.write(`${text}\n`);
  };

  return {
    json: init.json,
    narrate(source, text) {
      if (init.json && init.stream === true) {
        line({
          type: 'narration',
          ts: Date.now(),
          jobId: KEEPER_JOB,
          source,
          node: init.node ?? 'local',
          text,
        });
      } else if (live !== undefined) {
        live.line(`[${source}] ${text}`);
        live.status(text);
        live.progress(undefined);
      } else {
        toStderr(`[${source}] ${text}`);
      }
    },
    event(event) {
      if (init.json) return line(event);
      switch (event.type) {
        case 'narration': {
          if (live !== undefined) {
            // progress redraws the spinner's label and bar; steps also stay as lines
            if (event.progress === undefined) live.line(`[${event.source}] ${event.text}`);
            live.status(event.text);
            return live.progress(event.progress);
          }
          // Progress narration arrives several times a second; one line a second is enough on a log.
          if (event.progress !== undefined) {
            const now = Date.now();
            if (now - lastProgressAt < 1000) return;
            lastProgressAt = now;
          }
          return toStderr(`[${event.source}] ${event.text}`);
        }
        case 'token':
          live?.stop();
          stdout.write(event.text);
          midLine = !event.text.endsWith('\n');
          return;
        case 'done': {
          live?.stop();
          if (midLine) stdout.write('\n');
          midLine = false;
          const t = event.timings;
          return void stderr.write(
            `${event.usage.completionTokens} tokens, ${t.tokensPerSecond.toFixed(1)} tok/s, ` +
              `first token after ${Math.round(t.timeToFirstTokenMs)} ms, ${(t.totalMs / 1000).toFixed(2)} s total ` +
              `(${event.model}, finish: ${event.finishReason})\n`,
          );
        }
        case 'error':
          return toStderr(`error ${event.error.code}: ${event.error.message}`);
      }
    },
    result(value, plain) {
      if (init.json) line(value);
      else stdout.write(plain.endsWith('\n') || plain === '' ? plain : `${plain}\n`);
    },
    error(error) {
      const rbee = toRbeeError(error);
      if (init.json) line({ type: 'error', ts: Date.now(), error: rbee.toJSON() });
      else toStderr(`error ${rbee.code}: ${rbee.message}`);
      return rbee;
    },
  };
}
