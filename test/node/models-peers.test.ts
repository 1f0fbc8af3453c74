/**
 * Models from peers: two real `rbee node` processes in one cluster on loopback. Alpha downloads a
 * model from a Hugging Face-like server on 127.0.0.1; then that server drops every connection. A
 * transfer to beta cut by alpha's death resumes from beta's durable prefix once alpha is back;
 * `--from` is honoured for a demo model and refused for a path; a holder whose file went bad is
 * found out by the sha256 and beta falls back to the model's own source, never cataloguing the
 * corrupt bytes. (Pulls by sha256 and for a job, across hosts, are in test/cluster/lan-models.test.ts.)
 */
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ndjson, runCli, startCli, type Sandbox } from '../helpers/cli.js';
import { startClusterNode, startNamedCluster, withEnv, type NamedNode } from '../helpers/cluster-nodes.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';
import { serveBytes, startServer, type TestServer } from './gguf-http-server.js';

const REF = 'hf:test/tiny/Tiny-Q8_0.gguf';
const FILE_PATH = '/test/tiny/resolve/main/Tiny-Q8_0.gguf';
/** Alpha serves each 128 KiB chunk of a model this long after the last: a transfer takes ~2 s. */
const CHUNK_DELAY_MS = 250;

const sandboxes: Sandbox[] = [];
let server: TestServer;
let online = true;
let alpha: NamedNode;
let beta: NamedNode;
let sha256: string;
/** Where alpha keeps the model's file. */
let alphaPath: string;

beforeAll(async () => {
  const tiny = readFileSync(await tinyModelPath());
  server = await startServer();
  const serve = serveBytes(tiny);
  // offline, the "internet" drops every connection, as an unreachable host would fail a fetch
  server.route(FILE_PATH, (req, res) => (online ? serve(req, res) : void res.destroy()));
  [alpha, beta] = (await withEnv(
    { HF_ENDPOINT: server.origin, RBEE_TEST_MODEL_READ_DELAY_MS: String(CHUNK_DELAY_MS) },
    () => startNamedCluster(['alpha', 'beta'], sandboxes),
  )) as [NamedNode, NamedNode];
  const pulled = await runCli(['models', 'pull', REF, '--json'], { env: alpha.node.sandbox.env });
  expect(pulled.code, pulled.stderr).toBe(0);
  const row = catalogRow(pulled.stdout);
  sha256 = row.sha256;
  alphaPath = row.path;
  online = false;
});

afterAll(async () => {
  await Promise.all(sandboxes.map((s) => s.cleanup()));
  await server?.close();
});

const fileHits = (): number => server.hits.get(FILE_PATH) ?? 0;

/** The catalog row a pull ended with (its `done` event). */
function catalogRow(stdout: string): { sha256: string; path: string; bytes: number; source: string } {
  const done = ndjson(stdout).find((e) => e.type === 'done') as
    { model: { sha256: string; path: string; bytes: number; source: string } } | undefined;
  expect(done, stdout).toBeDefined();
  expect(done!.model.sha256).toMatch(/^[0-9a-f]{64}$/);
  return done!.model;
}

/** The sha256 of the model file a hive publishes for REF, if it holds it. */
async function heldBy(node: NamedNode): Promise<string | null | undefined> {
  const files = await node.client.clusterModels();
  return files.find((f) => f.ref === REF && f.hives.some((h) => h.id === node.id))?.sha256;
}

/** Beta sees alpha's model in the cluster's view. */
async function betaSeesAlphaModel(): Promise<void> {
  await waitFor(
    async () =>
      (await beta.client.clusterModels()).some(
        (m) => m.sha256 === sha256 && m.hives.some((h) => h.name === 'alpha'),
      ),
    { what: "alpha's model in beta's view" },
  );
}

async function removeFromBeta(): Promise<void> {
  await beta.client.deleteModel(REF);
  expect(await heldBy(beta)).toBeUndefined();
}

type Progress = { type: string; phase?: string; bytes?: number; from?: string; message?: string };

describe('models from peers', () => {
  it('a transfer cut by the holder dying resumes from the durable prefix once it is back', async () => {
    await betaSeesAlphaModel();
    const pull = startCli(['models', 'pull', REF, '--json'], { env: beta.node.sandbox.env });
    // alpha dies once a few chunks are on beta's disk
    await waitFor(
      () =>
        ndjson(pull.stdout()).some(
          (e) => (e as Progress).from !== undefined && ((e as Progress).bytes ?? 0) >= 256 * 1024,
        ),
      { what: 'the first chunks from alpha' },
    );
    alpha.node.kill();
    await alpha.node.exited;
    const cut = await pull.result;
    // nothing else holds it and the internet is unreachable: the pull fails, the prefix stays
    expect(cut.code, cut.stdout).not.toBe(0);
    const partial = join(beta.node.sandbox.home, 'models');
    const sidecars = findFiles(partial, '.peer.partial.json');
    expect(sidecars).toHaveLength(1);
    const kept = (JSON.parse(readFileSync(sidecars[0]!, 'utf8')) as { durableBytes: number }).durableBytes;
    expect(kept).toBeGreaterThanOrEqual(256 * 1024);

    alpha.node = await startClusterNode(alpha.node.sandbox, {
      peers: [beta.node.addr],
      p2pPort: alpha.node.p2pPort,
    });
    await betaSeesAlphaModel();
    const before = fileHits();
    const resumed = await runCli(['models', 'pull', REF, '--json'], { env: beta.node.sandbox.env });
    expect(resumed.code, resumed.stderr).toBe(0);
    const events = ndjson(resumed.stdout) as Progress[];
    const first = events.find((e) => e.phase === 'downloading');
    expect(first?.from).toBe('hive alpha over the LAN');
    // it went on from the kept bytes, not from zero
    expect(first?.bytes).toBe(kept);
    expect(catalogRow(resumed.stdout).sha256).toBe(sha256);
    expect(fileHits()).toBe(before);
    expect(findFiles(partial, '.partial')).toEqual([]);
    await removeFromBeta();
  });

  it('`pull demo --from HIVE` takes that hive’s demo model instead of generating one; other hives or a path are refused', async () => {
    const made = await runCli(['models', 'pull', 'demo', '--json'], { env: alpha.node.sandbox.env });
    expect(made.code, made.stderr).toBe(0);
    const demo = catalogRow(made.stdout);
    await waitFor(
      async () =>
        (await beta.client.clusterModels()).some(
          (m) => m.sha256 === demo.sha256 && m.hives.some((h) => h.name === 'alpha'),
        ),
      { what: "alpha's demo model in beta's view" },
    );
    const pulled = await runCli(['models', 'pull', 'demo', '--from', 'alpha', '--json'], {
      env: beta.node.sandbox.env,
    });
    expect(pulled.code, pulled.stderr).toBe(0);
    const events = ndjson(pulled.stdout) as Progress[];
    expect(events.some((e) => e.phase === 'downloading' && e.from === 'hive alpha over the LAN')).toBe(true);
    // nothing was generated: the progress never says so
    expect(events.some((e) => e.message?.includes('generating') === true)).toBe(false);
    const row = catalogRow(pulled.stdout);
    expect(row.sha256).toBe(demo.sha256);
    expect(readFileSync(row.path).equals(readFileSync(demo.path))).toBe(true);

    // a demo model no hive of that name holds is not generated in its stead
    const models = join(beta.node.sandbox.home, 'models');
    const before = findFiles(models, '');
    const missing = await runCli(['models', 'pull', 'demo:rerank', '--from', 'alpha', '--json'], {
      env: beta.node.sandbox.env,
    });
    expect(missing.code).not.toBe(0);
    expect(ndjson(missing.stdout).at(-1)).toMatchObject({
      type: 'error',
      error: { code: 'MODEL_NOT_FOUND', message: 'no live hive alpha holds demo:rerank' },
    });
    expect(findFiles(models, '')).toEqual(before);
    // a file on this machine comes from no hive
    const local = await runCli(['models', 'pull', alphaPath, '--from', 'alpha', '--json'], {
      env: beta.node.sandbox.env,
    });
    expect(local.code).not.toBe(0);
    const refused = ndjson(local.stdout).at(-1) as { error?: { code: string; message: string } };
    expect(refused.error?.code).toBe('BAD_REQUEST');
    expect(refused.error?.message).toContain('not fetched from a hive');
    await beta.client.deleteModel('demo');
    await alpha.client.deleteModel('demo');
  });

  it('bytes that do not match the holder’s sha256 are discarded, and the model comes from its own source', async () => {
    // alpha's file rots on its disk after it was catalogued: same size, one byte changed
    const bytes = readFileSync(alphaPath);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
    writeFileSync(alphaPath, bytes);
    online = true;
    await betaSeesAlphaModel();
    const before = fileHits();
    const pulled = await runCli(['models', 'pull', REF, '--json'], { env: beta.node.sandbox.env });
    expect(pulled.code, pulled.stderr).toBe(0);
    const events = ndjson(pulled.stdout) as Progress[];
    expect(
      events.some((e) => e.from === 'hive alpha over the LAN' && e.message?.includes('sha256') === true),
    ).toBe(true);
    // the catalogued file is the source's, whole and right
    expect(catalogRow(pulled.stdout).sha256).toBe(sha256);
    expect(fileHits()).toBeGreaterThan(before);
    expect(findFiles(join(beta.node.sandbox.home, 'models'), '.partial')).toEqual([]);
  });
});

function findFiles(dir: string, suffix: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((name) => join(dir, name))
    .filter((path) => path.endsWith(suffix) && statSync(path).isFile());
}
