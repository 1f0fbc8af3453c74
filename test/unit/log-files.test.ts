/**
 * Logs that do not grow without end: the node's log and a worker's are rotated by size, keeping a
 * few older files, and no line written around a rotation is lost.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/node/logger.js';
import { rotateIfLarge } from '../../src/shared/log-files.js';
import { waitFor } from '../helpers/wait-for.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'rbee-logs-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('rotateIfLarge', () => {
  it('leaves a file under the limit, and a missing one, alone', () => {
    const path = join(dir, 'a.log');
    expect(rotateIfLarge(path, { maxBytes: 10 })).toBe(false);
    writeFileSync(path, '123456789');
    expect(rotateIfLarge(path, { maxBytes: 10 })).toBe(false);
    expect(readFileSync(path, 'utf8')).toBe('123456789');
    expect(existsSync(`${path}.1`)).toBe(false);
  });

  it('moves a full file to .1, older ones up, and deletes the one past `keep`', () => {
    const path = join(dir, 'a.log');
    for (const round of ['first', 'second', 'third', 'fourth']) {
      writeFileSync(path, `${round} `.repeat(10));
      expect(rotateIfLarge(path, { maxBytes: 10, keep: 2 })).toBe(true);
      expect(existsSync(path)).toBe(false);
    }
    expect(readFileSync(`${path}.1`, 'utf8')).toContain('fourth');
    expect(readFileSync(`${path}.2`, 'utf8')).toContain('third');
    expect(existsSync(`${path}.3`)).toBe(false);
  });
});

describe("the node's log", () => {
  it('rotates while the node runs, and every line is in one of the files', async () => {
    const file = join(dir, 'logs', 'node.log');
    const { log, close } = createLogger({
      file,
      level: 'info',
      rotation: { maxBytes: 4096, keep: 3, checkMs: 10 },
    });
    try {
      let written = 0;
      // each batch (~5.7 KiB) passes the limit; the next waits until the check has rotated it
      for (let batch = 0; batch < 6; batch++) {
        for (let i = 0; i < 60; i++) log.info({ n: written++ }, 'a line of the node');
        await waitFor(() => existsSync(file) && statSync(file).size < 4096, {
          what: `rotation ${batch + 1}`,
          timeoutMs: 5_000,
        });
      }
      expect(existsSync(`${file}.3`)).toBe(true);
      log.info({ n: written++ }, 'the last line');
      log.flush();
      const numbers = ['', '.1', '.2', '.3']
        .filter((suffix) => existsSync(`${file}${suffix}`))
        .flatMap((suffix) => readFileSync(`${file}${suffix}`, 'utf8').trim().split('\n'))
        .map((line) => (JSON.parse(line) as { n: number }).n);
      // the oldest rotated away are gone; what is kept runs without a gap up to the last line
      const kept = [...numbers].sort((a, b) => a - b);
      expect(kept.at(-1)).toBe(written - 1);
      expect(kept).toEqual(Array.from({ length: kept.length }, (_, i) => kept[0]! + i));
      expect(existsSync(`${file}.4`)).toBe(false);
      expect(statSync(file).size).toBeLessThan(4096 + 200);
      expect(readFileSync(file, 'utf8')).toContain('the last line');
    } finally {
      close();
    }
  });
});
