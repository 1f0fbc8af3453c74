import { render } from 'ink-testing-library';
import { afterEach, describe, expect, it } from 'vitest';
import { cleanup } from 'ink-testing-library';
import type { ClusterView, PlaceOption, PlacePreview } from '../../src/shared/view.js';
import { Screen } from '../../src/tui/dashboard/components/screen.js';
import { applyKey, type KeyPress } from '../../src/tui/dashboard/keymap.js';
import {
  createInitialState,
  reduce,
  type DashboardAction,
  type DashboardState,
} from '../../src/tui/dashboard/state.js';
import { ThemeContext, colorTheme, monoTheme, themeFromEnv } from '../../src/tui/dashboard/theme.js';
import { NOW, downloadsInProgress, oneHive, threeHives, unhealthy } from '../fixtures/cluster-views.js';
import { plain } from './helpers.js';

afterEach(() => cleanup());

const p = (name: string): KeyPress => ([...name].length === 1 ? { name, text: name } : { name, text: '' });

function stateOf(view: ClusterView | undefined, ...steps: (string | DashboardAction)[]): DashboardState {
  let state = createInitialState({ now: NOW });
  if (view !== undefined) {
    state = reduce(state, { type: 'node-events', events: [{ type: 'snapshot', view }] });
    state = reduce(state, { type: 'connection', connection: { status: 'live' } });
  }
  for (const step of steps) state = typeof step === 'string' ? applyKey(state, p(step)) : reduce(state, step);
  return state;
}

function frame(state: DashboardState, width = 80, height = 24, theme = colorTheme): string {
  const { lastFrame } = render(
    <ThemeContext.Provider value={theme}>
      <Screen state={state} width={width} height={height} />
    </ThemeContext.Provider>,
  );
  return plain(lastFrame());
}

/** Fits the terminal: the frame leaves the last row free and no line is wider than the screen. */
function expectFits(text: string, width: number, height: number): void {
  const lines = text.split('\n');
  expect(lines.length).toBeLessThanOrEqual(height - 1);
  for (const line of lines) expect(line.length, line).toBeLessThanOrEqual(width);
}

describe('Cluster', () => {
  it('shows a lone hive as its own queen with CPU and RAM', () => {
    const text = frame(stateOf(oneHive));
    expect(text).toContain('rbee node laptop ready up 3h02m');
    expect(text).toContain('● live');
    expect(text).toContain('laptop (this node) queen · term 1 ready');
    expect(text).toContain('AMD Ryzen 7 5800X · 8C/16T · load 1.50');
    expect(text).toMatch(/RAM\s+█+░+ 10\.0\/16\.0 GiB used/);
    expectFits(text, 80, 24);
  });

  it('shows three hives, their GPUs and VRAM, and who is queen', () => {
    const text = frame(stateOf(threeHives), 120, 40);
    expect(text).toContain('queen jupiter t4');
    expect(text).toContain('jupiter queen · term 4');
    expect(text).toMatch(/GPU0 RTX 4090 \(cuda\) █+░* 20\.0\/24\.0 GiB VRAM/);
    expect(text).toMatch(/GPU1 RTX 3090 \(cuda\) █*░+ 2\.0\/24\.0 GiB VRAM/);
    expect(text).toContain('RX 7900 XTX (vulkan)');
    expect(text.indexOf('mars')).toBeLessThan(
      text.indexOf('jupiter (') === -1 ? text.indexOf('jupiter queen') : text.indexOf('jupiter ('),
    );
    expectFits(text, 120, 40);
  });

  it('fits three hives at 80×24, and scrolls to the selected one on a shorter terminal', () => {
    expectFits(frame(stateOf(threeHives, 'G')), 80, 24);
    const text = frame(stateOf(threeHives, 'G'), 80, 16);
    expect(text).toContain('▸ ● venus');
    expect(text).not.toContain('● mars');
    expect(text).toMatch(/1 more hive/);
    expectFits(text, 80, 16);
  });

  it('shows the native llama.cpp build running on a hive, with its progress and who started it', () => {
    const building: ClusterView = {
      ...oneHive,
      hives: oneHive.hives.map((h) => ({
        ...h,
        engineBuild: {
          state: 'building' as const,
          trigger: 'idle' as const,
          text: 'compiling llama.cpp: 45%',
          percent: 45,
          startedAt: NOW - 60_000,
        },
      })),
    };
    const text = frame(stateOf(building));
    expect(text).toContain('llama building for this CPU 45% · at an idle moment');
    expectFits(text, 80, 24);
    // nothing of it once it decided
    expect(frame(stateOf(oneHive))).not.toContain('llama building');
  });

  it('marks an unreachable hive', () => {
    const text = frame(stateOf(unhealthy, 'G'));
    expect(text).toContain('venus unreachable · seen 1m35s ago');
  });
});

describe('Workers', () => {
  it('lists model, device, state, slots, speed, memory and uptime', () => {
    const text = frame(stateOf(threeHives, '2'));
    const busy = text.split('\n').find((l) => l.startsWith('▸'));
    expect(busy).toMatch(/jupiter\s+Qwen2\.5-32B-Instr.*GPU0 cuda\s+busy\s+3\/4\s+38\.4\s+20\.0 GB\s+10m00s/);
    expect(text).toMatch(/mars\s+Llama-3\.2-1B-Inst.*CPU\s+idle\s+0\/4\s+25\.0/);
    expectFits(text, 80, 24);
  });

  it('shows a failing worker as unhealthy, with extra columns on a wide terminal', () => {
    const text = frame(stateOf(unhealthy, '2'), 140, 30);
    expect(text).toMatch(/venus .*GPU0 vulkan\s+unhealthy/);
    expect(text).toContain('PID');
    expect(text).toContain('w-v0');
  });

  it('says how to start one when none run', () => {
    const text = frame(stateOf({ ...oneHive, workers: [] }, '2'));
    expect(text).toContain('no workers running');
  });
});

describe('Models', () => {
  it('lists the catalog per hive with sizes', () => {
    const text = frame(stateOf(threeHives, '3'));
    expect(text).toMatch(/jupiter\s+Qwen2\.5-32B-Instruct\s+Q4_K_M\s+19\.9 GB/);
    expect(text).toMatch(/venus\s+Llama-3\.2-1B-Instruct/);
  });

  it('shows downloads with a progress bar, speed and ETA', () => {
    const text = frame(stateOf(downloadsInProgress, '3'));
    expect(text).toContain('Downloads (2)');
    expect(text).toContain('qwen2.5-7b-instruct-q4_k_m.gguf @laptop · downloading');
    expect(text).toMatch(/█+░+\s+50%\s+2\.4 GB\/4\.7 GB\s+52\.0 MB\/s\s+ETA 45s/);
    expect(text).toContain('https://example.invalid/tiny.gguf @laptop · connecting');
    expect(text).toMatch(/░+\s+\?%\s+0 B\/\?\s+–\s+ETA –/);
    expectFits(text, 80, 24);
  });
});

describe('Jobs', () => {
  it('puts running jobs first, with TTFT and speed', () => {
    const text = frame(stateOf(threeHives, '4'));
    const lines = text.split('\n');
    const running = lines.findIndex((l) => l.includes('job-run'));
    const done = lines.findIndex((l) => l.includes('job-1'));
    expect(running).toBeGreaterThan(-1);
    expect(running).toBeLessThan(done);
    // this node's own jobs, from the live view: entered here, not placed on a hive the list knows yet
    expect(lines[running]).toMatch(/job-run\s+mars\s+–\s+.*running\s+5s\s+950 ms/);
    expect(lines[done]).toMatch(/done\s+30s\s+180 ms\s+41\.2/);
    // a wide terminal adds the duration and the tokens
    const wide = frame(stateOf(threeHives, '4'), 140, 30);
    expect(wide).toMatch(/done\s+30s\s+3s\s+180 ms\s+41\.2\s+96/);
  });

  it('shows why a job failed: in a column when wide, in details otherwise', () => {
    expect(frame(stateOf(unhealthy, '4'), 140, 30)).toMatch(/job-bad .*failed .*WORKER_CRASHED: worker w-v0/);
    // Running first, then the newest finished: job-run, job-bad, job-1.
    const details = frame(stateOf(unhealthy, '4', 'j', 'enter'));
    expect(details).toContain('job job-bad');
    expect(details).toContain('WORKER_CRASHED: worker w-v0 stopped answering');
  });
});

describe('Jobs of the cluster', () => {
  /** What `GET /v1/cluster/jobs` listed: two jobs that entered through jupiter, one through mars. */
  const listed = {
    type: 'cluster-jobs',
    at: NOW,
    jobs: [
      {
        id: 'job-far',
        model: 'hf:Qwen/Qwen2.5-32B-Instruct-GGUF',
        state: 'running',
        entry: { id: 'h-jupiter', name: 'jupiter' },
        hive: 'h-venus',
        hiveName: 'venus',
        acceptedAt: NOW - 8_000,
        firstTokenAt: NOW - 7_500,
      },
      {
        id: 'job-queued',
        model: 'demo',
        state: 'placing',
        entry: { id: 'h-jupiter', name: 'jupiter' },
        acceptedAt: NOW - 1_000,
      },
      {
        id: 'job-run',
        model: 'hf:Qwen/Qwen2.5-32B-Instruct-GGUF',
        state: 'running',
        entry: { id: 'h-mars', name: 'mars' },
        hive: 'h-jupiter',
        hiveName: 'jupiter',
        acceptedAt: NOW - 5_000,
      },
      {
        id: 'job-old',
        model: 'demo',
        state: 'done',
        entry: { id: 'h-venus', name: 'venus' },
        hive: 'h-venus',
        hiveName: 'venus',
        acceptedAt: NOW - 60_000,
        firstTokenAt: NOW - 59_800,
        finishedAt: NOW - 57_800,
        completionTokens: 101,
      },
    ],
    unanswered: [],
  } as const satisfies DashboardAction;

  it('shows every node’s jobs: where each entered, the hive it runs on, its state, TTFT and speed', () => {
    const text = frame(stateOf(threeHives, '4', listed), 100, 30);
    const line = (id: string): string => text.split('\n').find((l) => l.includes(id.slice(0, 7))) ?? '';
    expect(line('job-far')).toMatch(/job-far\s+jupiter\s+venus\s+.*running\s+8s\s+500 ms/);
    expect(line('job-queued')).toMatch(/job-que\S*\s+jupiter\s+–\s+demo\s+placing\s+1s/);
    // this node's job: the list says where it runs, the live view how fast it started
    expect(line('job-run')).toMatch(/job-run\s+mars\s+jupiter\s+.*running\s+5s\s+950 ms/);
    // 100 tokens after the first in 2 s
    expect(line('job-old')).toMatch(/job-old\s+venus\s+venus\s+demo\s+done\s+1m00s\s+200 ms\s+50\.0/);
    // unfinished first, newest first; then the ended ones, newest first
    const order = ['job-que', 'job-run', 'job-far', 'job-1', 'job-old'].map((id) => text.indexOf(id));
    expect(order).toEqual([...order].sort((x, y) => x - y));
    expectFits(text, 100, 30);
  });

  it('says which nodes did not answer, and that their jobs are missing', () => {
    const text = frame(
      stateOf(threeHives, '4', {
        ...listed,
        unanswered: [{ id: 'h-venus', name: 'venus', error: { code: 'TIMEOUT', message: 'timed out' } }],
      }),
    );
    expect(text).toContain('venus did not answer: its jobs are missing');
    expectFits(text, 80, 24);
  });

  it('cancels a job that runs on another node, after yes', () => {
    const state = stateOf(threeHives, '4', listed, 'j', 'j', 'c');
    expect(state.dialog).toMatchObject({
      kind: 'confirm',
      question: expect.stringMatching(/job-far .* on venus/) as unknown,
    });
    expect(reduce(state, { type: 'dialog-answer', yes: true }).outbox.map((o) => o.command)).toEqual([
      { kind: 'cancel-job', id: 'job-far' },
    ]);
    // a job still being placed can be cancelled too; an ended one cannot
    expect(stateOf(threeHives, '4', listed, 'c').dialog?.kind).toBe('confirm');
    expect(stateOf(threeHives, '4', listed, 'G', 'c').notice?.text).toMatch(/job-old has ended/);
  });

  it('shows the entry node, hive, worker and the queen’s reason in details', () => {
    const text = frame(
      stateOf(
        threeHives,
        '4',
        {
          ...listed,
          jobs: [{ ...listed.jobs[0], worker: 'w-v0', reason: 'model warm, 1 of 1 slots free' }],
        },
        'j',
        'enter',
      ),
    );
    expect(text).toMatch(/entered through\s+jupiter/);
    expect(text).toMatch(/hive\s+venus/);
    expect(text).toMatch(/placed\s+model warm, 1 of 1 slots free/);
  });
});

describe('the queue and the header’s counts', () => {
  const waiting = {
    type: 'cluster-jobs',
    at: NOW,
    jobs: [
      {
        id: 'job-wait',
        model: 'demo',
        state: 'queued',
        entry: { id: 'h-jupiter', name: 'jupiter' },
        acceptedAt: NOW - 4_000,
        queuePosition: { position: 2, queued: 3, estimatedWaitS: 20 },
      },
      {
        id: 'job-far',
        model: 'demo',
        state: 'running',
        entry: { id: 'h-venus', name: 'venus' },
        hive: 'h-venus',
        hiveName: 'venus',
        acceptedAt: NOW - 9_000,
      },
    ],
    unanswered: [],
    queue: [
      { model: 'm-llama1b', queued: 2, interactive: 2, batch: 0, estimatedWaitS: 75 },
      { model: 'm-mistral', queued: 1, interactive: 0, batch: 1 },
    ],
  } as const satisfies DashboardAction;

  it('counts the whole cluster’s running and queued jobs in the header, not only this node’s', () => {
    expect(frame(stateOf(threeHives), 120, 30)).toMatch(/3 workers 1 running\s+● live/);
    // this node's running job, another node's, and the queen's three waiting jobs
    expect(frame(stateOf(threeHives, waiting), 120, 30)).toContain('3 workers 2 running 3 queued');
  });

  it('shows the queen’s queue per model under the jobs, and a queued job’s place', () => {
    const text = frame(stateOf(threeHives, '4', waiting), 100, 30);
    expect(text).toMatch(/job-wait\s+jupiter\s+–\s+demo\s+queued 2\/3\s+4s/);
    expect(text).toContain('Queue: 3 waiting');
    expect(text).toMatch(/Llama-3\.2-1B-Instruct\s+2 waiting \(2 interactive\)\s+est\. wait about 1m15s/);
    expect(text).toMatch(/Mistral-7B\s+1 waiting \(1 batch\)\s+est\. wait unknown/);
    expectFits(text, 100, 30);
    expectFits(frame(stateOf(threeHives, '4', waiting)), 80, 24);
    // nothing waits: no queue section
    expect(frame(stateOf(threeHives, '4', { ...waiting, queue: [] }), 100, 30)).not.toContain('Queue:');
    const details = frame(stateOf(threeHives, '4', waiting, 'enter'), 100, 30);
    expect(details).toMatch(/queue\s+position 2 of 3, wait about 20s/);
  });
});

describe('the placement preview', () => {
  const GB = 1e9;
  const option = (hive: string, name: string, over: Partial<PlaceOption> = {}): PlaceOption => ({
    hive,
    name,
    kind: 'on-disk',
    why: `${name}: model on disk; room on CPU`,
    needed: { bytes: 21 * GB, basis: 'estimated' },
    freeBytes: 40 * GB,
    devices: [
      {
        backend: 'cpu',
        index: -1,
        name: 'the CPU',
        freeBytes: 40 * GB,
        fits: true,
        allowed: true,
        chosen: true,
      },
    ],
    expected: {},
    ...over,
  });
  const preview: PlacePreview = {
    model: 'm-qwen32',
    ref: 'm-qwen32',
    node: 'mars',
    placement: { hive: 'h-jupiter', name: 'jupiter', kind: 'warm', reason: 'model warm, 1 of 1 slots free' },
    options: [
      option('h-jupiter', 'jupiter', {
        kind: 'warm',
        needed: { bytes: 20.5 * GB, basis: 'observed' },
        expected: {
          timeToFirstTokenMs: { value: 950, basis: 'jobs', jobs: 3 },
          tokensPerSecond: { value: 18.25, basis: 'worker' },
        },
        devices: [
          {
            backend: 'cuda',
            index: 0,
            name: 'GPU0 (cuda)',
            freeBytes: 4 * GB,
            fits: false,
            allowed: true,
            chosen: false,
          },
          {
            backend: 'cuda',
            index: 1,
            name: 'GPU1 (cuda)',
            freeBytes: 22 * GB,
            fits: true,
            allowed: true,
            chosen: true,
          },
        ],
      }),
      option('h-mars', 'mars', { kind: 'provision', needed: undefined }),
      option('h-venus', 'venus', { kind: 'no-room', freeBytes: 2 * GB }),
    ],
  };

  it('opens with w on the selected model, asks the node, and closes with Esc', () => {
    const asked = stateOf(threeHives, '3', 'w');
    expect(asked.place).toMatchObject({ model: 'm-qwen32', name: 'Qwen2.5-32B-Instruct', pending: true });
    expect(asked.outbox.map((o) => o.command)).toEqual([{ kind: 'place', model: 'm-qwen32' }]);
    expect(frame(asked)).toContain('asking the node…');
    expect(stateOf(threeHives, '3', 'w', 'escape').place).toBeUndefined();
    // elsewhere w says where it works
    expect(stateOf(threeHives, '1', 'w').notice?.text).toMatch(/selected in Models/);
  });

  it('shows a row per hive: its option, what it needs and on what basis, free memory, TTFT, speed, devices', () => {
    const state = stateOf(threeHives, '3', 'w', { type: 'place-result', model: 'm-qwen32', preview });
    const text = frame(state, 100, 30);
    const rows = text.split('\n').filter((l) => /^[▸ ] (jupiter|mars|venus)\s/.test(l));
    expect(rows).toHaveLength(3);
    expect(rows[0]).toMatch(/^▸ jupiter\s+warm\s+needs 20\.5 GB \(observed\), 40\.0 GB free/);
    expect(rows[1]).toMatch(/^  mars\s+provision\s+needs \? \(not fetched\), 40\.0 GB free/);
    expect(rows[2]).toMatch(/^  venus\s+no-room\s+needs 21\.0 GB \(estimated\), 2\.0 GB free/);
    expect(text).toContain('first token 950 ms (median of 3 jobs), speed 18.3 tok/s (warm worker)');
    expect(text).toContain('first token no data, speed no data');
    expect(text).toMatch(/GPU0 \(cuda\)\s+4\.0 GB free\s+no room/);
    expect(text).toMatch(/→ GPU1 \(cuda\)\s+22\.0 GB free\s+fits/);
    expect(text).toContain('→ hive jupiter (warm): model warm, 1 of 1 slots free');
    expect(text).toMatch(/Esc\/w close\s+r refresh/);
    expectFits(text, 100, 30);
    expectFits(frame(state), 80, 24);
    // an answer for a preview closed meanwhile does not reopen it
    const closed = stateOf(threeHives, '3', 'w', 'escape', {
      type: 'place-result',
      model: 'm-qwen32',
      preview,
    });
    expect(closed.place).toBeUndefined();
  });

  it('says why the node could not tell', () => {
    const text = frame(
      stateOf(threeHives, '3', 'w', {
        type: 'place-result',
        model: 'm-qwen32',
        error: 'NOT_FOUND: no hive zeta',
      }),
    );
    expect(text).toContain('cannot tell: NOT_FOUND: no hive zeta');
  });
});

describe('Chat', () => {
  const done = {
    type: 'chat-done',
    turnId: 1,
    event: {
      type: 'done',
      ts: NOW,
      jobId: 'job-7',
      finishReason: 'stop',
      usage: { promptTokens: 5, completionTokens: 12 },
      timings: { timeToFirstTokenMs: 240, tokensPerSecond: 31.5, totalMs: 600 },
      model: 'm',
    },
  } as const satisfies DashboardAction;

  it('shows the model, the transcript with a streaming cursor, and the input', () => {
    const text = frame(
      stateOf(
        oneHive,
        '5',
        { type: 'chat-edit', edit: { insert: 'Why is the sky blue?' } },
        'enter',
        { type: 'chat-accepted', turnId: 1, jobId: 'job-7' },
        { type: 'chat-tokens', turnId: 1, text: 'Rayleigh scattering' },
        { type: 'chat-edit', edit: { insert: 'next q' } },
      ),
    );
    expect(text).toContain('model hf:bartowski/Llama-3.2-1B-Instruct-GGUF');
    expect(text).toContain('› Why is the sky blue?');
    expect(text).toContain('Rayleigh scattering▍');
    expect(text).toContain('› next q▍');
    expectFits(text, 80, 24);
  });

  it('summarises a finished answer and keeps the newest lines in view', () => {
    let state = stateOf(oneHive, '5');
    for (let turn = 1; turn <= 6; turn += 1) {
      state = reduce(state, { type: 'chat-edit', edit: { insert: `question ${turn}` } });
      state = applyKey(state, p('enter'));
      state = reduce(state, { type: 'chat-tokens', turnId: turn, text: `answer ${turn} `.repeat(12) });
      state = reduce(state, { ...done, turnId: turn });
    }
    const text = frame(state);
    expect(text).toContain('question 6');
    expect(text).toContain('12 tokens · 31.5 tok/s · TTFT 240 ms · stop');
    expect(text).not.toContain('question 1');
    expectFits(text, 80, 24);
  });

  it('streams a long answer without re-flowing the lines already on screen', () => {
    let state = stateOf(
      oneHive,
      '5',
      { type: 'chat-edit', edit: { insert: 'tell me a long story' } },
      'enter',
      { type: 'chat-accepted', turnId: 1, jobId: 'job-7' },
    );
    const words = ['a', 'tale', 'of', 'unexpectedly', 'long', 'words', 'and', 'short', 'ones', 'x'];
    const transcript = (text: string): string[] => text.split('\n').slice(3, -2);
    let previous: string[] | undefined;
    for (let chunk = 0; chunk < 120; chunk += 1) {
      const text = Array.from({ length: 12 }, (_, i) => words[(chunk * 7 + i * 3) % words.length]).join(' ');
      state = reduce(state, { type: 'chat-tokens', turnId: 1, text: `${text} ` });
      const lines = transcript(frame(state));
      if (previous !== undefined) {
        // Every finished line of the last frame is still there, the same, in the same order.
        const finished = previous.slice(
          0,
          previous.findIndex((l) => l.includes('▍')),
        );
        const last = lines.lastIndexOf(finished.at(-1) ?? '');
        expect(last, `chunk ${chunk}`).toBeGreaterThanOrEqual(0);
        const kept = Math.min(finished.length, last + 1);
        expect(lines.slice(last + 1 - kept, last + 1), `chunk ${chunk}`).toEqual(finished.slice(-kept));
      }
      previous = lines;
    }
    expect(state.chat.turns[0]?.answer.length).toBeGreaterThan(6000);
  });

  it('shows the picker after Esc, and the status while waiting for the first token', () => {
    const picking = frame(stateOf(threeHives, '5', 'escape'));
    expect(picking).toContain('PICK A MODEL');
    expect(picking).toMatch(/Llama-3\.2-1B-Instruct\s+808 MB\s+mars,venus/);
    const waiting = frame(
      stateOf(
        oneHive,
        '5',
        { type: 'chat-edit', edit: { insert: 'hi' } },
        'enter',
        { type: 'chat-accepted', turnId: 1, jobId: 'j' },
        {
          type: 'chat-status',
          jobId: 'j',
          text: 'loading model on laptop',
        },
      ),
    );
    expect(waiting).toContain('waiting… loading model on laptop');
  });
});

describe('Chat pinned to a hive', () => {
  it('h cycles the pin through the hives it knows, and the header shows it', () => {
    const unpinned = stateOf(threeHives, '5', 'escape');
    expect(frame(unpinned)).toContain('hive any (the queen places it)');
    const first = applyKey(unpinned, p('h'));
    expect(first.chat.hive).toBe('mars');
    expect(frame(first)).toMatch(/hive mars \(pinned\)/);
    const names = [first.chat.hive];
    let state = first;
    for (let i = 0; i < 3; i += 1) {
      state = applyKey(state, p('h'));
      names.push(state.chat.hive);
    }
    // this node, the queen, then by name; then unpinned again
    expect(names).toEqual(['mars', 'jupiter', 'venus', undefined]);
  });

  it('sends the chat’s jobs with the pinned hive, and shows it on each turn', () => {
    const state = stateOf(
      threeHives,
      '5',
      { type: 'chat-edit', edit: { insert: '/hive venus' } },
      'enter',
      { type: 'chat-edit', edit: { insert: 'Hello' } },
      'enter',
    );
    expect(state.chat.hive).toBe('venus');
    const sent = state.outbox.map((o) => o.command);
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ kind: 'chat', request: { hive: 'venus' } });
    const text = frame(state, 100, 30);
    expect(text).toMatch(/hive venus \(pinned\)/);
    expect(text).toMatch(/› Hello\n.* on venus/);
  });

  it('/hive refuses a hive it does not know, naming those it knows, and /hive alone unpins', () => {
    const unknown = stateOf(threeHives, '5', { type: 'chat-edit', edit: { insert: '/hive pluto' } }, 'enter');
    expect(unknown.chat.hive).toBeUndefined();
    expect(unknown.notice).toMatchObject({
      level: 'error',
      text: expect.stringMatching(/no hive pluto.*mars, jupiter, venus/) as unknown,
    });
    expect(unknown.outbox).toEqual([]);
    const unpinned = stateOf(
      threeHives,
      '5',
      { type: 'chat-edit', edit: { insert: '/hive venus' } },
      'enter',
      { type: 'chat-edit', edit: { insert: '/hive' } },
      'enter',
      { type: 'chat-edit', edit: { insert: 'Hi' } },
      'enter',
    );
    expect(unpinned.chat.hive).toBeUndefined();
    const sent = unpinned.outbox.map((o) => o.command);
    expect(sent).toHaveLength(1);
    expect(sent[0]?.kind === 'chat' && 'hive' in sent[0].request).toBe(false);
  });
});

describe('Log', () => {
  const narrate = (source: 'hive' | 'queen', node: string, text: string): DashboardAction => ({
    type: 'node-events',
    events: [{ type: 'narration', ts: NOW, jobId: '-', source, node, text }],
  });

  it('shows provenance and filters by source', () => {
    const state = stateOf(
      threeHives,
      '6',
      narrate('queen', 'jupiter', 'picked GPU1 on hive jupiter: most free VRAM'),
      narrate('hive', 'mars', 'worker w-m0 ready'),
    );
    const all = frame(state);
    expect(all).toContain('[queen@jupiter] picked GPU1 on hive jupiter: most free VRAM');
    expect(all).toContain('[hive@mars] worker w-m0 ready');
    const hiveOnly = frame(applyKey(applyKey(applyKey(state, p('f')), p('f')), p('f')));
    expect(hiveOnly).toContain('[hive@mars] worker w-m0 ready');
    expect(hiveOnly).not.toContain('[queen@jupiter]');
  });
});

describe('overlays and states', () => {
  it('lists the keys in the help overlay', () => {
    const text = frame(stateOf(oneHive, '?'));
    expect(text).toContain('Keys (? or Esc closes)');
    expect(text).toMatch(/p\s+pull a model/);
    expect(text).toMatch(/1–6\s+switch view/);
    expectFits(text, 80, 24);
  });

  it('asks for confirmation in a dialog and shows the keys for it', () => {
    const text = frame(stateOf(threeHives, '2', 'x'));
    expect(text).toContain('Stop worker w-j0 (hf:Qwen/Qwen2.5-32B-Instruct-GGUF on jupiter)? [y/n]');
    expect(text).toMatch(/y yes\s+n\/Esc no/);
    expectFits(text, 80, 24);
  });

  it('prompts for a ref to pull', () => {
    const text = frame(stateOf(oneHive, 'p', { type: 'prompt-edit', edit: { insert: 'hf:org/repo' } }));
    expect(text).toContain('Pull model');
    expect(text).toContain('› hf:org/repo▍');
  });

  it('shows worker details', () => {
    const text = frame(stateOf(threeHives, '2', 'enter'));
    expect(text).toContain('worker w-j0');
    expect(text).toMatch(/slots\s+3 busy of 4/);
    expect(text).toMatch(/pid\s+5000/);
  });

  it('narrates the wake, and explains a failed one', () => {
    const waking = stateOf(undefined, { type: 'narrate', text: 'node is asleep, waking it', ts: NOW });
    const text = frame(waking);
    expect(text).toContain('waking node…');
    expect(text).toContain('[keeper@local] node is asleep, waking it');
    const failed = reduce(waking, {
      type: 'connection',
      connection: { status: 'wake-failed', code: 'NODE_START_FAILED', error: 'port 7833 in use' },
    });
    expect(frame(failed)).toContain('Could not reach the node: port 7833 in use');
    expect(frame(failed)).toContain('r retries, q quits');
  });

  it('says it is reconnecting while keeping the last view', () => {
    const state = stateOf(oneHive, {
      type: 'connection',
      connection: { status: 'reconnecting', attempt: 2, retryInMs: 2000, error: 'reset' },
    });
    const text = frame(state);
    expect(text).toContain('reconnecting (try 2, 2s)');
    expect(text).toContain('laptop (this node)');
  });

  it('renders the same words without colour under NO_COLOR', () => {
    expect(themeFromEnv({ NO_COLOR: '1' })).toBe(monoTheme);
    expect(themeFromEnv({ NO_COLOR: '' })).toBe(colorTheme);
    expect(Object.values(monoTheme.tokens).some((t) => t.color !== undefined)).toBe(false);
    const state = stateOf(unhealthy, '2');
    expect(frame(state, 80, 24, monoTheme)).toBe(frame(state, 80, 24, colorTheme));
  });
});
