import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createLiveStatus, progressLine } from '../../src/tui/cli/live-status.js';
import { createOutput } from '../../src/tui/cli/output.js';
import { waitFor } from '../helpers/wait-for.js';

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
    await waitFor(() => stderr.text().includes('downloading model.gguf 40%'), { what: 'the label' });
    expect(stderr.text()).toContain('[keeper] node is asleep, waking it');
    expect(stderr.text()).toMatch(SPINNER);
    expect(stderr.text()).toContain('downloading model.gguf 40%');
    // progress redraws the label only: it never becomes a line of its own
    expect(stderr.text()).not.toContain('[hive] downloading');

    output.event({ type: 'token', jobId: 'j', ts: 0, text: 'Hello' });
    const atFirstToken = stderr.text().length;
    await sleep(200);
    // the spinner stopped: nothing more is drawn on stderr while tokens stream (a spinner frame
    // would come within 80 ms)
    expect(stderr.text().length).toBe(atFirstToken);
    expect(stdout.text()).toBe('Hello');
    live.stop(); // idempotent
  });

  it("draws a download's progress bar under the spinner, and drops it when the next step begins", async () => {
    const stderr = fakeTerminal();
    const stdout = fakeTerminal();
    const live = createLiveStatus(stderr);
    const output = createOutput({ json: false, stream: true, stdout, stderr, live });
    const download = (bytes: number): void =>
      output.event({
        type: 'narration',
        source: 'hive',
        node: 'n',
        jobId: 'j',
        ts: 0,
        text: 'downloading model.gguf',
        progress: { bytes, totalBytes: 100e6, bytesPerSecond: 5e6, etaSeconds: (100e6 - bytes) / 5e6 },
      });
    download(40e6);
    await waitFor(() => stderr.text().includes(' 40%  '), { what: 'the bar at 40%' });
    expect(stderr.text()).toContain(
      '████████████░░░░░░░░░░░░░░░░░░  40%  40.0 MB / 100 MB  5.0 MB/s  ETA 12 s',
    );
    download(90e6);
    await waitFor(() => stderr.text().includes(' 90%  '), { what: 'the bar at 90%' });
    expect(stderr.text()).toContain(' 90%  90.0 MB / 100 MB  5.0 MB/s  ETA 2 s');
    const mark = stderr.text().length;
    output.event({
      type: 'narration',
      source: 'worker',
      node: 'n',
      jobId: 'j',
      ts: 0,
      text: 'loading model',
    });
    await waitFor(() => stderr.text().slice(mark).includes('loading model'), { what: 'the next step' });
    const after = stderr.text().slice(mark);
    expect(after).toContain('loading model');
    expect(after).not.toContain('MB/s');
    live.stop();
  });

  it('shows bytes and speed without a bar when the size is not known', () => {
    expect(progressLine({ bytes: 1.5e6, bytesPerSecond: 2e6 })).toBe('1.5 MB  2.0 MB/s');
    expect(progressLine({ bytes: 0, totalBytes: 10 }, 4)).toBe('░░░░   0%  0 B / 10 B');
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
