/**
 * The worker's slots: one context sequence each, a small bounded queue in front of them, and
 * cancellation that frees a slot at once. Runs inside the worker process.
 *
 * A slot keeps its tokens (its KV cache) after a request. A new request is tokenized first and
 * goes to the free slot whose kept tokens share the longest prefix with its prompt, so a chat's
 * next turn evaluates only what the previous turn did not. What a slot keeps beyond the shared
 * prefix is erased, though, and may be another chat's: a slot is scored by the tokens the prompt
 * shares with it minus those it would erase (at least 0), and ties (nothing worth reusing
 * anywhere, typically) go to the least recently used slot. So a chat that shares only the
 * template's first few tokens with a slot takes an empty or older slot instead of evicting it.
 * Whatever slot is chosen, the prefix it shares with the prompt is reused.
 */
import {
  resolveChatWrapper,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaGrammar,
  type Token,
} from 'node-llama-cpp';
import { toRbeeError } from '../../shared/errors.js';
import type { PrefixKey } from '../../shared/prefix.js';
import type { TokenLogprob } from '../../shared/wire.js';
import type { GenerateRequest, SlotCache } from '../types.js';
import { preparePrompt, prefixKeysAfter, type PreparedPrompt } from './prompt.js';
import type { ChildMessage } from './protocol.js';
import { runGeneration } from './run-generation.js';
import type { RequestConstraints } from './grammar.js';
import type { OutputCheck } from './output-check.js';

export interface SlotPoolInit {
  context: LlamaContext;
  /** Requests that may wait for a slot; more are refused with WORKER_BUSY. */
  maxQueue: number;
  /** Keep each slot's tokens after its request and reuse them (see above); off, every request starts empty. */
  prefixReuse: boolean;
  send: (message: ChildMessage) => void;
  /** Called whenever a slot is taken or released. */
  onStateChange: () => void;
}

export interface SlotPool {
  readonly busy: number;
  readonly total: number;
  readonly queued: number;
  /** `constraints`: the request's grammar or jsonSchema, already built (see grammar.ts). */
  submit(requestId: string, request: GenerateRequest, constraints?: RequestConstraints): void;
  cancel(requestId: string): void;
  /** The request's prompt size in tokens, as its generation would count it (usage.promptTokens). */
  promptTokens(request: GenerateRequest): number;
  /** Tokens generated since the previous call (for the heartbeat's tok/s). */
  takeTokenCount(): number;
  /** What each slot keeps in its cache, in slot order (for the heartbeat). */
  cache(): SlotCache[];
  /** Cancels everything queued and running and waits until every slot is released. */
  close(): Promise<void>;
}

interface Slot {
  sequence: LlamaContextSequence;
  requestId: string | undefined;
  /** When the slot was last given a request (a counter: only the order matters). */
  lastUsed: number;
  /** Prefix keys of what the slot keeps (none while a request runs on it). */
  keys: PrefixKey[];
}

interface Job {
  requestId: string;
  request: GenerateRequest;
  grammar: LlamaGrammar | undefined;
  checkOutput: OutputCheck | undefined;
  receivedAt: number;
  prompt: PreparedPrompt;
}

/** Tokens of `sequence` that `tokens` would reuse, less those it would erase; at least 0. */
function reuseScore(sequence: LlamaContextSequence, tokens: readonly Token[]): number {
  const kept = sequence.nextTokenIndex;
  // the prompt's last token is always evaluated: it gives the first generated token's logits
  const shared = Math.min(
    sequence.compareContextTokens(tokens as Token[]).firstDifferentIndex,
    tokens.length - 1,
  );
  return Math.max(0, shared - (kept - shared));
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
  const { context, send, prefixReuse } = init;
  // Resolved once from the GGUF's own chat template rather than on every request.
  const chatWrapper = resolveChatWrapper(context.model);
  const slots: Slot[] = Array.from({ length: context.totalSequences }, () => ({
    sequence: context.getSequence(),
    requestId: undefined,
    lastUsed: 0,
    keys: [],
  }));
  const queue: Job[] = [];
  const running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  let tokenCount = 0;
  let uses = 0;
  let closed = false;

  /** The free slot where the job's prompt reuses the most (see above); ties go to the least recently used. */
  function slotFor(job: Job): Slot | undefined {
    const tokens = job.prompt.sequenceTokens;
    let best: { slot: Slot; score: number } | undefined;
    for (const slot of slots) {
      if (slot.requestId !== undefined) continue;
      const score = prefixReuse ? reuseScore(slot.sequence, tokens) : 0;
      if (
        best === undefined ||
        score > best.score ||
        (score === best.score && slot.lastUsed < best.slot.lastUsed)
      ) {
        best = { slot, score };
      }
    }
    return best?.slot;
  }

  function start(slot: Slot, job: Job): void {
    slot.requestId = job.requestId;
    slot.lastUsed = ++uses;
    slot.keys = [];
    const controller = new AbortController();
    const done = run(slot, job, controller.signal);
    running.set(job.requestId, { controller, done });
    init.onStateChange();
  }

  async function run(slot: Slot, job: Job, signal: AbortSignal): Promise<void> {
    // tokens generated since the last text sent: each text chunk carries the tokens it covers
    let unsent: number[] = [];
    let answer = '';
    let consistent = false;
    // only for a request that asked for them, so that no other request does any of this work
    let unsentLogprobs: TokenLogprob[] = [];
    // the prompt's size, sent with the first token only (later tokens keep the plain fast path)
    let promptSize: { promptTokens: number; cachedPromptTokens: number } | undefined;
    const logprobs =
      job.request.logprobs === undefined
        ? {}
        : {
            onLogprobs: (entries: TokenLogprob[]) => {
              unsentLogprobs.push(...entries);
            },
          };
    try {
      const result = await runGeneration({
        sequence: slot.sequence,
        request: job.request,
        prompt: job.prompt,
        reuse: prefixReuse,
        grammar: job.grammar,
        receivedAt: job.receivedAt,
        signal,
        onText:
          job.request.logprobs === undefined
            ? (text) => {
                answer += text;
                send({ type: 'token', requestId: job.requestId, text, tokens: unsent, ...promptSize });
                unsent = [];
                promptSize = undefined;
              }
            : (text) => {
                answer += text;
                send({
                  type: 'token',
                  requestId: job.requestId,
                  text,
                  tokens: unsent,
                  logprobs: unsentLogprobs,
                  ...promptSize,
                });
                unsent = [];
                unsentLogprobs = [];
                promptSize = undefined;
              },
        onPrompt: (size) => {
          promptSize = size;
        },
        onTokens: (tokens) => {
          tokenCount += tokens.length;
          unsent.push(...tokens);
        },
        ...logprobs,
      });
      // finished or cancelled: the sequence holds the prompt and the answer so far, nothing else
      consistent = true;
      const problem = result.finishReason === 'stop' ? checkAnswer(slot, job, answer) : undefined;
      if (problem !== undefined) {
        send({
          type: 'error',
          requestId: job.requestId,
          error: { code: 'OUTPUT_INVALID', message: problem },
        });
      } else {
        send({ type: 'done', requestId: job.requestId, ...result });
      }
    } catch (error) {
      const rbeeError = signal.aborted ? toRbeeError(signal.reason, 'JOB_CANCELLED') : toRbeeError(error);
      send({
        type: 'error',
        requestId: job.requestId,
        error: { code: rbeeError.code, message: rbeeError.message },
      });
    } finally {
      if (prefixReuse && consistent) {
        slot.keys = keysAfter(slot, job, answer);
      } else {
        // Without reuse, or after a failure that may have left the cache half written, the next
        // request on this slot must not see this one's tokens.
        await slot.sequence.clearHistory().catch(() => undefined);
      }
      running.delete(job.requestId);
      slot.requestId = undefined;
      init.onStateChange();
      dispatch();
    }
  }

  /** Why a finished answer fails its schema, if it does; a continued one counts its first part too. */
  function checkAnswer(slot: Slot, job: Job, answer: string): string | undefined {
    if (job.checkOutput === undefined) return undefined;
    const before = job.request.continueTokens ?? [];
    const text =
      before.length === 0 ? answer : slot.sequence.model.detokenize(before as Token[], false) + answer;
    return job.checkOutput(text);
  }

  function keysAfter(slot: Slot, job: Job, answer: string): PrefixKey[] {
    const { sequence } = slot;
    // A cancel before the prompt was evaluated, or a context shift during a long answer (the
    // prompt's start dropped to make room), leaves the slot without the whole prompt: no keys.
    const tokens = job.prompt.sequenceTokens;
    if (sequence.compareContextTokens(tokens).firstDifferentIndex < tokens.length) return [];
    try {
      return prefixKeysAfter(
        context.model,
        chatWrapper,
        job.request,
        job.prompt,
        answer,
        sequence.nextTokenIndex,
      );
    } catch {
      // only a hint for schedulers: a slot without keys is still used by its tokens here
      return [];
    }
  }

  function dispatch(): void {
    for (;;) {
      const job = queue[0];
      const slot = job === undefined ? undefined : slotFor(job);
      if (job === undefined || slot === undefined) return;
      queue.shift();
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
    submit(requestId, request, constraints = {}) {
      const receivedAt = performance.now();
      if (closed) {
        send({ type: 'error', requestId, error: { code: 'WORKER_BUSY', message: 'worker is stopping' } });
        return;
      }
      if (running.has(requestId) || queue.some((j) => j.requestId === requestId)) {
        send({ type: 'error', requestId, error: { code: 'BAD_REQUEST', message: 'duplicate request id' } });
        return;
      }
      let prompt: PreparedPrompt;
      try {
        // tokenized before a slot is chosen: the choice compares these tokens with each slot's
        prompt = preparePrompt(context.model, chatWrapper, context.contextSize, request);
      } catch (error) {
        const rbeeError = toRbeeError(error);
        send({ type: 'error', requestId, error: { code: rbeeError.code, message: rbeeError.message } });
        return;
      }
      const job: Job = {
        requestId,
        request,
        grammar: constraints.grammar,
        checkOutput: constraints.checkOutput,
        receivedAt,
        prompt,
      };
      const free = slotFor(job);
      if (free !== undefined) {
        start(free, job);
      } else if (queue.length < init.maxQueue) {
        queue.push(job);
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
    promptTokens(request) {
      return preparePrompt(context.model, chatWrapper, context.contextSize, request).sequenceTokens.length;
    },
    takeTokenCount() {
      const count = tokenCount;
      tokenCount = 0;
      return count;
    },
    cache() {
      return slots.map((slot) => ({
        busy: slot.requestId !== undefined,
        tokens: slot.sequence.nextTokenIndex,
        prefixes: slot.keys,
      }));
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
