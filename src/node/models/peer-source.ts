/**
 * Models from other hives of the cluster, over the LAN: which live hives hold a model (the same ref,
 * or the same sha256), and one file fetched from one of them into its own partial
 * (`<file>.peer.partial`, apart from the one a download from the model's own source writes). The
 * bytes are addressed by their sha256, so a transfer cut mid-way continues from its durable prefix
 * on any holder of the same file; the whole file's sha256 is checked against the holder's before
 * the caller lets it into the catalog.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { createContentHash } from './content-hash.js';
import { writeError } from './download.js';
import { createProgressMeter, createStallTimer } from './download-meter.js';
import type { DownloadProgress, DownloadResult } from './download.js';
import { discardPartial, loadResumePoint, writeSidecar, type PartialSidecar } from './partial-file.js';

/** A live hive whose catalog holds the model. */
export interface PeerHolder {
  /** Its peer id. */
  id: string;
  /** Its node name, for narration. */
  name: string;
  /** The ref its catalog has the model under. */
  ref: string;
  sha256: string;
  bytes: number;
}

/** What the cluster offers the provisioner: the holders of a model, and a byte stream from one. */
export interface PeerNetwork {
  /**
   * Live hives other than this one whose catalog has a model with this ref, this sha256, or a ref
   * that starts with `refPrefix` (the files of one Hugging Face repo: `hf:org/repo/`).
   */
  holders(match: { ref?: string; sha256?: string; refPrefix?: string }): PeerHolder[];
  /** The bytes of the file with `sha256` in `peer`'s catalog, from `offset` to its end. */
  read(
    peer: string,
    params: { sha256: string; offset: number; length?: number },
    options: { signal: AbortSignal },
  ): AsyncIterable<Uint8Array>;
  /**
   * The sha256 of each piece of the file with `sha256` in `peer`'s catalog, and how many reads that
   * hive serves now. Absent where the cluster cannot tell (a model then comes from one hive at a time).
   */
  pieces?(peer: string, sha256: string, options: { signal: AbortSignal }): Promise<HolderPieces>;
}

/** A holder's piece list of one file, and its load when it answered. */
export interface HolderPieces {
  pieceBytes: number;
  hashes: string[];
  /** `model.read` streams it was serving. */
  serving: number;
}

/** Where a model's file is written while it comes from a peer. */
export const peerPartialPathOf = (finalPath: string): string => `${finalPath}.peer.partial`;

/** The key a peer partial's sidecar records: the content, not the hive it came from. */
export const contentKey = (sha256: string): string => `rbee-peer:sha256:${sha256}`;

/**
 * - `cut`: the transfer broke off (the holder went away, the stream was closed, it stalled); the
 *   durable prefix stays for the next holder or the next try.
 * - `bad`: the holder sent something else than the file it announced (too many bytes, another
 *   sha256); the partial is gone and the holder should not be asked again.
 * - `refused`: the holder no longer serves it (deleted meanwhile, or an older version).
 */
export type PeerFailure = 'cut' | 'bad' | 'refused';

const failures = new WeakMap<object, PeerFailure>();

export function peerFailure(error: unknown): PeerFailure | undefined {
  return typeof error === 'object' && error !== null ? failures.get(error) : undefined;
}

/** Classifies `error` for `peerFailure` (this file's fetch and peer-pieces.ts's). */
export function markPeerFailure(kind: PeerFailure, error: RbeeError): RbeeError {
  failures.set(error, kind);
  return error;
}

export interface FetchFromPeerInit {
  peers: PeerNetwork;
  holder: PeerHolder;
  partialPath: string;
  stallTimeoutMs: number;
  /** Before any byte is written, with the bytes still to come. May throw (DISK_FULL). */
  beforeWrite?: (bytesToWrite: number) => Promise<void>;
  onProgress?: (progress: DownloadProgress) => void;
  /** The file is synced at least every this many bytes. Defaults to 64 MiB. */
  checkpointBytes?: number;
  /** Piece size of the piece list hashed along with the file (see content-hash.ts). */
  pieceBytes?: number;
  signal: AbortSignal;
}

/**
 * Fetches the holder's file into `partialPath`, resuming a durable prefix of the same content, and
 * checks its size and sha256 against the holder's. Throws errors that `peerFailure` classifies;
 * anything unclassified (a full disk, a cancel) is the caller's to pass on.
 */
export async function fetchFromPeer(init: FetchFromPeerInit): Promise<DownloadResult> {
  const { holder, partialPath, signal } = init;
  const key = contentKey(holder.sha256);
  const point = await loadResumePoint(partialPath, key, signal, init.pieceBytes);
  // a prefix of another size of file is of no use
  const resumed = point !== undefined && point.sidecar.totalBytes === holder.bytes ? point : undefined;
  if (point !== undefined && resumed === undefined) await discardPartial(partialPath);
  const hash = resumed?.hash ?? createContentHash(init.pieceBytes);
  let position = resumed?.bytes ?? 0;
  const from = `hive ${holder.name}`;

  if (position < holder.bytes) {
    await init.beforeWrite?.(holder.bytes - position);
    let sidecar: PartialSidecar = {
      version: 1,
      url: key,
      totalBytes: holder.bytes,
      etag: holder.sha256,
      durableBytes: position,
      updatedAt: Date.now(),
    };
    await writeSidecar(partialPath, sidecar);
    let file: FileHandle;
    try {
      file = await open(partialPath, position > 0 ? 'r+' : 'w');
      if (position > 0) await file.truncate(position);
    } catch (error) {
      throw writeError(partialPath, error);
    }
    const stall = createStallTimer(init.stallTimeoutMs);
    const progress = createProgressMeter(init, position, holder.bytes);
    const checkpointBytes = init.checkpointBytes ?? 64 * 1024 * 1024;
    let synced = position;
    // chunks are written to the file in blocks: one write per WRITE_BLOCK_BYTES, not per frame
    const pending: Uint8Array[] = [];
    let pendingBytes = 0;
    const flush = async (): Promise<void> => {
      if (pendingBytes === 0) return;
      await file.writev(pending, position - pendingBytes);
      pending.length = 0;
      pendingBytes = 0;
    };
    const sync = async (): Promise<void> => {
      stall.clear();
      try {
        await flush();
        await file.datasync();
        synced = position;
        sidecar = { ...sidecar, durableBytes: position, updatedAt: Date.now() };
        await writeSidecar(partialPath, sidecar);
      } catch (error) {
        throw writeError(partialPath, error);
      } finally {
        stall.reset();
      }
    };
    try {
      progress.report(position, true);
      try {
        const requestSignal = AbortSignal.any([signal, stall.signal]);
        for await (const chunk of init.peers.read(
          holder.id,
          { sha256: holder.sha256, offset: position },
          { signal: requestSignal },
        )) {
          stall.reset();
          if (position + chunk.byteLength > holder.bytes) {
            await discardPartial(partialPath);
            throw markPeerFailure(
              'bad',
              new RbeeError(
                'DOWNLOAD_FAILED',
                `${from} sent more than the ${holder.bytes} bytes it announced`,
                {
                  details: { hive: holder.name, sha256: holder.sha256 },
                },
              ),
            );
          }
          pending.push(chunk);
          pendingBytes += chunk.byteLength;
          hash.update(chunk);
          position += chunk.byteLength;
          if (pendingBytes >= WRITE_BLOCK_BYTES) {
            try {
              await flush();
            } catch (error) {
              throw writeError(partialPath, error);
            }
          }
          progress.report(position, false);
          if (position - synced >= checkpointBytes) await sync();
        }
      } catch (error) {
        if (signal.aborted) throw toRbeeError(signal.reason);
        if (peerFailure(error) !== undefined || !isTransferError(error)) throw error;
        // what arrived is good as far as anyone knows: the next holder continues from there
        await sync().catch(() => undefined);
        const rbee = toRbeeError(error, 'DOWNLOAD_FAILED');
        const refused = rbee.code === 'MODEL_NOT_FOUND' || rbee.code === 'NOT_FOUND';
        throw markPeerFailure(
          refused ? 'refused' : 'cut',
          new RbeeError(
            'DOWNLOAD_FAILED',
            stall.signal.aborted
              ? `${from} sent nothing for ${init.stallTimeoutMs} ms`
              : `the transfer from ${from} broke off after ${position} of ${holder.bytes} bytes (${rbee.message})`,
            { cause: error, details: { hive: holder.name, bytes: position, totalBytes: holder.bytes } },
          ),
        );
      }
      if (position < holder.bytes) {
        await sync().catch(() => undefined);
        throw markPeerFailure(
          'cut',
          new RbeeError(
            'DOWNLOAD_TRUNCATED',
            `the transfer from ${from} ended after ${position} of ${holder.bytes} bytes`,
            { details: { hive: holder.name, bytes: position, totalBytes: holder.bytes } },
          ),
        );
      }
      await sync();
      progress.report(position, true);
    } finally {
      stall.clear();
      progress.stop();
      await file.close().catch(() => undefined);
    }
  }

  const { sha256, pieces } = hash.digest();
  if (sha256 !== holder.sha256) {
    await discardPartial(partialPath);
    throw markPeerFailure(
      'bad',
      new RbeeError(
        'CHECKSUM_MISMATCH',
        `the file from ${from} has sha256 ${sha256}, not the ${holder.sha256} its catalog lists`,
        { details: { hive: holder.name, sha256, expected: holder.sha256 } },
      ),
    );
  }
  return { bytes: position, sha256, ...(pieces === undefined ? {} : { pieces }) };
}

/** Bytes received before they are written to the file in one go. */
const WRITE_BLOCK_BYTES = 1024 * 1024;

/** Errors of the transfer itself (the stream, the peer), as opposed to this machine's disk. */
function isTransferError(error: unknown): boolean {
  if (!(error instanceof RbeeError)) return true;
  return (
    error.code !== 'DISK_FULL' && !(error.code === 'DOWNLOAD_FAILED' && error.details?.path !== undefined)
  );
}
