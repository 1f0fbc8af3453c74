/**
 * `GET /v1/models`: the models of every hive of the cluster (this node's first), one entry per
 * model however many hives hold it, each under a name that works as `model` anywhere a model is
 * named. The id is the model's short name (`tiny:q8_0`, models/model-names.ts) while no other model
 * has the same one, else its catalog id. No entry shows a path on a hive's disk.
 */
import type { ClusterModels, HiveState, ModelView } from '../../shared/view.js';
import { canonicalRef, shortModelName, type ModelRef } from '../models/index.js';

export interface OpenAiModel {
  id: string;
  object: 'model';
  /** Seconds since the epoch: when the model came onto the first hive that holds it. */
  created: number;
  /** The first hive that holds it (this node's own when it does). */
  owned_by: string;
  /** The short name, which works as `model` even where `id` is the catalog id. */
  name: string;
  /** The catalog id, the same on every hive. */
  model_id: string;
  /** This node's aliases for the model. */
  aliases: string[];
  /** Every hive that holds it, by name. */
  hives: string[];
  /** The ref it was fetched by (absent for a local file, whose ref is a path). */
  ref?: string;
  /** The model's own name from its GGUF metadata. */
  description: string;
  context_length: number;
  architecture: string;
  quantization: string;
  bytes: number;
  /** How it came onto its disk: `download`, `local` (a file that was there) or `demo`. */
  source: string;
}

export interface ModelList {
  list(): OpenAiModel[];
  /** The entry for any name of a model (id, short name, alias, catalog id, ref), if a hive has it. */
  find(name: string): OpenAiModel | undefined;
}

export interface ModelListInit {
  /** Every hive's published state, this node's first. */
  hives: () => readonly HiveState[];
  /** This node's aliases. */
  aliases: () => readonly { name: string; ref: string }[];
  /** A ref or name to the ref it stands for (throws when it stands for none). */
  resolve: (input: string) => ModelRef;
}

export function createModelList(init: ModelListInit): ModelList {
  const list = (): OpenAiModel[] => {
    const groups = new Map<string, { model: ModelView; hives: string[] }>();
    for (const state of init.hives()) {
      for (const model of state.models) {
        const group = groups.get(model.id);
        if (group === undefined) groups.set(model.id, { model, hives: [state.hive.name] });
        else if (!group.hives.includes(state.hive.name)) group.hives.push(state.hive.name);
      }
    }
    const aliases = init.aliases();
    const named = [...groups.values()].map((g) => ({ ...g, name: shortModelName(g.model) }));
    const counts = new Map<string, number>();
    for (const { name } of named) counts.set(name, (counts.get(name) ?? 0) + 1);
    return named.map(({ model, hives, name }) => ({
      id: counts.get(name) === 1 ? name : model.id,
      object: 'model',
      created: Math.floor((model.addedAt ?? 0) / 1000),
      owned_by: hives[0] ?? 'rbee',
      name,
      model_id: model.id,
      aliases: aliases.filter((a) => a.ref === model.ref).map((a) => a.name),
      hives,
      ...(model.ref.startsWith('file:') ? {} : { ref: model.ref }),
      description: model.name,
      context_length: model.contextLength,
      architecture: model.architecture,
      quantization: model.quantization,
      bytes: model.bytes,
      source: model.source,
    }));
  };
  return {
    list,
    find(name) {
      const models = list();
      const direct = models.find(
        (m) => m.id === name || m.model_id === name || m.name === name.toLowerCase(),
      );
      if (direct !== undefined) return direct;
      let ref: string;
      try {
        ref = canonicalRef(init.resolve(name));
      } catch {
        return undefined;
      }
      const byRef = init
        .hives()
        .flatMap((s) => s.models)
        .find((m) => m.ref === ref);
      return byRef === undefined ? undefined : models.find((m) => m.model_id === byRef.id);
    },
  };
}

/**
 * `GET /v1/cluster/models`: every model file of the cluster once per content (its sha256), with the
 * hives that hold it, this node's first. A model whose hive does not know its sha256 (a user's own
 * file) is an entry of its own per hive.
 */
export function clusterModels(hives: readonly HiveState[]): ClusterModels {
  const groups = new Map<string, ClusterModels['models'][number]>();
  for (const state of hives) {
    for (const model of state.models) {
      const sha256 = model.sha256 ?? null;
      const key = sha256 ?? `${model.hive}|${model.id}`;
      let group = groups.get(key);
      if (group === undefined) {
        group = {
          id: model.id,
          name: shortModelName(model),
          ...(model.ref.startsWith('file:') ? {} : { ref: model.ref }),
          sha256,
          bytes: model.bytes,
          quantization: model.quantization,
          hives: [],
        };
        groups.set(key, group);
      }
      if (!group.hives.some((h) => h.id === model.hive)) {
        group.hives.push({ id: model.hive, name: state.hive.name });
      }
    }
  }
  return { models: [...groups.values()] };
}
