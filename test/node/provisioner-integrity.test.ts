/**
 * What makes a downloaded model trustworthy: the sha256 the Hugging Face listing publishes, sizes
 * that agree, enough disk space before the first byte (and a real full disk), and split GGUFs
 * that arrive whole or not at all.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, rmdir, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ggufCandidates, pickGgufFile, type RepoFile } from '../../src/node/models/hf-files.js';
import { parseModelRef } from '../../src/node/models/model-ref.js';
import type { ProvisionProgress } from '../../src/node/models/provisioner.js';
import { serveBytes, serveChunked, serveCuts, serveJson, serveRaw } from './gguf-http-server.js';
import {
  expectNothingLeft,
  failure,
  filesUnder,
  sha256,
  shaOfFile,
  setupProvisionerTests,
} from './provisioner-fixture.js';

const fx = setupProvisionerTests();
const MiB = 1024 * 1024;

/** A `?blobs=true` sibling as the Hugging Face API gives it for an LFS file. */
function sibling(rfilename: string, body: Buffer, sha = sha256(body)) {
  return {
    rfilename,
    size: body.length,
    blobId: 'b'.repeat(40),
    lfs: { sha256: sha, size: body.length, pointerSize: 135 },
  };
}

function serveRepo(repo: string, files: { name: string; body: Buffer; sha?: string }[]): void {
  fx.server.route(
    `/api/models/${repo}`,
    serveJson({ id: repo, siblings: files.map((f) => sibling(f.name, f.body, f.sha)) }),
  );
  for (const f of files) fx.server.route(`/${repo}/resolve/main/${f.name}`, serveBytes(f.body));
}

describe('sha256 from the Hugging Face listing', () => {
  it('asks for ?blobs=true and records the verified LFS sha256', async () => {
    serveRepo('org/sums', [{ name: 'm.Q4_K_M.gguf', body: fx.tiny }]);
    const { model } = await fx.make().ensure(parseModelRef('hf:org/sums'));
    expect(model.sha256).toBe(fx.tinySha);
    expect(fx.server.requests.find((r) => r.path === '/api/models/org/sums')?.url).toBe(
      '/api/models/org/sums?blobs=true',
    );
  });

  it('a mismatch → CHECKSUM_MISMATCH, file deleted, no row (picked or named file alike)', async () => {
    serveRepo('org/bad', [{ name: 'm.Q4_K_M.gguf', body: fx.tiny, sha: 'ab'.repeat(32) }]);
    for (const ref of ['hf:org/bad', 'hf:org/bad/m.Q4_K_M.gguf']) {
      const error = await failure(fx.make().ensure(parseModelRef(ref)));
      expect(error.code, ref).toBe('CHECKSUM_MISMATCH');
      expect(error.details).toMatchObject({ sha256: fx.tinySha, expected: 'ab'.repeat(32) });
      await expectNothingLeft(fx);
    }
    expect(fx.server.hits.get('/org/bad/resolve/main/m.Q4_K_M.gguf')).toBe(2);
  });

  it('catches a kept prefix that rotted on disk before the resume', async () => {
    fx.server.route('/api/models/org/rot', serveJson({ siblings: [sibling('m.gguf', fx.tiny)] }));
    fx.server.route('/org/rot/resolve/main/m.gguf', serveCuts(fx.tiny, [fx.tiny.length >> 1]));
    const ref = parseModelRef('hf:org/rot/m.gguf');
    expect((await failure(fx.make({ retries: 0 }).ensure(ref))).code).toBe('DOWNLOAD_TRUNCATED');
    const partial = join(fx.modelsDir, 'hf', 'org', 'rot', 'm.gguf.partial');
    const bytes = await readFile(partial);
    bytes[100] = (bytes[100] ?? 0) ^ 0xff;
    await writeFile(partial, bytes);
    const error = await failure(fx.make().ensure(ref));
    expect(error.code).toBe('CHECKSUM_MISMATCH');
    await expectNothingLeft(fx);
  });
});

describe('sizes that disagree', () => {
  it('Content-Length other than the listed size → DOWNLOAD_FAILED before writing, nothing left', async () => {
    fx.server.route('/api/models/org/size', serveJson({ siblings: [sibling('m.gguf', fx.tiny)] }));
    fx.server.route('/org/size/resolve/main/m.gguf', serveBytes(fx.tiny.subarray(0, fx.tiny.length - 10)));
    const error = await failure(fx.make().ensure(parseModelRef('hf:org/size/m.gguf')));
    expect(error.code).toBe('DOWNLOAD_FAILED');
    expect(error.message).toMatch(/announces \d+ bytes but the repository listing says \d+/);
    expect(fx.server.hits.get('/org/size/resolve/main/m.gguf')).toBe(1);
    await expectNothingLeft(fx);
  });

  it('Content-Length smaller than the body: the listing catches it, else the GGUF check does', async () => {
    const head = `HTTP/1.1 200 OK\ncontent-type: application/octet-stream\ncontent-length: ${fx.tiny.length - 4096}\nconnection: close\n`;
    fx.server.route('/api/models/org/short', serveJson({ siblings: [sibling('m.gguf', fx.tiny)] }));
    fx.server.route('/org/short/resolve/main/m.gguf', serveRaw(head, fx.tiny));
    fx.server.route('/short/m.gguf', serveRaw(head, fx.tiny));
    expect((await failure(fx.make().ensure(parseModelRef('hf:org/short/m.gguf')))).code).toBe(
      'DOWNLOAD_FAILED',
    );
    await expectNothingLeft(fx);
    const error = await failure(fx.make().ensure(parseModelRef(`${fx.server.origin}/short/m.gguf`)));
    expect(error.code).toBe('MODEL_INVALID');
    expect(error.message).toMatch(/truncated/);
    await expectNothingLeft(fx);
  });
});

describe('disk space', () => {
  it('a reserve the disk cannot keep → DISK_FULL before the first byte, nothing left', async () => {
    fx.server.route('/big/m.gguf', serveBytes(fx.tiny));
    const error = await failure(
      fx.make({ minFreeDiskBytes: 2 ** 52 }).ensure(parseModelRef(`${fx.server.origin}/big/m.gguf`)),
    );
    expect(error.code).toBe('DISK_FULL');
    expect(error.message).toMatch(/not enough disk space/);
    expect(error.details).toMatchObject({ needBytes: fx.tiny.length, reserveBytes: 2 ** 52 });
    await expectNothingLeft(fx);
  });

  it('with listed sizes, DISK_FULL comes before the download is even requested', async () => {
    serveRepo('org/huge', [{ name: 'm.Q8_0.gguf', body: fx.tiny }]);
    const error = await failure(fx.make({ minFreeDiskBytes: 2 ** 52 }).ensure(parseModelRef('hf:org/huge')));
    expect(error.code).toBe('DISK_FULL');
    expect(fx.server.hits.get('/org/huge/resolve/main/m.Q8_0.gguf')).toBeUndefined();
    await expectNothingLeft(fx);
  });
});

describe('a real full disk (an 8 MiB tmpfs as the models directory)', () => {
  let mountDir = '';
  let mountError: string | undefined;
  const big = Buffer.alloc(12 * MiB, 0x47);

  beforeAll(async () => {
    mountDir = await mkdtemp(join(tmpdir(), 'rbee-tmpfs-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountDir], { stdio: 'pipe' });
    } catch (error) {
      mountError = String((error as { stderr?: Buffer }).stderr ?? error).trim();
    }
  });
  afterAll(async () => {
    if (mountError === undefined) execFileSync('umount', [mountDir], { stdio: 'pipe' });
    await rmdir(mountDir);
  });
  beforeEach((ctx) => {
    ctx.skip(mountError !== undefined, `mounting a tmpfs is not permitted here: ${mountError}`);
  });

  const freeOnMount = async (): Promise<number> => {
    const s = await statfs(mountDir);
    return s.bavail * s.bsize;
  };

  it('a Content-Length bigger than the free space → DISK_FULL before any byte is written', async () => {
    fx.server.route('/full/big.gguf', serveBytes(big));
    const provisioner = fx.make({ modelsDir: mountDir, minFreeDiskBytes: 0 });
    const error = await failure(provisioner.ensure(parseModelRef(`${fx.server.origin}/full/big.gguf`)));
    expect(error.code).toBe('DISK_FULL');
    // The up-front check, not ENOSPC from a write.
    expect(error.message).toMatch(/not enough disk space/);
    expect(error.details).toMatchObject({ needBytes: big.length, reserveBytes: 0 });
    await expectNothingLeft(fx, mountDir);
  });

  it('no Content-Length: the writes hit ENOSPC → DISK_FULL, the partial is deleted, space given back', async () => {
    const before = await freeOnMount();
    fx.server.route('/full/chunked.gguf', serveChunked(big));
    const provisioner = fx.make({ modelsDir: mountDir, minFreeDiskBytes: 0 });
    const error = await failure(provisioner.ensure(parseModelRef(`${fx.server.origin}/full/chunked.gguf`)));
    expect(error.code).toBe('DISK_FULL');
    expect(error.message).toMatch(/no space left on the device/);
    await expectNothingLeft(fx, mountDir);
    expect(await freeOnMount()).toBe(before);
  });
});

describe('split GGUF', () => {
  // Part 2 only has to be a GGUF file: validation reads part 1's header and checks the others'
  // size, sha256 and magic.
  const part2 = Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(300_000, 7)]);
  const name1 = 'q/model.Q4_K_M-00001-of-00002.gguf';
  const name2 = 'q/model.Q4_K_M-00002-of-00002.gguf';

  beforeEach(() => {
    serveRepo('org/split', [
      { name: 'model.Q8_0.gguf', body: fx.tiny },
      { name: name1, body: fx.tiny },
      { name: name2, body: part2 },
      // An incomplete set is never a candidate.
      { name: 'model.Q4_0-00001-of-00003.gguf', body: fx.tiny },
    ]);
  });

  it('downloads every part with one progress over the total, and records the first part', async () => {
    const events: ProvisionProgress[] = [];
    const provisioner = fx.make();
    const { model } = await provisioner.ensure(parseModelRef('hf:org/split'), {
      onProgress: (p) => events.push(p),
    });
    const dir = join(fx.modelsDir, 'hf', 'org', 'split', 'q');
    const total = fx.tiny.length + part2.length;
    expect(model).toMatchObject({
      ref: `hf:org/split/${name1}`,
      path: join(dir, 'model.Q4_K_M-00001-of-00002.gguf'),
      bytes: total,
      sha256: fx.tinySha,
      architecture: 'llama',
    });
    expect(await filesUnder(fx.modelsDir)).toEqual([
      model.path,
      join(dir, 'model.Q4_K_M-00002-of-00002.gguf'),
    ]);
    expect(await shaOfFile(join(dir, 'model.Q4_K_M-00002-of-00002.gguf'))).toBe(sha256(part2));
    expect(events.find((e) => e.message?.startsWith('picked'))?.message).toMatch(/split into 2 parts/);
    const downloading = events.filter((e) => e.phase === 'downloading' && e.file !== undefined);
    expect(downloading.every((e) => e.totalBytes === total)).toBe(true);
    expect(downloading.at(-1)).toMatchObject({ bytes: total, file: 'model.Q4_K_M-00002-of-00002.gguf' });
    for (let i = 1; i < downloading.length; i++) {
      expect(downloading[i]!.bytes).toBeGreaterThanOrEqual(downloading[i - 1]!.bytes);
    }

    expect((await provisioner.ensure(parseModelRef('hf:org/split:Q4_K_M'))).cached).toBe(true);
    await provisioner.remove(model.id);
    await expectNothingLeft(fx);
  });

  it('a named first part brings the rest; a single file wins over a split of the same choice', async () => {
    const { model } = await fx.make().ensure(parseModelRef(`hf:org/split/${name1}`));
    expect(model.bytes).toBe(fx.tiny.length + part2.length);
    expect(fx.server.hits.get(`/org/split/resolve/main/${name2}`)).toBe(1);
    const single = await fx.make().ensure(parseModelRef('hf:org/split:Q8_0'));
    expect(single.model.ref).toBe('hf:org/split/model.Q8_0.gguf');
  });

  it('a part that is not GGUF → MODEL_INVALID, no part left', async () => {
    const junk = Buffer.alloc(1000, 0x41);
    serveRepo('org/split', [
      { name: name1, body: fx.tiny },
      { name: name2, body: junk },
    ]);
    const error = await failure(fx.make().ensure(parseModelRef('hf:org/split')));
    expect(error.code).toBe('MODEL_INVALID');
    await expectNothingLeft(fx);
  });

  it('a cut second part keeps both partials; the next ensure fetches only the rest of part 2', async () => {
    fx.server.route(`/org/split/resolve/main/${name2}`, serveCuts(part2, [part2.length >> 1]));
    const ref = parseModelRef('hf:org/split');
    expect((await failure(fx.make({ retries: 0 }).ensure(ref))).code).toBe('DOWNLOAD_TRUNCATED');
    const dir = join(fx.modelsDir, 'hf', 'org', 'split', 'q');
    expect((await filesUnder(fx.modelsDir)).map((p) => p.slice(dir.length + 1))).toEqual([
      'model.Q4_K_M-00001-of-00002.gguf.partial',
      'model.Q4_K_M-00001-of-00002.gguf.partial.json',
      'model.Q4_K_M-00002-of-00002.gguf.partial',
      'model.Q4_K_M-00002-of-00002.gguf.partial.json',
    ]);
    expect(fx.catalog.list()).toEqual([]);
    const { model } = await fx.make().ensure(ref);
    expect(fx.server.hits.get(`/org/split/resolve/main/${name1}`)).toBe(1);
    const ranges = fx.server.requests.filter((r) => r.path.endsWith(name2)).map((r) => r.headers.range);
    expect(ranges).toEqual([undefined, expect.stringMatching(/^bytes=\d+-$/) as string]);
    expect(await shaOfFile(join(dir, 'model.Q4_K_M-00002-of-00002.gguf'))).toBe(sha256(part2));
    expect(model.bytes).toBe(fx.tiny.length + part2.length);
  });

  it('a finished part that no longer matches the listing is fetched anew, not trusted', async () => {
    fx.server.route(`/org/split/resolve/main/${name2}`, serveCuts(part2, [part2.length >> 1]));
    const ref = parseModelRef('hf:org/split');
    expect((await failure(fx.make({ retries: 0 }).ensure(ref))).code).toBe('DOWNLOAD_TRUNCATED');
    const partial1 = join(fx.modelsDir, 'hf', 'org', 'split', name1) + '.partial';
    const bytes = await readFile(partial1);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] ?? 0) ^ 0xff;
    await writeFile(partial1, bytes);
    const { model } = await fx.make().ensure(ref);
    expect(fx.server.hits.get(`/org/split/resolve/main/${name1}`)).toBe(2);
    expect(await shaOfFile(model.path)).toBe(fx.tinySha);
  });

  it('a lost part makes the row stale: reconcile drops it and the orphaned part', async () => {
    const provisioner = fx.make();
    const { model } = await provisioner.ensure(parseModelRef('hf:org/split'));
    await rm(model.path.replace('00001-of', '00002-of'));
    const report = await provisioner.reconcile();
    expect(report.removedRows.map((r) => r.id)).toEqual([model.id]);
    expect(existsSync(model.path)).toBe(false);
    await expectNothingLeft(fx);
  });

  it('candidates: complete sets only, named after part 1, sized as the sum', () => {
    const files: RepoFile[] = [
      { name: 'a.Q4_K_M-00002-of-00002.gguf', bytes: 5 },
      { name: 'a.Q4_K_M-00001-of-00002.gguf', bytes: 7 },
      { name: 'a.Q8_0-00001-of-00002.gguf', bytes: 7 },
      { name: 'a.Q4_K_M.gguf', bytes: 20 },
    ];
    const candidates = ggufCandidates('o/r', files);
    expect(candidates.map((c) => [c.name, c.bytes, c.parts?.length])).toEqual([
      ['a.Q4_K_M-00001-of-00002.gguf', 12, 2],
      ['a.Q4_K_M.gguf', 20, undefined],
    ]);
    // The single file wins though it is bigger; without it the split set is picked.
    expect(pickGgufFile(candidates)?.file.name).toBe('a.Q4_K_M.gguf');
    expect(pickGgufFile(candidates.slice(0, 1), 'Q4_K_M')?.reason).toMatch(/split into 2 parts/);
  });
});
