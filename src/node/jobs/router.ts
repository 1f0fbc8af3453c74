/**
 * Runs each job the entry node accepted on the hive the queen picks, and relays what that hive
 * emits to the job's subscribers: local or remote, the router drives a Hive and never knows which.
 * The queen's answer is a ticket (after a wait in its queue, narrated with the position, when
 * nothing has room); the ticket is released when the job ends on that hive, freeing its slot.
 * A hive that fails before the first token is left out and the job placed again; one that fails
 * after it is continued: placed again with the prompt plus the text already sent, so the client's
 * stream goes on without a repeated or lost token (at most two retries in all). Time to first token
 * and total time are measured here, where the client is.
 */
import { RbeeError, toRbeeError, type ErrorCode } from '../../shared/errors.js';
import type { JobRequest, NarrationSource } from '../../shared/wire.js';
import type { Hive } from '../hive/index.js';
import { canonicalRef, type ModelRef } from '../models/index.js';
import type { JobStore } from '../store/index.js';
import {
  prefixAffinity,
  type HiveCandidate,
  type PlacementQueue,
  type QueuePosition,
  type QueueRequest,
  type Ticket,
} from '../queen/index.js';
import type { JobContext } from './job-manager.js';

type OnQueued = (position: QueuePosition, queen: string) => void;

/** The cluster as the router needs it: a place from the queen, and the hives it may pick. */
export interface ClusterRouting {
  place(request: QueueRequest, options?: { signal?: AbortSignal; onQueued?: OnQueued }): Promise<Ticket>;
  hive(id: string): Hive | undefined;
}

export interface RouterInit {
  /** This node's hive. */
  local: Hive;
  /** The cluster, once joined; without it every job runs here. */
  cluster: () => ClusterRouting | undefined;
  /** This node's own queue: its jobs' places while it runs alone (its own queen). */
  queue: PlacementQueue;
  /** Every hive's published state (this one's and the members'): where prompts are cached. */
  hiveStates: () => HiveCandidate[];
  /** A ref, or a name of a model (short name, alias, any hive's catalog id), to its ref. */
  parseModelRef: (input: string) => ModelRef;
  modelId: (ref: ModelRef) => string;
  /** Where each job's state is recorded as it is placed and starts (the jobs table). */
  journal?: Pick<JobStore, 'queued' | 'placing' | 'running' | 'firstToken'>;
  /** A job's place in the queue as the queen tells it; undefined once it has left the queue. */
  onQueuePosition?: (jobId: string, position: QueuePosition | undefined) => void;
}

/** Failures of a hive (not of the job): the job is placed again elsewhere if no token went out yet. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set([
  'NODE_UNREACHABLE',
  'NODE_SHUTTING_DOWN',
  'WORKER_CRASHED',
  'WORKER_START_FAILED',
  'INSUFFICIENT_MEMORY',
  'TIMEOUT',
]);
const MAX_RETRIES = 2;
/** Failures of a worker, not of its hive: the hive can take the continued job (a new worker). */
const WORKER_ONLY: ReadonlySet<ErrorCode> = new Set(['WORKER_CRASHED']);

export function createRouter(init: RouterInit): (job: JobContext) => Promise<void> {
  return async function route(job) {
    const { request, signal } = job;
    const narrate = (source: NarrationSource, node: string, text: string): void =>
      job.emit({ type: 'narration', source, node, text });
    const ref = init.parseModelRef(request.model);
    const modelId = init.modelId(ref);
    const embedding = request.embed !== undefined;
    // a ranking job has no prompt for a worker's cache to hold
    const affinity =
      embedding || request.rank !== undefined ? [] : prefixAffinity(request, modelId, init.hiveStates());
    // hives get the ref a name stands for here: another hive need not know this node's aliases
    const resolved: JobRequest = { ...request, model: canonicalRef(ref) };
    const base: QueueRequest = {
      job: job.id,
      modelId,
      entry: init.local.id,
      // a path names a file on this machine: no other hive can fetch it
      provisionable: ref.kind === 'file' ? 'entry' : 'any',
      // An embedding job runs on the entry node's hive unless pinned: its vectors come back in one
      // event, which can outgrow a cluster stream's frame (1 MiB).
      ...(request.hive === undefined ? (embedding ? { pin: init.local.id } : {}) : { pin: request.hive }),
      ...(affinity.length === 0 ? {} : { affinity }),
      ...(request.contextSize === undefined ? {} : { contextSize: request.contextSize }),
      priority: request.priority ?? 'interactive',
      acceptedAt: job.acceptedAt,
    };
    const onQueued: OnQueued = (position, queen) => {
      init.journal?.queued(job.id);
      init.onQueuePosition?.(job.id, position);
      job.admit();
      const wait = position.estimatedWaitS === undefined ? '' : `, about ${position.estimatedWaitS} s`;
      narrate(
        'queen',
        queen,
        `no hive has a free slot or room for ${base.modelId}: the job waits in the queue, ` +
          `position ${position.position} of ${position.queued}${wait}`,
      );
    };

    let firstTokenAt: number | undefined;
    /** The generated tokens whose text the client has received. */
    const sentTokens: number[] = [];
    const exclude: string[] = [];
    let failure: RbeeError | undefined;
    let attemptRequest = resolved;
    for (let attempt = 0; ; attempt++) {
      init.journal?.placing(job.id);
      const { hive, ticket } = await placeJob({ ...base, exclude }, signal, onQueued)
        .catch((error: unknown) => {
          // no other hive can take it: the job ends with what the last hive said, not with "no hive"
          throw failure?.cause ?? error;
        })
        .finally(() => init.onQueuePosition?.(job.id, undefined));
      job.admit();
      const { placement } = ticket;
      if (failure !== undefined) {
        narrate(
          'queen',
          ticket.queen,
          sentTokens.length === 0
            ? `${failure.message} before the first token; placing the job again`
            : `${failure.message} after ${sentTokens.length} tokens; continuing the stream on hive ${hive.name} from the prompt and the tokens already sent`,
        );
      }
      narrate('queen', ticket.queen, placement.reason);
      init.journal?.running(job.id, {
        hive: hive.id,
        hiveName: hive.name,
        worker: placement.worker,
        reason: placement.reason,
      });
      if (hive !== init.local)
        narrate('hive', init.local.name, `tokens stream from hive ${hive.name} to this node`);
      const before = sentTokens.length;
      try {
        await hive.run(
          { id: job.id, request: attemptRequest, acceptedAt: job.acceptedAt, device: placement.device },
          {
            signal,
            emit: (event) => {
              if (event.type === 'token') {
                // the prompt's size goes with the client's first token: a continued job's first
                // token is not (and its prompt holds the text already sent)
                const first = firstTokenAt === undefined;
                if (first) {
                  firstTokenAt = Date.now();
                  init.journal?.firstToken(job.id, firstTokenAt);
                }
                for (const token of event.tokens) sentTokens.push(token);
                // the count is for continuing a job; clients get the text
                const promptSize =
                  first && event.promptTokens !== undefined
                    ? {
                        promptTokens: event.promptTokens,
                        ...(event.cachedPromptTokens === undefined
                          ? {}
                          : { cachedPromptTokens: event.cachedPromptTokens }),
                      }
                    : {};
                return job.emit(
                  event.logprobs === undefined
                    ? { type: 'token', text: event.text, ...promptSize }
                    : { type: 'token', text: event.text, logprobs: event.logprobs, ...promptSize },
                );
              }
              if (event.type !== 'done') return job.emit(event);
              const end = Date.now();
              job.emit({
                ...event,
                // a continued job's hive saw the text already sent as prompt, not as output
                usage: {
                  promptTokens: Math.max(0, event.usage.promptTokens - before),
                  completionTokens: event.usage.completionTokens + before,
                  ...(event.usage.cachedPromptTokens === undefined
                    ? {}
                    : {
                        cachedPromptTokens: Math.min(
                          event.usage.cachedPromptTokens,
                          Math.max(0, event.usage.promptTokens - before),
                        ),
                      }),
                },
                // measured where the client is: the hive's clock and its own start do not count
                timings: {
                  ...event.timings,
                  timeToFirstTokenMs: (firstTokenAt ?? end) - job.acceptedAt,
                  totalMs: end - job.acceptedAt,
                },
              });
            },
          },
        );
        ticket.release();
        return;
      } catch (error) {
        ticket.release();
        const rbee = toRbeeError(error);
        const pinnedBeforeFirstToken = request.hive !== undefined && sentTokens.length === 0;
        // a grammar (a tool call's, a JSON schema's, a GBNF one) cannot resume mid-answer on another
        // worker, which would start a fresh value: such jobs are retried before their first token only
        const constrainedMidStream =
          (request.tools !== undefined ||
            request.jsonSchema !== undefined ||
            request.grammar !== undefined) &&
          sentTokens.length > 0;
        if (
          signal.aborted ||
          !RETRYABLE.has(rbee.code) ||
          attempt >= MAX_RETRIES ||
          pinnedBeforeFirstToken ||
          constrainedMidStream
        ) {
          throw rbee;
        }
        // a crashed worker leaves its hive able to start another; a hive that is gone is left out
        if (sentTokens.length === 0 || !WORKER_ONLY.has(rbee.code)) exclude.push(hive.id);
        failure = new RbeeError(rbee.code, `hive ${hive.name} failed (${rbee.code}: ${rbee.message})`, {
          cause: rbee,
        });
        if (sentTokens.length > 0) {
          const continued = continuation(resolved, sentTokens);
          if (continued === undefined) {
            // every token asked for was already sent: the job is complete
            const end = Date.now();
            job.emit({
              type: 'done',
              model: request.model,
              finishReason: 'length',
              usage: { promptTokens: 0, completionTokens: sentTokens.length },
              timings: {
                timeToFirstTokenMs: (firstTokenAt ?? end) - job.acceptedAt,
                tokensPerSecond: 0,
                totalMs: end - job.acceptedAt,
              },
            });
            return;
          }
          attemptRequest = continued;
        }
      }
    }
  };

  async function placeJob(
    request: QueueRequest,
    signal: AbortSignal,
    onQueued: OnQueued,
  ): Promise<{ hive: Hive; ticket: Ticket }> {
    const cluster = init.cluster();
    let ticket: Ticket;
    try {
      ticket =
        cluster === undefined
          ? await init.queue.acquire(request, {
              signal,
              onQueued: (position) => onQueued(position, init.local.name),
            })
          : await cluster.place(request, { signal, onQueued });
    } catch (error) {
      const rbee = toRbeeError(error);
      // No hive reports room, and nothing that runs will free any: this hive checks the model
      // against its own figures (the memory its workers were seen to use) and can unload idle ones.
      if (
        rbee.code !== 'INSUFFICIENT_MEMORY' ||
        request.pin !== undefined ||
        request.exclude?.includes(init.local.id)
      ) {
        throw rbee;
      }
      ticket = {
        placement: {
          hive: init.local.id,
          name: init.local.name,
          kind: 'on-disk',
          reason: `no hive reports room for the model; trying this hive (${init.local.name}), which checks the memory the model needs with its own figures`,
        },
        queen: init.local.name,
        release: () => undefined,
      };
    }
    const { placement } = ticket;
    const hive = placement.hive === init.local.id ? init.local : cluster?.hive(placement.hive);
    if (hive === undefined) {
      ticket.release();
      throw new RbeeError(
        'NODE_UNREACHABLE',
        `hive ${placement.name} left the cluster before the job started`,
      );
    }
    return { hive, ticket };
  }
}

/**
 * The job as a new worker continues it after `tokens` reached the client: the same prompt, then
 * those very tokens (not their text, which need not re-tokenize the same), and only the tokens
 * still to come. Greedy decoding then goes on exactly where it was. Undefined when none are left.
 */
export function continuation(request: JobRequest, tokens: readonly number[]): JobRequest | undefined {
  const maxTokens = request.maxTokens === undefined ? undefined : request.maxTokens - tokens.length;
  if (maxTokens !== undefined && maxTokens <= 0) return undefined;
  return {
    ...request,
    ...(maxTokens === undefined ? {} : { maxTokens }),
    continueTokens: [...(request.continueTokens ?? []), ...tokens],
  };
}
