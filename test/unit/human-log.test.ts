/**
 * The foreground node's log on a terminal: lines a person reads (time, level when not info, the
 * message, its plain fields, the error's message), while the log file keeps pino's JSON.
 */
import { describe, expect, it } from 'vitest';
import { humanLine } from '../../src/node/logger.js';

const at = new Date(2026, 11, 5, 14, 3, 7).getTime();

describe('humanLine', () => {
  it('shows an info line as time, message and its plain fields', () => {
    const line = JSON.stringify({
      level: 30,
      time: at,
      pid: 1,
      hostname: 'vm',
      source: 'hive',
      worker: 'w1',
      devices: { cpu: { model: 'x' } },
      msg: 'worker ready',
    });
    expect(humanLine(line)).toBe('14:03:07 worker ready (source=hive worker=w1)\n');
  });

  it('names the level above info and ends with the error', () => {
    const line = JSON.stringify({
      level: 50,
      time: at,
      err: { type: 'RbeeError', message: 'port 7833 is in use', stack: '…' },
      msg: 'cannot start',
    });
    expect(humanLine(line)).toBe('14:03:07 error cannot start: port 7833 is in use\n');
  });

  it('passes anything that is not a JSON object on as it is', () => {
    expect(humanLine('plain text\n')).toBe('plain text\n');
    expect(humanLine('42\n')).toBe('42\n');
  });
});
