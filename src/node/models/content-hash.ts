/**
 * A file's sha256 and, in the same pass over its bytes, the sha256 of each of its fixed-size pieces
 * (the piece list other hives check a fetch in pieces against). Every path that lets a file into the
 * catalog hashes its bytes once as they arrive; with a piece size it gets the piece list from that
 * pass too, so a holder answers `model.pieces` without reading the file again.
 */
import { createHash, type Hash } from 'node:crypto';
import type { PieceList } from '../store/index.js';

export interface ContentHash {
  /** The next bytes of the file, in order. */
  update(chunk: Uint8Array): void;
  /** Bytes hashed so far. */
  readonly bytes: number;
  /** The whole file's hex sha256, and its piece list when a piece size was given. Call once. */
  digest(): { sha256: string; pieces?: PieceList };
}

export function createContentHash(pieceBytes?: number): ContentHash {
  const whole = createHash('sha256');
  const hashes: string[] = [];
  let piece: Hash | undefined = pieceBytes === undefined ? undefined : createHash('sha256');
  let inPiece = 0;
  let bytes = 0;
  return {
    get bytes() {
      return bytes;
    },
    update(chunk) {
      whole.update(chunk);
      bytes += chunk.byteLength;
      if (piece === undefined || pieceBytes === undefined) return;
      let rest = chunk;
      while (rest.byteLength > 0) {
        const take = Math.min(rest.byteLength, pieceBytes - inPiece);
        piece.update(take === rest.byteLength ? rest : rest.subarray(0, take));
        inPiece += take;
        rest = rest.subarray(take);
        if (inPiece === pieceBytes) {
          hashes.push(piece.digest('hex'));
          piece = createHash('sha256');
          inPiece = 0;
        }
      }
    },
    digest() {
      const sha256 = whole.digest('hex');
      if (piece === undefined || pieceBytes === undefined) return { sha256 };
      if (inPiece > 0 || hashes.length === 0) hashes.push(piece.digest('hex'));
      return { sha256, pieces: { pieceBytes, hashes } };
    },
  };
}
