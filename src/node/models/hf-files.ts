/**
 * Choosing a file when a Hugging Face ref names only a repo (`hf:org/repo` or `hf:org/repo:Q8_0`).
 */
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { networkError } from './download.js';
import { splitPartIndex, splitPartNames } from './model-files.js';
import { parseModelRef } from './model-ref.js';

export interface RepoFile {
  /** Path inside the repo, e.g. `model.Q4_K_M.gguf`; for a split model, its first part. */
  name: string;
  /** Size when the listing gives it; for a split model, the sum of its parts when all are known. */
  bytes?: number;
  /** Hex sha256 of the content: the Git LFS oid, when the listing gives it. */
  sha256?: string;
  /** The parts of a split GGUF (`x-00001-of-00003.gguf` …), in order; absent for a single file. */
  parts?: RepoFile[];
}

export interface ListRepoFilesInit {
  endpoint: string;
  repo: string;
  fetch: typeof fetch;
  headers?: Record<string, string>;
  timeoutMs: number;
  signal?: AbortSignal;
}

/**
 * Every file of the repo's main branch, from `GET /api/models/{repo}?blobs=true`: one request for
 * the whole tree (the `/tree/main` API pages and needs a recursive walk), whose `siblings` carry
 * `rfilename`, `size` and, for LFS files (every GGUF), `lfs.sha256`, the content's sha256. Names are
 * not checked here; see `ggufCandidates`.
 */
export async function listRepoFiles(init: ListRepoFilesInit): Promise<RepoFile[]> {
  const url = `${init.endpoint}/api/models/${init.repo}?blobs=true`;
  const timeout = AbortSignal.timeout(init.timeoutMs);
  const signal = init.signal === undefined ? timeout : AbortSignal.any([init.signal, timeout]);
  let body: unknown;
  try {
    const response = await init.fetch(url, {
      signal,
      headers: { accept: 'application/json', ...init.headers },
    });
    if (response.status === 404) {
      await response.body?.cancel().catch(() => undefined);
      throw new RbeeError('MODEL_NOT_FOUND', `no repository ${init.repo} at ${init.endpoint}`, {
        details: { repo: init.repo, status: 404 },
      });
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => undefined);
      const hint =
        response.status === 401 || response.status === 403 ? ' (private or gated? set HF_TOKEN)' : '';
      throw new RbeeError('DOWNLOAD_FAILED', `listing ${init.repo} failed: HTTP ${response.status}${hint}`, {
        details: { repo: init.repo, status: response.status },
      });
    }
    body = await response.json();
  } catch (error) {
    if (error instanceof RbeeError) throw error;
    if (init.signal?.aborted === true) throw toRbeeError(init.signal.reason);
    if (error instanceof SyntaxError) {
      throw new RbeeError('DOWNLOAD_FAILED', `listing ${init.repo}: the answer is not JSON`, {
        cause: error,
      });
    }
    throw networkError(url, error);
  }
  const siblings = (body as { siblings?: unknown }).siblings;
  if (!Array.isArray(siblings)) {
    throw new RbeeError('DOWNLOAD_FAILED', `listing ${init.repo}: the answer has no file list`);
  }
  const files: RepoFile[] = [];
  for (const sibling of siblings as { rfilename?: unknown; size?: unknown; lfs?: { sha256?: unknown } }[]) {
    const name = sibling.rfilename;
    if (typeof name !== 'string') continue;
    const file: RepoFile = { name };
    if (typeof sibling.size === 'number' && Number.isSafeInteger(sibling.size) && sibling.size >= 0) {
      file.bytes = sibling.size;
    }
    const sha256 = sibling.lfs?.sha256;
    if (typeof sha256 === 'string' && /^[0-9a-f]{64}$/i.test(sha256)) file.sha256 = sha256.toLowerCase();
    files.push(file);
  }
  return files;
}

/**
 * The GGUF models in a listing: single files, and split models whose every part is listed
 * (as one entry named after the first part). Vision projectors and names that would not pass as
 * a typed ref are left out.
 */
export function ggufCandidates(repo: string, files: readonly RepoFile[]): RepoFile[] {
  const usableFiles = files.filter((f) => usable(repo, f.name));
  const byName = new Map(usableFiles.map((f) => [f.name, f]));
  const candidates: RepoFile[] = [];
  for (const file of usableFiles) {
    const part = splitPartIndex(file.name);
    if (part === undefined) {
      candidates.push(file);
      continue;
    }
    if (part.index !== 1) continue;
    const parts = (splitPartNames(file.name) ?? []).map((name) => byName.get(name));
    if (parts.some((p) => p === undefined)) continue;
    const complete = parts as RepoFile[];
    const sized = complete.every((p) => p.bytes !== undefined);
    const total = complete.reduce((sum, p) => sum + (p.bytes ?? 0), 0);
    candidates.push({ name: file.name, ...(sized ? { bytes: total } : {}), parts: complete });
  }
  return candidates;
}

/** The repo's GGUF models (see `ggufCandidates`). */
export async function listRepoGgufFiles(init: ListRepoFilesInit): Promise<RepoFile[]> {
  return ggufCandidates(init.repo, await listRepoFiles(init));
}

function usable(repo: string, name: string): boolean {
  if (!/\.gguf$/i.test(name) || /mmproj/i.test(name)) return false;
  try {
    // The listing is input from the network: a name must pass the same checks as a typed ref.
    parseModelRef(`hf:${repo}/${name}`);
    return true;
  } catch {
    return false;
  }
}

export const DEFAULT_QUANTS = ['Q4_K_M', 'Q4_0', 'Q5_K_M', 'Q8_0'] as const;

export interface Pick {
  file: RepoFile;
  /** Why this file, for narration. */
  reason: string;
}

/**
 * With a quantization: the file whose name holds it as a whole token, else as a substring.
 * Without: the first of DEFAULT_QUANTS present, else the smallest file. Ties go to the smallest.
 * A split model is picked only when no single file of the same choice exists.
 */
export function pickGgufFile(files: readonly RepoFile[], quant?: string): Pick | undefined {
  if (quant !== undefined) {
    const exact = files.filter((f) => hasToken(f.name, quant));
    const loose =
      exact.length > 0 ? exact : files.filter((f) => f.name.toLowerCase().includes(quant.toLowerCase()));
    if (loose.length === 0) return undefined;
    const file = preferred(loose)?.file ?? smallest(singlesFirst(loose));
    return { file, reason: `matches ${quant.toUpperCase()}${splitNote(file)}` };
  }
  const pick = preferred(files);
  if (pick !== undefined) {
    return { file: pick.file, reason: `${pick.quant} is the default choice${splitNote(pick.file)}` };
  }
  if (files.length === 0) return undefined;
  const sized = files.every((f) => f.bytes !== undefined);
  const file = smallest(singlesFirst(files));
  return {
    file,
    reason: `none of ${DEFAULT_QUANTS.join(', ')} listed; smallest ${sized ? 'file' : 'quantization'}${splitNote(file)}`,
  };
}

function preferred(files: readonly RepoFile[]): { file: RepoFile; quant: string } | undefined {
  for (const quant of DEFAULT_QUANTS) {
    const matching = files.filter((f) => hasToken(f.name, quant));
    if (matching.length > 0) return { file: smallest(singlesFirst(matching)), quant };
  }
  return undefined;
}

function singlesFirst(files: readonly RepoFile[]): readonly RepoFile[] {
  const singles = files.filter((f) => f.parts === undefined);
  return singles.length > 0 ? singles : files;
}

function splitNote(file: RepoFile): string {
  return file.parts === undefined ? '' : ` (split into ${file.parts.length} parts)`;
}

function hasToken(name: string, quant: string): boolean {
  const escaped = quant.replace(/[^A-Za-z0-9_]/g, '');
  return new RegExp(`(?<![A-Za-z0-9])${escaped}(?![A-Za-z0-9]|_[A-Za-z0-9])`, 'i').test(name);
}

/** By size when known, else by the bit width in the name (Q2 < Q3 < … < F16 < F32), then by name. */
function smallest(files: readonly RepoFile[]): RepoFile {
  const key = (f: RepoFile): number => f.bytes ?? bitsInName(f.name);
  const sorted = [...files].sort((a, b) => key(a) - key(b) || a.name.localeCompare(b.name));
  return sorted[0] as RepoFile;
}

function bitsInName(name: string): number {
  const match = /(?<![A-Za-z0-9])(?:I?Q(\d)|(B?F)(16|32))(?![0-9])/i.exec(name);
  if (match === null) return Number.MAX_SAFE_INTEGER;
  return match[1] !== undefined ? Number(match[1]) : Number(match[3]);
}
