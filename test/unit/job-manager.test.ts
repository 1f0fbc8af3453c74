import { describe, expect, it } from 'vitest';
import {
  createJobManager,
  eventBytes,
  type JobContext,
  type JobManager,
} from '../../src/node/jobs/job-manager.js';
import { RbeeError } from '../../src/shared/errors.js';
import type { JobEvent } from '../../src/shared/wire.js';
import { waitFor } from '../helpers/wait-for.js';

const request = { model: 'demo', prompt: 'hi' };

describe('job manager', () => {
  it('replays history to late subscribers, then delivers live events', async () => {
    let release!: () => void;
    const gate = new Promise<void>((res) => (release = res));
    const jobs = createJobManager({
      run: async (job) => {
        job.emit({ type: 'token', text: 'a' });
        await gate;
        job.emit({ type: 'token', text: 'b' });
        job.emit({
          type: 'done',
          model: 'm',
          finishReason: 'stop',
          usage: { promptTokens: 1, completionTokens: 2 },
          timings: { timeToFirstTokenMs: 1, tokensPerSecond: 1, totalMs: 2 },
        });
      },
    });
    const { id } = jobs.submit(request);
    await waitFor(() => jobs.get(id).events === 1);
    const seen: JobEvent[] = [];
    jobs.subscribe(id, (e) => seen.push(e));
    expect(seen.map((e) => e.type)).toEqual(['token']);
    release();
    await waitFor(() => jobs.get(id).state === 'done');
    expect(seen.map((e) => (e.type === 'token' ? e.text : e.type))).toEqual(['a', 'b', 'done']);
    expect(seen.every((e) => e.jobId === id)).toBe(true);
  });

  it('turns a thrown RbeeError into an error event with its code', async () => {
    const jobs = createJobManager({
      run: () => Promise.reject(new RbeeError('MODEL_NOT_FOUND', 'no such model')),
    });
    const { id } = jobs.submit(request);
    await waitFor(() => jobs.get(id).state === 'failed');
    const seen: JobEvent[] = [];
    jobs.subscribe(id, (e) => seen.push(e));
    expect(seen).toEqual([
      expect.objectContaining({
        type: 'error',
        error: { code: 'MODEL_NOT_FOUND', message: 'no such model' },
      }),
    ]);
  });

  it('cancel aborts the job signal and ends it as cancelled', async () => {
    const jobs = createJobManager({
      run: (job: JobContext) =>
        new Promise<void>((_res, rej) =>
          job.signal.addEventListener('abort', () => rej(new Error('aborted'))),
        ),
    });
    const { id } = jobs.submit(request);
    await waitFor(() => jobs.get(id).state === 'running');
    jobs.cancel(id);
    await waitFor(() => jobs.get(id).state === 'cancelled');
  });

  it('unknown ids are JOB_NOT_FOUND', () => {
    const jobs = createJobManager({ run: () => Promise.resolve() });
    expect(() => jobs.get('x')).toThrow(expect.objectContaining({ code: 'JOB_NOT_FOUND' }));
    expect(() => jobs.cancel('x')).toThrow(expect.objectContaining({ code: 'JOB_NOT_FOUND' }));
  });

  it('refuses new jobs after close and ends running ones', async () => {
    const jobs = createJobManager({
      run: (job) =>
        new Promise<void>((_res, rej) => job.signal.addEventListener('abort', () => rej(new Error('x')))),
    });
    const { id } = jobs.submit(request);
    await jobs.close();
    expect(jobs.get(id).state).toBe('failed');
    expect(() => jobs.submit(request)).toThrow(expect.objectContaining({ code: 'NODE_SHUTTING_DOWN' }));
  });
});

describe('job manager memory bounds', () => {
  const done = {
    type: 'done',
    model: 'm',
    finishReason: 'stop',
    usage: { promptTokens: 1, completionTokens: 2 },
    timings: { timeToFirstTokenMs: 1, tokensPerSecond: 1, totalMs: 2 },
  } as const;

  /** The bytes of every event the manager still holds, counted again from its replays. */
  const historyBytes = (jobs: JobManager): number => {
    let bytes = 0;
    for (const { id } of jobs.list()) jobs.subscribe(id, (event) => (bytes += eventBytes(event)))();
    return bytes;
  };
  const submitMany = (jobs: JobManager, count: number): string[] =>
    Array.from({ length: count }, () => jobs.submit(request).id);

  it("counts a token's log probabilities in its bytes, so they stay under the bound too", () => {
    const token = { ts: 1, jobId: 'j', type: 'token', text: ' the' } as const;
    const top = Array.from({ length: 20 }, (_, i) => ({ token: ` word${i}`, logprob: -i / 3 }));
    const withLogprobs = { ...token, logprobs: [{ token: ' the', logprob: -0.5, top }] };
    expect(eventBytes(withLogprobs) - eventBytes(token)).toBeGreaterThan(2 * JSON.stringify(top).length);
  });

  it('keeps at most maxFinishedJobs finished jobs, dropping the oldest first', async () => {
    let ended = 0;
    let peak = 0;
    const jobs = createJobManager({
      run: (job) => {
        for (let i = 0; i < 10; i += 1) job.emit({ type: 'token', text: `token ${i} ` });
        job.emit(done);
        ended += 1;
        peak = Math.max(peak, jobs.retained().finished);
        return Promise.resolve();
      },
    });
    const ids = submitMany(jobs, 10_000);
    await waitFor(() => ended === 10_000, { what: '10,000 jobs to end' });
    const held = jobs.retained();
    expect(held).toMatchObject({ running: 0, finished: 1000 });
    expect(peak).toBeLessThanOrEqual(1000);
    expect(jobs.list()).toHaveLength(1000);
    // the newest stay readable, the oldest are gone
    expect(jobs.get(ids.at(-1)!).state).toBe('done');
    expect(() => jobs.get(ids[0]!)).toThrow(expect.objectContaining({ code: 'JOB_NOT_FOUND' }));
    expect(() => jobs.get(ids[8_999]!)).toThrow(expect.objectContaining({ code: 'JOB_NOT_FOUND' }));
    expect(jobs.get(ids[9_000]!).state).toBe('done');
    expect(held.bytes).toBe(historyBytes(jobs));
  });

  it('keeps the bytes of retained history under maxRetainedBytes', async () => {
    const maxRetainedBytes = 1024 * 1024;
    let ended = 0;
    let peakBytes = 0;
    const jobs = createJobManager({
      maxRetainedBytes,
      run: (job) => {
        // ~10 KiB of history per job: 10,000 of them would be ~100 MiB without the bound
        for (let i = 0; i < 5; i += 1) job.emit({ type: 'token', text: 'x'.repeat(1000) });
        job.emit(done);
        ended += 1;
        peakBytes = Math.max(peakBytes, jobs.retained().bytes);
        return Promise.resolve();
      },
    });
    submitMany(jobs, 10_000);
    await waitFor(() => ended === 10_000, { what: '10,000 jobs to end' });
    const held = jobs.retained();
    expect(held.bytes).toBeLessThanOrEqual(maxRetainedBytes);
    expect(held.bytes).toBe(historyBytes(jobs));
    expect(peakBytes).toBeLessThanOrEqual(maxRetainedBytes);
    // as many as fit: ~100 jobs of ~10 KiB
    expect(held.finished).toBeGreaterThan(50);
    expect(held.finished).toBeLessThan(110);
    // the bytes are accounted exactly: dropping every job brings them back to zero
    const empty = createJobManager({ maxFinishedJobs: 0, run: (job) => Promise.resolve(job.emit(done)) });
    const { id } = empty.submit(request);
    await waitFor(() => empty.retained().finished === 0 && empty.retained().running === 0);
    expect(empty.retained().bytes).toBe(0);
    expect(() => empty.get(id)).toThrow(expect.objectContaining({ code: 'JOB_NOT_FOUND' }));
  });

  it('drops finished jobs after retainMs', async () => {
    let clock = 1_000;
    const jobs = createJobManager({
      retainMs: 1,
      now: () => clock,
      run: (job) => Promise.resolve(job.emit(done)),
    });
    const { id } = jobs.submit(request);
    await waitFor(() => jobs.retained().finished === 1);
    clock += 1;
    await waitFor(() => jobs.retained().finished === 0, { what: 'the finished job to expire' });
    expect(() => jobs.get(id)).toThrow(expect.objectContaining({ code: 'JOB_NOT_FOUND' }));
    expect(jobs.retained().bytes).toBe(0);
  });
});
