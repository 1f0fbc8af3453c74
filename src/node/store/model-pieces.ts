/**
 * The piece hashes of model files this hive shares: for a file's content (its sha256) and a piece
 * size, the sha256 of each piece in order. They are a function of the content alone, so a row never
 * goes stale; a row is written only by a pass that also checked the whole file against its sha256.
 */
import type { Database } from './db.js';

/** Pieces a piece list holds at most (a hive picks larger pieces for a larger file). */
export const MAX_MODEL_PIECES = 8192;

export interface PieceList {
  /** Every piece is this long but the last, which holds the rest. */
  pieceBytes: number;
  /** Hex sha256 of each piece, in file order. */
  hashes: string[];
}

export interface ModelPieces {
  /**
   * The list of this content with pieces of `pieceBytes`, else one with another piece size (one a
   * hive took with the file from other hives: serving that one keeps the holders of a file agreeing).
   */
  get(sha256: string, pieceBytes: number): PieceList | undefined;
  put(sha256: string, list: PieceList): void;
  /** Forgets every piece list of this content. */
  remove(sha256: string): void;
}

export function createModelPieces(db: Database): ModelPieces {
  const get = db.prepare<{ sha256: string; pieceBytes: number }, { piece_bytes: number; hashes: string }>(
    `SELECT piece_bytes, hashes FROM model_pieces WHERE sha256 = @sha256
     ORDER BY CASE WHEN piece_bytes = @pieceBytes THEN 0 ELSE 1 END, piece_bytes LIMIT 1`,
  );
  const put = db.prepare<[string, number, string]>(
    'INSERT OR REPLACE INTO model_pieces (sha256, piece_bytes, hashes) VALUES (?, ?, ?)',
  );
  const remove = db.prepare<[string]>('DELETE FROM model_pieces WHERE sha256 = ?');
  return {
    get(sha256, pieceBytes) {
      const row = get.get({ sha256, pieceBytes });
      if (row === undefined) return undefined;
      const hashes = JSON.parse(row.hashes) as unknown;
      if (!Array.isArray(hashes) || !hashes.every((h) => typeof h === 'string')) return undefined;
      return { pieceBytes: row.piece_bytes, hashes };
    },
    put(sha256, list) {
      put.run(sha256, list.pieceBytes, JSON.stringify(list.hashes));
    },
    remove(sha256) {
      remove.run(sha256);
    },
  };
}
