/**
 * `rbee place MODEL` / `GET /v1/place`: where a job for the model would run, computed on this node
 * the way the queen would place it — over every member's published hive state (this hive alone
 * outside a cluster) — with what this node's jobs table measured of past runs. Nothing loads.
 */
import { existsSync } from 'node:fs';
import { RbeeError } from '../../shared/errors.js';
import type { PlacePreview } from '../../shared/view.js';
import type { Hive } from '../hive/index.js';
import type { ModelRef } from '../models/index.js';
import { previewPlacement, type HiveCandidate, type PastJob } from '../queen/index.js';
import type { JobRow, JobStore, ModelCatalog } from '../store/index.js';

export interface PlacePreviewInit {
  local: Hive;
  /** The other members' published states; none while this node runs alone. */
  remotes: () => readonly HiveCandidate[];
  catalog: Pick<ModelCatalog, 'get'>;
  parseModelRef: (input: string) => ModelRef;
  modelId: (ref: ModelRef) => string;
  jobs: Pick<JobStore, 'recentDone'>;
}

/** Rows of the jobs table read for the medians (every model, every hive). */
const JOBS_READ = 2_000;

export type PlacePreviewer = (input: {
  model: string;
  hive?: string | undefined;
  contextSize?: number | undefined;
}) => PlacePreview;

export function createPlacePreview(init: PlacePreviewInit): PlacePreviewer {
  return ({ model, hive, contextSize }) => {
    const hives: HiveCandidate[] = [{ id: init.local.id, state: init.local.state() }, ...init.remotes()];
    const { modelId, provisionable } = resolve(model, hives);
    return previewPlacement({
      request: {
        modelId,
        entry: init.local.id,
        provisionable,
        ...(hive === undefined ? {} : { pin: hive }),
        ...(contextSize === undefined ? {} : { contextSize }),
      },
      ref: model,
      node: init.local.name,
      hives,
      pastJobs: pastJobs(init.jobs.recentDone(JOBS_READ)),
    });
  };

  /** The model's id: a model some hive holds (by id or ref), this catalog's (alias too), or a ref. */
  function resolve(
    input: string,
    hives: readonly HiveCandidate[],
  ): { modelId: string; provisionable: 'any' | 'entry' } {
    const held =
      hives.flatMap((h) => h.state.models).find((m) => m.id === input || m.ref === input) ??
      init.catalog.get(input);
    if (held !== undefined) {
      return { modelId: held.id, provisionable: held.ref.startsWith('file:') ? 'entry' : 'any' };
    }
    let ref: ModelRef;
    try {
      ref = init.parseModelRef(input);
    } catch (error) {
      // a bare name is a model nobody has, not a malformed ref
      if (/^[\w.-]+$/.test(input) && !/\.gguf$/i.test(input)) {
        throw new RbeeError(
          'MODEL_NOT_FOUND',
          `no hive has a model ${input}, and it is no model ref (demo, hf:org/repo, https://…/x.gguf, a path)`,
          { details: { model: input } },
        );
      }
      throw error;
    }
    if (ref.kind === 'file' && !existsSync(ref.path)) {
      throw new RbeeError('MODEL_NOT_FOUND', `the model file is missing: ${ref.path}`, {
        details: { path: ref.path },
      });
    }
    return { modelId: init.modelId(ref), provisionable: ref.kind === 'file' ? 'entry' : 'any' };
  }

  function pastJobs(rows: JobRow[]): PastJob[] {
    const ids = new Map<string, string | undefined>();
    const idOf = (model: string): string | undefined => {
      if (!ids.has(model)) {
        let id: string | undefined;
        try {
          id = init.modelId(init.parseModelRef(model));
        } catch {
          id = init.catalog.get(model)?.id;
        }
        ids.set(model, id);
      }
      return ids.get(model);
    };
    return rows.flatMap((row) => {
      const modelId = idOf(row.model);
      if (modelId === undefined || row.firstTokenAt === undefined || row.finishedAt === undefined) return [];
      const generatingS = (row.finishedAt - row.firstTokenAt) / 1000;
      const tokens = row.completionTokens ?? 0;
      return [
        {
          hive: row.hive,
          hiveName: row.hiveName,
          modelId,
          timeToFirstTokenMs: row.firstTokenAt - row.acceptedAt,
          // the first token starts the clock: the others came in the time measured
          tokensPerSecond: tokens >= 2 && generatingS > 0 ? (tokens - 1) / generatingS : undefined,
        },
      ];
    });
  }
}
