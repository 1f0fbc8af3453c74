/**
 * The provisioner makes a model ref usable on this machine: it finds it in the catalog, registers a
 * local file, generates a demo model, or downloads from a URL or Hugging Face. Its invariants:
 * a catalog row never points at a missing or partial file; after any failure or abort nothing is
 * left behind (no `.partial`, no row); concurrent requests for one model share one download.
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { generateTestModel, readModelInfo, type ModelInfo } from '../../engine/index.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { ModelCatalog, ModelRow, ModelSource } from '../store/model-catalog.js';
import { downloadToFile, writeError } from './download.js';
import { listRepoGgufFiles, pickGgufFile, type RepoFile } from './hf-files.js';
import { fileSize, hashFile, isInside, listFiles, pruneEmptyDirs } from './model-files.js';
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
  /** A download that receives nothing for this long fails. Defaults to 60 s. */
  stallTimeoutMs?: number;
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
  /** Leftover `*.partial` files deleted. */
  removedPartials: string[];
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
  const endpoint = (init.hfEndpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(
    /\/+$/,
    '',
  );
  const hfToken = init.hfToken ?? process.env.HF_TOKEN;
  const hfHeaders: Record<string, string> =
    hfToken === undefined || hfToken === '' ? {} : { authorization: `Bearer ${hfToken}` };
  const fetchFn = init.fetch ?? globalThis.fetch;
  const stallTimeoutMs = init.stallTimeoutMs ?? 60_000;
  const now = init.now ?? Date.now;
  const tasks = createSharedTasks<EnsureResult>();
  /** Partial files being written now; reconcile must not delete them. */
  const writing = new Set<string>();

  type Emit = (progress: ProvisionProgress) => void;

  async function provision(ref: ModelRef, signal: AbortSignal, emit: Emit): Promise<EnsureResult> {
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
      case 'url':
        return download(ref, ref.url, signal, emit);
      case 'hf': {
        if (ref.file !== undefined) {
          const url = `${endpoint}/${ref.repo}/resolve/main/${ref.file.split('/').map(encodeURIComponent).join('/')}`;
          return download({ ...ref, file: ref.file }, url, signal, emit, hfHeaders);
        }
        const fileRef = await resolveHfFile(ref, signal, emit);
        return tasks.run(canonicalRef(fileRef), (s, e) => provision(fileRef, s, e), {
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
        if (row.ref.startsWith(prefix) && (await fileSize(row.path)) === row.bytes) rows.push(row);
      }
      const files: RepoFile[] = rows.map((row) => ({ name: row.ref.slice(prefix.length), bytes: row.bytes }));
      const pick = pickGgufFile(files, ref.quant);
      return pick === undefined ? undefined : rows[files.indexOf(pick.file)];
    }
    const row = catalog.get(canonicalRef(ref));
    if (row === undefined) return undefined;
    if ((await fileSize(row.path)) === row.bytes) return row;
    catalog.remove(row.id);
    return undefined;
  }

  async function resolveHfFile(ref: ModelRef & { kind: 'hf' }, signal: AbortSignal, emit: Emit) {
    emit({ phase: 'resolving', bytes: 0, message: `listing the GGUF files of ${ref.repo}` });
    const files = await listRepoGgufFiles({
      endpoint,
      repo: ref.repo,
      fetch: fetchFn,
      headers: hfHeaders,
      timeoutMs: stallTimeoutMs,
      signal,
    });
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
    return { kind: 'hf' as const, repo: ref.repo, file: pick.file.name };
  }

  async function registerLocal(ref: ModelRef & { kind: 'file' }, signal: AbortSignal, emit: Emit) {
    emit({ phase: 'verifying', bytes: 0, file: basename(ref.path) });
    const size = await fileSize(ref.path);
    if (size === undefined) {
      throw new RbeeError('MODEL_NOT_FOUND', `no such model file: ${ref.path}`, {
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
    url: string,
    signal: AbortSignal,
    emit: Emit,
    headers: Record<string, string> = {},
  ): Promise<EnsureResult> {
    const fileName = modelFileName(ref);
    const finalPath = resolveInModelsDir(modelsDir, modelDirName(ref), fileName);
    const file = basename(fileName);
    const fields = await intoModelsDir(finalPath, signal, async (partial) => {
      emit({ phase: 'downloading', bytes: 0, file });
      const { bytes, sha256 } = await downloadToFile({
        url,
        path: partial,
        fetch: fetchFn,
        headers,
        stallTimeoutMs,
        signal,
        onProgress: (p) => emit({ phase: 'downloading', ...p, file }),
      });
      emit({ phase: 'verifying', bytes, totalBytes: bytes, file });
      const info = await readModelInfo(partial, { signal });
      return { path: finalPath, bytes, sha256, info, source: 'download' as const };
    });
    return publish(ref, fields, emit);
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
      if (fields.source !== 'local') {
        await rm(fields.path, { force: true });
        await pruneEmptyDirs(dirname(fields.path), modelsDir);
      }
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
      const removedPartials: string[] = [];
      for (const path of await listFiles(modelsDir)) {
        options.signal?.throwIfAborted();
        if (!path.endsWith('.partial') || writing.has(path) || writing.has(path.replace(/\.partial$/, '')))
          continue;
        await rm(path, { force: true });
        removedPartials.push(path);
        await pruneEmptyDirs(dirname(path), modelsDir);
      }
      const removedRows: ModelRow[] = [];
      for (const row of catalog.list()) {
        if ((await fileSize(row.path)) !== undefined) continue;
        catalog.remove(row.id);
        removedRows.push(row);
      }
      return { removedPartials, removedRows };
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
      // Never delete a user's own file, nor anything outside the models directory.
      if (row.source !== 'local' && isInside(modelsDir, resolve(row.path))) {
        await rm(row.path, { force: true });
        await pruneEmptyDirs(dirname(resolve(row.path)), modelsDir);
      }
      return row;
    },

    inProgress() {
      return tasks.active().map(({ key, last }) => ({ ref: key, progress: last }));
    },
  };

  function lookupByParsedRef(text: string): ModelRow | undefined {
    try {
      return catalog.get(canonicalRef(parseModelRef(text)));
    } catch {
      return undefined;
    }
  }
}
