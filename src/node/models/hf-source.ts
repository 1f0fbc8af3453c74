/**
 * The Hugging Face side of provisioning: the endpoint and its token, repo listings shared by
 * concurrent callers, the file picked for `hf:org/repo[:quant]`, and the files (URLs, sizes,
 * sha256) that make up a named one.
 */
import { raceSignal } from '../../shared/abort.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { ggufCandidates, listRepoFiles, pickGgufFile, type RepoFile } from './hf-files.js';
import type { ModelFile } from './model-download.js';
import { splitPartNames } from './model-files.js';
import type { ProvisionProgress } from './shared-tasks.js';

export interface HfSourceInit {
  /** Defaults to `HF_ENDPOINT`, else https://huggingface.co. */
  endpoint?: string;
  /** Sent as a bearer token to the endpoint only. Defaults to `HF_TOKEN`. */
  token?: string;
  fetch: typeof fetch;
  /** A listing that takes longer fails. */
  timeoutMs: number;
}

export interface HfSource {
  /** For requests to the endpoint, and to no other host: the token, when there is one. */
  headers: Record<string, string>;
  /** The repo's files; concurrent callers share one request, each may leave on its own signal. */
  listFiles(repo: string, options: { signal: AbortSignal }): Promise<RepoFile[]>;
  /** The file `hf:repo[:quant]` stands for, said in narration, with the listing it came from. */
  pick(
    ref: { repo: string; quant?: string },
    emit: (progress: ProvisionProgress) => void,
    options: { signal: AbortSignal },
  ): Promise<{ file: string; listing: RepoFile[] }>;
  /**
   * The files to fetch for `repo/file`: every part when it is a split model's first part, with sizes
   * and sha256 from `listing`, else from a listing fetched now (best effort: without one the
   * download still works, only unchecked against published hashes).
   */
  modelFiles(
    repo: string,
    file: string,
    pathFor: (name: string) => string,
    listing: RepoFile[] | undefined,
    options: { signal: AbortSignal },
  ): Promise<ModelFile[]>;
}

export function createHfSource(init: HfSourceInit): HfSource {
  const endpoint = (init.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const token = init.token ?? process.env.HF_TOKEN;
  const headers: Record<string, string> =
    token === undefined || token === '' ? {} : { authorization: `Bearer ${token}` };
  const inFlight = new Map<string, Promise<RepoFile[]>>();

  async function listFiles(repo: string, { signal }: { signal: AbortSignal }): Promise<RepoFile[]> {
    let listing = inFlight.get(repo);
    if (listing === undefined) {
      // Not tied to this caller's signal: others may be waiting on the same request.
      listing = listRepoFiles({ endpoint, repo, fetch: init.fetch, headers, timeoutMs: init.timeoutMs });
      inFlight.set(repo, listing);
      const forget = (): void => void (inFlight.get(repo) === listing && inFlight.delete(repo));
      listing.then(forget, forget);
    }
    return raceSignal(listing, signal, toRbeeError);
  }

  return {
    headers,
    listFiles,

    async pick(ref, emit, options) {
      emit({ phase: 'resolving', bytes: 0, message: `listing the GGUF files of ${ref.repo}` });
      const listing = await listFiles(ref.repo, options);
      const files = ggufCandidates(ref.repo, listing);
      const pick = pickGgufFile(files, ref.quant);
      if (pick === undefined) {
        const listed = files.length === 0 ? 'no usable .gguf files' : files.map((f) => f.name).join(', ');
        const wanted = ref.quant === undefined ? '' : ` matching ${ref.quant}`;
        throw new RbeeError('MODEL_NOT_FOUND', `${ref.repo} has no .gguf file${wanted}; it has: ${listed}`, {
          details: { repo: ref.repo, quant: ref.quant, files: files.map((f) => f.name) },
        });
      }
      emit({
        phase: 'resolving',
        bytes: 0,
        file: pick.file.name,
        message: `picked ${pick.file.name}: ${pick.reason}`,
      });
      return { file: pick.file.name, listing };
    },

    async modelFiles(repo, file, pathFor, listed, options) {
      let listing = listed;
      if (listing === undefined) {
        try {
          listing = await listFiles(repo, options);
        } catch {
          if (options.signal.aborted) throw toRbeeError(options.signal.reason);
          // A repo that is really missing or private answers the download itself with 404 or 401.
          listing = [];
        }
      }
      const byName = new Map(listing.map((f) => [f.name, f]));
      return (splitPartNames(file) ?? [file]).map((name): ModelFile => {
        const entry = byName.get(name);
        return {
          url: `${endpoint}/${repo}/resolve/main/${name.split('/').map(encodeURIComponent).join('/')}`,
          finalPath: pathFor(name),
          ...(entry?.bytes === undefined ? {} : { bytes: entry.bytes }),
          ...(entry?.sha256 === undefined ? {} : { sha256: entry.sha256 }),
        };
      });
    },
  };
}
