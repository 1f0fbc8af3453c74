/**
 * API keys across a cluster of real nodes on loopback (static peers, mDNS off), each asking every
 * client for a key (`auth: always`), so plain HTTP on loopback is what a client on another machine
 * sends: a key created on one node works on the other, a revocation on one is refused by the other
 * within a second, a restarted node keeps its keys and learns what changed while it was away, keys
 * made on a node alone are adopted when it joins, and a key set from anyone but the queen is refused.
 */
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hiveKeys } from '../../src/node/cluster/index.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';
import { createClusterNode, createMemoryStore, loadClusterKey } from '../../src/p2p/index.js';
import { RbeeError } from '../../src/shared/errors.js';
import type { ClusterStatus } from '../../src/shared/view.js';
import { testNodeConfig } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait-for.js';

interface Member {
  name: string;
  home: string;
  node: RunningNode;
  url: string;
}

const homes: string[] = [];
const running = new Set<Member>();
let admin: string;
let alpha: Member;
let beta: Member;

function newHome(name: string, clusterKeyFrom?: Member): string {
  const home = mkdtempSync(join(tmpdir(), `rbee-keys-${name}-`));
  homes.push(home);
  writeFileSync(join(home, 'config.json'), JSON.stringify({ nodeName: name, auth: 'always', threads: 1 }));
  // what `rbee join CODE` does: the same cluster key
  if (clusterKeyFrom !== undefined)
    copyFileSync(join(clusterKeyFrom.home, 'cluster.key'), join(home, 'cluster.key'));
  return home;
}

async function start(name: string, home: string, peers: string[] = []): Promise<Member> {
  const node = await startNode(testNodeConfig(home, { peers }));
  const member = { name, home, node, url: node.url };
  running.add(member);
  return member;
}

async function stop(member: Member): Promise<void> {
  await member.node.close('test');
  running.delete(member);
}

function call(
  member: Member,
  path: string,
  key: string,
  init: { method?: string; body?: unknown } = {},
): Promise<Response> {
  return fetch(`${member.url}${path}`, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: {
      authorization: `Bearer ${key}`,
      ...(init.body === undefined ? { 'x-rbee-client': '1' } : { 'content-type': 'application/json' }),
    },
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
}

/** The HTTP status a key gets on a node (200 served, 401 refused). */
const statusWith = async (member: Member, key: string): Promise<number> =>
  (await call(member, '/v1/models', key)).status;

async function status(member: Member): Promise<ClusterStatus | undefined> {
  const response = await call(member, '/v1/cluster', admin);
  return response.ok ? ((await response.json()) as ClusterStatus) : undefined;
}

/** Every member sees the others live, and all agree on one queen. */
async function agreed(members: Member[]): Promise<ClusterStatus[] | false> {
  const all = await Promise.all(members.map(status));
  if (all.some((s) => s === undefined)) return false;
  const statuses = all as ClusterStatus[];
  const queens = new Set(statuses.map((s) => s.queen?.id ?? 'none'));
  const full = statuses.every((s) => s.members.filter((m) => m.live).length === members.length - 1);
  return full && queens.size === 1 && !queens.has('none') ? statuses : false;
}

interface Created {
  id: string;
  key: string;
  cluster?: { queen: string; term: number; version: number; hives: number } | { pending: string };
}

async function createKey(member: Member, name: string, key = admin): Promise<Created> {
  const response = await call(member, '/v1/keys', key, { body: { name } });
  expect(response.status, await response.clone().text()).toBe(201);
  return (await response.json()) as Created;
}

const peersOf = async (member: Member): Promise<string[]> => (await status(member))!.listen;

beforeAll(async () => {
  alpha = await start('alpha', newHome('alpha'));
  // the first key needs none (a node that asks every client for a key has to start somewhere)
  const first = await fetch(`${alpha.url}/v1/keys`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'admin' }),
  });
  expect(first.status).toBe(201);
  admin = ((await first.json()) as Created).key;
  beta = await start('beta', newHome('beta', alpha), await peersOf(alpha));
  // beta knows the admin key only once it has the cluster's key set
  await waitFor(() => agreed([alpha, beta]), { what: 'alpha and beta to agree on a queen' });
});

afterAll(async () => {
  await Promise.all([...running].map((m) => m.node.close('test done')));
  for (const home of homes) rmSync(home, { recursive: true, force: true });
});

describe('API keys in a cluster', () => {
  it('a key created on either node works on the other, through the official OpenAI client', async () => {
    const versions: number[] = [];
    for (const [from, to] of [
      [alpha, beta],
      [beta, alpha],
    ] as const) {
      const created = await createKey(from, `made on ${from.name}`);
      // the answer comes once the queen has it and gave it to both nodes
      expect(created.cluster).toMatchObject({ hives: 2, version: expect.any(Number) as number });
      versions.push((created.cluster as { version: number }).version);
      const openai = new OpenAI({ baseURL: `${to.url}/v1`, apiKey: created.key, maxRetries: 0 });
      expect((await openai.models.list()).object).toBe('list');
      const wrong = new OpenAI({ baseURL: `${to.url}/v1`, apiKey: `${created.key}x`, maxRetries: 0 });
      await expect(wrong.models.list()).rejects.toMatchObject({ status: 401 });
      // listed on both nodes under one id
      const listed = (await (await call(to, '/v1/keys', admin)).json()) as { keys: { id: string }[] };
      expect(listed.keys.map((k) => k.id)).toContain(created.id);
    }
    // each change is a new version of the one set, and both nodes hold the last one
    expect(versions[1]).toBeGreaterThan(versions[0]!);
    for (const member of [alpha, beta]) {
      const { set } = (await (await call(member, '/v1/keys', admin)).json()) as { set: { version: number } };
      expect(set.version).toBe(versions[1]);
    }
  });

  it('a key revoked on one node is refused by the other within a second', async () => {
    for (const [on, other] of [
      [beta, alpha],
      [alpha, beta],
    ] as const) {
      const { id, key } = await createKey(other, 'to revoke');
      expect(await statusWith(on, key)).toBe(200);
      const started = performance.now();
      const revoked = call(on, `/v1/keys/${id}`, admin, { method: 'DELETE' });
      let refusedAfterMs = -1;
      await waitFor(
        async () => {
          if ((await statusWith(other, key)) !== 401) return false;
          refusedAfterMs = performance.now() - started;
          return true;
        },
        { what: `${other.name} to refuse the key revoked on ${on.name}`, intervalMs: 5, timeoutMs: 5_000 },
      );
      expect((await revoked).status).toBe(200);
      console.log(`revoked on ${on.name}: refused by ${other.name} after ${refusedAfterMs.toFixed(0)} ms`);
      expect(refusedAfterMs).toBeLessThan(1_000);
      expect(await statusWith(on, key)).toBe(401);
    }
  });

  it('a key set from a node that is not the queen is refused, whatever term it names', async () => {
    const [sa] = (await agreed([alpha, beta])) as ClusterStatus[];
    const queen = sa!.queen!;
    const clusterKey = await loadClusterKey(join(alpha.home, 'cluster.key'));
    const probeHome = mkdtempSync(join(tmpdir(), 'rbee-keys-probe-'));
    homes.push(probeHome);
    // a node with the cluster key that is a member, not the queen
    const probe = await createClusterNode({
      peerKeyPath: join(probeHome, 'peer.key'),
      clusterKey: clusterKey!,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      peers: await peersOf(alpha),
      store: createMemoryStore(),
    });
    try {
      await waitFor(
        () => probe.queen()?.id === queen.id && probe.members().filter((m) => m.live).length === 2,
        {
          what: 'the probe to join and follow the queen',
        },
      );
      const forged = `rbee_${randomBytes(32).toString('base64url')}`;
      const records = [
        {
          id: 'forged01',
          name: 'forged',
          hash: createHash('sha256').update(forged).digest('hex'),
          createdAt: Date.now(),
        },
      ];
      const refusal = async (peer: string, term: number): Promise<string> => {
        const error = await probe.rpc.call(peer, hiveKeys, { term, version: 1_000, records }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(RbeeError);
        return (error as RbeeError).code;
      };
      const ids = [(await status(alpha))!.self.id, (await status(beta))!.self.id];
      const follower = ids.find((id) => id !== queen.id)!;
      expect(await refusal(follower, queen.term - 1)).toBe('STALE_TERM');
      expect(await refusal(follower, queen.term)).toBe('NOT_QUEEN');
      expect(await refusal(follower, queen.term + 7)).toBe('NOT_QUEEN');
      expect(await refusal(queen.id, queen.term)).toBe('NOT_QUEEN');
      expect(await statusWith(alpha, forged)).toBe(401);
      expect(await statusWith(beta, forged)).toBe(401);
      // the forged newer term moved nobody
      expect((await status(beta))!.term).toBe(queen.term);
    } finally {
      await probe.stop();
    }
  });

  it('a restarted node still knows its keys, and learns what changed while it was away', async () => {
    const kept = await createKey(alpha, 'kept');
    const revokedAway = await createKey(alpha, 'revoked while beta is away');
    expect(await statusWith(beta, revokedAway.key)).toBe(200);
    await stop(beta);
    expect((await call(alpha, `/v1/keys/${revokedAway.id}`, admin, { method: 'DELETE' })).status).toBe(200);
    const madeAway = await createKey(alpha, 'made while beta is away');

    beta = await start('beta', beta.home, await peersOf(alpha));
    // from its own SQLite, before it has met anyone
    expect(await statusWith(beta, kept.key)).toBe(200);
    expect(await statusWith(beta, admin)).toBe(200);
    await waitFor(
      async () =>
        (await statusWith(beta, madeAway.key)) === 200 && (await statusWith(beta, revokedAway.key)) === 401,
      { what: 'beta to learn the changes made while it was away' },
    );
    await waitFor(() => agreed([alpha, beta]), { what: 'alpha and beta to agree again' });
  });

  it('keys made on a node while it was alone are adopted by the cluster when it joins', async () => {
    const home = newHome('gamma', alpha);
    let gamma = await start('gamma', home);
    // alone: its own keys, as a node without a cluster (the first one needs no key)
    const response = await fetch(`${gamma.url}/v1/keys`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'made alone' }),
    });
    expect(response.status).toBe(201);
    const alone = (await response.json()) as Created;
    expect(await statusWith(gamma, alone.key)).toBe(200);
    expect(await statusWith(alpha, alone.key)).toBe(401);
    await stop(gamma);

    gamma = await start('gamma', home, await peersOf(alpha));
    await waitFor(
      async () =>
        (await statusWith(alpha, alone.key)) === 200 &&
        (await statusWith(beta, alone.key)) === 200 &&
        (await statusWith(gamma, admin)) === 200,
      { what: 'the key made alone to work on every node, and the cluster’s keys on gamma' },
    );
    const sets = await Promise.all(
      [alpha, beta, gamma].map(
        async (m) => ((await (await call(m, '/v1/keys', admin)).json()) as { keys: unknown[] }).keys.length,
      ),
    );
    expect(new Set(sets).size).toBe(1);

    // with three nodes, a revocation on one follower reaches the other through the queen
    const all = (await waitFor(() => agreed([alpha, beta, gamma]), {
      what: 'three nodes to agree on a queen',
    })) as ClusterStatus[];
    const members = [alpha, beta, gamma];
    const [on, other] = members.filter((_, i) => !all[i]!.isQueen);
    const { id, key } = await createKey(on!, 'revoked among three');
    expect(await statusWith(other!, key)).toBe(200);
    const started = performance.now();
    const revoked = call(on!, `/v1/keys/${id}`, admin, { method: 'DELETE' });
    await waitFor(async () => (await statusWith(other!, key)) === 401, {
      what: 'the other follower to refuse the key',
      intervalMs: 5,
      timeoutMs: 5_000,
    });
    const refusedAfterMs = performance.now() - started;
    expect(await revoked).toMatchObject({ status: 200 });
    console.log(`revoked on ${on!.name}: refused by ${other!.name} after ${refusedAfterMs.toFixed(0)} ms`);
    expect(refusedAfterMs).toBeLessThan(1_000);
  });
});
