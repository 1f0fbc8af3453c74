/**
 * `npm run bench:cluster`: how fast three real nodes on a private LAN (network namespaces, mDNS on
 * only there) form a cluster and recover. Each run builds a fresh LAN and fresh data directories:
 *
 * - membership: from the last node's p2p host listening to all three seeing each other live and
 *   agreeing on one queen (mDNS discovery included);
 * - failover: from `kill -9` of the queen to both survivors agreeing on a new queen;
 * - heal: from the end of a partition of the queen (its bridge port down, 4 s) to one queen agreed
 *   by all three;
 * - propagation: from a model appearing in the live view (`/v1/events`) of the node that added it
 *   to its appearance in the other two nodes' live views (the delay a dashboard elsewhere sees).
 *
 * Times come from the nodes' own logs (membership, failover, heal: the first instant at which every
 * node's latest "members changed" and "queen changed" agree) and from the event streams' arrival
 * times (propagation). BENCH_REPEATS runs (default 5); medians, with min and max.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import '../src/shared/polyfill.js';
import { createClusterLab, type ClusterLab, type LabNode } from '../test/helpers/cluster-lab.js';
import { netnsSupport } from '../test/helpers/netns.js';
import { waitFor } from '../test/helpers/wait-for.js';
import { CLI } from '../test/helpers/cli.js';

const REPEATS = Number(process.env.BENCH_REPEATS ?? 5);
const TARGETS = { membership: 2_000, failover: 3_000, heal: 3_000, propagation: 1_000 };
type Metric = keyof typeof TARGETS;

const support = netnsSupport();
if (!support.ok) {
  console.error(`bench:cluster needs network namespaces: ${support.reason}`);
  process.exit(1);
}

interface LogEvent {
  time: number;
  node: number;
  live?: number;
  queen?: string | null;
  listening?: boolean;
}

function logEvents(nodes: LabNode[]): LogEvent[] {
  const events: LogEvent[] = [];
  nodes.forEach((node, index) => {
    const text = readFileSync(join(node.home, 'logs', 'node.log'), 'utf8');
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const entry = JSON.parse(line) as { time: number; msg: string; live?: number; queen?: string | null };
      if (entry.msg === 'members changed') events.push({ time: entry.time, node: index, live: entry.live });
      else if (entry.msg === 'queen changed')
        events.push({ time: entry.time, node: index, queen: entry.queen ?? null });
      else if (entry.msg === 'cluster node listening')
        events.push({ time: entry.time, node: index, listening: true });
    }
  });
  return events.sort((a, b) => a.time - b.time);
}

/**
 * The first instant after `since` at which every node in `group` (indexes) sees `group.length`
 * live nodes and the same queen, replaying all their log events in time order.
 */
function agreedAt(events: LogEvent[], group: number[], since: number, not?: string): number | undefined {
  const live = new Map<number, number>();
  const queen = new Map<number, string | null>();
  for (const event of events) {
    if (event.live !== undefined) live.set(event.node, event.live);
    if (event.queen !== undefined) queen.set(event.node, event.queen);
    if (event.time < since) continue;
    const queens = new Set(group.map((n) => queen.get(n)));
    const [only] = [...queens];
    if (
      group.every((n) => live.get(n) === group.length) &&
      queens.size === 1 &&
      typeof only === 'string' &&
      only !== not
    ) {
      return event.time;
    }
  }
  return undefined;
}

/** The agreement as the logs record it (a node logs a change within a moment of making it). */
function logged(nodes: LabNode[], group: number[], since: number, not?: string): Promise<number> {
  return waitFor(() => agreedAt(logEvents(nodes), group, since, not), {
    what: 'the agreement in the logs',
    timeoutMs: 5_000,
  });
}

/** Streams a node's /v1/events from inside its namespace and resolves when `match` sees an event. */
function watchEvents(
  lab: ClusterLab,
  node: LabNode,
  match: (data: string) => boolean,
): {
  seen: Promise<number>;
  child: ChildProcess;
} {
  const child = spawn('ip', [
    'netns',
    'exec',
    node.host.ns,
    'curl',
    '-sN',
    '--max-time',
    '60',
    'http://127.0.0.1:7833/v1/events',
  ]);
  const seen = new Promise<number>((resolve, reject) => {
    let buffer = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      const at = Date.now();
      buffer += chunk;
      const lines = buffer.split('\n');
      buffer = lines.pop() ?? '';
      for (const line of lines) if (line.startsWith('data: ') && match(line.slice(6))) resolve(at);
    });
    child.once('exit', () => reject(new Error(`the event stream of ${node.host.ns} ended`)));
  });
  return { seen, child };
}

async function oneRun(): Promise<Record<Metric, number>> {
  const lab = await createClusterLab(3);
  const all = [0, 1, 2];
  try {
    const nodes = [...lab.nodes];
    await Promise.all(nodes.map((n) => lab.start(n)));
    await waitFor(() => lab.agreedQueen(nodes), { what: 'membership', timeoutMs: 30_000 });
    const events = logEvents(nodes);
    const up = Math.max(...events.filter((e) => e.listening === true).map((e) => e.time));
    const membership = (await logged(nodes, all, up)) - up;

    // failover: kill -9 the queen
    const queenId = (await lab.agreedQueen(nodes))!;
    const q = nodes.findIndex((n) => n.peerId === queenId);
    const survivors = all.filter((i) => i !== q);
    const killedAt = Date.now();
    await lab.kill(nodes[q]!);
    await waitFor(() => lab.agreedQueen(survivors.map((i) => nodes[i]!)), {
      what: 'failover',
      timeoutMs: 30_000,
    });
    const failover = (await logged(nodes, survivors, killedAt, queenId)) - killedAt;
    await lab.start(nodes[q]!);
    await waitFor(() => lab.agreedQueen(nodes), { what: 'rejoin', timeoutMs: 30_000 });

    // partition of the queen, then heal
    const queen2 = (await lab.agreedQueen(nodes))!;
    const p = nodes.findIndex((n) => n.peerId === queen2);
    await lab.net.partition(nodes[p]!.host);
    await sleep(4_000);
    const healedAt = Date.now();
    await lab.net.heal(nodes[p]!.host);
    await waitFor(() => lab.agreedQueen(nodes), { what: 'heal', timeoutMs: 30_000 });
    const heal = (await logged(nodes, all, healedAt)) - healedAt;

    // propagation: a model added on node 0 reaches the live views of nodes 1 and 2
    await sleep(500);
    const origin = nodes[0]!;
    const hasModelOf = (id: string) => (data: string) =>
      (data.includes('"type":"models"') || data.includes('"type":"snapshot"')) &&
      data.includes(`"hive":"${id}"`) &&
      data.includes('"source":"demo"');
    const watchers = nodes.map((n) => watchEvents(lab, n, hasModelOf(origin.peerId!)));
    await sleep(500); // the streams are open
    await lab.net.exec(origin.host, [process.execPath, CLI, 'models', 'add', 'demo', '--json'], {
      timeoutMs: 60_000,
    });
    const [local, ...remote] = await Promise.all(watchers.map((w) => w.seen));
    for (const w of watchers) w.child.kill();
    const propagation = Math.max(...remote.map((t) => t - local!));

    return { membership, failover, heal, propagation };
  } finally {
    await lab.destroy();
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const runs: Record<Metric, number>[] = [];
for (let i = 0; i < REPEATS; i++) {
  const run = await oneRun();
  runs.push(run);
  console.log(
    `run ${i + 1}/${REPEATS}: ` +
      Object.entries(run)
        .map(([k, v]) => `${k} ${v} ms`)
        .join(', '),
  );
}
console.log('\nmetric       median    min    max   target  median/target  met');
for (const metric of Object.keys(TARGETS) as Metric[]) {
  const xs = runs.map((r) => r[metric]);
  const med = median(xs);
  console.log(
    `${metric.padEnd(12)} ${String(med).padStart(6)} ${String(Math.min(...xs)).padStart(6)} ` +
      `${String(Math.max(...xs)).padStart(6)} ${String(TARGETS[metric]).padStart(8)}  ${(med / TARGETS[metric]).toFixed(2).padStart(13)}  ${med <= TARGETS[metric] ? 'yes' : 'NO'}`,
  );
}
