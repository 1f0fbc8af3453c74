/**
 * The queen's queue and admission. Every job asks here for its place; the answer is a ticket (the
 * scheduler's placement, its slot held for the job until the ticket is released) or a wait in a
 * bounded queue, told its position, until a slot or the memory frees. Interactive jobs go before
 * batch ones, then first come first served; a full queue refuses with QUEUE_FULL and a Retry-After.
 *
 * The queen does not wait for the hives to publish what it handed out: each ticket it holds counts
 * as a busy slot of that model's worker on that hive (or as a worker loading there, with the memory
 * it will take), so two jobs are never placed on one free slot, and a released ticket frees its
 * slot here at once. A job waits only while something can change: a busy worker of its model, or
 * busy work on a hive where the model would fit once that work ends. Otherwise it fails at once
 * with the scheduler's reasons (INSUFFICIENT_MEMORY), never waits forever.
 */
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { HiveState, WorkerView } from '../../shared/view.js';
import {
  neededBytes,
  place,
  reserveOf,
  schedule,
  type HiveCandidate,
  type Placement,
  type PlacementRequest,
  type Schedule,
} from './scheduler.js';

export type Priority = 'interactive' | 'batch';

export interface QueueRequest extends PlacementRequest {
  /** The job's id (one ticket per job and attempt). */
  job: string;
  priority: Priority;
  /** When the entry node accepted the job: the order within a priority, on any queen. */
  acceptedAt: number;
}

export interface QueuePosition {
  /** 1 = next. */
  position: number;
  queued: number;
  /** From how long this model's jobs held their slots lately; absent before any finished. */
  estimatedWaitS?: number | undefined;
}

export interface Ticket {
  placement: Placement;
  /** The node name of the queen that placed it (narration's provenance). */
  queen: string;
  /** The job ended (or left that hive): its slot is free for the next job. Idempotent. */
  release(): void;
}

export interface QueueDepth {
  model: string;
  queued: number;
  /** Of those, interactive jobs (they go first) and batch jobs. */
  interactive: number;
  batch: number;
  /** The wait of the last job in line for this model. */
  estimatedWaitS?: number | undefined;
}

export interface PlacementQueueInit {
  /** This node's name: the queen's, in what the tickets say. */
  name: string;
  /** Every hive the queen may place on, with its published state. */
  hives: () => HiveCandidate[];
  /** Jobs that may wait; one more is refused with QUEUE_FULL. */
  maxQueued: number;
  now?: () => number;
  /** How often a waiting queue is tried again without any event (free memory changes silently). */
  retryMs?: number;
  /** The queue's depth changed. */
  onChange?: () => void;
}

export interface PlacementQueue {
  /** A ticket now, or once the job's turn comes (`onQueued` tells each new position meanwhile). */
  acquire(
    request: QueueRequest,
    options?: { signal?: AbortSignal; onQueued?: (position: QueuePosition) => void },
  ): Promise<Ticket>;
  /** Hive states changed: waiting jobs are tried again. */
  changed(): void;
  depth(): QueueDepth[];
  /** Tickets held now (jobs placed and not yet ended). */
  held(): number;
  /** Every waiting job fails with `error` (this node is not the queen any more, or stops). */
  rejectAll(error: RbeeError): void;
}

/** How long a released ticket corrects a hive's published busy slots: longer than it takes to publish. */
const RELEASE_LAG_MS = 2_000;
/** What a slot is held for, on average, before any job of the model finished here. */
const UNKNOWN_HOLD_S = 10;
const PRIORITY_RANK: Record<Priority, number> = { interactive: 0, batch: 1 };

interface Waiter {
  seq: number;
  request: QueueRequest;
  position: number;
  resolve: (ticket: Ticket) => void;
  reject: (error: RbeeError) => void;
  onQueued: ((position: QueuePosition) => void) | undefined;
  cleanup: () => void;
}

interface Reservation {
  hive: string;
  /** The hive's name: a node's id changes once, when it joins the cluster, its name does not. */
  name: string;
  modelId: string;
  device: Placement['device'];
  since: number;
}

export function createPlacementQueue(init: PlacementQueueInit): PlacementQueue {
  const now = init.now ?? Date.now;
  const waiting: Waiter[] = [];
  const held = new Map<number, Reservation>();
  /**
   * Tickets released lately. A hive publishes its freed slot a moment after the entry node saw the
   * job end (and released its ticket), so for that moment its state still says busy: each recent
   * release takes one busy slot of its model off the hive's published count.
   */
  let released: (Reservation & { at: number })[] = [];
  /** Seconds a ticket of each model was held lately (a moving average). */
  const holdS = new Map<string, number>();
  let seq = 0;
  let timer: NodeJS.Timeout | undefined;

  const byTurn = (a: Waiter, b: Waiter): number =>
    PRIORITY_RANK[a.request.priority] - PRIORITY_RANK[b.request.priority] ||
    a.request.acceptedAt - b.request.acceptedAt ||
    a.seq - b.seq;

  function ticketFor(placement: Placement, modelId: string): Ticket {
    const id = ++seq;
    held.set(id, {
      hive: placement.hive,
      name: placement.name,
      modelId,
      device: placement.device,
      since: now(),
    });
    return {
      placement,
      queen: init.name,
      release() {
        const reservation = held.get(id);
        if (reservation === undefined) return;
        held.delete(id);
        const at = now();
        released = released.filter((r) => at - r.at < RELEASE_LAG_MS);
        released.push({ ...reservation, at });
        const s = (now() - reservation.since) / 1000;
        const before = holdS.get(modelId);
        holdS.set(modelId, before === undefined ? s : before * 0.7 + s * 0.3);
        pump();
      },
    };
  }

  /** Published states with the tickets held here counted in (see the file's comment). */
  function candidates(): HiveCandidate[] {
    const hives = init.hives();
    const since = now() - RELEASE_LAG_MS;
    released = released.filter((r) => r.at > since);
    if (held.size === 0 && released.length === 0) return hives;
    const on = (candidate: HiveCandidate) => (r: Reservation) =>
      r.hive === candidate.id || r.name === candidate.state.hive.name;
    return hives.map((candidate) => {
      // slots freed a moment ago are free, though the state may still say busy (the tickets held
      // count again below: published − released never hides a job placed since)
      const freed = released.filter(on(candidate));
      const mine = [...held.values()].filter(on(candidate));
      if (freed.length === 0 && mine.length === 0) return candidate;
      let state = freed.length === 0 ? candidate.state : withReleases(candidate.state, freed);
      if (mine.length > 0) state = withTickets(candidate.id, state, mine, hives);
      return { ...candidate, state };
    });
  }

  /** Tries each waiting job in turn; places what fits, fails what never will, tells positions. */
  function pump(): void {
    if (waiting.length > 0) {
      waiting.sort(byTurn);
      // a model whose first job in line waits holds back its later ones (first come, first served)
      const blockedModels = new Set<string>();
      // a job that waits for memory holds back every later job that would start a worker
      let waitsForMemory = false;
      for (const waiter of [...waiting]) {
        const { request } = waiter;
        if (blockedModels.has(request.modelId)) continue;
        const hives = candidates();
        let result: Schedule;
        try {
          result = schedule(request, hives, now());
        } catch (error) {
          settle(waiter, toRbeeError(error));
          continue;
        }
        const { placement } = result;
        if (
          placement !== undefined &&
          placement.kind !== 'wait' &&
          !(waitsForMemory && placement.kind !== 'warm')
        ) {
          remove(waiter);
          waiter.resolve(ticketFor(placement, request.modelId));
          continue;
        }
        if (!canChange(request, result, hives)) {
          settle(waiter, impossible(request, hives));
          continue;
        }
        blockedModels.add(request.modelId);
        if (placement?.kind !== 'wait') waitsForMemory = true;
      }
    }
    tellPositions();
    arm();
    changedDepth();
  }

  let lastDepth = '';
  function changedDepth(): void {
    const depth = waiting.map((w) => w.request.modelId).join('\n');
    if (depth === lastDepth) return;
    lastDepth = depth;
    init.onChange?.();
  }

  function tellPositions(): void {
    const perModel = new Map<string, number>();
    waiting.forEach((waiter, index) => {
      const inModel = (perModel.get(waiter.request.modelId) ?? 0) + 1;
      perModel.set(waiter.request.modelId, inModel);
      if (waiter.position === index + 1) return;
      waiter.position = index + 1;
      waiter.onQueued?.({
        position: waiter.position,
        queued: waiting.length,
        estimatedWaitS: estimateWaitS(waiter.request.modelId, inModel),
      });
    });
  }

  /** Turns ahead of a job × how long a slot of its model is held, over the model's slots. */
  function estimateWaitS(modelId: string, place: number): number | undefined {
    const hold = holdS.get(modelId);
    if (hold === undefined) return undefined;
    const slots = init
      .hives()
      .flatMap((h) => h.state.workers)
      .filter((w) => w.model === modelId && w.state !== 'stopping' && w.state !== 'exited')
      .reduce((sum, w) => sum + w.slots, 0);
    return Math.max(1, Math.ceil((place / Math.max(1, slots)) * hold));
  }

  function arm(): void {
    if (waiting.length === 0) {
      clearInterval(timer);
      timer = undefined;
      return;
    }
    timer ??= setInterval(pump, init.retryMs ?? 1_000);
    timer.unref();
  }

  function remove(waiter: Waiter): void {
    const index = waiting.indexOf(waiter);
    if (index >= 0) waiting.splice(index, 1);
    waiter.cleanup();
  }

  function settle(waiter: Waiter, error: RbeeError): void {
    remove(waiter);
    waiter.reject(error);
  }

  return {
    acquire(request, options = {}) {
      options.signal?.throwIfAborted();
      return new Promise<Ticket>((resolve, reject) => {
        const { signal } = options;
        const onAbort = (): void => {
          settle(waiter, toRbeeError(signal?.reason));
          pump();
        };
        const waiter: Waiter = {
          seq: ++seq,
          request,
          position: 0,
          resolve,
          reject,
          onQueued: undefined,
          cleanup: () => signal?.removeEventListener('abort', onAbort),
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        waiting.push(waiter);
        pump();
        if (!waiting.includes(waiter)) return;
        if (waiting.length > init.maxQueued) {
          const retryAfterS = estimateWaitS(request.modelId, waiting.length) ?? UNKNOWN_HOLD_S;
          settle(
            waiter,
            new RbeeError(
              'QUEUE_FULL',
              `the queue is full (${init.maxQueued} jobs wait for a slot); try again in ${retryAfterS} s`,
              { details: { queued: init.maxQueued, retryAfterS } },
            ),
          );
          tellPositions();
          changedDepth();
          return;
        }
        // from now on, every change of its position is told
        waiter.onQueued = options.onQueued;
        waiter.onQueued?.({
          position: waiter.position,
          queued: waiting.length,
          estimatedWaitS: estimateWaitS(
            request.modelId,
            waiting.filter((w) => w.request.modelId === request.modelId).indexOf(waiter) + 1,
          ),
        });
      });
    },
    changed: pump,
    depth() {
      const models = new Map<string, Record<Priority, number>>();
      for (const { request } of waiting) {
        const counts = models.get(request.modelId) ?? { interactive: 0, batch: 0 };
        counts[request.priority]++;
        models.set(request.modelId, counts);
      }
      return [...models].map(([model, { interactive, batch }]) => ({
        model,
        queued: interactive + batch,
        interactive,
        batch,
        estimatedWaitS: estimateWaitS(model, interactive + batch),
      }));
    },
    held: () => held.size,
    rejectAll(error) {
      for (const waiter of [...waiting]) settle(waiter, error);
      pump();
    },
  };
}

/**
 * Whether waiting can help: a worker of the model whose slots are busy, or a hive where the model
 * would fit in all its memory and something runs there now that will end (busy work or a ticket).
 */
function canChange(request: QueueRequest, result: Schedule, hives: readonly HiveCandidate[]): boolean {
  if (result.options.some((o) => o.kind === 'wait')) return true;
  return result.options.some((option) => {
    if (option.kind !== 'no-room') return false;
    const state = hives.find((h) => h.id === option.hive)?.state;
    if (state === undefined) return false;
    const busy = state.workers.some((w) => w.slotsBusy > 0 || w.state === 'loading' || w.state === 'busy');
    const capacity = Math.max(
      state.hive.ramTotalBytes - reserveOf(state),
      ...state.hive.gpus.map((g) => g.vramTotalBytes),
    );
    return busy && (option.neededBytes === undefined || option.neededBytes <= capacity);
  });
}

/** The scheduler's own error, with every hive's reason. */
function impossible(request: QueueRequest, hives: readonly HiveCandidate[]): RbeeError {
  try {
    place(request, hives);
  } catch (error) {
    return toRbeeError(error);
  }
  return new RbeeError('INSUFFICIENT_MEMORY', `no hive can run ${request.modelId} now`);
}

/** A published state with the slots of tickets released a moment ago free again. */
function withReleases(state: HiveState, freed: readonly Reservation[]): HiveState {
  return {
    ...state,
    workers: state.workers.map((w) => {
      const count = freed.filter((r) => r.modelId === w.model).length;
      if (count === 0 || w.state === 'stopping' || w.state === 'exited') return w;
      const slotsBusy = Math.max(0, w.slotsBusy - count);
      return { ...w, slotsBusy, state: w.state === 'busy' && slotsBusy === 0 ? 'idle' : w.state };
    }),
  };
}

/**
 * A hive's published state with the queen's tickets on it counted in: a model's worker has at
 * least that many busy slots; a model without a worker yet has one loading (the hive starts it
 * for the first ticket), with the memory it needs taken from its device.
 */
function withTickets(
  hiveId: string,
  state: HiveState,
  tickets: readonly Reservation[],
  hives: readonly HiveCandidate[],
): HiveState {
  const counts = new Map<string, { count: number; device: Reservation['device'] }>();
  for (const t of tickets) {
    const c = counts.get(t.modelId);
    counts.set(t.modelId, { count: (c?.count ?? 0) + 1, device: c?.device ?? t.device });
  }
  let ramFreeBytes = state.hive.ramFreeBytes;
  const gpus = state.hive.gpus.map((g) => ({ ...g }));
  const workers: WorkerView[] = state.workers.map((w) => {
    const mine = counts.get(w.model)?.count ?? 0;
    if (mine === 0 || w.state === 'stopping' || w.state === 'exited') return w;
    const slotsBusy = Math.max(w.slotsBusy, Math.min(w.slots, mine));
    return { ...w, slotsBusy, state: w.state === 'idle' && slotsBusy > 0 ? 'busy' : w.state };
  });
  for (const [modelId, { count, device }] of counts) {
    if (workers.some((w) => w.model === modelId && w.state !== 'stopping' && w.state !== 'exited')) continue;
    const bytes = hives.flatMap((h) => h.state.models).find((m) => m.id === modelId)?.bytes;
    const memoryBytes = bytes === undefined ? 0 : neededBytes(bytes);
    const gpu =
      device === undefined || device.index < 0 ? undefined : gpus.find((g) => g.index === device.index);
    if (gpu !== undefined) gpu.vramFreeBytes = Math.max(0, gpu.vramFreeBytes - memoryBytes);
    else ramFreeBytes = Math.max(0, ramFreeBytes - memoryBytes);
    const slots = state.hive.slotsPerWorker ?? 1;
    workers.push({
      id: `(loading ${modelId})`,
      hive: hiveId,
      pid: 0,
      model: modelId,
      backend: device?.backend ?? 'cpu',
      device: device?.index ?? -1,
      state: 'loading',
      slots,
      slotsBusy: Math.min(slots, count),
      tokensPerSecond: 0,
      memoryBytes,
      startedAt: 0,
      lastUsedAt: 0,
    });
  }
  return { ...state, hive: { ...state.hive, ramFreeBytes, gpus }, workers };
}
