/**
 * The provisioner makes a model ref usable on this machine: it finds it in the catalog, registers a
 * local file, generates a demo model, or downloads from a URL or Hugging Face. Its invariants:
 * a catalog row never points at a missing or partial file; after a failure or abort nothing is left
 * behind (no row, no `.partial`) except the `.partial` of a download cut by the network from a
 * server that can resume it, which the next `ensure` of the same ref continues (partial-file.ts
 * says exactly when one is kept); concurrent requests for one model share one download.
 */
import { createReadStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { generateTestModel, readModelInfo, type ModelInfo } from '../../engine/index.js';
import { raceSignal } from '../../shared/abort.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import {
  MAX_MODEL_PIECES,
  type ModelCatalog,
  type ModelPieces,
  type ModelRow,
  type ModelSource,
  type PieceList,
} from '../store/index.js';
import { writeError, type DownloadProgress } from './download.js';
import { pickGgufFile, type RepoFile } from './hf-files.js';
import { createHfSource } from './hf-source.js';
import { downloadModel, type ModelFile } from './model-download.js';
import {
  fileSize,
  isInside,
  listFiles,
  modelBytesOnDisk,
  modelFilePaths,
  pruneEmptyDirs,
  splitPartNames,
} from './model-files.js';
import { discardPartial, partialPathOf, readSidecar, sidecarPathOf, sweepPartials } from './partial-file.js';
import { ensureDiskSpace } from './disk-space.js';
import { fetchPieces, hashPieces, pieceCount } from './peer-pieces.js';
import {
  fetchFromPeer,
  peerFailure,
  peerPartialPathOf,
  type HolderPieces,
  type PeerHolder,
  type PeerNetwork,
} from './peer-source.js';
import {
  canonicalRef,
  modelDirName,
  modelFileName,
  modelId,
  parseModelRef,
  resolveInModelsDir,
  type ModelRef,
} from './model-ref.js';
import { createSharedTasks, type ProvisionProgress } from './shared-tasks.js';

export type { ProvisionPhase, ProvisionProgress } from './shared-tasks.js';

export interface ProvisionerInit {
  catalog: ModelCatalog;
  /** Where downloaded and demo models live. Created when needed. */
  modelsDir: string;
  /** Defaults to `HF_ENDPOINT`, else https://huggingface.co. */
  hfEndpoint?: string;
  /** Sent as a bearer token to the Hugging Face endpoint only. Defaults to `HF_TOKEN`. */
  hfToken?: string;
  /** Defaults to the global fetch. */
  fetch?: typeof fetch;
  /** A download that receives nothing for this long fails (and is retried). Defaults to 60 s. */
  stallTimeoutMs?: number;
  /**
   * Attempts after the first when a download is cut, stalls, or meets a 5xx; each resumes where the
   * last stopped when the server allows it, and headway resets the count. Defaults to 3.
   */
  retries?: number;
  /** The first retry waits about this long, each next one twice as long (at most 30 s). Defaults to 1 s. */
  retryDelayMs?: number;
  /**
   * A download that would leave less than this free on the models directory's disk fails with
   * DISK_FULL before writing a byte. Defaults to 1 GiB.
   */
  minFreeDiskBytes?: number;
  /** `reconcile` deletes resumable partials not written to for this long. Defaults to 7 days. */
  maxPartialAgeMs?: number;
  /** Defaults to Date.now. */
  now?: () => number;
  /**
   * The other hives of the cluster, once this node has joined one: a model a live hive holds (the
   * same ref, or the same sha256) comes from there over the LAN before its own source is tried.
   */
  peers?: () => PeerNetwork | undefined;
  /**
   * Where the piece lists of the files this hive shares are kept (computed once per file). Defaults
   * to memory.
   */
  pieces?: ModelPieces;
  /**
   * The piece size of this hive's piece lists (a file too large for MAX_MODEL_PIECES of them gets
   * larger ones). Defaults to 32 MiB.
   */
  pieceBytes?: number;
}

export interface EnsureOptions {
  signal?: AbortSignal;
  onProgress?: (progress: ProvisionProgress) => void;
  /**
   * Fetch it from this hive of the cluster (its name or peer id), and from nowhere else. Without
   * it, a hive that holds the model is preferred to the model's own source (a demo model is
   * generated here). Refused for a file path: a user's own file comes from no hive.
   */
  from?: string;
}

export interface EnsureResult {
  model: ModelRow;
  /** True when the model was already on disk and nothing was fetched or generated. */
  cached: boolean;
}

export interface ReconcileReport {
  /** Leftover `*.partial` files deleted (no sidecar, or too old), and sidecars without a partial. */
  removedPartials: string[];
  /** Partials of cut downloads left for the next `ensure` of the same model to resume. */
  keptPartials: string[];
  /** Rows whose file was gone, deleted. */
  removedRows: ModelRow[];
  /**
   * Model files no row names, deleted: a crash between a file's rename into place and its row
   * leaves one, which nothing would ever list, use or delete.
   */
  removedFiles: string[];
}

export interface Provisioner {
  ensure(ref: ModelRef, options?: EnsureOptions): Promise<EnsureResult>;
  /** Run at startup: clears what a crash may have left. */
  reconcile(options?: { signal?: AbortSignal }): Promise<ReconcileReport>;
  /** Deletes the row, and the file unless it is the user's own (source 'local'). */
  remove(idOrRef: string, options?: { signal?: AbortSignal }): Promise<ModelRow>;
  /** What is being provisioned now, with the latest progress of each. */
  inProgress(): { ref: string; progress: ProvisionProgress | undefined }[];
  /**
   * The bytes of the catalog's model file with this sha256, from `offset` (what another hive of the
   * cluster fetches). MODEL_NOT_FOUND when the catalog holds none; a model removed meanwhile ends
   * the read with MODEL_NOT_FOUND, never a clean end after part of the file.
   */
  readModel(
    sha256: string,
    options: { offset: number; length?: number; signal: AbortSignal },
  ): AsyncIterable<Uint8Array>;
  /**
   * The piece list of the catalog's model file with this sha256 (what another hive checks the pieces
   * it fetches against), computed in one read that also checks the whole file against that sha256:
   * CHECKSUM_MISMATCH when it does not match (the file rotted on disk), MODEL_NOT_FOUND when the
   * catalog holds no such file.
   */
  modelPieces(sha256: string, options: { signal: AbortSignal }): Promise<PieceList>;
}

/** A hive that sent bytes other than its catalog's is not asked again for that file for this long. */
const BAD_PEER_MS = 10 * 60_000;
/** How long a fetch waits for a holder whose link dropped mid-transfer to be back, and how often it looks. */
const PEER_BACK_WAIT_MS = 15_000;
const PEER_BACK_POLL_MS = 250;
/** Bytes per chunk a model is sent in to another hive (each one frame on the wire). */
const READ_CHUNK_BYTES = 128 * 1024;
/** Bytes per read of the file for another hive: several chunks, so fewer reads than frames. */
const READ_BLOCK_BYTES = 8 * READ_CHUNK_BYTES;
/** Holders one model is fetched from at once, at most. */
const MAX_PIECE_HOLDERS = 4;
/** Once one holder answered with its piece list, how long the others have to answer too. */
const PIECES_GRACE_MS = 1000;

type FetchableRef = ModelRef & ({ kind: 'url' } | { kind: 'hf'; file: string });

export function createProvisioner(init: ProvisionerInit): Provisioner {
  const { catalog } = init;
  const modelsDir = resolve(init.modelsDir);
  const fetchFn = init.fetch ?? globalThis.fetch;
  const stallTimeoutMs = init.stallTimeoutMs ?? 60_000;
  const now = init.now ?? Date.now;
  const retries = init.retries ?? 3;
  const retryDelayMs = init.retryDelayMs ?? 1000;
  const reserveBytes = init.minFreeDiskBytes ?? 1024 ** 3;
  const maxPartialAgeMs = init.maxPartialAgeMs ?? 7 * 24 * 3600 * 1000;
  const pieceBytes = init.pieceBytes ?? 32 * 1024 * 1024;
  const pieceStore = init.pieces ?? memoryPieces();
  /** Piece lists being computed, by sha256: one read of the file however many hives ask. */
  const hashing = new Map<string, Promise<PieceList>>();
  const tasks = createSharedTasks<EnsureResult>();
  const hf = createHfSource({
    ...(init.hfEndpoint === undefined ? {} : { endpoint: init.hfEndpoint }),
    ...(init.hfToken === undefined ? {} : { token: init.hfToken }),
    fetch: fetchFn,
    timeoutMs: stallTimeoutMs,
  });
  /** Partial files being written now; reconcile must not delete them. */
  const writing = new Set<string>();
  /** Reads of catalog files for other hives, by model id: a removal ends them first. */
  const reading = new Map<string, Set<AbortController>>();
  /** `peer id|sha256` of holders that sent other bytes than they announced, until when. */
  const badPeers = new Map<string, number>();

  type Emit = (progress: ProvisionProgress) => void;

  async function provision(
    ref: ModelRef,
    signal: AbortSignal,
    emit: Emit,
    listed?: RepoFile[],
    from?: string,
  ): Promise<EnsureResult> {
    const cached = findCached(ref);
    if (cached !== undefined) {
      const at = now();
      catalog.touch(cached.id, at);
      emit({ phase: 'done', bytes: cached.bytes, totalBytes: cached.bytes, file: basename(cached.path) });
      return { model: { ...cached, lastUsedAt: at }, cached: true };
    }
    switch (ref.kind) {
      case 'file':
        return registerLocal(ref, signal, emit);
      case 'demo': {
        // generated here unless a hive is named: then that hive's copy, as for any other ref
        if (from !== undefined) {
          const shared = await fromPeers(ref, demoPath(ref), signal, emit, { from });
          if (shared !== undefined) return shared;
        }
        return generateDemo(ref, signal, emit);
      }
      case 'url': {
        const finalPath = resolveInModelsDir(modelsDir, modelDirName(ref), modelFileName(ref));
        const shared = await fromPeers(ref, finalPath, signal, emit, { from });
        if (shared !== undefined) return shared;
        return download(ref, [{ url: ref.url, finalPath }], signal, emit);
      }
      case 'hf': {
        if (ref.file !== undefined) {
          const hfRef = { ...ref, file: ref.file };
          const pathFor = (name: string): string => resolveInModelsDir(modelsDir, modelDirName(ref), name);
          // a split model's parts come from its own source (a hive's catalog lists its first part only)
          const single = splitPartNames(ref.file) === undefined;
          if (single) {
            const shared = await fromPeers(ref, pathFor(ref.file), signal, emit, { from });
            if (shared !== undefined) return shared;
          }
          const files = await hf.modelFiles(ref.repo, ref.file, pathFor, listed, { signal });
          const sha256 = files.length === 1 ? files[0]?.sha256 : undefined;
          if (single && sha256 !== undefined) {
            // the listing names the content: a hive may hold the same file under another ref
            const shared = await fromPeers(ref, pathFor(ref.file), signal, emit, { sha256 });
            if (shared !== undefined) return shared;
          }
          return download(hfRef, files, signal, emit, hf.headers);
        }
        let picked: { file: string; listing?: RepoFile[] };
        try {
          picked = await hf.pick(ref, emit, { signal });
        } catch (error) {
          // the listing is out of reach (offline, or the endpoint is down): a file of the repo that
          // a hive of the cluster holds will do, picked by the same rule
          // (a repo that is not there, or has no such file, stays an error)
          const unreachable = !signal.aborted && toRbeeError(error).code !== 'MODEL_NOT_FOUND';
          const offline = unreachable ? pickFromPeers(ref, from) : undefined;
          if (offline === undefined) throw error;
          emit({
            phase: 'resolving',
            bytes: 0,
            file: offline.file,
            message: `the file list of ${ref.repo} is out of reach (${toRbeeError(error).message}); picked ${offline.file}, which hive ${offline.hive} holds: ${offline.reason}`,
          });
          picked = { file: offline.file };
        }
        const { file, listing } = picked;
        const fileRef: ModelRef = { kind: 'hf', repo: ref.repo, file };
        return tasks.run(canonicalRef(fileRef), (s, e) => provision(fileRef, s, e, listing, from), {
          signal,
          onProgress: emit,
        });
      }
    }
  }

  /** A row whose file is there with the recorded size; a stale row is removed on the way. */
  function findCached(ref: ModelRef): ModelRow | undefined {
    if (ref.kind === 'hf' && ref.file === undefined) {
      const prefix = `hf:${ref.repo}/`;
      const rows = [];
      for (const row of catalog.list()) {
        if (row.ref.startsWith(prefix) && modelBytesOnDisk(row.path) === row.bytes) rows.push(row);
      }
      const files: RepoFile[] = rows.map((row) => ({ name: row.ref.slice(prefix.length), bytes: row.bytes }));
      const pick = pickGgufFile(files, ref.quant);
      return pick === undefined ? undefined : rows[files.indexOf(pick.file)];
    }
    const row = catalog.get(canonicalRef(ref));
    if (row === undefined) return undefined;
    if (modelBytesOnDisk(row.path) === row.bytes) return row;
    catalog.remove(row.id);
    return undefined;
  }

  async function registerLocal(ref: ModelRef & { kind: 'file' }, signal: AbortSignal, emit: Emit) {
    emit({ phase: 'verifying', bytes: 0, file: basename(ref.path) });
    // A split model's first part stands for all its parts, which must all be there.
    const size = modelBytesOnDisk(ref.path);
    if (size === undefined) {
      const what = modelFilePaths(ref.path).length > 1 ? 'a part of the split model' : 'the model file';
      throw new RbeeError('MODEL_NOT_FOUND', `${what} is missing: ${ref.path}`, {
        details: { path: ref.path },
      });
    }
    const info = await readModelInfo(ref.path, { signal });
    return publish(ref, { path: ref.path, bytes: size, sha256: null, info, source: 'local' }, emit);
  }

  function demoPath(ref: ModelRef & { kind: 'demo' }): string {
    return resolveInModelsDir(modelsDir, modelDirName(ref), `${ref.preset}-seed1.gguf`);
  }

  async function generateDemo(ref: ModelRef & { kind: 'demo' }, signal: AbortSignal, emit: Emit) {
    const finalPath = demoPath(ref);
    emit({
      phase: 'resolving',
      bytes: 0,
      message: `generating the ${ref.preset} demo model (random weights)`,
    });
    const fields = await intoModelsDir(finalPath, signal, async (partial) => {
      // the reranker is the tiny shape with a classifier head
      const { preset } = ref;
      const reranker = preset === 'rerank';
      await generateTestModel({
        path: partial,
        preset: preset === 'rerank' ? 'tiny' : preset,
        reranker,
        seed: 1,
        signal,
      });
      emit({ phase: 'verifying', bytes: 0, file: basename(finalPath) });
      // the piece list comes from the same read as the sha256
      const { bytes, sha256, list } = await hashPieces(partial, pieceBytes, signal);
      const info = await readModelInfo(partial, { signal });
      info.name = `${info.name.replace(/\s*\(.*\)$/, '')} (${ref.preset}, random weights, for smoke tests)`;
      return { path: finalPath, bytes, sha256, pieces: list, info, source: 'demo' as const };
    });
    return publish(ref, fields, emit);
  }

  async function download(
    ref: FetchableRef,
    files: ModelFile[],
    signal: AbortSignal,
    emit: Emit,
    headers: Record<string, string> = {},
  ): Promise<EnsureResult> {
    const first = files[0];
    if (first === undefined) throw new RbeeError('INTERNAL', 'a download without files');
    const sizes = files.map((f) => f.bytes);
    const total = sizes.every((b) => b !== undefined) ? sizes.reduce((a, b) => a + b, 0) : undefined;
    emit({
      phase: 'downloading',
      bytes: 0,
      ...(total === undefined ? {} : { totalBytes: total }),
      file: basename(first.finalPath),
    });
    const { bytes, sha256, pieces, info } = await downloadModel({
      files,
      modelsDir,
      fetch: fetchFn,
      headers,
      pieceBytes,
      stallTimeoutMs,
      retries,
      retryDelayMs,
      reserveBytes,
      busy: writing,
      emit,
      signal,
    });
    // a transfer from a hive that was cut is of no use any more
    await discardPartial(peerPartialPathOf(first.finalPath));
    return publish(ref, { path: first.finalPath, bytes, sha256, pieces, info, source: 'download' }, emit);
  }

  /** For `hf:org/repo[:quant]` without its listing: the file the rule picks among those hives hold. */
  function pickFromPeers(
    ref: ModelRef & { kind: 'hf' },
    from: string | undefined,
  ): { file: string; hive: string; reason: string } | undefined {
    const prefix = `hf:${ref.repo}/`;
    const held = (init.peers?.()?.holders({ refPrefix: prefix }) ?? []).filter(
      (h) => from === undefined || h.name === from || h.id === from,
    );
    const files: RepoFile[] = [];
    for (const h of held) {
      const name = h.ref.slice(prefix.length);
      if (!files.some((f) => f.name === name)) files.push({ name, bytes: h.bytes });
    }
    const pick = pickGgufFile(files, ref.quant);
    if (pick === undefined) return undefined;
    const hive = held.find((h) => h.ref === `${prefix}${pick.file.name}`)?.name ?? '?';
    return { file: pick.file.name, hive, reason: pick.reason };
  }

  /**
   * The model from a live hive that holds it (by ref, or by `sha256`), into `finalPath`: one holder
   * after another until one gives the whole file with the sha256 its catalog lists. Undefined when
   * no hive could, which leaves the model's own source; with `from`, only that hive is asked, and
   * its failure is the answer.
   */
  async function fromPeers(
    ref: ModelRef,
    finalPath: string,
    signal: AbortSignal,
    emit: Emit,
    options: { from?: string; sha256?: string },
  ): Promise<EnsureResult | undefined> {
    const { from } = options;
    const network = init.peers?.();
    const key = canonicalRef(ref);
    const file = basename(finalPath);
    const partial = peerPartialPathOf(finalPath);
    const tried = new Set<string>();
    /** Durable bytes of the partial when each holder was last asked: one that made headway may go on. */
    const reached = new Map<string, number>();
    /** When a holder cut after headway went out of the view (its link dropped), until when to wait for it. */
    let awaitBack = 0;
    /** A fetch from several holders at once was tried and made no headway: one at a time from now on. */
    let severalTried = false;
    const badKey = (h: PeerHolder): string => `${h.id}|${h.sha256}`;
    let lastError: RbeeError | undefined;
    for (;;) {
      signal.throwIfAborted();
      const holders = (
        network?.holders(options.sha256 === undefined ? { ref: key } : { sha256: options.sha256 }) ?? []
      )
        .filter((h) => options.sha256 === undefined || h.sha256 === options.sha256)
        .filter((h) => from === undefined || h.name === from || h.id === from);
      const candidates = holders.filter((h) => !tried.has(h.id) && (badPeers.get(badKey(h)) ?? 0) <= now());
      if (candidates.length === 0 && now() < awaitBack) {
        // the link to a holder that was making headway dropped: it is usually back within seconds
        try {
          await sleep(PEER_BACK_POLL_MS, undefined, { signal });
        } catch {
          // cancelled while waiting: nothing stays, as for a download
          await discardPartial(partial);
          await pruneEmptyDirs(dirname(finalPath), modelsDir);
          throw toRbeeError(signal.reason);
        }
        continue;
      }
      if (candidates.length === 0) {
        if (from === undefined) return undefined;
        if (lastError !== undefined) throw lastError;
        throw new RbeeError(
          'MODEL_NOT_FOUND',
          holders.length > 0
            ? `hive ${from} sent a corrupt copy of ${key} lately; not asked again for now`
            : `no live hive ${from} holds ${key}`,
          { details: { model: key, hive: from } },
        );
      }
      // several holders share the work; so does one, for a partial that has pieces past its prefix
      const several =
        from === undefined &&
        !severalTried &&
        network?.pieces !== undefined &&
        (candidates.length >= 2 || ((await readSidecar(partial))?.pieces?.length ?? 0) > 0);
      if (several) {
        severalTried = true;
        const outcome = await fromSeveral(ref, finalPath, signal, emit, network, candidates);
        if (outcome.result !== undefined) return outcome.result;
        for (const holder of outcome.failed) tried.add(holder.id);
        if (outcome.error !== undefined) lastError = outcome.error;
        if (outcome.headway) {
          // pieces came in before the holders went: those whose link dropped may be back soon
          severalTried = false;
          for (const holder of outcome.cut) tried.delete(holder.id);
          awaitBack = now() + PEER_BACK_WAIT_MS;
        } else {
          // asked again at once and nothing came: no point waiting for them
          awaitBack = 0;
        }
        continue;
      }
      // the holder of the content whose prefix is already here continues it
      const kept = await readSidecar(partial);
      const holder = candidates.find((h) => kept?.etag === h.sha256) ?? candidates[0]!;
      tried.add(holder.id);
      reached.set(holder.id, kept?.etag === holder.sha256 ? kept.durableBytes : 0);
      const via = `hive ${holder.name} over the LAN`;
      emit({ phase: 'resolving', bytes: 0, file, from: via, message: `fetching ${file} from ${via}` });
      writing.add(partial);
      try {
        await mkdir(dirname(finalPath), { recursive: true });
        const { bytes, sha256, pieces } = await fetchFromPeer({
          peers: network!,
          holder,
          partialPath: partial,
          stallTimeoutMs,
          pieceBytes: pieceSizeFor(holder.bytes),
          beforeWrite: (rest) => ensureDiskSpace({ dir: dirname(partial), needBytes: rest, reserveBytes }),
          onProgress: downloadingFrom(emit, holder.bytes, file, via),
          signal,
        });
        emit({ phase: 'verifying', bytes, totalBytes: bytes, file, from: via });
        const info = await modelInfoOf(partial, signal);
        if (info instanceof RbeeError) {
          // the holder's catalog lists a file that is no model: as good as corrupt
          badPeers.set(badKey(holder), now() + BAD_PEER_MS);
          lastError = info;
          emit({
            phase: 'retrying',
            bytes: 0,
            file,
            from: via,
            message: `the file from ${via} is no usable model (${lastError.message})`,
          });
          continue;
        }
        signal.throwIfAborted();
        await rename(partial, finalPath);
        await rm(sidecarPathOf(partial), { force: true });
        // a download from the model's own source that was cut is of no use any more
        await discardPartial(partialPathOf(finalPath));
        return await publish(ref, { path: finalPath, bytes, sha256, pieces, info, source: 'download' }, emit);
      } catch (error) {
        const kind = peerFailure(error);
        if (signal.aborted || kind === undefined) {
          // cancelled, or this machine's own trouble (a full disk): nothing stays, as for a download
          await discardPartial(partial);
          await pruneEmptyDirs(dirname(finalPath), modelsDir);
          if (signal.aborted) throw toRbeeError(signal.reason);
          throw error;
        }
        lastError = toRbeeError(error);
        if (kind === 'bad') badPeers.set(badKey(holder), now() + BAD_PEER_MS);
        if (kind === 'cut') {
          // a holder that got further before the cut is asked again, from there
          const durable = (await readSidecar(partial))?.durableBytes ?? 0;
          if (durable > (reached.get(holder.id) ?? 0)) {
            tried.delete(holder.id);
            awaitBack = now() + PEER_BACK_WAIT_MS;
          }
        }
        const next = kind === 'bad' ? 'discarded' : 'the bytes so far are kept';
        emit({ phase: 'retrying', bytes: 0, file, from: via, message: `${lastError.message}; ${next}` });
      } finally {
        writing.delete(partial);
      }
    }
  }

  /**
   * The model from several holders at once, in pieces (peer-pieces.ts), when at least two of them
   * answer with the same piece list of a file of two pieces or more; otherwise nothing is fetched
   * here (`result` and `failed` empty) and the caller goes on one holder at a time. Holders that
   * failed are in `failed` (those only cut off, in `cut` too), and `headway` says whether checked
   * pieces came in before the fetch gave up.
   */
  async function fromSeveral(
    ref: ModelRef,
    finalPath: string,
    signal: AbortSignal,
    emit: Emit,
    network: PeerNetwork,
    candidates: PeerHolder[],
  ): Promise<{
    result?: EnsureResult;
    failed: PeerHolder[];
    cut: PeerHolder[];
    headway: boolean;
    error?: RbeeError;
  }> {
    const nothing = { failed: [], cut: [], headway: false };
    if (network.pieces === undefined) return nothing;
    const answers = await askPieces(network.pieces.bind(network), candidates, signal);
    // holders of one file that agree on its pieces; the largest such group
    const groups = new Map<string, typeof answers>();
    for (const answer of answers) {
      const { holder, pieces } = answer;
      const key = `${holder.sha256}:${holder.bytes}:${pieces.pieceBytes}:${pieces.hashes.join('')}`;
      groups.set(key, [...(groups.get(key) ?? []), answer]);
    }
    const group = [...groups.values()].sort((a, b) => b.length - a.length)[0] ?? [];
    const list = group[0]?.pieces;
    if (list === undefined || list.hashes.length < 2) return nothing;
    if (group.length < 2 && ((await readSidecar(peerPartialPathOf(finalPath)))?.pieces?.length ?? 0) === 0) {
      return nothing;
    }
    // fewest reads served first, then the quickest to answer (see peer-pieces.ts for the rest)
    const holders = group
      .sort((a, b) => a.pieces.serving - b.pieces.serving || a.ms - b.ms)
      .slice(0, MAX_PIECE_HOLDERS)
      .map((a) => a.holder);
    const file = basename(finalPath);
    const partial = peerPartialPathOf(finalPath);
    const via = `hives ${holders.map((h) => h.name).join(', ')} over the LAN`;
    const before = await piecesHere(partial);
    emit({ phase: 'resolving', bytes: 0, file, from: via, message: `fetching ${file} from ${via}` });
    const failed: PeerHolder[] = [];
    const cut: PeerHolder[] = [];
    writing.add(partial);
    try {
      await mkdir(dirname(finalPath), { recursive: true });
      const total = holders[0]!.bytes;
      const { bytes, sha256 } = await fetchPieces({
        peers: network,
        holders,
        list: { pieceBytes: list.pieceBytes, hashes: list.hashes },
        partialPath: partial,
        stallTimeoutMs,
        beforeWrite: (rest) => ensureDiskSpace({ dir: dirname(partial), needBytes: rest, reserveBytes }),
        onHolderFailed: (holder, kind, error) => {
          failed.push(holder);
          if (kind === 'bad') badPeers.set(`${holder.id}|${holder.sha256}`, now() + BAD_PEER_MS);
          if (kind === 'cut') cut.push(holder);
          const next = kind === 'bad' ? 'the piece is discarded' : 'its pieces go to the others';
          emit({ phase: 'retrying', bytes: 0, file, from: via, message: `${error.message}; ${next}` });
        },
        onProgress: downloadingFrom(emit, total, file, via),
        signal,
      });
      emit({ phase: 'verifying', bytes, totalBytes: bytes, file, from: via });
      const info = await modelInfoOf(partial, signal);
      if (info instanceof RbeeError) {
        // the holders' catalogs list a file that is no model: as good as corrupt
        for (const holder of holders) badPeers.set(`${holder.id}|${holder.sha256}`, now() + BAD_PEER_MS);
        emit({
          phase: 'retrying',
          bytes: 0,
          file,
          from: via,
          message: `the file from ${via} is no usable model (${info.message})`,
        });
        return { failed: holders, cut: [], headway: false, error: info };
      }
      signal.throwIfAborted();
      await rename(partial, finalPath);
      await rm(sidecarPathOf(partial), { force: true });
      await discardPartial(partialPathOf(finalPath));
      // this hive holds the file now, and its pieces are known (the holders' piece size, kept so
      // that the holders of a file agree)
      const pieces = { pieceBytes: list.pieceBytes, hashes: list.hashes };
      return {
        result: await publish(
          ref,
          { path: finalPath, bytes, sha256, pieces, info, source: 'download' },
          emit,
        ),
        failed,
        cut,
        headway: true,
      };
    } catch (error) {
      const kind = peerFailure(error);
      if (signal.aborted || kind === undefined) {
        // cancelled, or this machine's own trouble (a full disk): nothing stays, as for a download
        await discardPartial(partial);
        await pruneEmptyDirs(dirname(finalPath), modelsDir);
        if (signal.aborted) throw toRbeeError(signal.reason);
        throw error;
      }
      const rbee = toRbeeError(error);
      if (kind === 'bad' && rbee.code === 'CHECKSUM_MISMATCH') {
        // every piece matched, the whole did not: their piece list is not to be trusted
        for (const holder of holders) badPeers.set(`${holder.id}|${holder.sha256}`, now() + BAD_PEER_MS);
      }
      const headway = (await piecesHere(partial)) > before;
      emit({
        phase: 'retrying',
        bytes: 0,
        file,
        from: via,
        message: `${rbee.message}; ${kind === 'bad' ? 'discarded' : 'the pieces so far are kept'}`,
      });
      return { failed: holders, cut, headway, error: rbee };
    } finally {
      writing.delete(partial);
    }
  }

  /** Bytes of checked pieces a peer partial records (its durable prefix and the pieces past it). */
  async function piecesHere(partial: string): Promise<number> {
    const sidecar = await readSidecar(partial);
    if (sidecar === undefined) return 0;
    return sidecar.durableBytes + (sidecar.pieces?.length ?? 0) * (sidecar.pieceBytes ?? 0);
  }

  /** The piece lists of holders that answer: after the first answer, the others get a short grace. */
  async function askPieces(
    piecesOf: NonNullable<PeerNetwork['pieces']>,
    candidates: PeerHolder[],
    signal: AbortSignal,
  ): Promise<{ holder: PeerHolder; pieces: HolderPieces; ms: number }[]> {
    const answers: { holder: PeerHolder; pieces: HolderPieces; ms: number }[] = [];
    const asking = new AbortController();
    const askSignal = AbortSignal.any([signal, asking.signal]);
    let answered!: () => void;
    const first = new Promise<void>((resolve) => (answered = resolve));
    const asked = Promise.allSettled(
      candidates.map(async (holder) => {
        const started = performance.now();
        try {
          const pieces = await piecesOf(holder.id, holder.sha256, { signal: askSignal });
          answers.push({ holder, pieces, ms: performance.now() - started });
          answered();
        } catch (error) {
          // a holder whose own copy failed its sha256 is not asked for it again for a while
          if (toRbeeError(error).code === 'CHECKSUM_MISMATCH') {
            badPeers.set(`${holder.id}|${holder.sha256}`, now() + BAD_PEER_MS);
          }
        }
      }),
    );
    try {
      await raceSignal(
        Promise.race([asked, first.then(() => sleep(PIECES_GRACE_MS, undefined, { signal: askSignal }))]),
        signal,
      );
    } catch {
      if (signal.aborted) throw toRbeeError(signal.reason);
    } finally {
      asking.abort();
    }
    return [...answers];
  }

  /** Progress of a fetch from hives of the LAN, as the pull's `downloading` events. */
  function downloadingFrom(
    emit: Emit,
    totalBytes: number,
    file: string,
    from: string,
  ): (progress: DownloadProgress) => void {
    return (p) =>
      emit({
        phase: 'downloading',
        bytes: p.bytes,
        totalBytes,
        ...(p.bytesPerSecond === undefined ? {} : { bytesPerSecond: p.bytesPerSecond }),
        ...(p.etaSeconds === undefined ? {} : { etaSeconds: p.etaSeconds }),
        file,
        from,
      });
  }

  /** The model's facts, or the error that says it is no usable model. */
  async function modelInfoOf(path: string, signal: AbortSignal): Promise<ModelInfo | RbeeError> {
    try {
      return await readModelInfo(path, { signal });
    } catch (error) {
      if (signal.aborted) throw error;
      await discardPartial(path);
      return toRbeeError(error, 'MODEL_INVALID');
    }
  }

  /**
   * Runs `produce` against `<finalPath>.partial`, then renames it into place. On any failure the
   * partial (and directories made empty) are removed before the error goes on.
   */
  async function intoModelsDir<T>(
    finalPath: string,
    signal: AbortSignal,
    produce: (partial: string) => Promise<T>,
  ): Promise<T> {
    const partial = `${finalPath}.partial`;
    writing.add(partial);
    try {
      await mkdir(dirname(finalPath), { recursive: true });
      const result = await produce(partial);
      signal.throwIfAborted();
      await rename(partial, finalPath);
      return result;
    } catch (error) {
      await rm(partial, { force: true });
      await rm(`${partial}.partial`, { force: true });
      await pruneEmptyDirs(dirname(finalPath), modelsDir);
      if (signal.aborted) throw toRbeeError(signal.reason);
      if (error instanceof RbeeError) throw error;
      throw writeError(partial, error);
    } finally {
      writing.delete(partial);
    }
  }

  interface Fields {
    path: string;
    bytes: number;
    sha256: string | null;
    /** The file's piece list, from the pass that checked its sha256. */
    pieces?: PieceList | undefined;
    info: ModelInfo;
    source: ModelSource;
  }

  async function publish(ref: ModelRef, fields: Fields, emit: Emit): Promise<EnsureResult> {
    const id = modelId(ref);
    const at = now();
    const row: ModelRow = {
      id,
      ref: canonicalRef(ref),
      alias: catalog.get(id)?.alias ?? null,
      name: fields.info.name,
      path: fields.path,
      bytes: fields.bytes,
      sha256: fields.sha256,
      architecture: fields.info.architecture,
      quantization: fields.info.quantization,
      contextLength: fields.info.contextLength,
      addedAt: at,
      lastUsedAt: at,
      source: fields.source,
    };
    // known before the catalog lists the file, so that a hive asking for them is answered at once
    if (fields.sha256 !== null && fields.pieces !== undefined && fitsPieces(fields.pieces, fields.bytes)) {
      pieceStore.put(fields.sha256, fields.pieces);
    }
    try {
      catalog.upsert(row);
    } catch (error) {
      if (fields.source !== 'local') await deleteModelFiles(fields.path);
      throw error;
    }
    emit({ phase: 'done', bytes: row.bytes, totalBytes: row.bytes, file: basename(row.path) });
    return { model: row, cached: false };
  }

  return {
    async ensure(input, options = {}) {
      if (options.signal?.aborted === true) throw toRbeeError(options.signal.reason);
      // Refs built by hand (not parsed) get the same checks as typed ones before any path is derived.
      const key = canonicalRef(input);
      const ref = parseModelRef(key);
      const { from, ...follow } = options;
      if (from !== undefined && ref.kind === 'file') {
        // a user's own file is registered where it lies; no hive sends it
        throw new RbeeError(
          'BAD_REQUEST',
          `${ref.path} is a file on this machine, not fetched from a hive: leave out \`from\` (${from}), or name the model hive ${from} holds by its ref or sha256`,
          { details: { model: key, hive: from } },
        );
      }
      return tasks.run(key, (signal, emit) => provision(ref, signal, emit, undefined, from), follow);
    },

    async reconcile(options = {}) {
      const swept = await sweepPartials(modelsDir, {
        busy: (path) => writing.has(path),
        maxAgeMs: maxPartialAgeMs,
        now: now(),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      });
      const removedRows: ModelRow[] = [];
      for (const row of catalog.list()) {
        if (modelBytesOnDisk(row.path) !== undefined) continue;
        catalog.remove(row.id);
        removedRows.push(row);
        // The parts of a split model that lost one of them are of no use any more.
        if (row.source !== 'local') await deleteModelFiles(row.path);
      }
      const named = new Set(catalog.list().flatMap((row) => modelFilePaths(row.path)));
      const removedFiles: string[] = [];
      for (const file of await listFiles(modelsDir)) {
        if (!file.toLowerCase().endsWith('.gguf') || named.has(file)) continue;
        await rm(file, { force: true });
        await pruneEmptyDirs(dirname(file), modelsDir);
        removedFiles.push(file);
      }
      return { removedPartials: swept.removed, keptPartials: swept.kept, removedRows, removedFiles };
    },

    async remove(idOrRef, options = {}) {
      options.signal?.throwIfAborted();
      const row = catalog.get(idOrRef) ?? lookupByParsedRef(idOrRef);
      if (row === undefined) {
        throw new RbeeError('MODEL_NOT_FOUND', `no model ${idOrRef} in the catalog`, {
          details: { model: idOrRef },
        });
      }
      catalog.remove(row.id);
      // another hive reading it gets an error, not a clean end after part of the file
      for (const read of reading.get(row.id) ?? []) {
        read.abort(new RbeeError('MODEL_NOT_FOUND', `model ${row.id} was removed from its hive`));
      }
      if (row.source !== 'local') await deleteModelFiles(row.path);
      if (row.sha256 !== null && !catalog.list().some((r) => r.sha256 === row.sha256)) {
        pieceStore.remove(row.sha256);
      }
      return row;
    },

    async modelPieces(sha256, { signal }) {
      const row = sharedRow(sha256);
      const size = row === undefined ? undefined : pieceSizeFor(row.bytes);
      const known = size === undefined ? undefined : pieceStore.get(sha256, size);
      if (known !== undefined) return known;
      let computing = hashing.get(sha256);
      if (computing === undefined) {
        // not tied to one asker: a hive that stops waiting does not waste the read for the next
        computing = computePieces(sha256).finally(() => hashing.delete(sha256));
        hashing.set(sha256, computing);
      }
      return raceSignal(computing, signal, toRbeeError);
    },

    async *readModel(sha256, { offset, length, signal }) {
      const row = sharedRow(sha256);
      if (row === undefined || (await fileSize(row.path)) !== row.bytes) {
        throw new RbeeError('MODEL_NOT_FOUND', `no model with sha256 ${sha256} in this catalog`, {
          details: { sha256 },
        });
      }
      if (offset > row.bytes) {
        throw new RbeeError('BAD_REQUEST', `offset ${offset} is past the end of the ${row.bytes}-byte file`);
      }
      const end = length === undefined ? row.bytes : Math.min(row.bytes, offset + length);
      if (end <= offset) return;
      const controller = new AbortController();
      let reads = reading.get(row.id);
      if (reads === undefined) reading.set(row.id, (reads = new Set()));
      reads.add(controller);
      try {
        const stream = createReadStream(row.path, {
          start: offset,
          end: end - 1,
          highWaterMark: READ_BLOCK_BYTES,
          signal: AbortSignal.any([signal, controller.signal]),
        });
        try {
          for await (const block of stream) {
            const data = block as Buffer;
            for (let at = 0; at < data.byteLength; at += READ_CHUNK_BYTES) {
              if (controller.signal.aborted) break;
              yield data.subarray(at, at + READ_CHUNK_BYTES);
            }
          }
        } catch (error) {
          if (controller.signal.aborted) throw toRbeeError(controller.signal.reason);
          throw toRbeeError(error, 'MODEL_NOT_FOUND');
        }
        // removed while the last chunk was on its way: not a whole answer either
        if (controller.signal.aborted) throw toRbeeError(controller.signal.reason);
      } finally {
        reads.delete(controller);
        if (reads.size === 0) reading.delete(row.id);
      }
    },

    inProgress() {
      return tasks.active().map(({ key, last }) => ({ ref: key, progress: last }));
    },
  };

  /** The catalog's row of a file it shares by this sha256 (not the user's own, not a split model). */
  function sharedRow(sha256: string): ModelRow | undefined {
    return catalog
      .list()
      .find((r) => r.sha256 === sha256 && r.source !== 'local' && modelFilePaths(r.path).length === 1);
  }

  /** The configured piece size, or larger for a file that would need more than MAX_MODEL_PIECES. */
  function pieceSizeFor(bytes: number): number {
    const least = Math.ceil(bytes / MAX_MODEL_PIECES);
    return least <= pieceBytes ? pieceBytes : Math.ceil(least / 2 ** 20) * 2 ** 20;
  }

  /** A list whose pieces cover a file of `bytes` (one of another size, or of a split model, would not). */
  function fitsPieces(list: PieceList, bytes: number): boolean {
    return (
      list.hashes.length === pieceCount(bytes, list.pieceBytes) && list.hashes.length <= MAX_MODEL_PIECES
    );
  }

  async function computePieces(sha256: string): Promise<PieceList> {
    const row = sharedRow(sha256);
    if (row === undefined || (await fileSize(row.path)) !== row.bytes) {
      throw new RbeeError('MODEL_NOT_FOUND', `no model with sha256 ${sha256} in this catalog`, {
        details: { sha256 },
      });
    }
    let hashed;
    try {
      hashed = await hashPieces(row.path, pieceSizeFor(row.bytes), new AbortController().signal);
    } catch (error) {
      throw toRbeeError(error, 'MODEL_NOT_FOUND');
    }
    if (hashed.sha256 !== sha256 || hashed.bytes !== row.bytes) {
      throw new RbeeError(
        'CHECKSUM_MISMATCH',
        `this hive's copy of ${row.ref} has sha256 ${hashed.sha256}, not the ${sha256} its catalog lists`,
        { details: { sha256: hashed.sha256, expected: sha256, model: row.id } },
      );
    }
    // removed while it was read: the list is right, but nothing here serves it
    if (sharedRow(sha256) === undefined) {
      throw new RbeeError('MODEL_NOT_FOUND', `model ${row.id} was removed from its hive`);
    }
    pieceStore.put(sha256, hashed.list);
    return hashed.list;
  }

  /** Deletes a model's files (every part of a split model), never anything outside the models directory. */
  async function deleteModelFiles(path: string): Promise<void> {
    for (const file of modelFilePaths(resolve(path))) {
      if (!isInside(modelsDir, file)) continue;
      await rm(file, { force: true });
      await pruneEmptyDirs(dirname(file), modelsDir);
    }
  }

  function lookupByParsedRef(text: string): ModelRow | undefined {
    try {
      return catalog.get(canonicalRef(parseModelRef(text)));
    } catch {
      return undefined;
    }
  }
}

/** Piece lists kept in memory, for a provisioner without a database of them. */
function memoryPieces(): ModelPieces {
  const lists = new Map<string, PieceList>();
  return {
    get: (sha256, pieceBytes) =>
      lists.get(`${sha256}:${pieceBytes}`) ??
      [...lists.entries()].find(([key]) => key.startsWith(`${sha256}:`))?.[1],
    put: (sha256, list) => void lists.set(`${sha256}:${list.pieceBytes}`, list),
    remove: (sha256) => {
      for (const key of lists.keys()) if (key.startsWith(`${sha256}:`)) lists.delete(key);
    },
  };
}
