/**
 * Models shared over a LAN: real `rbee node` processes, each in its own network namespace on a
 * private bridge, finding each other by mDNS. The model's own source is a plain HTTP server in n1's
 * namespace, stopped once n1 holds the model: from then on the hives are the only source. n2 gets
 * the model from n1 byte for byte; a transfer cut half way by its holder's death goes on from the
 * bytes already on n2's disk at the other holder; a job placed on a hive without the model gets it
 * from a peer and the client sees it happen; a node with another cluster key on the same LAN gets
 * nothing. Skips (saying why) where this machine does not allow network namespaces.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ndjson, type CliResult } from '../helpers/cli.js';
import { createClusterLab, type ClusterLab, type LabNode } from '../helpers/cluster-lab.js';
import { serveFileIn, type LabFileServer } from '../helpers/lab-http.js';
import { netnsSupport } from '../helpers/netns.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';

const support = netnsSupport();
const title = support.ok
  ? 'models shared between hives on a private LAN (network namespaces, mDNS)'
  : `models shared between hives on a private LAN: SKIPPED, ${support.reason}`;

/** Each hive pauses this long after each 128 KiB chunk it serves: the 1 MiB model takes ~2 s. */
const CHUNK_DELAY_MS = 250;

type Progress = { type: string; phase?: string; bytes?: number; from?: string; message?: string };
type Row = { sha256: string; path: string; bytes: number; source: string };
type ClusterFile = { sha256: string | null; hives: { id: string; name: string }[] };

const sha256Of = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

/** The catalog row a pull ended with (its `done` event). */
function doneRow(stdout: string): Row {
  const done = ndjson(stdout).find((e) => e.type === 'done') as { model: Row } | undefined;
  expect(done, stdout).toBeDefined();
  return done!.model;
}

/** The NDJSON lines written so far, leaving out one still being written. */
function completeLines(text: string): Record<string, unknown>[] {
  return ndjson(text.slice(0, text.lastIndexOf('\n') + 1));
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((name) => join(dir, name))
    .filter((path) => statSync(path).isFile());
}

describe.skipIf(!support.ok)(title, () => {
  let lab: ClusterLab;
  let n1: LabNode;
  let n2: LabNode;
  let n3: LabNode;
  /** On the same LAN with a cluster key of its own, running from the start. */
  let stranger: LabNode;
  let origin: LabFileServer;
  /** The model's ref: its URL on the (stopped) origin server. */
  let url: string;
  let sha256: string;
  let bytes: number;
  /** Where n1 keeps it. */
  let n1Path: string;

  const nameOf = (node: LabNode): string => `n${lab.nodes.indexOf(node) + 1}`;
  const start = (node: LabNode, env: NodeJS.ProcessEnv = {}): Promise<void> =>
    lab.start(node, { RBEE_TEST_MODEL_READ_DELAY_MS: String(CHUNK_DELAY_MS), ...env });
  const agree = (group: LabNode[]): Promise<string> =>
    waitFor(() => lab.agreedQueen(group), { what: 'the hives to agree on a queen', timeoutMs: 30_000 });
  const clusterFiles = async (node: LabNode): Promise<ClusterFile[]> =>
    (
      JSON.parse(
        await lab.net.exec(node.host, [
          'curl',
          '-sf',
          '--max-time',
          '2',
          'http://127.0.0.1:7833/v1/cluster/models',
        ]),
      ) as { models: ClusterFile[] }
    ).models;
  /** `node` sees the model on exactly the hives named. */
  const seesHolders = (node: LabNode, names: string[]): Promise<boolean> =>
    waitFor(
      async () => {
        const files = await clusterFiles(node).catch(() => []);
        const file = files.find((f) => f.sha256 === sha256);
        return (
          file?.hives
            .map((h) => h.name)
            .sort()
            .join(',') === [...names].sort().join(',')
        );
      },
      { what: `${nameOf(node)} to see the model on ${names.join(', ')}` },
    );
  const cli = (node: LabNode, args: string[]): Promise<CliResult> => lab.cli(node, args).result;
  /** The node's API, by curl in its namespace (cheaper than a CLI process where the CLI is not the point). */
  const api = (node: LabNode, args: string[]): Promise<string> =>
    lab.net.exec(node.host, ['curl', '-sf', '--max-time', '30', ...args], { timeoutMs: 35_000 });
  const remove = async (node: LabNode): Promise<void> => {
    const path = `/v1/models/${encodeURIComponent(url)}`;
    await api(node, ['-X', 'DELETE', '-H', 'x-rbee-client: 1', `http://127.0.0.1:7833${path}`]);
  };
  /** A pull through the API; the text of its event stream. */
  const apiPull = (node: LabNode, body: object): Promise<string> =>
    api(node, [
      '-N',
      '-H',
      'content-type: application/json',
      '-d',
      JSON.stringify(body),
      'http://127.0.0.1:7833/v1/models/pull',
    ]);
  /** Bytes a hive's log says it sent to `to` since log line `since`, with the offsets asked. */
  const sentTo = (from: LabNode, to: LabNode, since: number): { offset: number; bytes: number }[] =>
    lab
      .log(from)
      .slice(since)
      .filter((e) => e.peer === to.peerId && e.sha256 === sha256 && typeof e.bytes === 'number')
      .map((e) => ({ offset: Number(e.offset ?? 0), bytes: e.bytes as number }));

  beforeAll(async () => {
    lab = await createClusterLab(0);
    for (const name of ['n1', 'n2', 'n3']) await lab.addNode({ config: { nodeName: name, threads: 1 } });
    [n1, n2, n3] = lab.nodes as [LabNode, LabNode, LabNode];
    stranger = await lab.addNode({ key: 'own', config: { nodeName: 'stranger', threads: 1 } });
    // the stranger hears the hives over mDNS as they hear each other
    await Promise.all([n1, n2, n3, stranger].map((n) => start(n)));
    await agree([n1, n2, n3]);

    const tiny = await tinyModelPath();
    sha256 = sha256Of(tiny);
    bytes = statSync(tiny).size;
    origin = await serveFileIn(lab.net, n1.host, tiny, { path: '/models/tiny.gguf' });
    url = origin.url;
    const added = await cli(n1, ['models', 'pull', url, '--json']);
    expect(added.code, added.stderr).toBe(0);
    const row = doneRow(added.stdout);
    expect(row.sha256).toBe(sha256);
    n1Path = row.path;
    await origin.stop();
  }, 120_000);

  afterAll(async () => {
    await origin?.stop();
    await lab?.destroy();
  });

  it('a model added on n1 is pulled by n2 from n1, byte for byte, with no other source reachable', async () => {
    await seesHolders(n2, ['n1']);
    const pulled = await cli(n2, ['models', 'pull', `sha256:${sha256}`, '--json']);
    expect(pulled.code, pulled.stderr).toBe(0);
    const events = ndjson(pulled.stdout) as Progress[];
    expect(events.some((e) => e.phase === 'downloading' && e.from === 'hive n1 over the LAN')).toBe(true);
    const row = doneRow(pulled.stdout);
    expect(row).toMatchObject({ sha256, bytes, source: 'download' });
    expect(row.path.startsWith(n2.home)).toBe(true);
    expect(sha256Of(row.path)).toBe(sha256Of(n1Path));
    // both hives hold it now, as every node lists
    await seesHolders(n3, ['n1', 'n2']);
    const listed = await cli(n2, ['models', 'ls', '--cluster', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const file = (JSON.parse(listed.stdout) as ClusterFile[]).find((f) => f.sha256 === sha256);
    expect(file?.hives.map((h) => h.name).sort()).toEqual(['n1', 'n2']);
  });

  it('a transfer cut half way by its holder’s death goes on at the other holder from the bytes already here', async () => {
    // n3 holds it too, n2 not any more
    expect(await apiPull(n3, { model: url })).toContain('event: done');
    await remove(n2);
    await seesHolders(n2, ['n1', 'n3']);
    const logs = new Map([n1, n3].map((n) => [n, lab.log(n).length]));

    const pull = lab.cli(n2, ['models', 'pull', url, '--json']);
    const half = await waitFor<Progress | undefined>(
      () =>
        (completeLines(pull.stdout()) as Progress[]).find(
          (e) => e.phase === 'downloading' && e.from !== undefined && (e.bytes ?? 0) >= bytes / 2,
        ),
      { what: 'half the model on n2', intervalMs: 20 },
    );
    const first = [n1, n3].find((n) => half.from === `hive ${nameOf(n)} over the LAN`)!;
    const other = first === n1 ? n3 : n1;
    await lab.kill(first);
    const result = await pull.result;
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(doneRow(result.stdout)).toMatchObject({ sha256, bytes });

    const events = ndjson(result.stdout) as Progress[];
    const resumed = events.find(
      (e) => e.phase === 'downloading' && e.from === `hive ${nameOf(other)} over the LAN`,
    );
    // the other hive went on from what was on n2's disk when the first died, not from zero
    expect(resumed?.bytes).toBeGreaterThanOrEqual(half.bytes!);
    expect(resumed!.bytes!).toBeLessThan(bytes);
    // a hive logs what it sent once its stream ends, which may be just after n2 has the file
    const sent = await waitFor(
      () => {
        const lines = sentTo(other, n2, logs.get(other)!);
        return lines.length > 0 ? lines : undefined;
      },
      { what: `${nameOf(other)}'s log of what it sent` },
    );
    expect(sent).toEqual([{ offset: resumed!.bytes, bytes: bytes - resumed!.bytes! }]);
    expect(filesUnder(join(n2.home, 'models')).filter((f) => f.includes('.partial'))).toEqual([]);

    await start(first);
    await agree([n1, n2, n3]);
  });

  it('a job placed on a hive without the model gets it from a peer, and the client sees where from', async () => {
    await remove(n2);
    await seesHolders(n1, ['n1', 'n3']);
    const infer = await cli(n1, [
      'infer',
      '-m',
      url,
      'Hello',
      '--on',
      'n2',
      '--max-tokens',
      '2',
      '--keep-alive',
      '0',
      '--json',
    ]);
    expect(infer.code, infer.stderr).toBe(0);
    const events = ndjson(infer.stdout) as { type: string; node?: string; text?: string }[];
    expect(events.at(-1)).toMatchObject({ type: 'done' });
    const narrated = events.filter((e) => e.type === 'narration' && e.node === 'n2').map((e) => e.text);
    expect(
      narrated.some((t) => /from hive n[13] over the LAN/.test(t ?? '')),
      narrated.join('\n'),
    ).toBe(true);
    await seesHolders(n1, ['n1', 'n2', 'n3']);
  });

  it('a node with another cluster key on the same LAN fetches nothing, and no hive serves it', async () => {
    // it has been on the LAN since the start; with the right key, nodes here join in well under a second
    expect((await lab.status(stranger)).members.filter((m) => m.live)).toEqual([]);

    const bySha = await cli(stranger, ['models', 'pull', `sha256:${sha256}`, '--json']);
    expect(bySha.code).not.toBe(0);
    expect(bySha.stdout).toContain('MODEL_NOT_FOUND');
    const fromN1 = await cli(stranger, ['models', 'pull', url, '--from', 'n1', '--json']);
    expect(fromN1.code).not.toBe(0);
    expect(fromN1.stdout).toContain('no live hive n1 holds');

    expect(await clusterFiles(stranger)).toEqual([]);
    expect(filesUnder(join(stranger.home, 'models'))).toEqual([]);
    for (const node of [n1, n2, n3]) {
      // in the whole run, no hive's log has it as the peer of anything (a read served, a refusal)
      const served = lab.log(node).filter((e) => e.peer === stranger.peerId);
      expect(served).toEqual([]);
      expect((await lab.status(node)).members.map((m) => m.id)).not.toContain(stranger.peerId);
    }
  });
});
