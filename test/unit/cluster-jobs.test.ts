/**
 * Merging the cluster's jobs on the node a client asks: its own table and the other members'
 * answers (fakes of the cluster link's member calls), newest first; members that did not answer
 * named; a prefix that names several jobs refused with the candidates; and a key's owner carried to
 * every member, so that it sees its own jobs only.
 */
import { describe, expect, it } from 'vitest';
import {
  createClusterJobs,
  type LocalJobs,
  type MemberAnswer,
  type MemberJobs,
} from '../../src/node/jobs/index.js';
import type { RbeeError } from '../../src/shared/errors.js';
import type { JobRecord } from '../../src/shared/view.js';

const job = (id: string, acceptedAt: number, extra: Partial<JobRecord> = {}): JobRecord => ({
  id,
  model: 'demo',
  state: 'done',
  acceptedAt,
  ...extra,
});

function localOf(rows: (JobRecord & { owner?: string })[]): LocalJobs & { cancelled: string[] } {
  const cancelled: string[] = [];
  const mine = (owner: string | undefined) => rows.filter((r) => owner === undefined || r.owner === owner);
  return {
    cancelled,
    list: ({ limit, owner }) =>
      mine(owner)
        .sort((a, b) => b.acceptedAt - a.acceptedAt)
        .slice(0, limit),
    find: (prefix, { limit, owner }) =>
      mine(owner)
        .filter((r) => r.id.startsWith(prefix))
        .sort((a, b) => (a.id < b.id ? -1 : 1))
        .slice(0, limit),
    cancel: (id) => void cancelled.push(id),
  };
}

function membersOf(answers: MemberAnswer[]): MemberJobs & { asked: unknown[]; cancels: unknown[] } {
  const asked: unknown[] = [];
  const cancels: unknown[] = [];
  return {
    asked,
    cancels,
    ask: (query) => {
      asked.push(query);
      const prefix = query.prefix;
      return Promise.resolve(
        answers.map((a) =>
          'jobs' in a && prefix !== undefined
            ? { ...a, jobs: a.jobs.filter((j) => j.id.startsWith(prefix)) }
            : a,
        ),
      );
    },
    cancel: (member, id, viewer) => {
      cancels.push({ member, id, viewer });
      return Promise.resolve({ cancelling: true, state: 'running' });
    },
  };
}

const SELF = { id: 'peer-a', name: 'alpha' };

describe('the jobs of the cluster', () => {
  const local = localOf([job('a1', 10), job('a2', 30, { state: 'running' })]);
  const members = membersOf([
    { id: 'peer-b', name: 'beta', jobs: [job('b1', 20), job('ab9', 40)] },
    { id: 'peer-c', name: 'gamma', error: { code: 'TIMEOUT', message: 'node.jobs timed out' } },
  ]);
  const jobs = createClusterJobs({ local, self: () => SELF, members: () => members });

  it('merges every node’s rows newest first, each with its entry node, and names who did not answer', async () => {
    const { jobs: rows, unanswered } = await jobs.list(undefined, { limit: 10 });
    expect(rows.map((r) => [r.id, r.entry.name])).toEqual([
      ['ab9', 'beta'],
      ['a2', 'alpha'],
      ['b1', 'beta'],
      ['a1', 'alpha'],
    ]);
    expect(unanswered).toEqual([
      { id: 'peer-c', name: 'gamma', error: expect.objectContaining({ code: 'TIMEOUT' }) as unknown },
    ]);
    expect((await jobs.list(undefined, { limit: 2 })).jobs.map((r) => r.id)).toEqual(['ab9', 'a2']);
  });

  it('asks no other member for this node’s jobs only, or for a whole id this node holds', async () => {
    members.asked.length = 0;
    expect((await jobs.list(undefined, { limit: 10, here: true })).jobs.map((r) => r.id)).toEqual([
      'a2',
      'a1',
    ]);
    expect(await jobs.find(undefined, 'a2')).toMatchObject({ id: 'a2', entry: SELF });
    expect(members.asked).toEqual([]);
  });

  it('refuses a prefix that names jobs on two nodes, listing them, and finds one that names one', async () => {
    const error = (await jobs.find(undefined, 'a').catch((e: unknown) => e)) as RbeeError;
    expect(error.code).toBe('BAD_REQUEST');
    expect(error.message).toMatch(/a matches 3 jobs: .*ab9 \(beta, done\).*a2 \(alpha, running\)/);
    expect(error.details).toEqual({ candidates: ['ab9', 'a2', 'a1'] });
    expect(await jobs.find(undefined, 'b')).toMatchObject({
      id: 'b1',
      entry: { id: 'peer-b', name: 'beta' },
    });
    await expect(jobs.find(undefined, 'zz')).rejects.toMatchObject({
      code: 'JOB_NOT_FOUND',
      message: expect.stringMatching(/gamma did not/) as unknown,
    });
  });

  it('cancels a job on its entry node: here through the job manager, elsewhere over the cluster', async () => {
    expect(await jobs.cancel(undefined, 'a2')).toEqual({
      id: 'a2',
      entry: SELF,
      cancelling: true,
      state: 'running',
    });
    expect(local.cancelled).toEqual(['a2']);
    expect(await jobs.cancel(undefined, 'a1')).toMatchObject({ cancelling: false, state: 'done' });
    expect(local.cancelled).toEqual(['a2']);
    expect(await jobs.cancel(undefined, 'b1')).toMatchObject({ entry: { name: 'beta' }, cancelling: true });
    expect(members.cancels.at(-1)).toEqual({ member: 'peer-b', id: 'b1', viewer: undefined });
  });

  it('carries a key to every member and to the cancel, so that it sees and cancels its own jobs only', async () => {
    const keyed = membersOf([{ id: 'peer-b', name: 'beta', jobs: [job('kb', 3)] }]);
    const local = localOf([job('k1', 1, { owner: 'key:k' } as Partial<JobRecord>), job('l1', 2)]);
    const mine = createClusterJobs({ local, self: () => SELF, members: () => keyed });
    expect((await mine.list('key:k', { limit: 10 })).jobs.map((r) => r.id)).toEqual(['kb', 'k1']);
    expect(keyed.asked).toEqual([{ limit: 10, viewer: 'key:k' }]);
    // the machine's own user: no viewer, every job
    expect((await mine.list(undefined, { limit: 10 })).jobs.map((r) => r.id)).toEqual(['kb', 'l1', 'k1']);
    await expect(mine.cancel('key:k', 'l1')).rejects.toMatchObject({ code: 'JOB_NOT_FOUND' });
    await mine.cancel('key:k', 'kb');
    expect(keyed.cancels).toEqual([{ member: 'peer-b', id: 'kb', viewer: 'key:k' }]);
  });
});
