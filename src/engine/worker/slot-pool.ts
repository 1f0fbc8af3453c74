/**
 * The worker's slots: one context sequence each, a small bounded queue in front of them, and
 * cancellation that frees a slot at once. Runs inside the worker process.
 */
import {
  resolveChatWrapper,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaGrammar,
} from 'node-llama-cpp';
import { toRbeeError } from '../../shared/errors.js';
import type { GenerateRequest } from '../types.js';
import type { ChildMessage } from './protocol.js';
import { runGeneration } from './run-generation.js';

export interface SlotPoolInit {
  context: LlamaContext;
  /** Requests that may wait for a slot; more are refused with WORKER_BUSY. */
  maxQueue: number;
  send: (message: ChildMessage) => void;
  /** Called whenever a slot is taken or released. */
  onStateChange: () => void;
}

export interface SlotPool {
  readonly busy: number;
  readonly total: number;
  readonly queued: number;
  /** `grammar` is the request's grammar or jsonSchema, already built (see grammar.ts). */
  submit(requestId: string, request: GenerateRequest, grammar?: LlamaGrammar): void;
  cancel(requestId: string): void;
  /** Tokens generated since the previous call (for the heartbeat's tok/s). */
  takeTokenCount(): number;
  /** Cancels everything queued and running and waits until every slot is released. */
  close(): Promise<void>;
}

interface Slot {
  sequence: LlamaContextSequence;
  requestId: string | undefined;
}

interface Job {
  requestId: string;
  request: GenerateRequest;
  grammar: LlamaGrammar | undefined;
  receivedAt: number;
}

const cancelledDone = (requestId: string): ChildMessage => ({
  type: 'done',
  requestId,
  finishReason: 'cancelled',
  usage: { promptTokens: 0, completionTokens: 0 },
  timeToFirstTokenMs: 0,
  tokensPerSecond: 0,
});

export function createSlotPool(init: SlotPoolInit): SlotPool {
  const { context, send } = init;
  // Resolved once from the GGUF's own chat template rather than on every request.
  const chatWrapper = resolveChatWrapper(context.model);
  const slots: Slot[] = Array.from({ length: context.totalSequences }, () => ({
    sequence: context.getSequence(),
    requestId: undefined,
  }));
  const queue: Job[] = [];
  const running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  let tokenCount = 0;
  let closed = false;

  function start(slot: Slot, job: Job): void {
    slot.requestId = job.requestId;
    const controller = new AbortController();
    const done = run(slot, job, controller.signal);
    running.set(job.requestId, { controller, done });
    init.onStateChange();
  }

  async function run(slot: Slot, job: Job, signal: AbortSignal): Promise<void> {
    // tokens generated since the last text sent: each text chunk carries the tokens it covers
    let unsent: number[] = [];
    try {
      const result = await runGeneration({
        sequence: slot.sequence,
        chatWrapper,
        request: job.request,
        grammar: job.grammar,
        receivedAt: job.receivedAt,
        signal,
        onText: (text) => {
          send({ type: 'token', requestId: job.requestId, text, tokens: unsent });
          unsent = [];
        },
        onTokens: (tokens) => {
          tokenCount += tokens.length;
          unsent.push(...tokens);
        },
      });
      send({ type: 'done', requestId: job.requestId, ...result });
    } catch (error) {
      const rbeeError = signal.aborted ? toRbeeError(signal.reason, 'JOB_CANCELLED') : toRbeeError(error);
      send({
        type: 'error',
        requestId: job.requestId,
        error: { code: rbeeError.code, message: rbeeError.message },
      });
    } finally {
      // The next request on this slot must not see this one's tokens (nor reuse its KV cache).
      await slot.sequence.clearHistory().catch(() => undefined);
      running.delete(job.requestId);
      slot.requestId = undefined;
      init.onStateChange();
      dispatch();
    }
  }

  function dispatch(): void {
    for (const slot of slots) {
      if (slot.requestId !== undefined) continue;
      const job = queue.shift();
      if (job === undefined) return;
      start(slot, job);
    }
  }

  return {
    get busy() {
      return running.size;
    },
    get total() {
      return slots.length;
    },
    get queued() {
      return queue.length;
    },
    submit(requestId, request, grammar) {
      const receivedAt = performance.now();
      if (closed) {
        send({ type: 'error', requestId, error: { code: 'WORKER_BUSY', message: 'worker is stopping' } });
        return;
      }
      if (running.has(requestId) || queue.some((j) => j.requestId === requestId)) {
        send({ type: 'error', requestId, error: { code: 'BAD_REQUEST', message: 'duplicate request id' } });
        return;
      }
      const free = slots.find((s) => s.requestId === undefined);
      if (free !== undefined) {
        start(free, { requestId, request, grammar, receivedAt });
      } else if (queue.length < init.maxQueue) {
        queue.push({ requestId, request, grammar, receivedAt });
      } else {
        const message = `all ${slots.length} slots busy and ${queue.length} requests queued`;
        send({ type: 'error', requestId, error: { code: 'WORKER_BUSY', message } });
      }
    },
    cancel(requestId) {
      const index = queue.findIndex((j) => j.requestId === requestId);
      if (index >= 0) {
        queue.splice(index, 1);
        send(cancelledDone(requestId));
        return;
      }
      running.get(requestId)?.controller.abort();
    },
    takeTokenCount() {
      const count = tokenCount;
      tokenCount = 0;
      return count;
    },
    async close() {
      closed = true;
      for (const job of queue.splice(0)) send(cancelledDone(job.requestId));
      const all = [...running.values()];
      for (const r of all) r.controller.abort();
      await Promise.allSettled(all.map((r) => r.done));
    },
  };
}
