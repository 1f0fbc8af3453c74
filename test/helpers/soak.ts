/**
 * The soak run behind `npm run soak` and test/soak: real `rbee node` processes on a private LAN of
 * network namespaces (cluster-lab.ts), a client in every node's namespace streaming jobs without
 * pause (soak-client.ts), and a seeded schedule of faults after a fault-free first phase: kill -9 a
 * worker, kill -9 a node and restart it, kill -9 the queen (and restart it), partition a node and
 * heal it. Every job is accounted for; every failure must carry a documented code that a fault
 * explains (its kind, its time, its place); after every restart the node's jobs rows are final and
 * its catalog matches its disk; at the end exactly one queen, agreed by all. It also measures the
 * time from each queen kill to a new queen, each node's RSS and open file descriptors, and time to
 * first token and tok/s with faults against the fault-free phase. `problems` lists each unmet promise.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { generateTestModel } from '../../src/engine/gguf/index.js';
import { isErrorCode } from '../../src/shared/errors.js';
import { REPO } from './cli.js';
import { createClusterLab, type LabNode } from './cluster-lab.js';
import { killAll, pidsWithEnv } from './processes.js';
import { prng, type SoakJob } from './soak-client.js';
import { waitFor } from './wait-for.js';

export type FaultKind =
  | 'kill-worker'
  | 'kill-node'
  | 'kill-queen'
  | 'partition'
  | 'disk-full'
  | 'cut-transfer'
  | 'restart-in-catalog-write';

export interface SoakOptions {
  durationS: number;
  seed: number;
  /** Nodes in the cluster (3 or 4). */
  nodes?: number;
  /** Seconds of load before the first fault (the fault-free phase TTFT and tok/s are compared with). */
  faultFreeS?: number;
  /** Jobs each client runs at once. */
  concurrency?: number;
  log?: (line: string) => void;
  signal?: AbortSignal;
}

export interface PlannedFault {
  /** Seconds after load starts. */
  atS: number;
  kind: FaultKind;
  /** Index of the node it hits (kill-queen: whichever node is queen then). */
  target: number;
}

export interface Fault extends PlannedFault {
  node: string;
  start: number;
  /** When the cluster was whole again (restarted, healed, agreed on one queen). */
  end: number;
  detail: string;
  /** kill-queen: ms from the kill to the survivors agreeing on a new queen. */
  newQueenMs?: number;
  /** The node it killed or cut off was the queen then: every job of the cluster may feel it. */
  wasQueen?: boolean;
  /** Model faults: how the cut pull ended (its error code, or done when the fault came too late). */
  pullCode?: string;
}

interface ProcessFigures {
  node: string;
  pid: number;
  at: number;
  rssBytes: number;
  fds: number;
}

export interface ResourceRow {
  node: string;
  pid: number;
  first: ProcessFigures;
  last: ProcessFigures;
  withinBound: boolean;
}

export interface PhaseFigures {
  jobs: number;
  ttftP50Ms: number;
  ttftP99Ms: number;
  tokPerSP50: number;
  tokPerSP99: number;
}

export interface SoakReport {
  seed: number;
  /** Epoch ms when the clients started. */
  loadStart: number;
  durationS: number;
  nodes: number;
  schedule: PlannedFault[];
  faults: Fault[];
  jobs: {
    refused: number;
    accepted: number;
    completed: number;
    cancelled: number;
    failed: number;
    lost: number;
    byKind: Record<string, number>;
    failedByCode: Record<string, number>;
    refusedByCode: Record<string, number>;
  };
  newQueenMs: number[];
  resources: ResourceRow[];
  faultFree: PhaseFigures;
  underFaults: PhaseFigures;
  problems: string[];
}

/** RSS may grow by half plus 64 MiB, open fds by 64, over one process's life under load. */
export const RSS_BOUND = { factor: 1.5, plusBytes: 64 * 2 ** 20 };
export const FD_BOUND = 64;
/** A node process's figures count from this long after it started (models and workers loaded). */
const WARM_MS = 20_000;
const API = 'http://127.0.0.1:7833';
const run = promisify(execFile);

/** Which documented codes each fault may explain. */
const CODES_OF: Record<FaultKind, ReadonlySet<string>> = {
  'kill-worker': new Set(['WORKER_CRASHED', 'WORKER_START_FAILED', 'NODE_UNREACHABLE']),
  'kill-node': new Set([
    'NODE_RESTARTED',
    'NODE_UNREACHABLE',
    'WORKER_CRASHED',
    'NODE_SHUTTING_DOWN',
    'NO_QUEEN',
    'NOT_QUEEN',
    'STALE_TERM',
  ]),
  'kill-queen': new Set([
    'NODE_RESTARTED',
    'NODE_UNREACHABLE',
    'WORKER_CRASHED',
    'NO_QUEEN',
    'NOT_QUEEN',
    'STALE_TERM',
  ]),
  partition: new Set(['NODE_UNREACHABLE', 'WORKER_CRASHED', 'NO_QUEEN', 'NOT_QUEEN', 'STALE_TERM']),
  // a full models disk fails downloads only, never a job of a model already there
  'disk-full': new Set(),
  // both kill a node: the holder of the model being sent, or the node receiving it
  'cut-transfer': new Set([
    'NODE_RESTARTED',
    'NODE_UNREACHABLE',
    'WORKER_CRASHED',
    'NO_QUEEN',
    'NOT_QUEEN',
    'STALE_TERM',
  ]),
  'restart-in-catalog-write': new Set([
    'NODE_RESTARTED',
    'NODE_UNREACHABLE',
    'WORKER_CRASHED',
    'NO_QUEEN',
    'NOT_QUEEN',
    'STALE_TERM',
  ]),
};
/** What a pull cut by each model fault may fail with. */
const PULL_CODES_OF: Partial<Record<FaultKind, ReadonlySet<string>>> = {
  'disk-full': new Set(['DISK_FULL']),
  // MODEL_NOT_FOUND: the sender is gone (no live hive holds the model any more)
  'cut-transfer': new Set(['DOWNLOAD_FAILED', 'DOWNLOAD_TRUNCATED', 'NODE_UNREACHABLE', 'MODEL_NOT_FOUND']),
};
/** Faults that touch every job of the cluster (the queen places them all), not only their node's. */
const CLUSTER_WIDE: ReadonlySet<FaultKind> = new Set(['kill-queen', 'partition']);
/** A fault explains a failure that ends up to this long after the cluster was whole again. */
const AFTER_MS = 15_000;
const KINDS: FaultKind[] = [
  'kill-worker',
  'kill-node',
  'kill-queen',
  'partition',
  'disk-full',
  'cut-transfer',
  'restart-in-catalog-write',
];
/**
 * The model the model faults move between hives: the generated small model (174 MB, a transfer
 * lasts long enough to cut), served by a plain HTTP server on the first node's loopback. The first
 * node downloads it from there; the others can reach that server from nowhere, so they fetch it
 * from the first node over the LAN (`from`), as a peer transfer.
 */
const BIG_PORT = 7899;
const BIG = `http://127.0.0.1:${BIG_PORT}/small.gguf`;
const SERVE = `
const { createServer } = require('node:http');
const { createReadStream, statSync } = require('node:fs');
const file = process.argv[1];
createServer((req, res) => {
  const size = statSync(file).size;
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
  if (req.method === 'HEAD') return res.end();
  createReadStream(file).pipe(res);
}).listen(${BIG_PORT}, '127.0.0.1');
`;
/** The last node's models directory is a tmpfs of this size (the node keeps 1 GiB free). */
const DISK_NODE_TMPFS = '1400m';

/** The seeded schedule: one fault every `gap` seconds from the end of the fault-free phase. */
export function planFaults(
  seed: number,
  durationS: number,
  faultFreeS: number,
  nodes: number,
): PlannedFault[] {
  const random = prng(seed);
  // the last part of the run is left for recovery and the final checks' load
  const end = durationS * 0.85;
  // a short run meets every kind of fault once; a long one, one every 30 s
  const gap = durationS >= 300 ? 30 : (end - faultFreeS) / KINDS.length;
  const plan: PlannedFault[] = [];
  let order: FaultKind[] = [];
  for (let at = faultFreeS; at + gap / 2 <= end; at += gap) {
    if (order.length === 0) {
      order = [...KINDS];
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
    }
    plan.push({ atS: Math.round(at), kind: order.shift()!, target: Math.floor(random() * nodes) });
  }
  return plan;
}

const percentile = (values: number[], p: number): number => {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
};

function phase(jobs: SoakJob[]): PhaseFigures {
  const streamed = jobs.filter((j) => j.outcome === 'done' && j.firstToken !== undefined);
  const ttft = streamed.map((j) => j.firstToken! - j.start);
  const rates = streamed
    .filter((j) => j.tokens >= 8 && j.end > j.firstToken!)
    .map((j) => ((j.tokens - 1) * 1000) / (j.end - j.firstToken!));
  return {
    jobs: streamed.length,
    ttftP50Ms: percentile(ttft, 50),
    ttftP99Ms: percentile(ttft, 99),
    tokPerSP50: percentile(rates, 50),
    // the slow tail of throughput is its 1st percentile
    tokPerSP99: percentile(rates, 1),
  };
}

function figures(node: string, pid: number): ProcessFigures | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /VmRSS:\s+(\d+) kB/.exec(status);
    // a process being killed has no memory to report any more
    if (rss === null) return undefined;
    return {
      node,
      pid,
      at: Date.now(),
      rssBytes: Number(rss[1]) * 1024,
      fds: readdirSync(`/proc/${pid}/fd`).length,
    };
  } catch {
    return undefined;
  }
}

interface JobsRow {
  id: string;
  state: string;
  hive_name: string | null;
  error_code: string | null;
  accepted_at: number;
}

function readDb<T>(home: string, read: (db: Database.Database) => T): T {
  const db = new Database(join(home, 'rbee.db'), { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    return read(db);
  } finally {
    db.close();
  }
}

function filesUnder(dir: string): Array<{ path: string; bytes: number }> {
  const out: Array<{ path: string; bytes: number }> = [];
  const walk = (at: string): void => {
    let entries;
    try {
      entries = readdirSync(at, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) walk(path);
      else {
        try {
          out.push({ path, bytes: statSync(path).size });
        } catch {
          // renamed or removed while we looked
        }
      }
    }
  };
  walk(dir);
  return out;
}

/** What a node's disk and its catalog disagree on, and partial files left behind. */
export function catalogProblems(name: string, home: string): string[] {
  const problems: string[] = [];
  const rows = readDb(home, (db) => db.prepare('SELECT ref, path, bytes FROM models').all()) as Array<{
    ref: string;
    path: string;
    bytes: number;
  }>;
  for (const row of rows) {
    if (!existsSync(row.path))
      problems.push(`${name}: catalog row ${row.ref} names a missing file ${row.path}`);
    else if (statSync(row.path).size !== row.bytes)
      problems.push(
        `${name}: ${row.path} has ${statSync(row.path).size} bytes, its catalog row says ${row.bytes}`,
      );
  }
  const listed = new Set(rows.map((r) => r.path));
  const walk = (dir: string): void => {
    if (!existsSync(dir)) return;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (/\.tmp$/.test(entry.name) || (entry.name.endsWith('.partial') && !existsSync(`${path}.json`)))
        problems.push(`${name}: a partial file without a sidecar to resume it stays: ${path}`);
      else if (entry.name.endsWith('.gguf') && !listed.has(path))
        problems.push(`${name}: ${path} is on disk but not in the catalog`);
    }
  };
  walk(join(home, 'models'));
  return problems;
}

/** Jobs rows a (re)started node left unfinished, accepted before `before`. */
function unfinishedRows(home: string, before: number): JobsRow[] {
  return readDb(
    home,
    (db) =>
      db
        .prepare(
          "SELECT id, state, hive_name, error_code, accepted_at FROM jobs WHERE state IN ('queued', 'placing', 'running') AND accepted_at < ?",
        )
        .all(before) as JobsRow[],
  );
}

interface SoakClientProcess {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
}

function startClient(
  node: LabNode,
  name: string,
  seed: number,
  concurrency: number,
  jobs: SoakJob[],
): SoakClientProcess {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      node.host.ns,
      process.execPath,
      '--import',
      'tsx',
      join(REPO, 'test/helpers/soak-client.ts'),
    ],
    {
      cwd: REPO,
      env: {
        ...process.env,
        NODE_OPTIONS: '',
        SOAK_ROLE: 'client',
        SOAK_CLIENT_NAME: name,
        SOAK_CLIENT_SEED: String(seed),
        SOAK_CLIENT_CONCURRENCY: String(concurrency),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      jobs.push(JSON.parse(line) as SoakJob);
    } catch {
      // not a job line
    }
  });
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code) => {
      if (code !== 0 && stderr !== '')
        process.stderr.write(`soak client ${name} exited ${code}: ${stderr}\n`);
      resolve();
    }),
  );
  return { name, child, exited };
}

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? (() => {});
  const count = options.nodes ?? 3;
  const faultFreeS = options.faultFreeS ?? Math.min(60, Math.round(options.durationS / 4));
  const schedule = planFaults(options.seed, options.durationS, faultFreeS, count);
  const signal = options.signal;
  const problems: string[] = [];
  const faults: Fault[] = [];
  const jobs: SoakJob[] = [];
  const samples: ProcessFigures[] = [];
  const clients: SoakClientProcess[] = [];
  log(`soak: seed ${options.seed}, ${options.durationS} s, ${count} nodes; fault schedule:`);
  for (const f of schedule) log(`  +${f.atS}s ${f.kind} n${f.target + 1}`);

  const lab = await createClusterLab(count);
  const nameOf = (node: LabNode): string => `n${lab.nodes.indexOf(node) + 1}`;
  const pidOf = (node: LabNode): number | undefined => node.child?.pid;
  const sample = (): void => {
    for (const node of lab.nodes) {
      const pid = pidOf(node);
      if (pid === undefined) continue;
      const warmSince = startedAt.get(pid);
      if (warmSince === undefined || Date.now() - warmSince < WARM_MS) continue;
      const f = figures(nameOf(node), pid);
      if (f !== undefined) samples.push(f);
    }
  };
  const agreed = (group: LabNode[], what: string, timeoutMs = 60_000): Promise<string> =>
    waitFor(() => lab.agreedQueen(group), { what, timeoutMs, intervalMs: 100 });
  /** After a node (re)started: its jobs rows final, its catalog as its disk. */
  const checkRestarted = (node: LabNode, startedAt: number): void => {
    for (const row of unfinishedRows(node.home, startedAt))
      problems.push(`${nameOf(node)} restarted with job ${row.id} still ${row.state}`);
    problems.push(...catalogProblems(nameOf(node), node.home));
  };
  /** When each node process started: its figures count from WARM_MS later (loaded, serving). */
  const startedAt = new Map<number, number>();
  const start = async (node: LabNode): Promise<void> => {
    const at = Date.now();
    await lab.start(node, { RBEE_LOG_LEVEL: 'warn' });
    if (node.child?.pid !== undefined) startedAt.set(node.child.pid, at);
  };
  const restart = async (node: LabNode): Promise<void> => {
    const at = Date.now();
    await start(node);
    checkRestarted(node, at);
  };
  const warm = async (node: LabNode): Promise<void> => {
    await lab.net.exec(
      node.host,
      [
        'curl',
        '-sf',
        '--max-time',
        '120',
        '-H',
        'content-type: application/json',
        '-d',
        '{"model":"demo"}',
        `${API}/v1/workers`,
      ],
      { timeoutMs: 130_000 },
    );
  };

  interface PullEnd {
    type: 'done' | 'error' | 'broken';
    code?: string;
    id?: string;
  }
  /** `POST /v1/models/pull` of the big model on `node` (from hive `from` only, when given). */
  const pull = async (node: LabNode, from?: LabNode): Promise<PullEnd> => {
    const body = JSON.stringify(from === undefined ? { model: BIG } : { model: BIG, from: nameOf(from) });
    const argv = ['curl', '-sN', '--max-time', '180', '-H', 'content-type: application/json', '-d', body];
    let out: string;
    try {
      out = await lab.net.exec(node.host, [...argv, `${API}/v1/models/pull`], { timeoutMs: 190_000 });
    } catch (error) {
      out = (error as { stdout?: string }).stdout ?? '';
    }
    const events = out
      .split('\n')
      .filter((l) => l.startsWith('data: '))
      .map(
        (l) => JSON.parse(l.slice(6)) as { type: string; error?: { code: string }; model?: { id: string } },
      );
    const last = events.at(-1);
    if (last?.type === 'done') return { type: 'done', id: last.model!.id };
    if (last?.type === 'error') return { type: 'error', code: last.error!.code };
    return { type: 'broken' };
  };
  const removeBig = async (node: LabNode, id: string): Promise<void> => {
    await lab.net.exec(node.host, [
      'curl',
      '-sf',
      '-X',
      'DELETE',
      '-H',
      'x-rbee-client: 1',
      `${API}/v1/models/${id}`,
    ]);
  };
  /** The partial files under a node's models directory, with their sizes. */
  const partials = (node: LabNode): Array<{ path: string; bytes: number }> =>
    filesUnder(join(node.home, 'models')).filter((f) => f.path.endsWith('.partial'));
  /** Pulls again until the model is whole (a cut transfer resumes), then removes it from `node`. */
  const pullWhole = async (node: LabNode, from: LabNode, what: string): Promise<string> => {
    // after a restart: once the cluster is whole, and the sender's catalog known again (a node
    // that has not yet heard the sender's models says no live hive holds it: try again meanwhile)
    await agreed(lab.nodes, `the cluster before pulling again (${what})`);
    let again = await pull(node, from);
    for (let tries = 0; again.type === 'error' && again.code === 'MODEL_NOT_FOUND' && tries < 15; tries++) {
      await sleep(2_000);
      again = await pull(node, from);
    }
    if (again.type !== 'done') {
      problems.push(`${what}: pulling ${BIG} again on ${nameOf(node)} failed (${again.code ?? again.type})`);
      return 'the pull again failed';
    }
    for (const p of partials(node))
      problems.push(`${what}: a partial file stays after a whole pull: ${p.path}`);
    problems.push(...catalogProblems(nameOf(node), node.home));
    await removeBig(node, again.id!);
    return 'pulled whole again';
  };
  /** A node other than `not` that holds the big model (n1 always does, unless it is `not`). */
  const holderFor = (not: LabNode): LabNode => (not === lab.nodes[0] ? lab.nodes[1]! : lab.nodes[0]!);
  const diskNode = lab.nodes.at(-1)!;
  const diskDir = join(diskNode.home, 'models');
  let mounted = false;
  const bigDir = mkdtempSync(join(tmpdir(), 'rbee-soak-'));
  let server: ChildProcess | undefined;
  const clean = async (): Promise<void> => {
    for (const c of clients) if (c.child.exitCode === null) c.child.kill('SIGKILL');
    await Promise.all(clients.map((c) => c.exited));
    await Promise.all(lab.nodes.map((n) => lab.kill(n)));
    // workers outlive a killed node for a moment: none may hold the tmpfs
    for (const node of lab.nodes) killAll(pidsWithEnv('RBEE_HOME', node.home));
    if (mounted) await run('umount', ['-l', diskDir]).catch(() => undefined);
    if (server !== undefined && server.exitCode === null) {
      const gone = new Promise((resolve) => server!.once('exit', resolve));
      server.kill('SIGKILL');
      await gone;
    }
    rmSync(bigDir, { recursive: true, force: true });
    await lab.destroy();
  };
  try {
    lab.nodes.forEach((node, i) =>
      writeFileSync(
        join(node.home, 'config.json'),
        JSON.stringify({ nodeName: `n${i + 1}`, threads: 1, keepAliveS: -1 }),
      ),
    );
    await generateTestModel({ path: join(bigDir, 'small.gguf'), preset: 'small', seed: 1 });
    server = spawn(
      'ip',
      ['netns', 'exec', lab.nodes[0]!.host.ns, process.execPath, '-e', SERVE, join(bigDir, 'small.gguf')],
      { stdio: 'ignore' },
    );
    await waitFor(
      () =>
        lab.net
          .exec(lab.nodes[0]!.host, ['curl', '-sfI', '--max-time', '2', BIG])
          .then(() => true)
          .catch(() => false),
      { what: 'the model server to listen' },
    );
    mkdirSync(diskDir, { recursive: true });
    await run('mount', ['-t', 'tmpfs', '-o', `size=${DISK_NODE_TMPFS}`, 'tmpfs', diskDir]);
    mounted = true;
    await Promise.all(lab.nodes.map((node) => start(node)));
    await agreed(lab.nodes, 'the nodes to agree on a queen');
    // the first node downloads the big model the model faults send between hives
    const made = await pull(lab.nodes[0]!);
    if (made.type !== 'done') throw new Error(`making ${BIG} on n1 failed: ${made.code ?? made.type}`);
    // every node makes the demo model and loads a worker before the clock starts: the fault-free
    // phase measures serving, not the first load
    await Promise.all(lab.nodes.map((node) => warm(node)));
    log(`soak: ${count} nodes agree on a queen, each with a worker loaded; clients start`);
    const loadStart = Date.now();
    lab.nodes.forEach((node, i) =>
      clients.push(startClient(node, nameOf(node), options.seed * 10 + i, options.concurrency ?? 2, jobs)),
    );
    const sampler = setInterval(sample, 5_000);
    try {
      for (const planned of schedule) {
        const wait = loadStart + planned.atS * 1000 - Date.now();
        if (wait > 0) await sleep(wait, undefined, { signal });
        signal?.throwIfAborted();
        const fault = await inject(planned);
        faults.push(fault);
        log(
          `  +${((fault.start - loadStart) / 1000).toFixed(1)}s ${fault.kind} ${fault.node}: ${fault.detail} ` +
            `(whole again after ${((fault.end - fault.start) / 1000).toFixed(1)} s)`,
        );
      }
      const rest = loadStart + options.durationS * 1000 - Date.now();
      if (rest > 0) await sleep(rest, undefined, { signal });
    } finally {
      clearInterval(sampler);
    }
    sample();
    log(`soak: load stops; ${jobs.length} jobs ended so far, waiting for the rest`);
    for (const c of clients) c.child.stdin?.write('stop\n');
    await Promise.all(clients.map((c) => c.exited));

    // the end: one queen, agreed by all; every row final; every catalog as its disk
    const queen = await agreed(lab.nodes, 'one queen at the end', 60_000).catch(() => undefined);
    if (queen === undefined) problems.push('the nodes do not agree on one queen at the end');
    const statuses = await Promise.all(lab.nodes.map((n) => lab.status(n).catch(() => undefined)));
    const queens = statuses.filter((s) => s?.isQueen === true).length;
    if (queens !== 1) problems.push(`${queens} nodes call themselves queen at the end`);
    for (const node of lab.nodes) {
      for (const row of unfinishedRows(node.home, Date.now()))
        problems.push(`${nameOf(node)}: job ${row.id} is still ${row.state} after the load ended`);
      problems.push(...catalogProblems(nameOf(node), node.home));
    }
    const rows = new Map<string, JobsRow & { node: string }>();
    for (const node of lab.nodes)
      for (const row of readDb(node.home, (db) =>
        db.prepare('SELECT id, state, hive_name, error_code, accepted_at FROM jobs').all(),
      ) as JobsRow[])
        rows.set(row.id, { ...row, node: nameOf(node) });

    return report(loadStart, rows, queen);
  } finally {
    await clean();
  }

  async function inject(planned: PlannedFault): Promise<Fault> {
    const start = Date.now();
    let node = lab.nodes[planned.target]!;
    const queenBefore = await lab.agreedQueen(lab.nodes);
    const done = (detail: string, extra: Partial<Fault> = {}): Fault => ({
      ...planned,
      node: nameOf(node),
      start,
      end: Date.now(),
      detail: node.peerId === queenBefore ? `${detail} (it was the queen)` : detail,
      wasQueen: node.peerId === queenBefore,
      ...extra,
    });
    switch (planned.kind) {
      case 'kill-worker': {
        const nodePid = pidOf(node);
        const workers = pidsWithEnv('RBEE_HOME', node.home).filter((p) => p !== nodePid);
        for (const pid of workers) process.kill(pid, 'SIGKILL');
        // the node notices and takes jobs again (it starts a new worker on the next job)
        await agreed(lab.nodes, 'the cluster after a worker kill');
        return done(`killed worker pid ${workers.join(', ') || '(none running)'}`);
      }
      case 'kill-node': {
        const queenId = await lab.agreedQueen(lab.nodes);
        // the queen has a fault of its own: this one hits a hive that is not queen
        if (node.peerId === queenId) node = lab.nodes[(planned.target + 1) % lab.nodes.length]!;
        await lab.kill(node);
        await sleep(2_000);
        await restart(node);
        await agreed(lab.nodes, 'the cluster after a node restart');
        return done('kill -9, restarted after 2 s');
      }
      case 'kill-queen': {
        const queenId = await agreed(lab.nodes, 'a queen to kill');
        node = lab.nodes.find((n) => n.peerId === queenId)!;
        const rest = lab.nodes.filter((n) => n !== node);
        const killedAt = Date.now();
        await lab.kill(node);
        // a new queen: every survivor names the same one, not the dead one (they may still count
        // the dead node a member for a while)
        const successor = await waitFor(
          async () => {
            const seen = await Promise.all(rest.map((n) => lab.status(n).catch(() => undefined)));
            const ids = new Set(seen.map((s) => s?.queen?.id));
            const id = seen[0]?.queen?.id;
            return ids.size === 1 && id !== undefined && id !== queenId ? id : undefined;
          },
          { what: 'the survivors to elect a new queen', timeoutMs: 60_000, intervalMs: 100 },
        );
        const newQueenMs = Date.now() - killedAt;
        if (successor === queenId) problems.push('the survivors kept a killed queen');
        await restart(node);
        await agreed(lab.nodes, 'the cluster after the old queen restarted');
        return done(`kill -9 of the queen; a new queen after ${newQueenMs} ms; restarted`, { newQueenMs });
      }
      case 'disk-full': {
        node = diskNode;
        const from = holderFor(node);
        const pulling = pull(node, from);
        const started = await waitFor(() => partials(node).some((p) => p.bytes > 0) || undefined, {
          what: 'the download to start',
          timeoutMs: 30_000,
          intervalMs: 5,
        }).catch(() => false);
        const filler = join(diskDir, 'filler');
        if (started) {
          const free = statfsSync(diskDir);
          await run('fallocate', ['-l', String(free.bavail * free.bsize), filler]).catch(() => undefined);
        }
        const end = await pulling;
        rmSync(filler, { force: true });
        const code = end.code ?? end.type;
        if (end.type !== 'done' && !PULL_CODES_OF['disk-full']!.has(code))
          problems.push(`disk-full: the pull on ${nameOf(node)} failed with ${code}, not DISK_FULL`);
        for (const p of partials(node)) problems.push(`disk-full: a partial file stays: ${p.path}`);
        problems.push(...catalogProblems(nameOf(node), node.home));
        if (end.type === 'done') await removeBig(node, end.id!);
        const again =
          end.type === 'done'
            ? 'the download ended before the disk filled'
            : await pullWhole(node, from, 'disk-full');
        return done(`disk filled during a download from ${nameOf(from)}: ${code}; ${again}`, {
          pullCode: code,
        });
      }
      case 'cut-transfer': {
        const to = node === lab.nodes[0] ? lab.nodes[1]! : node;
        node = holderFor(to);
        const from = node;
        const pulling = pull(to, from);
        const started = await waitFor(() => partials(to).some((p) => p.bytes > 0) || undefined, {
          what: 'the transfer to start',
          timeoutMs: 30_000,
          intervalMs: 5,
        }).catch(() => false);
        if (started) await lab.kill(from);
        const end = await pulling;
        const code = end.code ?? end.type;
        if (end.type !== 'done' && !PULL_CODES_OF['cut-transfer']!.has(code))
          problems.push(`cut-transfer: the pull on ${nameOf(to)} failed with ${code}`);
        if (started) await restart(from);
        // a cut transfer may keep its partial to resume from, with its sidecar, and nothing else
        for (const p of partials(to))
          if (!existsSync(`${p.path}.json`))
            problems.push(`cut-transfer: a partial without a sidecar: ${p.path}`);
        if (end.type === 'done') await removeBig(to, end.id!);
        const again =
          end.type === 'done'
            ? started
              ? 'the pull still completed (from another source)'
              : 'the transfer ended before the cut'
            : await pullWhole(to, from, 'cut-transfer');
        await agreed(lab.nodes, 'the cluster after a cut transfer');
        return done(
          `${started ? 'kill -9 of the sender mid-transfer' : 'no transfer seen to cut'} to ${nameOf(to)}: pull ${code}; ${again}`,
          { pullCode: code },
        );
      }
      case 'restart-in-catalog-write': {
        if (node === lab.nodes[0]) node = lab.nodes[1]!;
        const to = node;
        const from = holderFor(to);
        const before = new Set(filesUnder(join(to.home, 'models')).map((f) => f.path));
        const pulling = pull(to, from);
        // the moment the whole file is renamed into place, its catalog row is written: kill then
        const landed = await waitFor(
          () =>
            filesUnder(join(to.home, 'models')).some(
              (f) => f.path.endsWith('.gguf') && !before.has(f.path),
            ) || undefined,
          { what: 'the file to land', timeoutMs: 60_000, intervalMs: 1 },
        ).catch(() => false);
        await lab.kill(to);
        await pulling;
        await restart(to);
        const again = await pullWhole(to, from, 'restart-in-catalog-write');
        await agreed(lab.nodes, 'the cluster after a restart in a catalog write');
        return done(
          `kill -9 ${landed ? 'as the pulled file landed' : 'during the pull (the file never landed)'}; restarted; ${again}`,
        );
      }
      case 'partition': {
        await lab.net.partition(node.host);
        await sleep(8_000);
        await lab.net.heal(node.host);
        const healedAt = Date.now();
        await agreed(lab.nodes, 'one queen after the partition healed');
        return done(`cut off for 8 s; one queen ${Date.now() - healedAt} ms after healing`);
      }
    }
  }

  function report(
    loadStart: number,
    rows: Map<string, JobsRow & { node: string }>,
    queen: string | undefined,
  ): SoakReport {
    void queen;
    const count_ = (pred: (j: SoakJob) => boolean): number => jobs.filter(pred).length;
    const tally = (list: SoakJob[]): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const j of list) out[j.code ?? '(none)'] = (out[j.code ?? '(none)'] ?? 0) + 1;
      return out;
    };
    const byKind: Record<string, number> = {};
    for (const j of jobs) byKind[j.kind] = (byKind[j.kind] ?? 0) + 1;

    // every failure (and every refusal) must carry a documented code a fault explains
    for (const job of jobs.filter((j) => j.outcome === 'failed' || j.outcome === 'refused')) {
      const row = job.id === undefined ? undefined : rows.get(job.id);
      // where the job was: its entry node, the hive its row names, and a hive its error names
      const named = /\bhive (n\d+)\b/.exec(job.message ?? '')?.[1];
      const places = new Set([job.client, row?.node, row?.hive_name ?? undefined, named]);
      const what = `${job.client} ${job.kind} ${job.id ?? '(no id)'} ${job.outcome} ${job.code} "${job.message ?? ''}" at +${((job.start - loadStart) / 1000).toFixed(1)}..${((job.end - loadStart) / 1000).toFixed(1)} s`;
      if (job.code === undefined || !isErrorCode(job.code)) {
        problems.push(`undocumented failure: ${what}`);
        continue;
      }
      const explained = faults.some(
        (f) =>
          CODES_OF[f.kind].has(job.code!) &&
          job.end >= f.start - 1_000 &&
          job.start <= f.end + AFTER_MS &&
          (CLUSTER_WIDE.has(f.kind) || f.wasQueen === true || places.has(f.node)),
      );
      if (!explained) problems.push(`a failure no fault explains: ${what}`);
    }
    const lost = jobs.filter((j) => j.outcome === 'lost');
    for (const job of lost)
      problems.push(
        `lost: ${job.client} ${job.kind} ${job.id ?? '(no id)'} at +${((job.start - loadStart) / 1000).toFixed(1)} s`,
      );
    if (jobs.filter((j) => j.outcome === 'done').length === 0) problems.push('no job completed');

    // resources: each node process, from its first sample to its last
    const resources: ResourceRow[] = [];
    const byPid = new Map<number, ProcessFigures[]>();
    for (const s of samples) byPid.set(s.pid, [...(byPid.get(s.pid) ?? []), s]);
    for (const [pid, list] of byPid) {
      if (list.length < 2) continue;
      const first = list[0]!;
      const last = list.at(-1)!;
      const withinBound =
        last.rssBytes <= first.rssBytes * RSS_BOUND.factor + RSS_BOUND.plusBytes &&
        last.fds <= first.fds + FD_BOUND;
      if (!withinBound)
        problems.push(
          `${first.node} (pid ${pid}) grew from ${(first.rssBytes / 2 ** 20).toFixed(0)} MiB / ${first.fds} fds to ${(last.rssBytes / 2 ** 20).toFixed(0)} MiB / ${last.fds} fds`,
        );
      resources.push({ node: first.node, pid, first, last, withinBound });
    }

    const faultsStart = loadStart + faultFreeS * 1000;
    const lastFaultEnd = Math.max(...faults.map((f) => f.end), faultsStart);
    return {
      seed: options.seed,
      loadStart,
      durationS: options.durationS,
      nodes: count,
      schedule,
      faults,
      jobs: {
        refused: count_((j) => j.outcome === 'refused'),
        accepted: count_((j) => j.outcome !== 'refused'),
        completed: count_((j) => j.outcome === 'done'),
        cancelled: count_((j) => j.outcome === 'cancelled'),
        failed: count_((j) => j.outcome === 'failed'),
        lost: lost.length,
        byKind,
        failedByCode: tally(jobs.filter((j) => j.outcome === 'failed')),
        refusedByCode: tally(jobs.filter((j) => j.outcome === 'refused')),
      },
      newQueenMs: faults.flatMap((f) => (f.newQueenMs === undefined ? [] : [f.newQueenMs])),
      resources,
      faultFree: phase(jobs.filter((j) => j.end < faultsStart)),
      underFaults: phase(jobs.filter((j) => j.start >= faultsStart && j.start <= lastFaultEnd)),
      problems,
    };
  }
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '–');

/** The report as a person reads it (and as docs/benchmarks.md quotes it). */
export function formatReport(r: SoakReport): string {
  const lines = [
    `soak: seed ${r.seed}, ${r.durationS} s, ${r.nodes} nodes, ${r.faults.length} faults`,
    `jobs: accepted ${r.jobs.accepted}, completed ${r.jobs.completed}, cancelled ${r.jobs.cancelled}, ` +
      `failed with a reason ${r.jobs.failed}, lost ${r.jobs.lost}; refused before acceptance ${r.jobs.refused}`,
    `  by kind: ${Object.entries(r.jobs.byKind)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
    `  failed by code: ${
      Object.entries(r.jobs.failedByCode)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ') || 'none'
    }`,
    `  refused by code: ${
      Object.entries(r.jobs.refusedByCode)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ') || 'none'
    }`,
    '| at | fault | node | what happened | whole again after |',
    '| --- | --- | --- | --- | --- |',
    ...r.faults.map(
      (f) =>
        `| +${((f.start - r.loadStart) / 1000).toFixed(0)} s | ${f.kind} | ${f.node} | ${f.detail} | ${((f.end - f.start) / 1000).toFixed(1)} s |`,
    ),
    `new queen after a queen kill: ${r.newQueenMs.map((ms) => `${ms} ms`).join(', ') || 'no queen kill'}`,
    '| node (pid) | RSS first | RSS last | fds first | fds last | within bound |',
    '| --- | --- | --- | --- | --- | --- |',
    ...r.resources.map(
      (x) =>
        `| ${x.node} (${x.pid}) | ${mib(x.first.rssBytes)} | ${mib(x.last.rssBytes)} | ${x.first.fds} | ${x.last.fds} | ${x.withinBound ? 'yes' : 'NO'} |`,
    ),
    `bound: RSS ≤ first × ${RSS_BOUND.factor} + ${mib(RSS_BOUND.plusBytes)}, fds ≤ first + ${FD_BOUND}`,
    '| phase | jobs | TTFT p50 ms | TTFT p99 ms | tok/s p50 | tok/s p1 |',
    '| --- | --- | --- | --- | --- | --- |',
    ...(
      [
        ['fault-free', r.faultFree],
        ['under faults', r.underFaults],
      ] as const
    ).map(
      ([name, p]) =>
        `| ${name} | ${p.jobs} | ${f1(p.ttftP50Ms)} | ${f1(p.ttftP99Ms)} | ${f1(p.tokPerSP50)} | ${f1(p.tokPerSP99)} |`,
    ),
    r.problems.length === 0 ? 'PASS: every promise held' : `FAIL: ${r.problems.length} problems`,
    ...r.problems.map((p) => `  - ${p}`),
  ];
  return lines.join('\n');
}
