import { cleanup, render } from 'ink-testing-library';
import { afterEach, describe, expect, it } from 'vitest';
import { RbeeError } from '../../src/shared/errors.js';
import type { JobEvent } from '../../src/shared/wire.js';
import { DashboardApp, type WakeNode } from '../../src/tui/dashboard/app.js';
import { waitFor } from '../helpers/wait-for.js';
import { NOW, oneHive, threeHives } from '../fixtures/cluster-views.js';
import { createFakeNodeClient, plain, type FakeNodeClient } from './helpers.js';

afterEach(() => cleanup());

const awake: WakeNode = async ({ narrate }) => {
  narrate('node already running');
  return Promise.resolve();
};

function start(
  client: FakeNodeClient,
  wake: WakeNode = awake,
): { frame: () => string; type: (s: string) => void } {
  const app = render(
    <DashboardApp
      client={client}
      wake={wake}
      tickMs={60_000}
      backoff={{ initialMs: 10, maxMs: 20 }}
      jobsPollMs={50}
    />,
  );
  return { frame: () => plain(app.lastFrame()), type: (s) => app.stdin.write(s) };
}

async function live(client: FakeNodeClient, view = oneHive): Promise<void> {
  await waitFor(() => client.streams.length === 1, { what: 'the event stream to open' });
  client.streams[0]!.push({ type: 'snapshot', view });
}

async function see(frame: () => string, text: string | RegExp): Promise<string> {
  return waitFor(
    () => {
      const f = frame();
      return (typeof text === 'string' ? f.includes(text) : text.test(f)) ? f : undefined;
    },
    { what: `the frame to show ${String(text)}`, timeoutMs: 5_000 },
  );
}

const token = (jobId: string, text: string): JobEvent => ({ type: 'token', ts: NOW, jobId, text });
const doneEvent = (
  jobId: string,
  finishReason: 'stop' | 'cancelled',
  completionTokens: number,
): JobEvent => ({
  type: 'done',
  ts: NOW,
  jobId,
  finishReason,
  usage: { promptTokens: 4, completionTokens },
  timings: { timeToFirstTokenMs: 150, tokensPerSecond: 25, totalMs: 400 },
  model: 'm',
});

describe('DashboardApp', () => {
  it('narrates the wake, shows the snapshot, and follows updates', async () => {
    const client = createFakeNodeClient();
    const { frame, type } = start(client);
    await live(client);
    await see(frame, 'laptop (this node)');
    client.streams[0]!.push({ type: 'hives', hives: threeHives.hives });
    await see(frame, 'jupiter queen · term 4');
    await see(frame, '● live');
    client.streams[0]!.push({
      type: 'narration',
      ts: NOW,
      jobId: '-',
      source: 'queen',
      node: 'jupiter',
      text: 'elected',
    });
    type('6');
    await see(frame, '[keeper@local] node already running');
    await see(frame, '[queen@jupiter] elected');
  });

  it('says "reconnecting" when the stream drops, and recovers', async () => {
    const client = createFakeNodeClient();
    const { frame } = start(client);
    await live(client);
    await see(frame, '● live');
    client.streams[0]!.fail(new RbeeError('NODE_UNREACHABLE', 'connection reset'));
    await see(frame, 'reconnecting (try');
    await waitFor(() => client.streams.length >= 2);
    client.streams.at(-1)!.push({ type: 'snapshot', view: threeHives });
    await see(frame, 'queen jupiter t4');
    await see(frame, '● live');
  });

  it('explains a failed wake and retries with r', async () => {
    const client = createFakeNodeClient();
    let attempts = 0;
    const wake: WakeNode = async ({ narrate }) => {
      attempts += 1;
      narrate(`waking, attempt ${attempts}`);
      await Promise.resolve();
      if (attempts === 1) throw new RbeeError('NODE_START_FAILED', 'the node exited during start-up');
    };
    const { frame, type } = start(client, wake);
    await see(frame, 'Could not reach the node: the node exited during start-up');
    expect(client.streams).toHaveLength(0);
    type('r');
    await waitFor(() => client.streams.length === 1);
    client.streams[0]!.push({ type: 'snapshot', view: oneHive });
    await see(frame, 'laptop (this node)');
  });

  it('moves between views and rows with raw key sequences', async () => {
    const client = createFakeNodeClient();
    const { frame, type } = start(client);
    await live(client, threeHives);
    await see(frame, '● live');
    type('\t');
    await see(frame, /▸ jupiter\s+Qwen/);
    type('\x1b[B');
    await see(frame, /▸ mars\s+Llama/);
    type('j');
    await see(frame, /▸ venus\s+Mistral/);
    type('\r');
    await see(frame, 'worker w-v0');
    type('\x1b');
    await see(frame, /▸ venus\s+Mistral/);
    type('\x1b[Z');
    await see(frame, '▸ ● mars');
    type('4');
    await see(frame, /▸ job-run/);
    type('?');
    await see(frame, 'Keys (? or Esc closes)');
    type('?');
    await see(frame, /▸ job-run/);
  });

  it('stops a worker after y, and does nothing after n', async () => {
    const client = createFakeNodeClient();
    const { frame, type } = start(client);
    await live(client, threeHives);
    type('2');
    await see(frame, /▸ jupiter/);
    type('x');
    await see(frame, 'Stop worker w-j0');
    type('n');
    await waitFor(() => !frame().includes('Stop worker'));
    type('x');
    await see(frame, 'Stop worker w-j0');
    type('y');
    await see(frame, 'worker w-j0 stopped');
    expect(client.called('stopWorker').map((c) => c.args)).toEqual([['w-j0']]);
  });

  it('pulls a typed ref and shows the error the node answers', async () => {
    const client = createFakeNodeClient();
    client.failNext('pullModel', new RbeeError('MODEL_REF_INVALID', 'not a model ref: nope'));
    const { frame, type } = start(client);
    await live(client);
    type('p');
    await see(frame, 'Pull model');
    type('nope');
    await see(frame, '› nope▍');
    type('\r');
    await see(frame, 'Pull nope? [y/n]');
    type('y');
    await see(frame, 'pull failed: MODEL_REF_INVALID: not a model ref: nope');
    expect(client.called('pullModel').map((c) => c.args)).toEqual([['nope']]);
  });

  it('chats: typing goes to the input, tokens stream in, Esc cancels a streaming answer', async () => {
    const client = createFakeNodeClient();
    const { frame, type } = start(client);
    await live(client);
    type('5');
    await see(frame, '› ▍');
    // q and j are text here, not quit and move.
    type('q');
    type('j');
    await see(frame, '› qj▍');
    type('\x7f');
    type('\x7f');
    type('hello');
    await see(frame, '› hello▍');
    type('\r');
    await waitFor(() => client.jobs.has('job-1'));
    expect(client.called('submitJob')[0]?.args[0]).toEqual({
      model: 'hf:bartowski/Llama-3.2-1B-Instruct-GGUF',
      messages: [{ role: 'user', content: 'hello' }],
    });
    const job1 = client.jobs.get('job-1')!;
    for (const piece of ['Hi', ' there', ', friend']) job1.push(token('job-1', piece));
    await see(frame, 'Hi there, friend▍');
    job1.push(doneEvent('job-1', 'stop', 3));
    await see(frame, '3 tokens · 25.0 tok/s · TTFT 150 ms · stop');

    type('tell me more');
    type('\r');
    await waitFor(() => client.jobs.has('job-2'));
    client.jobs.get('job-2')!.push(token('job-2', 'Well'));
    await see(frame, 'Well▍');
    type('\x1b');
    await waitFor(() => client.called('cancelJob').length === 1);
    expect(client.called('cancelJob')[0]?.args).toEqual(['job-2']);
    await see(frame, 'cancelling…');
    client.jobs.get('job-2')!.push(doneEvent('job-2', 'cancelled', 1));
    await see(frame, 'cancelled · 1 tokens');
    expect(client.called('submitJob')[1]?.args[0]).toMatchObject({
      messages: [
        { role: 'user', content: 'hello' },
        { role: 'assistant', content: 'Hi there, friend' },
        { role: 'user', content: 'tell me more' },
      ],
    });
    // Nothing streams now: Esc leaves the input, and the picker takes the keys.
    type('\x1b');
    await see(frame, 'PICK A MODEL');
  });

  it('lists the cluster’s jobs while Jobs is shown, and cancels one on another node after y', async () => {
    const client = createFakeNodeClient();
    client.setClusterJobs({
      jobs: [
        {
          id: 'job-far',
          model: 'demo',
          state: 'running',
          entry: { id: 'h-jupiter', name: 'jupiter' },
          hive: 'h-venus',
          hiveName: 'venus',
          acceptedAt: NOW,
        },
      ],
      unanswered: [],
      queue: [{ model: 'm-llama1b', queued: 2, interactive: 1, batch: 1, estimatedWaitS: 12 }],
    });
    const { frame, type } = start(client);
    await live(client, threeHives);
    await see(frame, '● live');
    // the header counts the whole cluster's jobs: this node's running one, another node's, the queue
    await see(frame, '3 workers 2 running 2 queued');
    // outside Jobs the list is asked for only now and then (every 10 s)
    const asked = client.called('clusterJobs').length;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(client.called('clusterJobs').length).toBe(asked);
    type('4');
    await see(frame, /job-far\s+jupiter\s+venus/);
    await see(
      frame,
      /Queue: 2 waiting\n\s+Llama-3\.2-1B-Instruct\s+2 waiting \(1 interactive, 1 batch\)\s+est\. wait about 12s/,
    );
    // and it keeps polling: a job that ended elsewhere shows as ended
    client.setClusterJobs({
      jobs: [],
      unanswered: [{ id: 'h-venus', name: 'venus', error: { code: 'TIMEOUT', message: 't' } }],
    });
    await see(frame, 'venus did not answer');
    client.setClusterJobs({
      jobs: [
        {
          id: 'job-far',
          model: 'demo',
          state: 'running',
          entry: { id: 'h-jupiter', name: 'jupiter' },
          acceptedAt: NOW,
        },
      ],
      unanswered: [],
    });
    await see(frame, /job-far\s+jupiter/);
    // the newest unfinished job comes first
    type('c');
    await see(frame, 'Cancel job job-far');
    type('y');
    await waitFor(() => client.called('cancelClusterJob').length === 1);
    expect(client.called('cancelClusterJob')[0]?.args).toEqual(['job-far']);
    await see(frame, 'job job-far cancelled (entered through jupiter)');
    // once another view is shown, it polls only now and then (one poll on leaving, one perhaps under way)
    type('1');
    await see(frame, /laptop|jupiter queen/);
    const polls = client.called('clusterJobs').length;
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(client.called('clusterJobs').length).toBeLessThanOrEqual(polls + 2);
  });

  it('shows where a job for the selected model would run, fetched from the node, a row per hive', async () => {
    const client = createFakeNodeClient();
    const { frame, type } = start(client);
    await live(client, threeHives);
    await see(frame, '● live');
    type('3');
    await see(frame, /jupiter\s+Qwen2\.5-32B-Instruct/);
    type('w');
    // the fake node has no table yet: its error is the preview's content
    await see(frame, 'cannot tell: INTERNAL: the fake node places nothing');
    expect(client.called('place')[0]?.args).toEqual(['m-qwen32']);
    const device = { backend: 'cpu', index: -1, name: 'the CPU', allowed: true };
    client.setPlace({
      model: 'm-qwen32',
      ref: 'm-qwen32',
      node: 'mars',
      placement: { hive: 'h-jupiter', name: 'jupiter', kind: 'on-disk', reason: 'model on disk' },
      options: ['jupiter', 'mars', 'venus'].map((name) => ({
        hive: `h-${name}`,
        name,
        kind: name === 'jupiter' ? 'on-disk' : 'no-room',
        why: `${name} says why`,
        needed: { bytes: 20e9, basis: 'estimated' },
        freeBytes: name === 'jupiter' ? 30e9 : 1e9,
        devices: [
          { ...device, freeBytes: name === 'jupiter' ? 30e9 : 1e9, fits: name === 'jupiter', chosen: true },
        ],
        expected: {},
      })),
    });
    type('r');
    const text = await see(frame, 'venus says why');
    expect(text).toMatch(/▸ jupiter\s+on-disk\s+needs 20\.0 GB \(estimated\), 30\.0 GB free/);
    expect(text).toMatch(/ {2}mars\s+no-room\s+needs 20\.0 GB \(estimated\), 1\.0 GB free/);
    expect(text).toMatch(/ {2}venus\s+no-room/);
    expect(client.called('place')).toHaveLength(2);
    type('\x1b');
    await see(frame, /HIVE\s+MODEL/);
    expect(frame()).not.toContain('venus says why');
  });

  it('reports a chat job that fails', async () => {
    const client = createFakeNodeClient();
    const { frame, type } = start(client);
    await live(client);
    type('5');
    await see(frame, '› ▍');
    type('hi');
    type('\r');
    await waitFor(() => client.jobs.has('job-1'));
    client.jobs.get('job-1')!.push({
      type: 'error',
      ts: NOW,
      jobId: 'job-1',
      error: { code: 'WORKER_CRASHED', message: 'worker exited with signal SIGKILL' },
    });
    await see(frame, 'failed: WORKER_CRASHED: worker exited with signal SIGKILL');
  });
});
