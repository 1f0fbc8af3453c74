import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createLiveStatus } from '../../src/tui/cli/live-status.js';
import { createOutput } from '../../src/tui/cli/output.js';

const SPINNER = /[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]/;

/** A stream that says it is a terminal, recording what was written. */
function fakeTerminal(): NodeJS.WriteStream & { text(): string } {
  const stream = new PassThrough() as unknown as NodeJS.WriteStream & { text(): string };
  let written = '';
  stream.on('data', (chunk: Buffer) => (written += chunk.toString('utf8')));
  Object.assign(stream, { isTTY: true, columns: 80, rows: 24, text: () => written });
  return stream;
}

describe('rbee infer on a terminal', () => {
  it('shows narration above a spinner, and clears the spinner when tokens begin', async () => {
    const stderr = fakeTerminal();
    const stdout = fakeTerminal();
    const live = createLiveStatus(stderr);
    const output = createOutput({ json: false, stream: true, stdout, stderr, live });
    output.narrate('keeper', 'node is asleep, waking it');
    output.event({
      type: 'narration',
      source: 'hive',
      node: 'n',
      jobId: 'j',
      ts: 0,
      text: 'downloading model.gguf 40%',
      progress: { bytes: 40, totalBytes: 100 },
    });
    await sleep(200);
    expect(stderr.text()).toContain('[keeper] node is asleep, waking it');
    expect(stderr.text()).toMatch(SPINNER);
    expect(stderr.text()).toContain('downloading model.gguf 40%');
    // progress redraws the label only: it never becomes a line of its own
    expect(stderr.text()).not.toContain('[hive] downloading');

    output.event({ type: 'token', jobId: 'j', ts: 0, text: 'Hello' });
    const atFirstToken = stderr.text().length;
    await sleep(200);
    // the spinner stopped: nothing more is drawn on stderr while tokens stream
    expect(stderr.text().length).toBe(atFirstToken);
    expect(stdout.text()).toBe('Hello');
    live.stop(); // idempotent
  });

  it('draws no spinner without a live status (not a terminal, or --json)', () => {
    const stderr = fakeTerminal();
    const stdout = fakeTerminal();
    const output = createOutput({ json: false, stream: true, stdout, stderr });
    output.narrate('keeper', 'node is asleep, waking it');
    expect(stderr.text()).toBe('[keeper] node is asleep, waking it\n');
    expect(stderr.text()).not.toMatch(SPINNER);
  });
});
