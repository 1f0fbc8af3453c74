import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { readModelInfo } from '../../src/engine/model-info.js';
import { writeError } from '../../src/node/models/download.js';
import { pickGgufFile } from '../../src/node/models/hf-files.js';
import { parseModelRef, type ModelRef } from '../../src/node/models/model-ref.js';
import {
  createProvisioner,
  type Provisioner,
  type ProvisionerInit,
  type ProvisionProgress,
} from '../../src/node/models/provisioner.js';
import { openDatabase, type Database } from '../../src/node/store/db.js';
import { createModelCatalog, type ModelCatalog } from '../../src/node/store/model-catalog.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';
import {
  redirectTo,
  serveBytes,
  serveCut,
  serveGated,
  serveJson,
  serveLiar,
  serveStatus,
  startServer,
  type TestServer,
} from './gguf-http-server.js';
import { failure, filesUnder, shaOfFile } from './provisioner-fixture.js';

let tiny: Buffer;
let tinySha: string;
let server: TestServer;
let dir: string;
let modelsDir: string;
let db: Database;
let catalog: ModelCatalog;
let provisioner: Provisioner;

function make(overrides: Partial<ProvisionerInit> = {}): Provisioner {
  return createProvisioner({
    catalog,
    modelsDir,
    hfEndpoint: server.origin,
    hfToken: 'hf_secret',
    // Retries stay on (every cut is retried) but need not wait in tests.
    retryDelayMs: 5,
    ...overrides,
  });
}

beforeAll(async () => {
  tiny = await readFile(await tinyModelPath());
  tinySha = createHash('sha256').update(tiny).digest('hex');
  server = await startServer();
});
afterAll(async () => {
  await server.close();
});
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rbee-prov-'));
  modelsDir = join(dir, 'models');
  db = openDatabase(join(dir, 'rbee.db'));
  catalog = createModelCatalog(db);
  provisioner = make();
  server.hits.clear();
  server.aborted.length = 0;
});
afterEach(async () => {
  db.close();
  await rm(dir, { recursive: true, force: true });
});

/** What a user notices after a failed ensure: nothing on disk, nothing in the catalog. */
async function expectNothingLeft(): Promise<void> {
  expect(await filesUnder(modelsDir)).toEqual([]);
  expect(catalog.list()).toEqual([]);
}

const sha = shaOfFile;

describe('download from a URL', () => {
  it('stores the file, its sha256 and a row, with rising progress', async () => {
    const gate = Promise.withResolvers<void>();
    server.route('/dl/tiny.gguf', serveGated(tiny, 300_000, gate.promise));
    const events: ProvisionProgress[] = [];
    const ensured = provisioner.ensure(parseModelRef(`${server.origin}/dl/tiny.gguf`), {
      onProgress: (p) => events.push(p),
    });
    await waitFor(() => events.some((e) => e.phase === 'downloading' && e.bytes >= 300_000), {
      what: 'progress from the first half',
    });
    gate.resolve();
    const { model, cached } = await ensured;

    expect(cached).toBe(false);
    expect(model.path.startsWith(join(modelsDir, 'url', '127.0.0.1_'))).toBe(true);
    expect(model.path.endsWith('/tiny.gguf')).toBe(true);
    expect(await sha(model.path)).toBe(tinySha);
    expect(model).toMatchObject({
      ref: `${server.origin}/dl/tiny.gguf`,
      bytes: tiny.length,
      sha256: tinySha,
      source: 'download',
      architecture: 'llama',
      quantization: 'Q8_0',
      contextLength: 2048,
    });
    expect(catalog.get(model.id)).toEqual(model);
    expect(await filesUnder(modelsDir)).toEqual([model.path]);

    const downloading = events.filter((e) => e.phase === 'downloading');
    expect(downloading.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < downloading.length; i++) {
      expect(downloading[i]!.bytes).toBeGreaterThanOrEqual(downloading[i - 1]!.bytes);
    }
    expect(downloading.at(-1)).toMatchObject({
      bytes: tiny.length,
      totalBytes: tiny.length,
      file: 'tiny.gguf',
    });
    expect(downloading.some((e) => e.bytesPerSecond !== undefined && e.bytesPerSecond > 0)).toBe(true);
    expect(events.map((e) => e.phase).filter((p, i, all) => p !== all[i - 1])).toEqual([
      'downloading',
      'verifying',
      'done',
    ]);
    // The HF token goes to the HF endpoint only, never to an arbitrary URL.
    expect(server.lastHeaders.get('/dl/tiny.gguf')?.authorization).toBeUndefined();
  });

  it('answers from the catalog the second time, and downloads again when the file vanished', async () => {
    server.route('/again/tiny.gguf', serveBytes(tiny));
    const ref = parseModelRef(`${server.origin}/again/tiny.gguf`);
    const first = await provisioner.ensure(ref);
    const second = await make({ now: () => first.model.addedAt + 5000 }).ensure(ref);
    expect(second.cached).toBe(true);
    expect(second.model.lastUsedAt).toBe(first.model.addedAt + 5000);
    expect(catalog.get(first.model.id)?.lastUsedAt).toBe(first.model.addedAt + 5000);
    expect(server.hits.get('/again/tiny.gguf')).toBe(1);

    await rm(first.model.path);
    const third = await provisioner.ensure(ref);
    expect(third.cached).toBe(false);
    expect(server.hits.get('/again/tiny.gguf')).toBe(2);
    expect(await sha(third.model.path)).toBe(tinySha);
  });

  it('follows redirects', async () => {
    server.route('/cdn/blob', serveBytes(tiny));
    server.route('/moved/tiny.gguf', redirectTo('/cdn/blob'));
    const { model } = await provisioner.ensure(parseModelRef(`${server.origin}/moved/tiny.gguf`));
    expect(await sha(model.path)).toBe(tinySha);
  });
});

describe('download failures leave nothing behind', () => {
  it('404 → MODEL_NOT_FOUND', async () => {
    const error = await failure(provisioner.ensure(parseModelRef(`${server.origin}/nowhere/x.gguf`)));
    expect(error.code).toBe('MODEL_NOT_FOUND');
    await expectNothingLeft();
  });

  it('HTTP 500 → DOWNLOAD_FAILED', async () => {
    server.route('/broken/x.gguf', serveStatus(500));
    const error = await failure(provisioner.ensure(parseModelRef(`${server.origin}/broken/x.gguf`)));
    expect(error.code).toBe('DOWNLOAD_FAILED');
    expect(error.message).toMatch(/HTTP 500/);
    await expectNothingLeft();
  });

  it('nobody listening → DOWNLOAD_FAILED', async () => {
    const closed = await startServer();
    await closed.close();
    const error = await failure(provisioner.ensure(parseModelRef(`${closed.origin}/x.gguf`)));
    expect(error.code).toBe('DOWNLOAD_FAILED');
    expect(error.message).toMatch(/ECONNREFUSED/);
    await expectNothingLeft();
  });

  it('connection cut mid-body → DOWNLOAD_TRUNCATED', async () => {
    server.route('/cut/x.gguf', serveCut(tiny, 400_000));
    const error = await failure(provisioner.ensure(parseModelRef(`${server.origin}/cut/x.gguf`)));
    expect(error.code).toBe('DOWNLOAD_TRUNCATED');
    expect(error.details).toMatchObject({ totalBytes: tiny.length });
    await expectNothingLeft();
  });

  it('a server that announces more than it sends → DOWNLOAD_TRUNCATED', async () => {
    server.route('/liar/x.gguf', serveLiar(tiny, 5000));
    const error = await failure(provisioner.ensure(parseModelRef(`${server.origin}/liar/x.gguf`)));
    expect(error.code).toBe('DOWNLOAD_TRUNCATED');
    expect(error.details).toMatchObject({ totalBytes: tiny.length + 5000 });
    // What reached the disk before the early close: all of it, or less when the HTTP client
    // reports the close before its last buffered chunk (seen once in a full run under load).
    expect(error.details?.bytes).toBeGreaterThan(0);
    expect(error.details?.bytes).toBeLessThanOrEqual(tiny.length);
    await expectNothingLeft();
  });

  it('a server that goes silent → DOWNLOAD_FAILED after the stall timeout', async () => {
    server.route('/silent/x.gguf', serveLiar(tiny, 5000, true));
    const error = await failure(
      make({ stallTimeoutMs: 300 }).ensure(parseModelRef(`${server.origin}/silent/x.gguf`)),
    );
    expect(error.code).toBe('DOWNLOAD_FAILED');
    expect(error.message).toMatch(/stalled/);
    await expectNothingLeft();
  });

  it('a body that is not GGUF → MODEL_INVALID', async () => {
    server.route('/html/x.gguf', serveBytes(Buffer.from('<html><body>Sign in to continue</body></html>')));
    const error = await failure(provisioner.ensure(parseModelRef(`${server.origin}/html/x.gguf`)));
    expect(error.code).toBe('MODEL_INVALID');
    await expectNothingLeft();
  });

  it('an honest but shortened file → MODEL_INVALID', async () => {
    for (const length of [tiny.length - 1, 600_000, 20_000, 64]) {
      const path = `/short-${length}/x.gguf`;
      server.route(path, serveBytes(tiny.subarray(0, length)));
      const error = await failure(provisioner.ensure(parseModelRef(`${server.origin}${path}`)));
      expect(error.code, `cut at ${length}`).toBe('MODEL_INVALID');
      expect(error.message).toMatch(/truncated|not a readable GGUF/);
    }
    await expectNothingLeft();
  });

  // Without /dev/full this says "skipped" instead of passing without checking anything.
  it.skipIf(!existsSync('/dev/full'))('a full disk → DISK_FULL', async () => {
    server.route('/full/x.gguf', serveBytes(tiny));
    const ref = parseModelRef(`${server.origin}/full/x.gguf`) as ModelRef & { kind: 'url' };
    // Real ENOSPC: the partial file is a link to /dev/full, where every write fails that way.
    const { modelDirName } = await import('../../src/node/models/model-ref.js');
    const partial = join(modelsDir, modelDirName(ref), 'x.gguf.partial');
    await mkdir(dirname(partial), { recursive: true });
    await symlink('/dev/full', partial);
    const error = await failure(provisioner.ensure(ref));
    expect(error.code).toBe('DISK_FULL');
    await expectNothingLeft();
  });

  it('maps ENOSPC and EDQUOT to DISK_FULL, other write errors to DOWNLOAD_FAILED', () => {
    const errno = (code: string) => Object.assign(new Error(code), { code });
    expect(writeError('/x', errno('ENOSPC')).code).toBe('DISK_FULL');
    expect(writeError('/x', errno('EDQUOT')).code).toBe('DISK_FULL');
    expect(writeError('/x', errno('EACCES')).code).toBe('DOWNLOAD_FAILED');
  });

  it('abort mid-download → JOB_CANCELLED and the connection is closed', async () => {
    const gate = Promise.withResolvers<void>();
    server.route('/abort/x.gguf', serveGated(tiny, 200_000, gate.promise));
    const controller = new AbortController();
    let seen = 0;
    const ensured = provisioner.ensure(parseModelRef(`${server.origin}/abort/x.gguf`), {
      signal: controller.signal,
      onProgress: (p) => (seen = p.bytes),
    });
    await waitFor(() => seen >= 200_000, { what: 'the first bytes' });
    controller.abort();
    const error = await failure(ensured);
    expect(error.code).toBe('JOB_CANCELLED');
    await waitFor(() => server.aborted.includes('/abort/x.gguf'), { what: 'the server to see the close' });
    gate.resolve();
    // the caller leaves at once; the download itself is listed until it has cleaned up after itself
    await waitFor(() => provisioner.inProgress().length === 0, { what: 'the download to leave the list' });
    await expectNothingLeft();
  });
});

describe('concurrent ensure', () => {
  it('shares one download; a late caller sees the progress so far', async () => {
    const gate = Promise.withResolvers<void>();
    server.route('/shared/x.gguf', serveGated(tiny, 250_000, gate.promise));
    const ref = parseModelRef(`${server.origin}/shared/x.gguf`);
    const first: ProvisionProgress[] = [];
    const second: ProvisionProgress[] = [];
    const a = provisioner.ensure(ref, { onProgress: (p) => first.push(p) });
    await waitFor(() => first.some((p) => p.bytes >= 250_000), { what: 'the first half' });
    const b = provisioner.ensure(ref, { onProgress: (p) => second.push(p) });
    expect(second[0]?.bytes).toBeGreaterThanOrEqual(250_000);
    expect(provisioner.inProgress()).toMatchObject([{ ref: `${server.origin}/shared/x.gguf` }]);
    gate.resolve();
    const [ra, rb] = await Promise.all([a, b]);
    expect(server.hits.get('/shared/x.gguf')).toBe(1);
    expect(rb.model).toEqual(ra.model);
    expect(second.at(-1)?.phase).toBe('done');
    expect(await filesUnder(modelsDir)).toEqual([ra.model.path]);
  });

  it('keeps downloading for the others when one caller aborts, and stops when all have', async () => {
    const gate = Promise.withResolvers<void>();
    server.route('/leave/x.gguf', serveGated(tiny, 100_000, gate.promise));
    const ref = parseModelRef(`${server.origin}/leave/x.gguf`);
    const quitter = new AbortController();
    let bytes = 0;
    const a = provisioner.ensure(ref, { signal: quitter.signal, onProgress: (p) => (bytes = p.bytes) });
    const b = provisioner.ensure(ref);
    await waitFor(() => bytes >= 100_000, { what: 'the first bytes' });
    quitter.abort();
    expect((await failure(a)).code).toBe('JOB_CANCELLED');
    gate.resolve();
    expect((await b).model.sha256).toBe(tinySha);

    const gate2 = Promise.withResolvers<void>();
    server.route('/leave2/x.gguf', serveGated(tiny, 100_000, gate2.promise));
    const ref2 = parseModelRef(`${server.origin}/leave2/x.gguf`);
    const one = new AbortController();
    const two = new AbortController();
    let bytes2 = 0;
    const c = provisioner.ensure(ref2, { signal: one.signal, onProgress: (p) => (bytes2 = p.bytes) });
    const d = provisioner.ensure(ref2, { signal: two.signal });
    await waitFor(() => bytes2 >= 100_000, { what: 'the first bytes' });
    one.abort();
    two.abort();
    expect((await failure(c)).code).toBe('JOB_CANCELLED');
    expect((await failure(d)).code).toBe('JOB_CANCELLED');
    await waitFor(() => server.aborted.includes('/leave2/x.gguf'), { what: 'the download to stop' });
    gate2.resolve();
    await waitFor(async () => (await filesUnder(modelsDir)).length === 1, { what: 'the partial to go' });
    expect(catalog.list().map((r) => r.ref)).toEqual([`${server.origin}/leave/x.gguf`]);
  });
});

describe('Hugging Face', () => {
  const listing = {
    id: 'org/repo',
    siblings: [
      { rfilename: 'README.md' },
      { rfilename: 'model.F16.gguf' },
      { rfilename: 'model.Q8_0.gguf' },
      { rfilename: 'model.Q4_K_M.gguf' },
      { rfilename: 'model.Q4_K_S.gguf' },
      { rfilename: 'mmproj-model-f16.gguf' },
      { rfilename: 'big/model.Q4_K_M-00001-of-00002.gguf' },
      { rfilename: '../../../escape.Q4_K_M.gguf' },
    ],
  };

  beforeEach(() => {
    server.route('/api/models/org/repo', serveJson(listing));
    for (const s of listing.siblings) server.route(`/org/repo/resolve/main/${s.rfilename}`, serveBytes(tiny));
  });

  it('downloads a named file (with the token) into hf/<org>/<repo>/', async () => {
    server.route('/org/repo/resolve/main/sub/dir/deep.gguf', serveBytes(tiny));
    const { model } = await provisioner.ensure(parseModelRef('hf:org/repo/sub/dir/deep.gguf'));
    expect(model.path).toBe(join(modelsDir, 'hf', 'org', 'repo', 'sub', 'dir', 'deep.gguf'));
    expect(model.ref).toBe('hf:org/repo/sub/dir/deep.gguf');
    expect(await sha(model.path)).toBe(tinySha);
    expect(server.lastHeaders.get('/org/repo/resolve/main/sub/dir/deep.gguf')?.authorization).toBe(
      'Bearer hf_secret',
    );
  });

  it('picks Q4_K_M by default, says so, and answers later from the catalog', async () => {
    const events: ProvisionProgress[] = [];
    const { model } = await provisioner.ensure(parseModelRef('hf:org/repo'), {
      onProgress: (p) => events.push(p),
    });
    expect(model.ref).toBe('hf:org/repo/model.Q4_K_M.gguf');
    expect(events.find((e) => e.message?.startsWith('picked'))?.message).toMatch(
      /picked model\.Q4_K_M\.gguf: Q4_K_M is the default choice/,
    );
    expect(events[0]?.phase).toBe('resolving');
    const again = await provisioner.ensure(parseModelRef('hf:org/repo'));
    expect(again).toMatchObject({ cached: true, model: { id: model.id } });
    expect(server.hits.get('/api/models/org/repo')).toBe(1);
  });

  it('picks by quantization, case-insensitively', async () => {
    const { model } = await provisioner.ensure(parseModelRef('hf:org/repo:q8_0'));
    expect(model.ref).toBe('hf:org/repo/model.Q8_0.gguf');
  });

  it('a quantization the repo lacks → MODEL_NOT_FOUND listing what exists', async () => {
    const error = await failure(provisioner.ensure(parseModelRef('hf:org/repo:IQ2_XS')));
    expect(error.code).toBe('MODEL_NOT_FOUND');
    expect(error.message).toMatch(/model\.Q8_0\.gguf/);
    expect(error.message).not.toMatch(/escape|mmproj|00001-of/);
    await expectNothingLeft();
  });

  it('a repo that does not exist → MODEL_NOT_FOUND', async () => {
    const error = await failure(provisioner.ensure(parseModelRef('hf:org/nothing')));
    expect(error.code).toBe('MODEL_NOT_FOUND');
    await expectNothingLeft();
  });

  it('hf:org/repo and its resolved file at once share one download', async () => {
    const gate = Promise.withResolvers<void>();
    server.route('/org/repo/resolve/main/model.Q4_K_M.gguf', serveGated(tiny, 1000, gate.promise));
    const a = provisioner.ensure(parseModelRef('hf:org/repo'));
    const b = provisioner.ensure(parseModelRef('hf:org/repo/model.Q4_K_M.gguf'));
    const c = provisioner.ensure(parseModelRef('hf:org/repo'));
    await waitFor(() => server.hits.get('/org/repo/resolve/main/model.Q4_K_M.gguf'), {
      what: 'the download',
    });
    gate.resolve();
    const results = await Promise.all([a, b, c]);
    expect(new Set(results.map((r) => r.model.id)).size).toBe(1);
    expect(server.hits.get('/org/repo/resolve/main/model.Q4_K_M.gguf')).toBe(1);
    expect(server.hits.get('/api/models/org/repo')).toBe(1);
  });
});

describe('pickGgufFile', () => {
  const names = (...list: string[]) => list.map((name) => ({ name }));
  it('prefers Q4_K_M, Q4_0, Q5_K_M, Q8_0, then the smallest', () => {
    expect(pickGgufFile(names('a.Q8_0.gguf', 'a.Q4_0.gguf', 'a.Q5_K_M.gguf'))?.file.name).toBe('a.Q4_0.gguf');
    expect(pickGgufFile(names('a.Q8_0.gguf', 'a.Q5_K_M.gguf'))?.file.name).toBe('a.Q5_K_M.gguf');
    expect(pickGgufFile(names('a-f16.gguf', 'a-q6_k.gguf', 'a-q3_k_l.gguf'))?.file.name).toBe(
      'a-q3_k_l.gguf',
    );
    const sized = pickGgufFile([
      { name: 'x.IQ4_XS.gguf', bytes: 300 },
      { name: 'x.Q6_K.gguf', bytes: 200 },
    ]);
    expect(sized?.file.name).toBe('x.Q6_K.gguf');
    expect(sized?.reason).toMatch(/smallest file/);
    expect(pickGgufFile([])).toBeUndefined();
  });
  it('matches a quantization as a whole token before a substring', () => {
    const list = names('m.Q4_K_S.gguf', 'm.Q4_K_M.gguf', 'm.IQ4_K.gguf');
    expect(pickGgufFile(list, 'Q4_K_S')?.file.name).toBe('m.Q4_K_S.gguf');
    expect(pickGgufFile(list, 'q4_k')?.file.name).toBe('m.Q4_K_M.gguf');
    expect(pickGgufFile(list, 'Q2_K')).toBeUndefined();
  });
});

describe('local files', () => {
  it('registers the user file in place, without copying, and remove() leaves it', async () => {
    const path = join(dir, 'mine', 'my model.gguf');
    await mkdir(dirname(path));
    await writeFile(path, tiny);
    const { model, cached } = await provisioner.ensure(parseModelRef(path));
    expect(cached).toBe(false);
    expect(model).toMatchObject({
      path,
      source: 'local',
      sha256: null,
      bytes: tiny.length,
      ref: `file:${path}`,
    });
    expect(await filesUnder(modelsDir)).toEqual([]);
    expect((await provisioner.ensure(parseModelRef(`file:${path}`))).cached).toBe(true);
    await provisioner.remove(model.id);
    expect(existsSync(path)).toBe(true);
    expect(catalog.list()).toEqual([]);
  });

  it('a missing file → MODEL_NOT_FOUND; a file that is not GGUF → MODEL_INVALID; no rows', async () => {
    expect((await failure(provisioner.ensure(parseModelRef(join(dir, 'none.gguf'))))).code).toBe(
      'MODEL_NOT_FOUND',
    );
    await writeFile(join(dir, 'text.gguf'), 'hello');
    expect((await failure(provisioner.ensure(parseModelRef(join(dir, 'text.gguf'))))).code).toBe(
      'MODEL_INVALID',
    );
    expect(catalog.list()).toEqual([]);
  });
});

describe('demo models', () => {
  it('generates the tiny demo once, labelled as random weights', async () => {
    const { model, cached } = await provisioner.ensure(parseModelRef('demo'));
    expect(cached).toBe(false);
    expect(model.path).toBe(join(modelsDir, 'demo', 'tiny-seed1.gguf'));
    expect(model).toMatchObject({ source: 'demo', ref: 'demo:tiny', sha256: tinySha, bytes: tiny.length });
    expect(model.name).toMatch(/random weights, for smoke tests/);
    expect(await filesUnder(modelsDir)).toEqual([model.path]);
    expect((await provisioner.ensure(parseModelRef('demo:tiny'))).cached).toBe(true);
  });

  it('an aborted generation leaves nothing', async () => {
    const controller = new AbortController();
    const ensured = provisioner.ensure(parseModelRef('demo:tiny'), {
      signal: controller.signal,
      // Abort once generation is about to start, so the partial-file cleanup is what is tested.
      onProgress: (p) => p.phase === 'resolving' && controller.abort(),
    });
    expect((await failure(ensured)).code).toBe('JOB_CANCELLED');
    await waitFor(() => provisioner.inProgress().length === 0, { what: 'the generation to stop' });
    await expectNothingLeft();
  });
});

describe('reconcile and remove', () => {
  it('deletes stray partials and rows whose file is gone, and keeps the rest', async () => {
    server.route('/keep/x.gguf', serveBytes(tiny));
    const kept = await provisioner.ensure(parseModelRef(`${server.origin}/keep/x.gguf`));
    const gone = await provisioner.ensure(parseModelRef('demo'));
    await rm(gone.model.path);
    const strays = [
      join(modelsDir, 'hf', 'a', 'b', 'c.gguf.partial'),
      join(modelsDir, 'demo', 'x.gguf.partial.partial'),
    ];
    for (const stray of strays) {
      await mkdir(dirname(stray), { recursive: true });
      await writeFile(stray, 'half');
    }
    const report = await make().reconcile();
    expect(report.removedPartials.sort()).toEqual([...strays].sort());
    expect(report.removedRows.map((r) => r.id)).toEqual([gone.model.id]);
    expect(await filesUnder(modelsDir)).toEqual([kept.model.path]);
    expect(catalog.list().map((r) => r.id)).toEqual([kept.model.id]);
    expect(existsSync(join(modelsDir, 'hf'))).toBe(false);
  });

  it('deletes a model file no row names: a crash between its rename into place and its row', async () => {
    const { model } = await provisioner.ensure(parseModelRef('demo'));
    // the process died after the rename, before the row: the file is there, the catalog knows nothing
    catalog.remove(model.id);
    const report = await make().reconcile();
    expect(report.removedFiles).toEqual([model.path]);
    expect(await filesUnder(modelsDir)).toEqual([]);
    // pulled again, it is whole and listed once more
    const again = await make().ensure(parseModelRef('demo'));
    expect(catalog.list().map((r) => r.path)).toEqual([again.model.path]);
    expect(await filesUnder(modelsDir)).toEqual([again.model.path]);
  });

  it('removes by ref or id, deleting the file and its empty folders', async () => {
    server.route('/org/repo2/resolve/main/m.gguf', serveBytes(tiny));
    const { model } = await provisioner.ensure(parseModelRef('hf:org/repo2/m.gguf'));
    expect((await provisioner.remove('hf:org/repo2/m.gguf')).id).toBe(model.id);
    await expectNothingLeft();
    expect(existsSync(join(modelsDir, 'hf'))).toBe(false);
    expect((await failure(provisioner.remove(model.id))).code).toBe('MODEL_NOT_FOUND');
  });
});

describe('escape attempts', () => {
  it('refuses hand-built refs that would leave the models directory, before any request', async () => {
    const before = await filesUnder(dir);
    const attempts: ModelRef[] = [
      { kind: 'hf', repo: '../../etc', file: 'x.gguf' },
      { kind: 'hf', repo: 'org/repo', file: '../../../../tmp/evil.gguf' },
      { kind: 'hf', repo: 'org/repo', file: 'a/../../../evil.gguf' },
      { kind: 'hf', repo: '..', quant: 'Q4_0' },
      { kind: 'url', url: `${server.origin}/a/../../evil.gguf` },
      { kind: 'url', url: `${server.origin}/x.exe` },
      { kind: 'file', path: 'relative.gguf' },
    ];
    for (const ref of attempts) {
      expect((await failure(provisioner.ensure(ref))).code, JSON.stringify(ref)).toBe('MODEL_REF_INVALID');
    }
    expect(server.hits.get('/api/models/../repo')).toBeUndefined();
    expect(await filesUnder(dir)).toEqual(before);
  });

  it('keeps a URL whose name encodes a path inside the models directory', async () => {
    server.route('/enc/.. evil.gguf', serveBytes(tiny));
    const { model } = await provisioner.ensure(parseModelRef(`${server.origin}/enc/..%20evil.gguf`));
    expect(model.path.startsWith(join(modelsDir, 'url'))).toBe(true);
    expect(model.path.endsWith('/_._evil.gguf')).toBe(true);
  });
});

describe('readModelInfo', () => {
  it('reads what the GGUF header says', async () => {
    const info = await readModelInfo(await tinyModelPath());
    expect(info).toEqual({
      architecture: 'llama',
      name: expect.stringMatching(/^rbee demo/) as string,
      quantization: 'Q8_0',
      contextLength: 2048,
      parameterCount: expect.any(Number) as number,
      // the template the GGUF carries (Ollama's /api/show reports it)
      chatTemplate: expect.stringContaining('<|im_start|>') as string,
    });
    expect(info.parameterCount).toBeGreaterThan(500_000);
  });

  it('refuses a file cut anywhere, and a file that is not GGUF, with MODEL_INVALID', async () => {
    const path = join(dir, 'cut.gguf');
    for (const length of [0, 3, 4, 24, 100, 5000, 40_000, tiny.length >> 1, tiny.length - 1]) {
      await writeFile(path, tiny.subarray(0, length));
      const error = await failure(readModelInfo(path));
      expect(error.code, `cut at ${length}`).toBe('MODEL_INVALID');
    }
    await writeFile(path, Buffer.alloc(4096, 0x41));
    expect((await failure(readModelInfo(path))).code).toBe('MODEL_INVALID');
    expect((await failure(readModelInfo(join(dir, 'missing.gguf')))).code).toBe('MODEL_NOT_FOUND');
    expect((await failure(readModelInfo(dir))).code).toBe('MODEL_INVALID');
  });
});
