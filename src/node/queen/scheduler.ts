/**
 * The queen's scheduler: given what a job needs and every hive's published state, pick where it
 * runs, and say why. Pure: the same inputs always give the same answer, and the whole table of
 * candidates comes back too (what `rbee place` shows before anything loads).
 *
 * In order of preference:
 *  1. a warm worker of the model with a free slot;
 *  2. a hive with the model on disk and room for it on a device;
 *  3. the strongest device with room (the model is provisioned there first);
 *  4. a warm worker whose slots are all busy (the queue holds the job until a slot frees).
 * Room on the CPU counts idle workers of other models as memory the hive can take back: it unloads
 * the least recently used of them first, and the option names them (`evicts`). A busy worker is
 * never counted.
 * Among warm workers, the one whose slots keep the longest start of the prompt cached (prefix
 * affinity: a chat's next turn returns to the KV cache of its last one). Among equals: more free
 * slots, then a lighter load, then faster recent generation, then the entry
 * node itself (no network hop), then the hive id (a stable order).
 */
import { RbeeError } from '../../shared/errors.js';
import { mib as mibDigits } from '../../shared/format.js';
import type { HiveState, WorkerView } from '../../shared/view.js';

/** A worker process with llama.cpp loaded and no model (see hive/memory-checker.ts). */
export const WORKER_BASELINE_BYTES = 170 * 2 ** 20;
/** What a hive keeps free for everything else, unless it says otherwise. */
export const DEFAULT_RESERVE_BYTES = 512 * 2 ** 20;
/** KV cache and compute buffers on top of the weights, as a share of the model's size. */
const CONTEXT_OVERHEAD = 0.2;

export interface PlacementRequest {
  /** The catalog id of the model (the same on every hive: derived from its canonical ref). */
  modelId: string;
  /** The hive whose node received the job. */
  entry: string;
  /** Where a model that no hive holds can be fetched: by any hive, or only by the entry hive (a local path). */
  provisionable: 'any' | 'entry';
  /** Only this hive (its id or name). */
  pin?: string | undefined;
  /** Hives not to use (they failed this job already). */
  exclude?: readonly string[] | undefined;
  /**
   * Prefix affinity: the warm workers whose slots keep the start of this job's prompt cached, and
   * how many of its tokens (computed where the prompt is, from the workers' published prefix keys).
   */
  affinity?: readonly { worker: string; tokens: number }[] | undefined;
  /**
   * The least context per slot the job's worker must have: a worker of the model with less is
   * reloaded with it on its hive once idle (until then the job waits for it).
   */
  contextSize?: number | undefined;
}

export interface HiveCandidate {
  id: string;
  state: HiveState;
}

export type PlacementKind = 'warm' | 'on-disk' | 'provision' | 'wait';

export interface Device {
  backend: string;
  /** GPU index; -1 for the CPU. */
  index: number;
  freeBytes: number;
}

/** One row of the scheduler's table: one hive, whether the model can run there, and why (not). */
export interface PlacementOption {
  hive: string;
  name: string;
  kind: PlacementKind | 'no-room' | 'unavailable';
  /** The worker that would take the job (warm and wait). */
  worker?: string;
  device?: Device;
  /** Bytes the model needs on a device, when known. */
  neededBytes?: number;
  why: string;
  /** Recent tok/s of the model's worker there (warm), for the preview. */
  tokensPerSecond?: number;
  /** Idle workers the hive unloads (least recently used first) to make the room. */
  evicts?: string[];
  /** Tokens of the job's prompt its worker keeps cached (warm). */
  cachedTokens?: number;
}

export interface Placement {
  hive: string;
  name: string;
  kind: PlacementKind;
  worker?: string;
  device?: Device;
  /** Idle workers the hive unloads first to make room. */
  evicts?: string[];
  /** One line: what was picked and why ("worker 3f… on hive gamma: model warm, 1 of 2 slots free"). */
  reason: string;
}

export interface Schedule {
  placement: Placement | undefined;
  options: PlacementOption[];
}

/** A loading worker takes jobs too: they wait for its load instead of starting another. */
const WARM_STATES: ReadonlySet<string> = new Set(['loading', 'idle', 'busy']);

const RANK: Record<PlacementKind, number> = { warm: 0, 'on-disk': 1, provision: 2, wait: 3 };

/** Bytes a model of `modelBytes` needs on a device: weights, context and the worker process. */
export function neededBytes(modelBytes: number): number {
  return Math.ceil(modelBytes * (1 + CONTEXT_OVERHEAD)) + WORKER_BASELINE_BYTES;
}

/** Every hive's option for this request, best first, and the pick (the first usable option). */
export function schedule(
  request: PlacementRequest,
  hives: readonly HiveCandidate[],
  now: number = Date.now(),
): Schedule {
  const pinned = request.pin === undefined ? undefined : findPinned(request.pin, hives);
  const modelBytes = hives.flatMap((h) => h.state.models).find((m) => m.id === request.modelId)?.bytes;
  const scored = hives
    .filter((h) => pinned === undefined || h.id === pinned.id)
    .map((hive) => ({ hive, option: optionFor(request, hive, modelBytes, now) }));
  scored.sort((a, b) => compare(request, a, b));
  const options = scored.map((s) => s.option);
  const best = scored[0];
  if (best === undefined || !isUsable(best.option.kind)) return { placement: undefined, options };
  const { option } = best;
  return {
    placement: {
      hive: option.hive,
      name: option.name,
      kind: option.kind as PlacementKind,
      ...(option.worker === undefined ? {} : { worker: option.worker }),
      ...(option.device === undefined ? {} : { device: option.device }),
      ...(option.evicts === undefined ? {} : { evicts: option.evicts }),
      reason: option.why,
    },
    options,
  };
}

/** Like `schedule`, but an impossible job is a clear error naming why each hive cannot take it. */
export function place(
  request: PlacementRequest,
  hives: readonly HiveCandidate[],
  now: number = Date.now(),
): Placement {
  const { placement, options } = schedule(request, hives, now);
  if (placement !== undefined) return placement;
  const reasons = options.map((o) => `${o.name}: ${o.why}`).join('; ');
  if (request.pin !== undefined) {
    throw new RbeeError(
      'INSUFFICIENT_MEMORY',
      `hive ${request.pin} cannot run ${request.modelId} (${reasons})`,
    );
  }
  throw new RbeeError(
    'INSUFFICIENT_MEMORY',
    options.length === 0
      ? `no hive can run ${request.modelId}`
      : `no hive can run ${request.modelId} now (${reasons})`,
  );
}

function findPinned(pin: string, hives: readonly HiveCandidate[]): HiveCandidate {
  const found = hives.find((h) => h.id === pin) ?? hives.find((h) => h.state.hive.name === pin);
  if (found === undefined) {
    const names = hives.map((h) => h.state.hive.name).join(', ');
    throw new RbeeError('NOT_FOUND', `no hive named ${pin} in the cluster (hives: ${names})`);
  }
  return found;
}

function isUsable(kind: PlacementOption['kind']): kind is PlacementKind {
  return kind in RANK;
}

function optionFor(
  request: PlacementRequest,
  { id, state }: HiveCandidate,
  modelBytes: number | undefined,
  now: number,
): PlacementOption {
  const name = state.hive.name;
  const base = { hive: id, name };
  if (request.exclude?.includes(id) === true)
    return { ...base, kind: 'unavailable', why: 'failed this job already' };
  if (state.hive.health !== 'ready')
    return { ...base, kind: 'unavailable', why: `hive is ${state.hive.health}` };

  const loaded = state.workers.filter((w) => w.model === request.modelId && WARM_STATES.has(w.state));
  // a hive of an older version does not say its workers' context: taken as enough
  const short = (w: WorkerView): boolean =>
    request.contextSize !== undefined && w.contextSize !== undefined && w.contextSize < request.contextSize;
  const workers = loaded.filter((w) => !short(w));
  const cached = (w: WorkerView): number => request.affinity?.find((a) => a.worker === w.id)?.tokens ?? 0;
  const free = workers
    .filter((w) => w.slotsBusy < w.slots)
    .sort(
      (a, b) =>
        cached(b) - cached(a) ||
        b.slots - b.slotsBusy - (a.slots - a.slotsBusy) ||
        b.tokensPerSecond - a.tokensPerSecond,
    )[0];
  if (free !== undefined) {
    const tokens = cached(free);
    return {
      ...base,
      kind: 'warm',
      worker: free.id,
      tokensPerSecond: free.tokensPerSecond,
      ...(tokens > 0 ? { cachedTokens: tokens } : {}),
      why:
        `worker ${shortId(free.id)} on hive ${name}: model warm, ${free.slots - free.slotsBusy} of ${free.slots} slots free` +
        (tokens > 0 ? `, ${tokens} tokens of the prompt cached there` : ''),
    };
  }

  // one worker per model on a hive: with its slots all busy, the job waits for one of them
  const busy = workers[0];
  if (busy !== undefined) {
    return {
      ...base,
      kind: 'wait',
      worker: busy.id,
      tokensPerSecond: busy.tokensPerSecond,
      why: `worker ${shortId(busy.id)} on hive ${name}: model warm, all ${busy.slots} slots busy (waits for one)`,
    };
  }

  // one worker per model on a hive: one with too little context is reloaded once its jobs are done
  const small = loaded.find(short);
  if (small !== undefined && (small.slotsBusy > 0 || small.state !== 'idle')) {
    return {
      ...base,
      kind: 'wait',
      worker: small.id,
      tokensPerSecond: small.tokensPerSecond,
      why:
        `worker ${shortId(small.id)} on hive ${name} has ${small.contextSize} tokens of context and the job asks ` +
        `for ${request.contextSize}: it is reloaded once its running jobs are done (waits for them)`,
    };
  }

  const onDisk = state.models.some((m) => m.id === request.modelId);
  const canFetch = request.provisionable === 'any' || id === request.entry;
  if (!onDisk && !canFetch) {
    return { ...base, kind: 'unavailable', why: 'the model is a path on another machine' };
  }
  const needed = modelBytes === undefined ? undefined : neededBytes(modelBytes);
  const room = strongestDeviceWithRoom(reloading(state, small), needed, request.modelId);
  if (room !== undefined) {
    const { device } = room;
    const evicts = small === undefined ? room.evicts : [small, ...room.evicts];
    const where = device.index < 0 ? 'CPU' : `GPU${device.index} (${device.backend})`;
    const numbers =
      needed === undefined
        ? `${mib(device.freeBytes)} free`
        : `needs ${mib(needed)}, ${mib(device.freeBytes)} free`;
    const unloading =
      evicts.length === 0
        ? ''
        : ` after unloading idle ${evicts.length === 1 ? 'worker' : 'workers'} ${evicts
            .map((w) =>
              w === small
                ? `${shortId(w.id)} (${small.contextSize} tokens of context, reloaded with ${request.contextSize})`
                : `${shortId(w.id)} (${w.model}, idle ${idleFor(w, now)})`,
            )
            .join(', ')}`;
    return {
      ...base,
      kind: onDisk ? 'on-disk' : 'provision',
      device,
      ...(needed === undefined ? {} : { neededBytes: needed }),
      ...(evicts.length === 0 ? {} : { evicts: evicts.map((w) => w.id) }),
      why: onDisk
        ? `hive ${name}: model on disk, room on ${where}${unloading} (${numbers})`
        : `hive ${name}: model not on disk, fetched there first; room on ${where}${unloading} (${numbers})`,
    };
  }

  return {
    ...base,
    kind: 'no-room',
    ...(needed === undefined ? {} : { neededBytes: needed }),
    why:
      needed === undefined
        ? 'no memory free on any device'
        : `needs ${mib(needed)}; most free: ${mib(mostFree(state))}`,
  };
}

/**
 * The hive as it is once `worker` (idle, of the job's model, with too little context) is unloaded
 * for the reload: its memory free again, on its device.
 */
function reloading(state: HiveState, worker: WorkerView | undefined): HiveState {
  if (worker === undefined) return state;
  const workers = state.workers.filter((w) => w !== worker);
  if (worker.device >= 0) {
    const gpus = state.hive.gpus.map((g) =>
      g.index === worker.device ? { ...g, vramFreeBytes: g.vramFreeBytes + worker.memoryBytes } : g,
    );
    return { ...state, workers, hive: { ...state.hive, gpus } };
  }
  return {
    ...state,
    workers,
    hive: { ...state.hive, ramFreeBytes: state.hive.ramFreeBytes + worker.memoryBytes },
  };
}

/**
 * The devices a hive offers, strongest first: its GPUs of the backends it allows (by the backend's
 * strength, then free memory), then the CPU, each with the bytes free for a model.
 */
export function hiveDevices(state: HiveState): Device[] {
  const gpus: Device[] = state.hive.gpus
    .filter((g) => state.hive.backends.includes(g.backend))
    .map((g) => ({ backend: g.backend, index: g.index, freeBytes: g.vramFreeBytes }))
    .sort((a, b) => backendRank(a.backend) - backendRank(b.backend) || b.freeBytes - a.freeBytes);
  const cpu = { backend: 'cpu', index: -1, freeBytes: state.hive.ramFreeBytes - reserveOf(state) };
  return [...gpus, cpu];
}

/** Whether a model needing `needed` bytes (unknown: anything) fits in what the device has free. */
export function fitsOn(device: Device, needed: number | undefined): boolean {
  return device.freeBytes > 0 && (needed === undefined || device.freeBytes >= needed);
}

/**
 * GPUs first, by the backend's strength and then free memory; the CPU when no GPU has room. On the
 * CPU, idle workers of other models count as room the hive can take back, least recently used first
 * (the order the hive unloads them in), and only as many as the model needs. Also the device a hive
 * picks for itself when a job comes without one.
 */
export function strongestDeviceWithRoom(
  state: HiveState,
  needed: number | undefined,
  modelId: string,
): { device: Device; evicts: WorkerView[] } | undefined {
  const devices = hiveDevices(state);
  const gpu = devices.find((d) => d.index >= 0 && fitsOn(d, needed));
  if (gpu !== undefined) return { device: gpu, evicts: [] };
  let cpuFree = devices.at(-1)!.freeBytes;
  const evicts: WorkerView[] = [];
  if (needed !== undefined) {
    const idle = state.workers
      .filter((w) => w.model !== modelId && w.state === 'idle' && w.slotsBusy === 0 && w.device < 0)
      .sort((a, b) => a.lastUsedAt - b.lastUsedAt);
    for (const worker of idle) {
      if (cpuFree >= needed) break;
      evicts.push(worker);
      cpuFree += worker.memoryBytes;
    }
  }
  const cpu = { backend: 'cpu', index: -1, freeBytes: cpuFree };
  return fitsOn(cpu, needed) ? { device: cpu, evicts } : undefined;
}

/** What the hive keeps free for everything else: its own setting, else the default. */
export function reserveOf(state: HiveState): number {
  return state.hive.reserveBytes ?? DEFAULT_RESERVE_BYTES;
}

function idleFor(worker: WorkerView, now: number): string {
  const s = Math.max(0, Math.round((now - worker.lastUsedAt) / 1000));
  return s < 120 ? `${s} s` : `${Math.round(s / 60)} min`;
}

/** CUDA > Vulkan > Metal > anything else; the CPU is the fallback, never a GPU's equal. */
export function backendRank(backend: string): number {
  const order = ['cuda', 'vulkan', 'metal'];
  const i = order.indexOf(backend);
  return i < 0 ? order.length : i;
}

function mostFree(state: HiveState): number {
  return Math.max(...hiveDevices(state).map((d) => d.freeBytes), 0);
}

interface Scored {
  hive: HiveCandidate;
  option: PlacementOption;
}

function compare(request: PlacementRequest, a: Scored, b: Scored): number {
  const ra = isUsable(a.option.kind) ? RANK[a.option.kind] : 9;
  const rb = isUsable(b.option.kind) ? RANK[b.option.kind] : 9;
  if (ra !== rb) return ra - rb;
  return (
    // a warm worker that keeps the prompt's start cached skips most of its prompt processing
    (b.option.cachedTokens ?? 0) - (a.option.cachedTokens ?? 0) ||
    freeSlots(b) - freeSlots(a) ||
    deviceRank(a.option.device) - deviceRank(b.option.device) ||
    load(a.hive) - load(b.hive) ||
    (b.option.tokensPerSecond ?? 0) - (a.option.tokensPerSecond ?? 0) ||
    Number(b.hive.id === request.entry) - Number(a.hive.id === request.entry) ||
    (b.option.device?.freeBytes ?? 0) - (a.option.device?.freeBytes ?? 0) ||
    a.hive.id.localeCompare(b.hive.id)
  );
}

/** A GPU of a stronger backend first; the CPU last (an option without a device ranks as equal). */
function deviceRank(device: Device | undefined): number {
  if (device === undefined) return 0;
  return device.index < 0 ? 10 : backendRank(device.backend);
}

function freeSlots({ hive, option }: Scored): number {
  const worker = hive.state.workers.find((w) => w.id === option.worker);
  return worker === undefined ? 0 : worker.slots - worker.slotsBusy;
}

/** Runnable processes per core, rounded so that small differences count as equal. */
function load({ state }: HiveCandidate): number {
  const cores = Math.max(1, state.hive.cpu.logicalCores);
  return Math.round(((state.hive.loadAverage ?? 0) / cores) * 4) / 4;
}

const mib = (bytes: number): string => mibDigits(bytes, 0);

function shortId(id: string): string {
  return id.length > 8 ? `${id.slice(0, 8)}…` : id;
}
