/**
 * One model file from several hives at once: the file is cut into the fixed-size pieces of the
 * holders' piece list, each holder fetches one piece after another into the one partial file
 * (positional writes), and every piece is checked against its sha256 as it completes. A piece that
 * fails is discarded and fetched again from another holder, and its holder is reported bad; a holder
 * that breaks off or stalls leaves its piece to the others. The sidecar records the checked, synced
 * pieces, so a cut transfer (or a restart of this hive) resumes with the pieces it has. The whole
 * file's sha256 is checked at the end, as for a file from one hive.
 *
 * Choice by load and link: each holder asks for its next piece as soon as it has delivered the last
 * one (work-stealing), so a holder with a faster link or fewer other reads ends up sending more of
 * the file, without any estimate of either; holders start in the order the caller gives them (fewest
 * reads served, then quickest to answer), which decides who takes the first pieces.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { PieceList } from '../store/index.js';
import { createContentHash } from './content-hash.js';
import { createProgressMeter, createStallTimer } from './download-meter.js';
import type { DownloadProgress, DownloadResult } from './download.js';
import { writeError } from './download.js';
import { fileSize } from './model-files.js';
import { discardPartial, readSidecar, writeSidecar, type PartialSidecar } from './partial-file.js';
import {
  contentKey,
  markPeerFailure as mark,
  peerFailure,
  type PeerFailure,
  type PeerHolder,
  type PeerNetwork,
} from './peer-source.js';

export interface FetchPiecesInit {
  peers: PeerNetwork;
  /** Holders of the same file (sha256, size) whose piece lists are `list`, best first. */
  holders: PeerHolder[];
  list: PieceList;
  partialPath: string;
  stallTimeoutMs: number;
  /** Before any byte is written, with the bytes still to come. May throw (DISK_FULL). */
  beforeWrite?: (bytesToWrite: number) => Promise<void>;
  onProgress?: (progress: DownloadProgress) => void;
  /** A holder sent bytes other than its piece list's (`bad`), or stopped serving (`cut`, `refused`). */
  onHolderFailed?: (holder: PeerHolder, kind: PeerFailure, error: RbeeError) => void;
  signal: AbortSignal;
}

export interface FetchPiecesResult extends DownloadResult {
  /** Bytes each holder sent that went into the file, by holder id. */
  sent: Map<string, number>;
}

/** Pieces in a list that fits a file of `bytes`: ceil(bytes / pieceBytes), at least one. */
export function pieceCount(bytes: number, pieceBytes: number): number {
  return Math.max(1, Math.ceil(bytes / pieceBytes));
}

/**
 * The piece list of a file, and its whole sha256, in one read of it. The list is as trustworthy as
 * that sha256 once the caller compared it with the one the catalog recorded.
 */
export async function hashPieces(
  path: string,
  pieceBytes: number,
  signal: AbortSignal,
): Promise<{ sha256: string; bytes: number; list: PieceList }> {
  const hash = createContentHash(pieceBytes);
  for await (const data of createReadStream(path, { highWaterMark: 1024 * 1024, signal })) {
    hash.update(data as Buffer);
  }
  const { sha256, pieces } = hash.digest();
  return { sha256, bytes: hash.bytes, list: pieces ?? { pieceBytes, hashes: [] } };
}

/**
 * Fetches the file into `partialPath` from the holders together. Throws errors `peerFailure`
 * classifies when no holder is left to finish (the checked pieces stay for the next try); anything
 * unclassified (a full disk, a cancel) is the caller's to pass on.
 */
export async function fetchPieces(init: FetchPiecesInit): Promise<FetchPiecesResult> {
  const { partialPath, list, signal } = init;
  const first = init.holders[0];
  if (first === undefined) throw new RbeeError('INTERNAL', 'a fetch in pieces without holders');
  const { sha256, bytes: total } = first;
  const count = pieceCount(total, list.pieceBytes);
  if (list.hashes.length !== count) {
    throw mark(
      'bad',
      new RbeeError(
        'DOWNLOAD_FAILED',
        `the piece list of hive ${first.name} does not fit its ${total}-byte file`,
      ),
    );
  }
  const startOf = (i: number): number => i * list.pieceBytes;
  const lengthOf = (i: number): number => Math.min(list.pieceBytes, total - startOf(i));

  const done = await checkedPieces(init, count, startOf, lengthOf);
  const missing = (): number[] => [...Array(count).keys()].filter((i) => !done.has(i));
  const doneBytes = (): number => [...done].reduce((sum, i) => sum + lengthOf(i), 0);
  await init.beforeWrite?.(total - doneBytes());

  let file: FileHandle;
  try {
    file = await open(partialPath, (await fileSize(partialPath)) === undefined ? 'w' : 'r+');
    // a longer leftover would spoil the whole file's sha256
    if ((await file.stat()).size > total) await file.truncate(total);
  } catch (error) {
    throw writeError(partialPath, error);
  }
  /** The contiguous prefix of checked pieces, which a fetch from one holder can resume too. */
  const prefix = (): number => {
    let i = 0;
    while (done.has(i)) i++;
    return Math.min(total, startOf(i));
  };
  let sidecarWrite = Promise.resolve();
  const record = (): Promise<void> => {
    const sidecar: PartialSidecar = {
      version: 1,
      url: contentKey(sha256),
      totalBytes: total,
      etag: sha256,
      durableBytes: prefix(),
      updatedAt: Date.now(),
      pieceBytes: list.pieceBytes,
      pieces: [...done].filter((i) => startOf(i) >= prefix()).sort((a, b) => a - b),
    };
    // one write at a time, in order: the last one holds every piece
    sidecarWrite = sidecarWrite.then(() => writeSidecar(partialPath, sidecar));
    return sidecarWrite;
  };

  const pending = missing();
  const inFlight = new Map<number, number>();
  const sent = new Map<string, number>();
  const progress = createProgressMeter(init, doneBytes(), total);
  const reportProgress = (force: boolean): void =>
    progress.report(doneBytes() + [...inFlight.values()].reduce((a, b) => a + b, 0), force);
  /** Wakes holders that wait for a piece to become free (one given back by a holder that failed). */
  let wake: () => void = () => undefined;
  let changed = new Promise<void>((resolve) => (wake = resolve));
  const notify = (): void => {
    wake();
    changed = new Promise<void>((resolve) => (wake = resolve));
  };
  let localError: Error | undefined;
  const failed: { holder: PeerHolder; kind: PeerFailure; error: RbeeError }[] = [];
  const stopAll = new AbortController();

  async function fetchPiece(holder: PeerHolder, index: number): Promise<void> {
    const start = startOf(index);
    const length = lengthOf(index);
    const hash = createHash('sha256');
    const stall = createStallTimer(init.stallTimeoutMs);
    let got = 0;
    // what arrived is written in blocks, not per frame; a piece cut before its end is fetched
    // again whole, so what is still pending then is of no use
    const pending: Uint8Array[] = [];
    let pendingBytes = 0;
    const flush = async (): Promise<void> => {
      if (pendingBytes === 0) return;
      try {
        await file.writev(pending, start + got - pendingBytes);
      } catch (error) {
        throw writeError(partialPath, error);
      }
      pending.length = 0;
      pendingBytes = 0;
    };
    inFlight.set(index, 0);
    try {
      try {
        for await (const chunk of init.peers.read(
          holder.id,
          { sha256, offset: start, length },
          { signal: AbortSignal.any([signal, stopAll.signal, stall.signal]) },
        )) {
          stall.reset();
          if (got + chunk.byteLength > length) {
            throw mark(
              'bad',
              new RbeeError('DOWNLOAD_FAILED', `hive ${holder.name} sent more than piece ${index} holds`),
            );
          }
          pending.push(chunk);
          pendingBytes += chunk.byteLength;
          hash.update(chunk);
          got += chunk.byteLength;
          if (pendingBytes >= WRITE_BLOCK_BYTES) await flush();
          inFlight.set(index, got);
          reportProgress(false);
        }
      } catch (error) {
        if (signal.aborted || stopAll.signal.aborted || peerFailure(error) !== undefined) throw error;
        if (!isTransferError(error)) throw error;
        const rbee = toRbeeError(error, 'DOWNLOAD_FAILED');
        const refused = rbee.code === 'MODEL_NOT_FOUND' || rbee.code === 'NOT_FOUND';
        throw mark(
          refused ? 'refused' : 'cut',
          new RbeeError(
            'DOWNLOAD_FAILED',
            stall.signal.aborted
              ? `hive ${holder.name} sent nothing for ${init.stallTimeoutMs} ms`
              : `the transfer from hive ${holder.name} broke off (${rbee.message})`,
            { cause: error, details: { hive: holder.name } },
          ),
        );
      }
      if (got < length) {
        throw mark(
          'cut',
          new RbeeError(
            'DOWNLOAD_TRUNCATED',
            `hive ${holder.name} ended piece ${index} after ${got} of ${length} bytes`,
          ),
        );
      }
      const digest = hash.digest('hex');
      if (digest !== list.hashes[index]) {
        // the bytes stay in the file until another holder's overwrite them; the piece is not recorded
        throw mark(
          'bad',
          new RbeeError(
            'CHECKSUM_MISMATCH',
            `piece ${index} from hive ${holder.name} has sha256 ${digest}, not the ${list.hashes[index]} its piece list has`,
            { details: { hive: holder.name, sha256, piece: index } },
          ),
        );
      }
      await flush();
      try {
        await file.datasync();
      } catch (error) {
        throw writeError(partialPath, error);
      }
      done.add(index);
      // counted once: among the pieces done now
      inFlight.set(index, 0);
      sent.set(holder.id, (sent.get(holder.id) ?? 0) + length);
      await record().catch((error: unknown) => {
        throw writeError(partialPath, error);
      });
    } finally {
      stall.clear();
    }
  }

  /** One holder's loop: the next free piece, until none is left or it fails. */
  async function serve(holder: PeerHolder): Promise<void> {
    try {
      for (;;) {
        if (signal.aborted || stopAll.signal.aborted) return;
        const index = pending.shift();
        if (index === undefined) {
          // every piece is taken: wait while another holder may still give one back
          if (inFlight.size === 0) return;
          await changed;
          continue;
        }
        try {
          await fetchPiece(holder, index);
          inFlight.delete(index);
          notify();
        } catch (error) {
          // the piece goes back for the others, first in line (before it leaves the pieces in flight,
          // so that no holder sees nothing left to do in between)
          pending.unshift(index);
          inFlight.delete(index);
          const kind = peerFailure(error);
          if (kind === undefined) {
            localError ??= error instanceof Error ? error : toRbeeError(error);
            stopAll.abort(error);
          } else {
            const rbee = toRbeeError(error);
            failed.push({ holder, kind, error: rbee });
            init.onHolderFailed?.(holder, kind, rbee);
          }
          notify();
          return;
        }
        reportProgress(false);
      }
    } finally {
      notify();
    }
  }

  try {
    reportProgress(true);
    await record();
    await Promise.all(init.holders.map((holder) => serve(holder)));
    if (signal.aborted) throw toRbeeError(signal.reason);
    if (localError !== undefined) throw localError;
    if (done.size < count) {
      const bad = failed.length > 0 && failed.every((f) => f.kind === 'bad');
      const last = failed.at(-1)?.error;
      throw mark(
        bad ? 'bad' : 'cut',
        new RbeeError(
          'DOWNLOAD_FAILED',
          `no hive is left to send ${count - done.size} of ${count} pieces${last === undefined ? '' : ` (${last.message})`}`,
          { details: { pieces: count, missing: count - done.size } },
        ),
      );
    }
    reportProgress(true);
  } finally {
    progress.stop();
    await sidecarWrite.catch(() => undefined);
    await file.close().catch(() => undefined);
  }

  // every piece checked; the whole file is checked too, as for a file from one hive
  const whole = createHash('sha256');
  for await (const chunk of createReadStream(partialPath, { end: total - 1, signal })) {
    whole.update(chunk as Buffer);
  }
  if ((await fileSize(partialPath)) !== total || whole.digest('hex') !== sha256) {
    await discardPartial(partialPath);
    throw mark(
      'bad',
      new RbeeError(
        'CHECKSUM_MISMATCH',
        `the file from hives ${init.holders.map((h) => h.name).join(', ')} does not have the sha256 ${sha256} their catalogs list, though every piece matched their piece list`,
        { details: { sha256 } },
      ),
    );
  }
  return { bytes: total, sha256, sent };
}

/**
 * Pieces of a partial of the same content that are already here and still match their sha256:
 * those the sidecar records, and those inside its durable prefix (a fetch from one hive writes only
 * that). Anything else about the partial is of no use, and it starts afresh.
 */
async function checkedPieces(
  init: FetchPiecesInit,
  count: number,
  startOf: (i: number) => number,
  lengthOf: (i: number) => number,
): Promise<Set<number>> {
  const { partialPath, list, signal } = init;
  const { sha256, bytes: total } = init.holders[0]!;
  const done = new Set<number>();
  const sidecar = await readSidecar(partialPath);
  const size = await fileSize(partialPath);
  if (
    sidecar === undefined ||
    size === undefined ||
    sidecar.url !== contentKey(sha256) ||
    sidecar.totalBytes !== total
  ) {
    await discardPartial(partialPath);
    return done;
  }
  const claimed = new Set(sidecar.pieceBytes === list.pieceBytes ? (sidecar.pieces ?? []) : []);
  for (let i = 0; i < count; i++) {
    if (startOf(i) + lengthOf(i) <= sidecar.durableBytes) claimed.add(i);
  }
  for (const i of [...claimed].sort((a, b) => a - b)) {
    if (i >= count || startOf(i) + lengthOf(i) > size) continue;
    const hash = createHash('sha256');
    try {
      for await (const chunk of createReadStream(partialPath, {
        start: startOf(i),
        end: startOf(i) + lengthOf(i) - 1,
        signal,
      })) {
        hash.update(chunk as Buffer);
      }
    } catch (error) {
      if (signal.aborted) throw toRbeeError(signal.reason);
      throw writeError(partialPath, error);
    }
    if (hash.digest('hex') === list.hashes[i]) done.add(i);
  }
  return done;
}

/** Bytes of a piece received before they are written to the file in one go. */
const WRITE_BLOCK_BYTES = 1024 * 1024;

/** Errors of the transfer itself (the stream, the peer), as opposed to this machine's disk. */
function isTransferError(error: unknown): boolean {
  if (!(error instanceof RbeeError)) return true;
  return (
    error.code !== 'DISK_FULL' && !(error.code === 'DOWNLOAD_FAILED' && error.details?.path !== undefined)
  );
}
