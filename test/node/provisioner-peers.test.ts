/**
 * The provisioner's side of models from peers, with real files, a real SQLite catalog and a real
 * HTTP source on 127.0.0.1: a holder serves only its catalog's files by sha256 and never ends a read
 * cleanly after part of a file that was removed; a fetcher takes a model from the holders the
 * cluster names (a stand-in for the p2p link, which models-peers.test.ts runs for real), continues a
 * cut transfer on the next holder from the bytes it has, and asks only the hive `from` names. A file
 * of several pieces comes from several holders at once, every piece checked against the holders'
 * piece list: a bad piece is fetched again from another holder, a holder that dies leaves its pieces
 * to the others, and a fetch cut everywhere goes on after a restart with the pieces it has. A model
 * downloaded or taken from a peer has its piece list from the pass that checked its sha256.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parseModelRef, type PeerHolder, type PeerNetwork } from '../../src/node/models/index.js';
import type { Provisioner } from '../../src/node/models/provisioner.js';
import { createModelCatalog } from '../../src/node/store/model-catalog.js';
import { createModelPieces } from '../../src/node/store/model-pieces.js';
import { openDatabase, type Database } from '../../src/node/store/db.js';
import { RbeeError } from '../../src/shared/errors.js';
import { serveBytes } from './gguf-http-server.js';
import { filesUnder, setupProvisionerTests, type Fixture } from './provisioner-fixture.js';

const fx: Fixture = setupProvisionerTests();
/** The holders' own databases, closed after each test. */
const opened: Database[] = [];
afterEach(() => {
  for (const db of opened.splice(0)) db.close();
});

/** Piece size of the holders in the tests of fetches in pieces: the tiny model is 8 of them. */
const PIECE = 128 * 1024;

/** A holder with the tiny model in its catalog (downloaded from the test server). */
async function holderWithTiny(
  name: string,
  pieceBytes?: number,
): Promise<{ provisioner: Provisioner; url: string; path: string }> {
  const url = `${fx.server.origin}/m/tiny.gguf`;
  fx.server.route('/m/tiny.gguf', serveBytes(fx.tiny));
  const dir = join(fx.dir, name);
  await mkdir(dir, { recursive: true });
  const db = openDatabase(join(dir, 'rbee.db'));
  opened.push(db);
  const provisioner = fx.make({
    catalog: createModelCatalog(db),
    modelsDir: join(dir, 'models'),
    pieces: createModelPieces(db),
    ...(pieceBytes === undefined ? {} : { pieceBytes }),
  });
  const { model } = await provisioner.ensure(parseModelRef(url));
  expect(model.sha256).toBe(fx.tinySha);
  return { provisioner, url, path: model.path };
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Buffer.concat(parts);
}

interface FakeHolder {
  holder: PeerHolder;
  provisioner: Provisioner;
  cutAfter?: number;
  /** Its link breaks in the middle of its read number this (from 1) and every one after. */
  dieAtRead?: number;
  /** Every chunk it sends has its first byte flipped (its disk rotted after it listed its pieces). */
  corrupt?: boolean;
}

/** The cluster as the fetcher sees it: these holders, each read through `read` (or its provisioner). */
function network(
  holders: FakeHolder[],
): PeerNetwork & { reads: { peer: string; offset: number; length?: number }[] } {
  const reads: { peer: string; offset: number; length?: number }[] = [];
  const readsBy = (peer: string): number => reads.filter((r) => r.peer === peer).length;
  return {
    reads,
    async pieces(peer, sha256, { signal }) {
      const entry = holders.find((h) => h.holder.id === peer)!;
      return { ...(await entry.provisioner.modelPieces(sha256, { signal })), serving: 0 };
    },
    // every holder holds the model asked for by ref or sha256; a repo's files by their refs
    holders: ({ ref, sha256, refPrefix }) =>
      holders
        .map((h) => h.holder)
        .filter(
          (h) =>
            h.sha256 === sha256 ||
            ref !== undefined ||
            (refPrefix !== undefined && h.ref.startsWith(refPrefix)),
        ),
    async *read(peer, params, { signal }) {
      reads.push({
        peer,
        offset: params.offset,
        ...(params.length === undefined ? {} : { length: params.length }),
      });
      const entry = holders.find((h) => h.holder.id === peer)!;
      if (entry.dieAtRead !== undefined && readsBy(peer) >= entry.dieAtRead) {
        let first = true;
        for await (const chunk of entry.provisioner.readModel(params.sha256, { ...params, signal })) {
          if (!first) break;
          first = false;
          yield chunk.subarray(0, chunk.byteLength >> 1);
        }
        throw new RbeeError('NODE_UNREACHABLE', 'the connection was reset');
      }
      // the holder's link breaks at this byte of the file, however often it is asked
      let sent = params.offset;
      for await (const chunk of entry.provisioner.readModel(params.sha256, { ...params, signal })) {
        if (entry.cutAfter !== undefined && sent + chunk.byteLength > entry.cutAfter) {
          yield chunk.subarray(0, entry.cutAfter - sent);
          throw new RbeeError('NODE_UNREACHABLE', 'the connection was reset');
        }
        sent += chunk.byteLength;
        if (entry.corrupt === true) {
          const copy = Buffer.from(chunk);
          copy[0] = copy[0]! ^ 0xff;
          yield copy;
        } else {
          yield chunk;
        }
      }
    },
  };
}

const holderOf = (id: string, bytes: number, ref = 'https://example.invalid/tiny.gguf'): PeerHolder => ({
  id,
  name: id,
  ref,
  sha256: fx.tinySha,
  bytes,
});

describe('models from peers (provisioner)', () => {
  it('serves only catalog files by sha256, and a removal ends a read with an error, not a short clean end', async () => {
    const { provisioner, url } = await holderWithTiny('alpha');
    const whole = await collect(
      provisioner.readModel(fx.tinySha, { offset: 0, signal: new AbortController().signal }),
    );
    expect(whole.equals(fx.tiny)).toBe(true);
    const tail = await collect(
      provisioner.readModel(fx.tinySha, { offset: 1000, length: 10, signal: new AbortController().signal }),
    );
    expect(tail.equals(fx.tiny.subarray(1000, 1010))).toBe(true);
    await expect(
      collect(provisioner.readModel('0'.repeat(64), { offset: 0, signal: new AbortController().signal })),
    ).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' });

    const reading = provisioner.readModel(fx.tinySha, { offset: 0, signal: new AbortController().signal });
    const iterator = reading[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(first.done).toBe(false);
    await provisioner.remove(url);
    const rest = (async () => {
      for (;;) if ((await iterator.next()).done === true) return 'ended cleanly';
    })();
    await expect(rest).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' });
  });

  it('continues a transfer cut on one holder from the bytes it has, on the next holder', async () => {
    const alpha = await holderWithTiny('alpha');
    const gamma = await holderWithTiny('gamma');
    const cutAfter = 300 * 1024;
    const peers = network([
      { holder: holderOf('alpha', fx.tiny.length), provisioner: alpha.provisioner, cutAfter },
      { holder: holderOf('gamma', fx.tiny.length), provisioner: gamma.provisioner },
    ]);
    fx.server.hits.clear();
    const messages: string[] = [];
    const { model, cached } = await fx.make({ peers: () => peers }).ensure(parseModelRef(alpha.url), {
      onProgress: (p) => {
        if (p.message !== undefined) messages.push(p.message);
      },
    });
    expect(cached).toBe(false);
    expect(model.sha256).toBe(fx.tinySha);
    // alpha got further, so it is asked again from there; it breaks at once, so gamma goes on
    expect(peers.reads).toEqual([
      { peer: 'alpha', offset: 0 },
      { peer: 'alpha', offset: cutAfter },
      { peer: 'gamma', offset: cutAfter },
    ]);
    // nothing came from the model's own source
    expect(fx.server.hits.get('/m/tiny.gguf') ?? 0).toBe(0);
    expect(messages.some((m) => m.includes('from hive alpha') && m.includes('broke off'))).toBe(true);
    expect((await filesUnder(fx.modelsDir)).filter((f) => f.includes('.partial'))).toEqual([]);
  });

  it('asks only the hive `from` names, and says so when no live hive of that name holds it', async () => {
    const alpha = await holderWithTiny('alpha');
    const gamma = await holderWithTiny('gamma');
    const peers = network([
      { holder: holderOf('alpha', fx.tiny.length), provisioner: alpha.provisioner },
      { holder: holderOf('gamma', fx.tiny.length), provisioner: gamma.provisioner },
    ]);
    const fetcher = fx.make({ peers: () => peers });
    await expect(fetcher.ensure(parseModelRef(alpha.url), { from: 'delta' })).rejects.toMatchObject({
      code: 'MODEL_NOT_FOUND',
    });
    const { model } = await fetcher.ensure(parseModelRef(alpha.url), { from: 'gamma' });
    expect(model.sha256).toBe(fx.tinySha);
    expect(peers.reads).toEqual([{ peer: 'gamma', offset: 0 }]);
  });

  it('picks a file of hf:org/repo:QUANT among those hives hold when the repo listing is out of reach', async () => {
    const alpha = await holderWithTiny('alpha');
    // the endpoint drops every connection: no listing
    fx.server.route('/api/models/test/tiny', (_req, res) => void res.destroy());
    const peers = network([
      {
        holder: holderOf('alpha', fx.tiny.length, 'hf:test/tiny/Tiny-Q8_0.gguf'),
        provisioner: alpha.provisioner,
      },
    ]);
    const messages: string[] = [];
    const { model } = await fx.make({ peers: () => peers }).ensure(parseModelRef('hf:test/tiny:Q8_0'), {
      onProgress: (p) => {
        if (p.message !== undefined) messages.push(p.message);
      },
    });
    expect(model).toMatchObject({ ref: 'hf:test/tiny/Tiny-Q8_0.gguf', sha256: fx.tinySha });
    expect(peers.reads).toEqual([{ peer: 'alpha', offset: 0 }]);
    expect(messages.some((m) => m.includes('out of reach') && m.includes('hive alpha'))).toBe(true);
  });

  const messagesOf = (messages: string[]) => (p: { message?: string }) => {
    if (p.message !== undefined) messages.push(p.message);
  };
  const readOffsets = (reads: { peer: string; offset: number }[], peer?: string): number[] =>
    reads.filter((r) => peer === undefined || r.peer === peer).map((r) => r.offset);
  const allPieces = (): number[] =>
    [...Array(Math.ceil(fx.tiny.length / PIECE)).keys()].map((i) => i * PIECE);

  it('fetches a file of several pieces from two holders at once, each piece once, byte-identical', async () => {
    const alpha = await holderWithTiny('alpha', PIECE);
    const gamma = await holderWithTiny('gamma', PIECE);
    const peers = network([
      { holder: holderOf('alpha', fx.tiny.length), provisioner: alpha.provisioner },
      { holder: holderOf('gamma', fx.tiny.length), provisioner: gamma.provisioner },
    ]);
    fx.server.hits.clear();
    const froms = new Set<string>();
    const fetcher = fx.make({ peers: () => peers, pieces: createModelPieces(fx.db) });
    const { model } = await fetcher.ensure(parseModelRef(alpha.url), {
      onProgress: (p) => {
        if (p.phase === 'downloading' && p.from !== undefined) froms.add(p.from);
      },
    });
    expect(model.sha256).toBe(fx.tinySha);
    expect((await readFile(model.path)).equals(fx.tiny)).toBe(true);
    // every piece came once, in ranges, and both holders sent some
    expect(readOffsets(peers.reads).sort((a, b) => a - b)).toEqual(allPieces());
    expect(peers.reads.every((r) => r.length !== undefined && r.length <= PIECE)).toBe(true);
    expect(readOffsets(peers.reads, 'alpha').length).toBeGreaterThan(0);
    expect(readOffsets(peers.reads, 'gamma').length).toBeGreaterThan(0);
    expect([...froms]).toEqual([expect.stringMatching(/^hives (alpha, gamma|gamma, alpha) over the LAN$/)]);
    expect(fx.server.hits.get('/m/tiny.gguf') ?? 0).toBe(0);
    expect((await filesUnder(fx.modelsDir)).filter((f) => f.includes('.partial'))).toEqual([]);
    // the fetcher serves the same piece list in turn, kept in its database
    const signal = new AbortController().signal;
    const list = await alpha.provisioner.modelPieces(fx.tinySha, { signal });
    expect(list.hashes).toHaveLength(allPieces().length);
    expect(createModelPieces(fx.db).get(fx.tinySha, 32 * 1024 * 1024)).toEqual(list);
    expect(await fetcher.modelPieces(fx.tinySha, { signal })).toEqual(list);
  });

  it('discards a piece that fails its sha256, marks its holder, and fetches the piece from another', async () => {
    const alpha = await holderWithTiny('alpha', PIECE);
    const gamma = await holderWithTiny('gamma', PIECE);
    const peers = network([
      { holder: holderOf('alpha', fx.tiny.length), provisioner: alpha.provisioner, corrupt: true },
      { holder: holderOf('gamma', fx.tiny.length), provisioner: gamma.provisioner },
    ]);
    fx.server.hits.clear();
    const messages: string[] = [];
    const { model } = await fx.make({ peers: () => peers }).ensure(parseModelRef(alpha.url), {
      onProgress: messagesOf(messages),
    });
    expect(model.sha256).toBe(fx.tinySha);
    expect((await readFile(model.path)).equals(fx.tiny)).toBe(true);
    // alpha's first piece failed and it was not asked again; gamma sent every piece, that one too
    expect(readOffsets(peers.reads, 'alpha')).toHaveLength(1);
    expect(readOffsets(peers.reads, 'gamma').sort((a, b) => a - b)).toEqual(allPieces());
    expect(messages.some((m) => m.includes('from hive alpha has sha256') && m.includes('discarded'))).toBe(
      true,
    );
    expect(fx.server.hits.get('/m/tiny.gguf') ?? 0).toBe(0);
  });

  it('gives the pieces of a holder that dies mid-piece to the other holder', async () => {
    const alpha = await holderWithTiny('alpha', PIECE);
    const gamma = await holderWithTiny('gamma', PIECE);
    const peers = network([
      { holder: holderOf('alpha', fx.tiny.length), provisioner: alpha.provisioner, dieAtRead: 2 },
      { holder: holderOf('gamma', fx.tiny.length), provisioner: gamma.provisioner },
    ]);
    fx.server.hits.clear();
    const messages: string[] = [];
    const { model } = await fx.make({ peers: () => peers }).ensure(parseModelRef(alpha.url), {
      onProgress: messagesOf(messages),
    });
    expect((await readFile(model.path)).equals(fx.tiny)).toBe(true);
    const [, died] = readOffsets(peers.reads, 'alpha');
    expect(died).toBeDefined();
    expect(readOffsets(peers.reads, 'gamma')).toContain(died);
    expect(messages.some((m) => m.includes('hive alpha') && m.includes('its pieces go to the others'))).toBe(
      true,
    );
    expect(fx.server.hits.get('/m/tiny.gguf') ?? 0).toBe(0);
  });

  it('goes on after a restart with the pieces a fetch cut on every holder had checked', async () => {
    const alpha = await holderWithTiny('alpha', PIECE);
    const gamma = await holderWithTiny('gamma', PIECE);
    // the model's own source is out of reach too
    fx.server.route('/m/tiny.gguf', (_req, res) => void res.destroy());
    const dying = network([
      { holder: holderOf('alpha', fx.tiny.length), provisioner: alpha.provisioner, dieAtRead: 2 },
      { holder: holderOf('gamma', fx.tiny.length), provisioner: gamma.provisioner, dieAtRead: 3 },
    ]);
    await expect(fx.make({ peers: () => dying }).ensure(parseModelRef(alpha.url))).rejects.toBeDefined();
    expect(fx.catalog.list()).toEqual([]);
    // one piece from alpha, two from gamma were whole before they died
    const partials = (await filesUnder(fx.modelsDir)).filter((f) => f.endsWith('.peer.partial'));
    expect(partials).toHaveLength(1);
    const sidecar = JSON.parse(await readFile(`${partials[0]}.json`, 'utf8')) as {
      durableBytes: number;
      pieces?: number[];
    };
    const kept = sidecar.durableBytes / PIECE + (sidecar.pieces?.length ?? 0);
    expect(kept).toBe(3);

    // a restarted hive (a new provisioner on the same disk and catalog), both holders back
    const healthy = network([
      { holder: holderOf('alpha', fx.tiny.length), provisioner: alpha.provisioner },
      { holder: holderOf('gamma', fx.tiny.length), provisioner: gamma.provisioner },
    ]);
    const { model } = await fx.make({ peers: () => healthy }).ensure(parseModelRef(alpha.url));
    expect((await readFile(model.path)).equals(fx.tiny)).toBe(true);
    // only the pieces missing were fetched
    expect(healthy.reads).toHaveLength(allPieces().length - kept);
    expect((await filesUnder(fx.modelsDir)).filter((f) => f.includes('.partial'))).toEqual([]);
  });
});

describe('piece lists from the pass that checks a model', () => {
  /** The tiny model's piece list, hashed here slice by slice. */
  const tinyPieces = (pieceBytes: number) => ({
    pieceBytes,
    hashes: [...Array(Math.ceil(fx.tiny.length / pieceBytes)).keys()].map((i) =>
      createHash('sha256')
        .update(fx.tiny.subarray(i * pieceBytes, (i + 1) * pieceBytes))
        .digest('hex'),
    ),
  });
  const signal = new AbortController().signal;

  it('a downloaded model has its piece list at once: its hive answers without reading the file again', async () => {
    const alpha = await holderWithTiny('alpha', PIECE);
    // the bytes on disk change under the catalog: a list computed from the file now would fail
    // the sha256 check (CHECKSUM_MISMATCH); the one from the download is the answer
    await writeFile(alpha.path, Buffer.alloc(fx.tiny.length));
    expect(await alpha.provisioner.modelPieces(fx.tinySha, { signal })).toEqual(tinyPieces(PIECE));
  });

  it('a model from one peer, its transfer cut and continued from the bytes it had, has its piece list too', async () => {
    const alpha = await holderWithTiny('alpha');
    const gamma = await holderWithTiny('gamma');
    // cut inside a piece, so the continued transfer re-hashes a prefix that ends mid-piece
    const cutAfter = 3 * PIECE + 1000;
    const peers = network([
      { holder: holderOf('alpha', fx.tiny.length), provisioner: alpha.provisioner, cutAfter },
      { holder: holderOf('gamma', fx.tiny.length), provisioner: gamma.provisioner },
    ]);
    const fetcher = fx.make({ peers: () => peers, pieces: createModelPieces(fx.db), pieceBytes: PIECE });
    const { model } = await fetcher.ensure(parseModelRef(alpha.url));
    expect(peers.reads.map((r) => r.offset)).toEqual([0, cutAfter, cutAfter]);
    await writeFile(model.path, Buffer.alloc(fx.tiny.length));
    expect(await fetcher.modelPieces(fx.tinySha, { signal })).toEqual(tinyPieces(PIECE));
    expect(createModelPieces(fx.db).get(fx.tinySha, PIECE)).toEqual(tinyPieces(PIECE));
  });
});
