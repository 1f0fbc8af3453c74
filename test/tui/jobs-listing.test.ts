/**
 * `rbee jobs ls` in plain text: a queued job shows its place in the queue, and the listing ends with
 * the queen's queue per model (waiting, interactive and batch, the estimated wait) while anything waits.
 */
import { describe, expect, it } from 'vitest';
import type { ClusterJobRecord } from '../../src/shared/view.js';
import { listing, queueSection } from '../../src/tui/cli/jobs-commands.js';

const NOW = 1_700_000_000_000;
const entry = { id: 'p-alpha', name: 'alpha' };
const rows: ClusterJobRecord[] = [
  {
    id: 'aaaaaaaa-1',
    model: 'demo',
    state: 'queued',
    entry,
    acceptedAt: NOW - 3_000,
    queuePosition: { position: 2, queued: 3, estimatedWaitS: 14 },
  },
  { id: 'bbbbbbbb-2', model: 'demo', state: 'queued', entry, acceptedAt: NOW - 2_000 },
  { id: 'cccccccc-3', model: 'demo', state: 'running', entry, hiveName: 'beta', acceptedAt: NOW - 9_000 },
];

describe('rbee jobs ls, plain', () => {
  it('shows a queued job’s place, and the queen’s queue per model after the table', () => {
    const text = listing(rows, [], NOW, [
      { model: 'demo-tiny-1a2b3c4d', queued: 3, interactive: 2, batch: 1, estimatedWaitS: 95 },
      { model: 'qwen-7b-00ff00ff', queued: 1 },
    ]);
    const lines = text.split('\n');
    expect(lines[1]).toMatch(/^aaaaaaaa\s+alpha\s+-\s+queued 2\/3\s+demo\s+3s/);
    // its place is unknown here (another entry node, or not told yet): the state alone
    expect(lines[2]).toMatch(/^bbbbbbbb\s+alpha\s+-\s+queued\s+demo\s+2s/);
    expect(lines[3]).toMatch(/^cccccccc\s+alpha\s+beta\s+running\s+demo/);
    expect(lines.slice(4)).toEqual([
      '',
      'queue: 4 jobs wait for a slot',
      'MODEL               WAITING  INTERACTIVE  BATCH  EST. WAIT',
      'demo-tiny-1a2b3c4d  3        2            1      about 1m35s',
      'qwen-7b-00ff00ff    1        -            -      unknown',
    ]);
  });

  it('says nothing of the queue while nothing waits, and shows it with no jobs of one’s own', () => {
    expect(listing(rows, [], NOW, [])).not.toContain('queue:');
    expect(queueSection([])).toEqual([]);
    expect(listing([], [], NOW, [{ model: 'demo-tiny-1a2b3c4d', queued: 1, interactive: 1, batch: 0 }])).toBe(
      [
        'no jobs yet',
        '',
        'queue: 1 job waits for a slot',
        'MODEL               WAITING  INTERACTIVE  BATCH  EST. WAIT',
        'demo-tiny-1a2b3c4d  1        1            0      unknown',
      ].join('\n'),
    );
  });
});
