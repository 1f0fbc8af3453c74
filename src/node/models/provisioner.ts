/**
 * The provisioner makes a model ref usable on this machine: it finds it in the catalog, registers a
 * local file, generates a demo model, or downloads from a URL or Hugging Face. Its invariants:
 * a catalog row never points at a missing or partial file; after a failure or abort nothing is left
 * behind (no row, no `.partial`) except the `.partial` of a download cut by the network from a
 * server that can resume it, which the next `ensure` of the same ref continues (partial-file.ts
 * says exactly when one is kept); concurrent requests for one model share one download.
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { generateTestModel, readModelInfo, type ModelInfo } from '../../engine/index.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { ModelCatalog, ModelRow, ModelSource } from '../store/index.js';
import { writeError } from './download.js';
import { pickGgufFile, type RepoFile } from './hf-files.js';
import { createHfSource } from './hf-source.js';
import { downloadModel, type ModelFile } from './model-download.js';
import { hashFile, isInside, modelBytesOnDisk, modelFilePaths, pruneEmptyDirs } from './model-files.js';
import { sweepPartials } from './partial-file.js';
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
}

export interface EnsureOptions {
  signal?: AbortSignal;
  onProgress?: (progress: ProvisionProgress) => void;
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
}

export interface Provisioner {
  ensure(ref: ModelRef, options?: EnsureOptions): Promise<EnsureResult>;
  /** Run at startup: clears what a crash may have left. */
  reconcile(options?: { signal?: AbortSignal }): Promise<ReconcileReport>;
  /** Deletes the row, and the file unless it is the user's own (source 'local'). */
  remove(idOrRef: string, options?: { signal?: AbortSignal }): Promise<ModelRow>;
  /** What is being provisioned now, with the latest progress of each. */
  inProgress(): { ref: string; progress: ProvisionProgress | undefined }[];
}

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
  const tasks = createSharedTasks<EnsureResult>();
  const hf = createHfSource({
    ...(init.hfEndpoint === undefined ? {} : { endpoint: init.hfEndpoint }),
    ...(init.hfToken === undefined ? {} : { token: init.hfToken }),
    fetch: fetchFn,
    timeoutMs: stallTimeoutMs,
  });
  /** Partial files being written now; reconcile must not delete them. */
  const writing = new Set<string>();

  type Emit = (progress: ProvisionProgress) => void;

  async function provision(
    ref: ModelRef,
    signal: AbortSignal,
    emit: Emit,
    listed?: RepoFile[],
  ): Promise<EnsureResult> {
    const cached = await findCached(ref);
    if (cached !== undefined) {
      const at = now();
      catalog.touch(cached.id, at);
      emit({ phase: 'done', bytes: cached.bytes, totalBytes: cached.bytes, file: basename(cached.path) });
      return { model: { ...cached, lastUsedAt: at }, cached: true };
    }
    switch (ref.kind) {
      case 'file':
        return registerLocal(ref, signal, emit);
      case 'demo':
        return generateDemo(ref, signal, emit);
      case 'url': {
        const finalPath = resolveInModelsDir(modelsDir, modelDirName(ref), modelFileName(ref));
        return download(ref, [{ url: ref.url, finalPath }], signal, emit);
      }
      case 'hf': {
        if (ref.file !== undefined) {
          const hfRef = { ...ref, file: ref.file };
          const pathFor = (name: string): string => resolveInModelsDir(modelsDir, modelDirName(ref), name);
          const files = await hf.modelFiles(ref.repo, ref.file, pathFor, listed, { signal });
          return download(hfRef, files, signal, emit, hf.headers);
        }
        const { file, listing } = await hf.pick(ref, emit, { signal });
        const fileRef: ModelRef = { kind: 'hf', repo: ref.repo, file };
        return tasks.run(canonicalRef(fileRef), (s, e) => provision(fileRef, s, e, listing), {
          signal,
          onProgress: emit,
        });
      }
    }
  }

  /** A row whose file is there with the recorded size; a stale row is removed on the way. */
  async function findCached(ref: ModelRef): Promise<ModelRow | undefined> {
    if (ref.kind === 'hf' && ref.file === undefined) {
      const prefix = `hf:${ref.repo}/`;
      const rows = [];
      for (const row of catalog.list()) {
        if (row.ref.startsWith(prefix) && (await modelBytesOnDisk(row.path)) === row.bytes) rows.push(row);
      }
      const files: RepoFile[] = rows.map((row) => ({ name: row.ref.slice(prefix.length), bytes: row.bytes }));
      const pick = pickGgufFile(files, ref.quant);
      return pick === undefined ? undefined : rows[files.indexOf(pick.file)];
    }
    const row = catalog.get(canonicalRef(ref));
    if (row === undefined) return undefined;
    if ((await modelBytesOnDisk(row.path)) === row.bytes) return row;
    catalog.remove(row.id);
    return undefined;
  }

  async function registerLocal(ref: ModelRef & { kind: 'file' }, signal: AbortSignal, emit: Emit) {
    emit({ phase: 'verifying', bytes: 0, file: basename(ref.path) });
    // A split model's first part stands for all its parts, which must all be there.
    const size = await modelBytesOnDisk(ref.path);
    if (size === undefined) {
      const what = modelFilePaths(ref.path).length > 1 ? 'a part of the split model' : 'the model file';
      throw new RbeeError('MODEL_NOT_FOUND', `${what} is missing: ${ref.path}`, {
        details: { path: ref.path },
      });
    }
    const info = await readModelInfo(ref.path, { signal });
    return publish(ref, { path: ref.path, bytes: size, sha256: null, info, source: 'local' }, emit);
  }

  async function generateDemo(ref: ModelRef & { kind: 'demo' }, signal: AbortSignal, emit: Emit) {
    const finalPath = resolveInModelsDir(modelsDir, modelDirName(ref), `${ref.preset}-seed1.gguf`);
    emit({
      phase: 'resolving',
      bytes: 0,
      message: `generating the ${ref.preset} demo model (random weights)`,
    });
    const fields = await intoModelsDir(finalPath, signal, async (partial) => {
      await generateTestModel({ path: partial, preset: ref.preset, seed: 1, signal });
      emit({ phase: 'verifying', bytes: 0, file: basename(finalPath) });
      const { bytes, sha256 } = await hashFile(partial, signal);
      const info = await readModelInfo(partial, { signal });
      info.name = `${info.name.replace(/\s*\(.*\)$/, '')} (${ref.preset}, random weights, for smoke tests)`;
      return { path: finalPath, bytes, sha256, info, source: 'demo' as const };
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
    const { bytes, sha256, info } = await downloadModel({
      files,
      modelsDir,
      fetch: fetchFn,
      headers,
      stallTimeoutMs,
      retries,
      retryDelayMs,
      reserveBytes,
      busy: writing,
      emit,
      signal,
    });
    return publish(ref, { path: first.finalPath, bytes, sha256, info, source: 'download' }, emit);
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
      return tasks.run(key, (signal, emit) => provision(ref, signal, emit), options);
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
        if ((await modelBytesOnDisk(row.path)) !== undefined) continue;
        catalog.remove(row.id);
        removedRows.push(row);
        // The parts of a split model that lost one of them are of no use any more.
        if (row.source !== 'local') await deleteModelFiles(row.path);
      }
      return { removedPartials: swept.removed, keptPartials: swept.kept, removedRows };
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
      if (row.source !== 'local') await deleteModelFiles(row.path);
      return row;
    },

    inProgress() {
      return tasks.active().map(({ key, last }) => ({ ref: key, progress: last }));
    },
  };

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
