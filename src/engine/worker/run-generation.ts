/**
 * One generation on one context sequence (a slot), inside the worker process, from a prompt
 * already tokenized (prompt.ts). What the slot keeps from its previous request is reused as far as
 * it matches the prompt's tokens; only the rest is evaluated. A plain request runs on rbee's own
 * token loop (token-loop.ts); the rest, and an answer that outgrows the context, on LlamaCompletion,
 * whose text is streamed through onTextChunk, detokenized with context (per-token detokenizing drops
 * SentencePiece leading spaces).
 */
import {
  LlamaCompletion,
  TokenBias,
  type LlamaCompletionResponse,
  type LlamaContextSequence,
  type LlamaGrammar,
  type LLamaContextualRepeatPenalty,
  type Token,
} from 'node-llama-cpp';
import type { FinishReason, TokenLogprob, Usage } from '../../shared/wire.js';
import type { GenerateRequest } from '../types.js';
import type { PreparedPrompt } from './prompt.js';
import { logitBiasOf } from './logit-bias.js';
import { penalizes, tokenLoopFor } from './token-loop.js';

export interface GenerationResult {
  finishReason: FinishReason;
  usage: Usage;
  timeToFirstTokenMs: number;
  tokensPerSecond: number;
  /** The request's stop string that ended the answer (not a template's own end). */
  stopSequence?: string;
}

export interface RunGenerationOptions {
  sequence: LlamaContextSequence;
  request: GenerateRequest;
  /** The request's prompt as tokens (see prompt.ts). */
  prompt: PreparedPrompt;
  /**
   * Keep the part of the slot's cache that matches the prompt's first tokens instead of
   * evaluating everything again. Off, the sequence is cleared first.
   */
  reuse: boolean;
  /** Built from the request's grammar or jsonSchema before it was queued (see grammar.ts). */
  grammar?: LlamaGrammar | undefined;
  /** performance.now() when the request reached the worker: time to first token counts from here. */
  receivedAt: number;
  onText: (text: string) => void;
  /** Called with the tokens generated, as they are generated (tok/s, and continuing a job exactly). */
  onTokens: (tokens: readonly number[]) => void;
  /**
   * Only for a request with `logprobs`: called before onTokens with one entry per token it is
   * given (see logprobRecorder).
   */
  onLogprobs?: (logprobs: TokenLogprob[]) => void;
  /**
   * Called once, before anything is evaluated: the prompt's size and the part of it the slot's
   * cache already holds (what usage will report), so the first token can carry them.
   */
  onPrompt?: (size: { promptTokens: number; cachedPromptTokens: number }) => void;
  signal: AbortSignal;
}

export async function runGeneration(options: RunGenerationOptions): Promise<GenerationResult> {
  const { sequence, request, prompt, signal } = options;
  let completionTokens = 0;
  let firstTokenAt: number | undefined;
  let lastTokenAt = 0;
  const recorder =
    options.onLogprobs === undefined || request.logprobs === undefined
      ? undefined
      : logprobRecorder(sequence, request.logprobs, prompt.textBefore);
  const onToken = (tokens: Token[]): void => {
    if (recorder !== undefined) options.onLogprobs?.(recorder.take(tokens));
    firstChunkTokens?.push(...tokens);
    const now = performance.now();
    firstTokenAt ??= now;
    lastTokenAt = now;
    completionTokens += tokens.length;
    options.onTokens(tokens);
  };
  // LlamaCompletion detokenizes its first text without the tokens before it, which drops a
  // SentencePiece token's leading space: where the answer continues text (prompt.textBefore), that
  // chunk is detokenized again with them.
  let textBefore = prompt.textBefore;
  let firstChunkTokens: Token[] | undefined;
  const onTextChunk = (chunk: string): void => {
    let text = chunk;
    if (firstChunkTokens !== undefined) {
      const withContext = sequence.model.detokenize(firstChunkTokens, false, textBefore.slice(-16));
      if (withContext !== text && withContext.endsWith(text)) text = withContext;
      firstChunkTokens = undefined;
    }
    if (text !== '') options.onText(text);
  };

  // What the slot keeps and the prompt share stays; the rest of the cache goes. The completion
  // does the same itself (without shifting tokens), so it then finds nothing more to erase, but
  // done here the kept count is known exactly: erasing can also drop more than asked when the
  // cache cannot lose a range (a sliding-window model past its window).
  const tokens = prompt.sequenceTokens;
  if (options.reuse) await sequence.adaptStateToTokens(tokens.slice(0, -1), false);
  else if (sequence.nextTokenIndex > 0) await sequence.clearHistory();
  const cachedPromptTokens = sequence.nextTokenIndex;
  options.onPrompt?.({ promptTokens: tokens.length, cachedPromptTokens });

  const maxTokens = request.maxTokens ?? sequence.contextSize;
  const bias = logitBiasOf(sequence.model, request);
  // The plain request runs on rbee's own token loop (token-loop.ts); the rest, and an answer that
  // outgrows the context, on LlamaCompletion.
  let generatedByLoop: Token[] = [];
  const loop = tokenLoopFor(sequence, request, prompt, options.grammar !== undefined);
  if (loop !== undefined) {
    const end = await loop.run({
      cached: cachedPromptTokens,
      maxTokens,
      logitBias: bias,
      signal,
      emit: (text, emitted) => {
        onToken(emitted);
        if (text !== '') options.onText(text);
      },
    });
    if (end.kind === 'finished') {
      return resultOf(options, {
        finishReason: signal.aborted ? 'cancelled' : end.reason === 'maxTokens' ? 'length' : 'stop',
        completionTokens,
        cachedPromptTokens,
        firstTokenAt,
        lastTokenAt,
        stopSequence: end.stopText,
      });
    }
    generatedByLoop = end.generated;
    textBefore = [...textBefore, ...generatedByLoop];
  }
  if (textBefore.length > 0) firstChunkTokens = [];

  // One token-exact path for chat, raw prompts and continuing any answer: the prompt's tokens (a
  // chat's through its template, up to the answer), then the tokens generated so far, as one
  // completion. A job moved to another worker mid-stream then goes on exactly where it was: its
  // text would not re-tokenize to the same tokens, and LlamaChat renders a partial answer unlike
  // its own output and drifts from a plain completion after a while, so chat does not use it.
  const completion = new LlamaCompletion({ contextSequence: sequence });
  let stopReason: LlamaCompletionResponse['metadata']['stopReason'];
  let stopSequence: string | undefined;
  try {
    const response = await completion.generateCompletionWithMeta([...prompt.input, ...generatedByLoop], {
      onTextChunk,
      onToken,
      signal,
      // A cancelled request returns what it has instead of throwing, so the slot is released through
      // the same path as a finished one.
      stopOnAbortSignal: true,
      // Without a bound a model that never emits EOS would generate forever (context shifts keep going).
      maxTokens: maxTokens - generatedByLoop.length,
      temperature: request.temperature,
      topP: request.topP,
      topK: request.topK,
      minP: request.minP,
      seed: request.seed,
      customStopTriggers: [...(request.stop ?? []), ...prompt.stopTriggers],
      repeatPenalty: repeatPenaltyOf(request),
      grammar: options.grammar,
      tokenBias: tokenBiasOf(sequence, bias),
    });
    stopReason = response.metadata.stopReason;
    if (response.metadata.stopReason === 'customStopTrigger') {
      const trigger = response.metadata.customStopTrigger;
      const text = trigger.every((part) => typeof part === 'string') ? trigger.join('') : undefined;
      if (text !== undefined && (request.stop ?? []).includes(text)) stopSequence = text;
    }
  } finally {
    recorder?.dispose();
    completion.dispose({ disposeSequence: false });
  }
  return resultOf(options, {
    finishReason: signal.aborted ? 'cancelled' : toFinishReason(stopReason),
    completionTokens,
    cachedPromptTokens,
    firstTokenAt,
    lastTokenAt,
    stopSequence,
  });
}

function resultOf(
  options: RunGenerationOptions,
  run: {
    finishReason: FinishReason;
    completionTokens: number;
    cachedPromptTokens: number;
    firstTokenAt: number | undefined;
    lastTokenAt: number;
    stopSequence: string | undefined;
  },
): GenerationResult {
  const end = performance.now();
  const first = run.firstTokenAt ?? end;
  const { completionTokens, stopSequence } = run;
  return {
    finishReason: run.finishReason,
    // the whole prompt, as clients count it; the part that was already in the cache besides
    usage: {
      promptTokens: options.prompt.sequenceTokens.length,
      completionTokens,
      cachedPromptTokens: run.cachedPromptTokens,
    },
    timeToFirstTokenMs: first - options.receivedAt,
    // From the first token to the last: the first token's latency is time to first token's business.
    tokensPerSecond:
      completionTokens > 1 && run.lastTokenAt > first
        ? ((completionTokens - 1) * 1000) / (run.lastTokenAt - first)
        : 0,
    ...(stopSequence === undefined || run.finishReason === 'cancelled' ? {} : { stopSequence }),
  };
}

/** Probabilities below this are reported as OpenAI does: -9999 rather than -Infinity (not JSON). */
const MIN_LOGPROB = -9999;
const logOf = (p: number): number => (p > 0 ? Math.max(MIN_LOGPROB, Math.log(p)) : MIN_LOGPROB);

/**
 * Records each sampled token's probability while LlamaCompletion generates, for a request with
 * `logprobs` only. LlamaCompletion samples through its sequence's `evaluate`, which yields tokens
 * alone; for this generation the sequence's `evaluate` is replaced by one that asks
 * `evaluateWithMetadata` for the chosen token's probability (and for the whole distribution when
 * `top` > 0), so every other request keeps the plain path. The probabilities are those llama.cpp
 * sampled from: softmax over the candidates the sampler chain left (logit bias, penalties, top-k,
 * top-p, min-p, then temperature); at temperature 0, the plain softmax of the model's logits.
 *
 * LlamaCompletion hands tokens on in the order they were sampled but may hold some back (a
 * possible stop trigger) and drop them: `take` matches the tokens handed on against those
 * recorded, in order, and skips the dropped ones.
 */
function logprobRecorder(
  sequence: LlamaContextSequence,
  top: number,
  /** What comes before the first generated token: its text is read after these. */
  context: readonly Token[],
): { take(tokens: readonly Token[]): TokenLogprob[]; dispose(): void } {
  const model = sequence.model;
  const sampled: { token: Token; probability: number; top: [Token, number][] }[] = [];
  const metadata =
    top > 0 ? ({ confidence: true, probabilities: true } as const) : ({ confidence: true } as const);
  const patched = sequence as unknown as { evaluate: LlamaContextSequence['evaluate'] };
  patched.evaluate = async function* (tokens, evaluateOptions) {
    const iterator = sequence.evaluateWithMetadata(tokens, metadata, evaluateOptions);
    let input: Token | Token[] | undefined;
    try {
      for (;;) {
        const next = await iterator.next(input);
        if (next.done === true) return;
        const value = next.value as { token: Token; confidence: number; probabilities?: Map<Token, number> };
        const probabilities = value.probabilities;
        const alternatives: [Token, number][] = [];
        if (probabilities !== undefined) {
          for (const entry of probabilities) {
            if (alternatives.length >= top) break;
            alternatives.push(entry);
          }
        }
        sampled.push({ token: value.token, probability: value.confidence, top: alternatives });
        input = (yield value.token) as Token | Token[] | undefined;
      }
    } finally {
      await iterator.return(undefined);
    }
  };
  /** The tokens before the next one: a token's text is read after them (a leading space kept). */
  const before: Token[] = context.slice(-16);
  const textOf = (token: Token): string => model.detokenize([token], false, before.slice(-16));
  return {
    take(tokens) {
      const out: TokenLogprob[] = [];
      for (const token of tokens) {
        // not found: a token LlamaCompletion made itself (text cut at a stop trigger, tokenized
        // again), never sampled, so without a probability of its own (reported as 0, i.e. certain)
        const index = sampled[0]?.token === token ? 0 : sampled.findIndex((s) => s.token === token);
        const record = index < 0 ? undefined : sampled[index];
        if (index >= 0) sampled.splice(0, index + 1);
        const entry: TokenLogprob = {
          token: textOf(token),
          logprob: record === undefined ? 0 : logOf(record.probability),
        };
        if (top > 0)
          entry.top = (record?.top ?? []).map(([t, p]) => ({ token: textOf(t), logprob: logOf(p) }));
        out.push(entry);
        before.push(token);
      }
      return out;
    },
    dispose() {
      // the prototype's evaluate again
      delete (patched as { evaluate?: unknown }).evaluate;
    },
  };
}

/** The bias (see logit-bias.ts) as LlamaCompletion takes it. */
function tokenBiasOf(
  sequence: LlamaContextSequence,
  bias: ReadonlyMap<Token, number>,
): TokenBias | undefined {
  if (bias.size === 0) return undefined;
  const tokenBias = TokenBias.for(sequence.model);
  for (const [token, logit] of bias) tokenBias.set(token, { logit });
  return tokenBias;
}

/**
 * Penalties as node-llama-cpp takes them. Without any that changes a logit (see penalizes),
 * `false`: node-llama-cpp's default is a window of 64 tokens with every penalty neutral, which
 * changes no logit but still costs every token a copy and filter of the window in JS and its
 * transfer to the native sampler (about 40 µs of a token's time on the tiny model, see
 * docs/benchmarks.md, bench:limit).
 */
function repeatPenaltyOf(request: GenerateRequest): LLamaContextualRepeatPenalty | false {
  const { repeatPenalty, presencePenalty, frequencyPenalty, repeatLastTokens } = request;
  if (!penalizes(request)) return false;
  // Newline tokens stay exempt (node-llama-cpp's default), so code and JSON keep their layout.
  const penalty: LLamaContextualRepeatPenalty = {};
  if (repeatLastTokens !== undefined) penalty.lastTokens = repeatLastTokens;
  if (repeatPenalty !== undefined) penalty.penalty = repeatPenalty;
  if (presencePenalty !== undefined) penalty.presencePenalty = presencePenalty;
  if (frequencyPenalty !== undefined) penalty.frequencyPenalty = frequencyPenalty;
  return penalty;
}

function toFinishReason(reason: LlamaCompletionResponse['metadata']['stopReason']): FinishReason {
  switch (reason) {
    case 'maxTokens':
      return 'length';
    case 'abort':
      return 'cancelled';
    default:
      return 'stop';
  }
}
