/**
 * Runs each job the entry node accepted on the hive the queen picks, and relays what that hive
 * emits to the job's subscribers: local or remote, the router drives a Hive and never knows which.
 * A hive that fails before the first token is left out and the job placed again; one that fails
 * after it is continued: placed again with the prompt plus the text already sent, so the client's
 * stream goes on without a repeated or lost token (at most two retries in all). Time to first token
 * and total time are measured here, where the client is.
 */
import { RbeeError, toRbeeError, type ErrorCode } from '../../shared/errors.js';
import type { JobRequest, NarrationSource } from '../../shared/wire.js';
import type { Hive } from '../hive/index.js';
import type { ModelRef } from '../models/index.js';
import type { JobStore } from '../store/index.js';
import { place, type Placement, type PlacementRequest } from '../queen/index.js';
import type { JobContext } from './job-manager.js';

/** The cluster as the router needs it: the queen's placement and the hives it may pick. */
export interface ClusterRouting {
  place(
    request: PlacementRequest,
    options?: { signal?: AbortSignal },
  ): Promise<Placement & { queen: string }>;
  hive(id: string): Hive | undefined;
}

export interface RouterInit {
  /** This node's hive. */
  local: Hive;
  /** The cluster, once joined; without it every job runs here. */
  cluster: () => ClusterRouting | undefined;
  parseModelRef: (input: string) => ModelRef;
  modelId: (ref: ModelRef) => string;
  /** Where each job's state is recorded as it is placed and starts (the jobs table). */
  journal?: Pick<JobStore, 'placing' | 'running' | 'firstToken'>;
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
    const base: PlacementRequest = {
      modelId: init.modelId(ref),
      entry: init.local.id,
      // a path names a file on this machine: no other hive can fetch it
      provisionable: ref.kind === 'file' ? 'entry' : 'any',
      ...(request.hive === undefined ? {} : { pin: request.hive }),
    };

    let firstTokenAt: number | undefined;
    /** The generated tokens whose text the client has received. */
    const sentTokens: number[] = [];
    const exclude: string[] = [];
    let failure: RbeeError | undefined;
    let attemptRequest = request;
    for (let attempt = 0; ; attempt++) {
      init.journal?.placing(job.id);
      const { hive, placement } = await placeJob({ ...base, exclude }, signal).catch((error: unknown) => {
        // no other hive can take it: the job ends with what the last hive said, not with "no hive"
        throw failure?.cause ?? error;
      });
      if (failure !== undefined) {
        narrate(
          'queen',
          placement.queen,
          sentTokens.length === 0
            ? `${failure.message} before the first token; placing the job again`
            : `${failure.message} after ${sentTokens.length} tokens; continuing the stream on hive ${hive.name} from the prompt and the tokens already sent`,
        );
      }
      narrate('queen', placement.queen, placement.reason);
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
          { id: job.id, request: attemptRequest, acceptedAt: job.acceptedAt },
          {
            signal,
            emit: (event) => {
              if (event.type === 'token') {
                if (firstTokenAt === undefined) {
                  firstTokenAt = Date.now();
                  init.journal?.firstToken(job.id, firstTokenAt);
                }
                for (const token of event.tokens) sentTokens.push(token);
                // the count is for continuing a job; clients get the text
                return job.emit({ type: 'token', text: event.text });
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
        return;
      } catch (error) {
        const rbee = toRbeeError(error);
        const pinnedBeforeFirstToken = request.hive !== undefined && sentTokens.length === 0;
        if (signal.aborted || !RETRYABLE.has(rbee.code) || attempt >= MAX_RETRIES || pinnedBeforeFirstToken) {
          throw rbee;
        }
        // a crashed worker leaves its hive able to start another; a hive that is gone is left out
        if (sentTokens.length === 0 || !WORKER_ONLY.has(rbee.code)) exclude.push(hive.id);
        failure = new RbeeError(rbee.code, `hive ${hive.name} failed (${rbee.code}: ${rbee.message})`, {
          cause: rbee,
        });
        if (sentTokens.length > 0) {
          const continued = continuation(request, sentTokens);
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
    request: PlacementRequest,
    signal: AbortSignal,
  ): Promise<{ hive: Hive; placement: Placement & { queen: string } }> {
    const cluster = init.cluster();
    if (cluster === undefined) {
      const placement = placeAlone(request);
      return { hive: init.local, placement };
    }
    let placement: Placement & { queen: string };
    try {
      placement = await cluster.place(request, { signal });
    } catch (error) {
      const rbee = toRbeeError(error);
      // No hive reports room: this one can still unload idle workers and knows its observed use.
      if (
        rbee.code !== 'INSUFFICIENT_MEMORY' ||
        request.pin !== undefined ||
        request.exclude?.includes(init.local.id)
      ) {
        throw rbee;
      }
      placement = {
        hive: init.local.id,
        name: init.local.name,
        kind: 'on-disk',
        reason: `no hive reports room for the model; trying this hive (${init.local.name}), which can unload idle workers`,
        queen: init.local.name,
      };
    }
    const hive = cluster.hive(placement.hive);
    if (hive === undefined) {
      throw new RbeeError(
        'NODE_UNREACHABLE',
        `hive ${placement.name} left the cluster before the job started`,
      );
    }
    return { hive, placement };
  }

  /** A node outside any cluster is its own queen and its only hive. */
  function placeAlone(request: PlacementRequest): Placement & { queen: string } {
    const hives = [{ id: init.local.id, state: init.local.state() }];
    try {
      return { ...place(request, hives), queen: init.local.name };
    } catch (error) {
      if (toRbeeError(error).code !== 'INSUFFICIENT_MEMORY') throw error;
      return {
        hive: init.local.id,
        name: init.local.name,
        kind: 'on-disk',
        reason: `running the job on this hive (${init.local.name}); it checks the memory the model needs`,
        queen: init.local.name,
      };
    }
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
