/**
 * Downloads that are cut: retried with backoff, resumed with Range + If-Range where the server
 * allows it, restarted where it does not, and never leaving a half-written file in use.
 */
import { appendFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { generateTestModel } from '../../src/engine/gguf/index.js';
import { modelDirName, parseModelRef } from '../../src/node/models/model-ref.js';
import type { ProvisionProgress } from '../../src/node/models/provisioner.js';
import { waitFor } from '../helpers/wait-for.js';
import { serveBadRange, serveBytes, serveCuts, type TestServer } from './gguf-http-server.js';
import {
  expectNothingLeft,
  failure,
  filesUnder,
  sha256,
  shaOfFile,
  setupProvisionerTests,
} from './provisioner-fixture.js';

const fx = setupProvisionerTests();
const url = (path: string): string => `${fx.server.origin}${path}`;
const rangesSeen = (server: TestServer, path: string): (string | undefined)[] =>
  server.requests.filter((r) => r.path === path).map((r) => r.headers.range);

/** Where the partial of a URL download lands, and its sidecar. */
function partialOf(path: string): { partial: string; sidecar: string } {
  const ref = parseModelRef(url(path));
  const name = path.split('/').pop() ?? '';
  const partial = join(fx.modelsDir, modelDirName(ref), `${name}.partial`);
  return { partial, sidecar: `${partial}.json` };
}

describe('resume after a cut', () => {
  it('retries inside one ensure and resumes with Range + If-Range; the sha256 covers the whole file', async () => {
    const half = fx.tiny.length >> 1;
    fx.server.route('/r1/x.gguf', serveCuts(fx.tiny, [half]));
    const events: ProvisionProgress[] = [];
    const { model } = await fx.make().ensure(parseModelRef(url('/r1/x.gguf')), {
      onProgress: (p) => events.push(p),
    });

    expect(model.sha256).toBe(fx.tinySha);
    expect(await shaOfFile(model.path)).toBe(fx.tinySha);
    const [first, second, ...more] = fx.server.requests.filter((r) => r.path === '/r1/x.gguf');
    expect(more).toEqual([]);
    expect(first?.headers.range).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(second?.headers.range ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(half);
    expect(second?.headers['if-range']).toMatch(/^"[0-9a-f]{16}"$/);
    const retry = events.find((e) => e.phase === 'retrying');
    expect(retry?.message).toMatch(/interrupted .*attempt 2 of 4/);
    // After the retry, progress starts from the kept bytes, not from zero.
    const after = events
      .slice(events.indexOf(retry as ProvisionProgress) + 1)
      .find((e) => e.phase === 'downloading');
    expect(after?.bytes).toBe(resumedAt);
    expect(await filesUnder(fx.modelsDir)).toEqual([model.path]);
  });

  it('with no retries left: keeps the partial and its sidecar (no row); a restarted node resumes it', async () => {
    const half = fx.tiny.length >> 1;
    fx.server.route('/r2/x.gguf', serveCuts(fx.tiny, [half]));
    const ref = parseModelRef(url('/r2/x.gguf'));
    const error = await failure(fx.make({ retries: 0 }).ensure(ref));
    expect(error.code).toBe('DOWNLOAD_TRUNCATED');
    const { partial, sidecar } = partialOf('/r2/x.gguf');
    expect(await filesUnder(fx.modelsDir)).toEqual([partial, sidecar]);
    expect(fx.catalog.list()).toEqual([]);
    const kept = (await stat(partial)).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(half);
    expect(JSON.parse(await readFile(sidecar, 'utf8'))).toMatchObject({
      url: url('/r2/x.gguf'),
      totalBytes: fx.tiny.length,
      etag: expect.stringMatching(/^"/) as string,
      durableBytes: kept,
    });
    // Bytes past the synced point (what a power cut can leave) must be dropped, not trusted.
    await appendFile(partial, Buffer.alloc(1000, 0x55));

    const restarted = fx.make();
    const report = await restarted.reconcile();
    expect(report.keptPartials).toEqual([partial]);
    expect(report.removedPartials).toEqual([]);
    const { model } = await restarted.ensure(ref);
    expect(rangesSeen(fx.server, '/r2/x.gguf')).toEqual([undefined, `bytes=${kept}-`]);
    expect(await shaOfFile(model.path)).toBe(fx.tinySha);
    expect(model.sha256).toBe(fx.tinySha);
    expect(await filesUnder(fx.modelsDir)).toEqual([model.path]);
  });

  it('a server that advertises ranges but answers 200 is restarted from zero, still correct', async () => {
    fx.server.route('/r3/x.gguf', serveCuts(fx.tiny, [fx.tiny.length >> 1], { ranges: 'ignore' }));
    const { model } = await fx.make().ensure(parseModelRef(url('/r3/x.gguf')));
    const ranges = rangesSeen(fx.server, '/r3/x.gguf');
    expect(ranges).toHaveLength(2);
    expect(ranges[1]).toMatch(/^bytes=\d+-$/);
    expect(await shaOfFile(model.path)).toBe(fx.tinySha);
    expect(model.sha256).toBe(fx.tinySha);
  });

  it('a file that changed (new ETag) is fetched anew: If-Range gets the whole new file, no mixture', async () => {
    const other = join(fx.dir, 'other.gguf');
    await generateTestModel({ path: other, preset: 'tiny', seed: 2 });
    const changed = await readFile(other);
    expect(sha256(changed)).not.toBe(fx.tinySha);
    fx.server.route('/r4/x.gguf', serveCuts(fx.tiny, [fx.tiny.length >> 1], { etag: '"v1"' }));
    const ref = parseModelRef(url('/r4/x.gguf'));
    expect((await failure(fx.make({ retries: 0 }).ensure(ref))).code).toBe('DOWNLOAD_TRUNCATED');

    fx.server.route('/r4/x.gguf', serveBytes(changed, { etag: '"v2"' }));
    const { model } = await fx.make().ensure(ref);
    const last = fx.server.requests.at(-1);
    expect(last?.headers['if-range']).toBe('"v1"');
    expect(await shaOfFile(model.path)).toBe(sha256(changed));
    expect(model.sha256).toBe(sha256(changed));
  });

  it('a server without a validator (no ETag or Last-Modified) is not resumed: nothing kept', async () => {
    fx.server.route('/r5/x.gguf', serveCuts(fx.tiny, [1000, 1000], { etag: false }));
    const error = await failure(fx.make({ retries: 1 }).ensure(parseModelRef(url('/r5/x.gguf'))));
    expect(error.code).toBe('DOWNLOAD_TRUNCATED');
    expect(rangesSeen(fx.server, '/r5/x.gguf')).toEqual([undefined, undefined]);
    await expectNothingLeft(fx);
  });

  it('gives up after `retries` attempts without headway, and headway resets the count', async () => {
    const q = fx.tiny.length >> 2;
    // After the first cut, every answer is cut before its first byte: no headway at all.
    fx.server.route('/r6/x.gguf', serveCuts(fx.tiny, [q, 0, 0, 0]));
    const error = await failure(fx.make({ retries: 2 }).ensure(parseModelRef(url('/r6/x.gguf'))));
    expect(error.code).toBe('DOWNLOAD_TRUNCATED');
    expect(rangesSeen(fx.server, '/r6/x.gguf')).toHaveLength(3);

    fx.server.route('/r7/x.gguf', serveCuts(fx.tiny, [q, 2 * q, 3 * q]));
    const { model } = await fx.make({ retries: 1 }).ensure(parseModelRef(url('/r7/x.gguf')));
    expect(rangesSeen(fx.server, '/r7/x.gguf')).toHaveLength(4);
    expect(await shaOfFile(model.path)).toBe(fx.tinySha);
  });

  it('cancel while waiting to retry → JOB_CANCELLED, and the partial is deleted', async () => {
    fx.server.route('/r8/x.gguf', serveCuts(fx.tiny, [fx.tiny.length >> 1]));
    const controller = new AbortController();
    const provisioner = fx.make({ retryDelayMs: 60_000 });
    const ensured = provisioner.ensure(parseModelRef(url('/r8/x.gguf')), {
      signal: controller.signal,
      onProgress: (p) => p.phase === 'retrying' && controller.abort(),
    });
    expect((await failure(ensured)).code).toBe('JOB_CANCELLED');
    await waitFor(() => provisioner.inProgress().length === 0, { what: 'the download to clean up' });
    expect(rangesSeen(fx.server, '/r8/x.gguf')).toHaveLength(1);
    await expectNothingLeft(fx);
  });
});

describe('servers that disagree with themselves', () => {
  it('a Content-Range that does not start where asked → DOWNLOAD_FAILED, nothing left', async () => {
    fx.server.route(
      '/l1/x.gguf',
      serveBadRange(fx.tiny, () => `bytes 0-${fx.tiny.length - 1}/${fx.tiny.length}`, fx.tiny.length >> 1),
    );
    const ref = parseModelRef(url('/l1/x.gguf'));
    const provisioner = fx.make({ retries: 0 });
    expect((await failure(provisioner.ensure(ref))).code).toBe('DOWNLOAD_TRUNCATED');
    const error = await failure(provisioner.ensure(ref));
    expect(error.code).toBe('DOWNLOAD_FAILED');
    expect(error.message).toMatch(/answered bytes 0-/);
    await expectNothingLeft(fx);
  });

  it('a Content-Range with another total makes a retry start from zero, which then succeeds', async () => {
    const size = fx.tiny.length;
    fx.server.route(
      '/l2/x.gguf',
      serveBadRange(fx.tiny, (s) => `bytes ${s}-${size - 1}/${size + 7}`, size >> 1),
    );
    const { model } = await fx.make().ensure(parseModelRef(url('/l2/x.gguf')));
    const ranges = rangesSeen(fx.server, '/l2/x.gguf');
    expect(ranges).toHaveLength(3);
    expect([ranges[0], ranges[2]]).toEqual([undefined, undefined]);
    expect(ranges[1]).toMatch(/^bytes=\d+-$/);
    expect(await shaOfFile(model.path)).toBe(fx.tinySha);
  });

  it('206 to a request for the whole file → DOWNLOAD_FAILED, nothing left', async () => {
    fx.server.route('/l3/x.gguf', (_req, res) => {
      res.writeHead(206, {
        'content-length': fx.tiny.length,
        'content-range': `bytes 0-${fx.tiny.length - 1}/${fx.tiny.length}`,
      });
      res.end(fx.tiny);
    });
    const error = await failure(fx.make().ensure(parseModelRef(url('/l3/x.gguf'))));
    expect(error.code).toBe('DOWNLOAD_FAILED');
    expect(rangesSeen(fx.server, '/l3/x.gguf')).toHaveLength(1);
    await expectNothingLeft(fx);
  });
});

describe('reconcile', () => {
  it('keeps resumable partials, deletes strays, orphan sidecars, and partials older than the limit', async () => {
    fx.server.route('/c1/x.gguf', serveCuts(fx.tiny, [50_000]));
    expect((await failure(fx.make({ retries: 0 }).ensure(parseModelRef(url('/c1/x.gguf'))))).code).toBe(
      'DOWNLOAD_TRUNCATED',
    );
    const young = partialOf('/c1/x.gguf');
    const stray = join(fx.modelsDir, 'hf', 'a', 'b', 'c.gguf.partial');
    const orphan = join(fx.modelsDir, 'hf', 'a', 'd', 'e.gguf.partial.json');
    const badSidecar = join(fx.modelsDir, 'hf', 'a', 'f', 'g.gguf.partial');
    for (const path of [stray, orphan, badSidecar, `${badSidecar}.json`]) {
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, path.endsWith('.json') ? '{"version":1,' : 'half');
    }

    const report = await fx.make().reconcile();
    expect(report.keptPartials).toEqual([young.partial]);
    expect(report.removedPartials.sort()).toEqual([badSidecar, orphan, stray].sort());
    expect(await filesUnder(fx.modelsDir)).toEqual([young.partial, young.sidecar]);
    expect(await filesUnder(join(fx.modelsDir, 'hf'))).toEqual([]);

    const eightDaysOn = Date.now() + 8 * 24 * 3600 * 1000;
    const later = await fx.make({ now: () => eightDaysOn }).reconcile();
    expect(later).toMatchObject({ keptPartials: [], removedPartials: [young.partial] });
    await expectNothingLeft(fx);
  });
});
