import { describe, expect, it } from 'vitest';
import { createJobManager, type JobContext } from '../../src/node/jobs/job-manager.js';
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
