/**
 * The worker's own token loop: one generation step per token straight on node-llama-cpp's native
 * context — queue the token, decode, sample — without the library's evaluate generator.
 *
 * node-llama-cpp's lowest public generation API (`LlamaContextSequence.evaluate`, under
 * LlamaCompletion) spends 300–400 µs of main-thread JavaScript per token on its generic machinery
 * (batch dispatcher, locks, generator resumption, the sampler's settings rebuilt per token); the
 * same two native calls made directly cost about a third of that (docs/benchmarks.md, "Where a
 * token's time goes"). On a small model that is noise; on a tiny model, or a GPU streaming
 * hundreds of tokens a second, it is a third of the speed.
 *
 * The loop serves the plain request — no grammar, no log probabilities, no penalty that changes a
 * logit. On a context of one sequence (a worker's default, `slots: 1`) it owns the native batch; on
 * a context of several it queues each step in node-llama-cpp's batch dispatcher instead, so that the
 * slots' tokens, and LlamaCompletion's on other slots, still share one decode (less gain: the
 * dispatcher's own bookkeeping stays). The next token's decode starts before the last one's text is
 * handed on, so the hand-off (a write to the hive) runs beside the native step. Everything else goes through LlamaCompletion, as does the
 * rest of an answer that outgrows the context (its context shift): `tokenLoopFor` says which. It
 * reaches node-llama-cpp's internals, pinned to the exact version in package.json; if they are not
 * what it expects, `tokenLoopFor` answers undefined and LlamaCompletion serves everything.
 *
 * On a context of one sequence, once rbee's native loop is loaded (native-loop.ts), the steps run
 * there instead: decode and sample on a thread of its own, each token handed here as it comes, so
 * that this file's work on a token runs beside the next decode; a stop found here tells it to stop,
 * and the tokens it decoded meanwhile stay in the cache (the sequence is told). The handling of each
 * token (take, below) is the same code on both.
 *
 * Text comes out as LlamaCompletion gives it: detokenized with the answer's tokens before it (a
 * continued answer's included), an incomplete UTF-8 character held until the token that completes
 * it, stop strings matched across tokens and the tokens whose text might begin one held back until
 * it is clear; the template's stop tokens and end-of-generation tokens end the answer unseen. Two
 * differences, both as OpenAI's API and llama.cpp's server give text: the text right before a stop
 * string is kept whole (LlamaCompletion drops a space the stop's token had before the stop), and the
 * first token of an answer that continues text (a raw prompt) is read after that text, which keeps
 * a SentencePiece token's leading space (LlamaCompletion reads it alone: "Paris" after "The capital
 * is"); run-generation.ts mends LlamaCompletion's first text the same way.
 */
import {
  SpecialToken,
  SpecialTokensText,
  type LlamaContextSequence,
  type LlamaText,
  type Token,
} from 'node-llama-cpp';
import type { GenerateRequest } from '../types.js';
import {
  nativeLoopAddon,
  nativeLoopUnavailable,
  type NativeLoopAddon,
  type NativeLoopEnd,
} from './native-loop.js';
import type { PreparedPrompt } from './prompt.js';

/** node-llama-cpp's native context (AddonContext), as far as the loop uses it. */
interface NativeContext {
  initBatch(size: number): void;
  addToBatch(
    sequenceId: number,
    firstTokenIndex: number,
    tokens: Uint32Array,
    logitIndexes: Uint32Array,
  ): Uint32Array;
  decodeBatch(): Promise<void>;
  sampleToken(batchLogitIndex: number, sampler: NativeSampler): Promise<number>;
}

/** node-llama-cpp's native sampler chain (AddonSampler). */
interface NativeSampler {
  applyConfig(config: Record<string, unknown>): void;
  dispose(): void;
}

/** What the loop needs from under node-llama-cpp's classes. */
interface Internals {
  createSampler(): NativeSampler;
  /**
   * Evaluates `tokens` from `position` on (each pushed to `contents` once in the cache) and samples
   * the next token after the last; undefined when the signal stopped it first.
   */
  step(
    tokens: Token[],
    contents: Token[],
    sampler: NativeSampler,
    signal: AbortSignal,
  ): Promise<number | undefined>;
  /** Holds off the context's disposal while native calls may run. */
  preventDisposal(): { dispose(): void };
  /** Tells the sequence what its cache holds after the loop wrote to it behind its back. */
  setContents(tokens: Token[]): void;
  /** The native context (an AddonContext) and what the native loop checks it against. */
  native: { context: object; contextSize: number; batchSize: number; sequenceId: number; alone: boolean };
}

/** node-llama-cpp's batch dispatcher (LlamaContext._decodeTokens): one batch for every sequence. */
type QueueDecode = (
  item: {
    sequenceId: number;
    tokens: Token[];
    firstTokenSequenceIndex: number;
    logits: boolean[];
    tokenMeter: unknown;
  },
  onLogits: (batchLogitIndex: number) => Promise<number>,
) => Promise<[number, number][]>;

function internalsOf(sequence: LlamaContextSequence): Internals | undefined {
  const seq = sequence as unknown as {
    _sequenceId?: unknown;
    _contextTokens?: unknown;
    _nextTokenIndex?: unknown;
    _tokenMeter?: unknown;
    _context?: {
      _ctx?: Partial<NativeContext>;
      _batchSize?: unknown;
      _decodeTokens?: QueueDecode;
      _backendContextDisposeGuard?: { createPreventDisposalHandle?: () => { dispose(): void } };
      _llama?: { _bindings?: { AddonSampler?: new (model: unknown) => NativeSampler } };
    };
  };
  const context = seq._context;
  const native = context?._ctx;
  const guard = context?._backendContextDisposeGuard;
  const Sampler = context?._llama?._bindings?.AddonSampler;
  const model = (sequence.model as unknown as { _model?: unknown })._model;
  if (
    typeof seq._sequenceId !== 'number' ||
    !Array.isArray(seq._contextTokens) ||
    typeof seq._nextTokenIndex !== 'number' ||
    typeof context?._batchSize !== 'number' ||
    typeof context._decodeTokens !== 'function' ||
    typeof native?.initBatch !== 'function' ||
    typeof native.addToBatch !== 'function' ||
    typeof native.decodeBatch !== 'function' ||
    typeof native.sampleToken !== 'function' ||
    typeof guard?.createPreventDisposalHandle !== 'function' ||
    typeof Sampler !== 'function' ||
    model === undefined
  ) {
    return undefined;
  }
  const sequenceId = seq._sequenceId;
  const batchSize = context._batchSize;
  const nativeContext = native as NativeContext;
  const queueDecode = context._decodeTokens.bind(context);
  const logitIndex = new Uint32Array(1);
  const one = new Uint32Array(1);

  /** The context's only sequence: its own batches, straight to the native context. */
  const alone: Internals['step'] = async (tokens, contents, sampler, signal) => {
    let batchLogit = 0;
    for (let start = 0; start < tokens.length; start += batchSize) {
      if (signal.aborted) return undefined;
      const part = tokens.length === 1 ? tokens : tokens.slice(start, start + batchSize);
      const last = start + part.length === tokens.length;
      nativeContext.initBatch(part.length);
      logitIndex[0] = part.length - 1;
      if (part.length === 1) one[0] = part[0]!;
      const indexes = nativeContext.addToBatch(
        sequenceId,
        contents.length,
        part.length === 1 ? one : Uint32Array.from(part),
        last ? logitIndex : NO_LOGITS,
      );
      await nativeContext.decodeBatch();
      for (const token of part) contents.push(token);
      if (last) batchLogit = indexes[0]!;
    }
    if (signal.aborted) return undefined;
    return nativeContext.sampleToken(batchLogit, sampler);
  };

  /**
   * One of several sequences: through node-llama-cpp's batch dispatcher, so that the slots'
   * tokens share one decode (and LlamaCompletion on another slot shares it too); sampled while
   * the batch's logits are there.
   */
  const shared: Internals['step'] = async (tokens, contents, sampler, signal) => {
    // A turn of the event loop first: queued at once, the next token would join the dispatcher's
    // batch loop before it lets go of the context, and another slot waiting to erase its cache
    // (a new request's first step) would wait for this whole answer.
    await new Promise((resolve) => setImmediate(resolve));
    if (signal.aborted) return undefined;
    const [[, token] = [0, -1]] = await queueDecode(
      {
        sequenceId,
        tokens,
        firstTokenSequenceIndex: contents.length,
        logits: tokens.map((_, i) => i === tokens.length - 1),
        tokenMeter: seq._tokenMeter,
      },
      (batchLogitIndex) => nativeContext.sampleToken(batchLogitIndex, sampler),
    );
    for (const t of tokens) contents.push(t);
    return token;
  };

  return {
    createSampler: () => new Sampler(model),
    step: sequence.context.totalSequences === 1 ? alone : shared,
    preventDisposal: () => guard.createPreventDisposalHandle!(),
    setContents(tokens) {
      seq._contextTokens = tokens;
      seq._nextTokenIndex = tokens.length;
    },
    native: {
      context: native,
      contextSize: sequence.context.contextSize,
      batchSize,
      sequenceId,
      alone: sequence.context.totalSequences === 1,
    },
  };
}

const NO_LOGITS = new Uint32Array(0);

/** Where the loop stopped. */
export type TokenLoopEnd =
  | { kind: 'finished'; reason: 'eog' | 'stop' | 'maxTokens' | 'abort'; stopText?: string }
  /**
   * The context is full: the answer goes on through LlamaCompletion (it shifts the context), from
   * the prompt and `generated`, every token sampled so far (all but the last in the cache).
   */
  | { kind: 'contextFull'; generated: Token[] };

export interface TokenLoopRun {
  /** Tokens the sequence's cache already holds of prompt.sequenceTokens (after any reuse). */
  cached: number;
  maxTokens: number;
  /** The request's logit bias, checked (logit-bias.ts). */
  logitBias: ReadonlyMap<Token, number>;
  signal: AbortSignal;
  /** Text as it becomes final, with the generated tokens it covers. */
  emit: (text: string, tokens: Token[]) => void;
}

export interface TokenLoop {
  /** Whether rbee's native loop (native-loop.ts) runs it, else the steps are JavaScript's. */
  readonly native: boolean;
  run(options: TokenLoopRun): Promise<TokenLoopEnd>;
}

/** A stop: a request's or the template's text, or a token of the template's. */
interface Stops {
  texts: { text: string; requested: boolean }[];
  tokens: Set<number>;
}

/**
 * The loop for this request on this sequence, or undefined where LlamaCompletion must serve it
 * (see the top of this file).
 */
export function tokenLoopFor(
  sequence: LlamaContextSequence,
  request: GenerateRequest,
  prompt: PreparedPrompt,
  constrained: boolean,
): TokenLoop | undefined {
  if (constrained || request.logprobs !== undefined || penalizes(request)) return undefined;
  if (sequence.needsCheckpoints) return undefined;
  const internals = internalsOf(sequence);
  const stops = stopsOf(sequence, request, prompt.stopTriggers);
  if (internals === undefined || stops === undefined) return undefined;
  const addon = nativeAddonFor(sequence, internals);
  return {
    native: addon !== undefined,
    run: (options) => runLoop(sequence, internals, request, prompt, stops, options, addon),
  };
}

/**
 * The native loop, where it can serve this sequence: it is loaded (prepareNativeLoop), the context
 * has this one sequence (the loop owns its batch), and the native context is what it expects.
 */
function nativeAddonFor(sequence: LlamaContextSequence, internals: Internals): NativeLoopAddon | undefined {
  const addon = nativeLoopAddon();
  const { native } = internals;
  if (addon === undefined || !native.alone || native.contextSize !== sequence.contextSize) return undefined;
  const problem = addon.check(native.context, native.contextSize, native.batchSize);
  if (problem !== undefined) {
    nativeLoopUnavailable(problem);
    return undefined;
  }
  return addon;
}

/**
 * Whether the request's penalties change anything: none, neutral values (a repeat penalty of 1,
 * presence and frequency 0, as many clients send them) and a window of 0 tokens change no logit.
 */
export function penalizes(request: GenerateRequest): boolean {
  if (request.repeatLastTokens === 0) return false;
  return (
    (request.repeatPenalty ?? 1) !== 1 ||
    (request.presencePenalty ?? 0) !== 0 ||
    (request.frequencyPenalty ?? 0) !== 0
  );
}

function stopsOf(
  sequence: LlamaContextSequence,
  request: GenerateRequest,
  triggers: readonly LlamaText[],
): Stops | undefined {
  const stops: Stops = {
    texts: (request.stop ?? []).map((text) => ({ text, requested: true })),
    tokens: new Set(),
  };
  const tokenizer = sequence.model.tokenizer;
  for (const trigger of triggers) {
    const parts: (string | Token)[] = [];
    for (const value of trigger.values) {
      const resolved =
        typeof value === 'string'
          ? [value]
          : value instanceof SpecialToken
            ? value.tokenize(tokenizer)
            : value instanceof SpecialTokensText
              ? value.tokenizeSpecialTokensOnly(tokenizer)
              : undefined;
      if (resolved === undefined) return undefined;
      for (const part of resolved) {
        const last = parts.at(-1);
        if (typeof part === 'string' && typeof last === 'string') parts[parts.length - 1] = last + part;
        else if (part !== '') parts.push(part);
      }
    }
    const [only, ...more] = parts;
    if (only === undefined || more.length > 0) return undefined; // text and tokens mixed: LlamaCompletion's
    if (typeof only === 'string') stops.texts.push({ text: only, requested: false });
    else stops.tokens.add(only);
  }
  return stops;
}

/** U+FFFD: what a token ending inside a UTF-8 character detokenizes to. */
const INCOMPLETE = '\uFFFD';
/** A UTF-8 character spans at most 4 byte tokens. */
const MAX_INCOMPLETE_TOKENS = 4;

async function runLoop(
  sequence: LlamaContextSequence,
  internals: Internals,
  request: GenerateRequest,
  prompt: PreparedPrompt,
  stops: Stops,
  options: TokenLoopRun,
  addon: NativeLoopAddon | undefined,
): Promise<TokenLoopEnd> {
  const model = sequence.model;
  const generated: Token[] = [];
  /** Generated tokens whose text is not out yet, and that text. */
  let heldTokens: Token[] = [];
  let heldText = '';
  /** Where each held token's text ends in heldText (a token inside a UTF-8 character: where its character ends). */
  let heldEnds: number[] = [];
  /** Tokens whose text ends inside a UTF-8 character. */
  let incomplete: Token[] = [];

  /** Out with whatever is held: the answer ends, or goes on elsewhere, without a stop. */
  const flush = (): void => {
    const text = heldText + (incomplete.length > 0 ? textOf(incomplete) : '');
    if (text !== '' || heldTokens.length > 0) options.emit(text, heldTokens);
    heldText = '';
    heldTokens = [];
    heldEnds = [];
    incomplete = [];
  };
  /**
   * Text of the newest generated tokens, read after the tokens before them: the answer's, and
   * before its first, the text it continues (prompt.textBefore: a raw prompt's first token keeps its
   * leading space, a chat answer's first token is read alone).
   */
  const textOf = (tokens: Token[]): string => {
    const start = generated.length - tokens.length;
    const before = generated.slice(Math.max(0, start - 3), start);
    if (before.length < 3) before.unshift(...prompt.textBefore.slice(before.length - 3));
    return model.detokenize(tokens, false, before);
  };

  /**
   * A sampled token: what it lets out, and where the answer ends if it ends there. The caller
   * emits (finish), so that the JavaScript loop can start the next token's decode first.
   */
  const take: Take = (token) => {
    if (token === -1 || stops.tokens.has(token) || model.isEogToken(token)) {
      flush();
      return {
        end: { kind: 'finished', reason: token === -1 || !stops.tokens.has(token) ? 'eog' : 'stop' },
      };
    }
    generated.push(token);
    heldTokens.push(token);
    incomplete.push(token);
    let out: [string, Token[]] | undefined;
    let end: TokenLoopEnd | undefined;
    const text = textOf(incomplete);
    // a character still incomplete waits for the token that completes it
    if (!text.endsWith(INCOMPLETE) || incomplete.length >= MAX_INCOMPLETE_TOKENS) {
      heldText += text;
      for (let i = 0; i < incomplete.length; i++) heldEnds.push(heldText.length);
      incomplete = [];
      const stop = firstStop(heldText, stops);
      if (stop !== undefined) {
        // everything before the stop, with the tokens whose text lies wholly before it
        const before = heldTokens.filter((_, i) => heldEnds[i]! <= stop.at);
        if (stop.at > 0 || before.length > 0) out = [heldText.slice(0, stop.at), before];
        end = { kind: 'finished', reason: 'stop', ...(stop.requested ? { stopText: stop.text } : {}) };
      } else if (!mayBeginStop(heldText, stops)) {
        out = [heldText, heldTokens];
        heldText = '';
        heldTokens = [];
        heldEnds = [];
      }
    }
    if (end === undefined && generated.length >= options.maxTokens) {
      end = { kind: 'finished', reason: 'maxTokens' };
    }
    return { ...(out === undefined ? {} : { out }), ...(end === undefined ? {} : { end }) };
  };
  /** Emits what a token let out, and at the maximum what is still held. */
  const finish: Finish = (out, end) => {
    if (out !== undefined) options.emit(...out);
    if (end?.kind === 'finished' && end.reason === 'maxTokens') flush();
  };

  const config = samplerConfig(request, options.logitBias);
  const handlers = { take, finish, flush, generated };
  const guard = internals.preventDisposal();
  try {
    if (addon !== undefined) {
      const end = await runNative(addon, internals, prompt, stops, options, config, handlers);
      if (end !== undefined) return end;
    }
    return await runSteps(sequence, internals, prompt, options, config, handlers);
  } finally {
    guard.dispose();
  }
}

type Take = (token: Token) => { out?: [string, Token[]]; end?: TokenLoopEnd };
type Finish = (out: [string, Token[]] | undefined, end: TokenLoopEnd | undefined) => void;
/** What runLoop's two engines share: the handling of each sampled token, and the answer so far. */
interface Handlers {
  take: Take;
  finish: Finish;
  flush: () => void;
  generated: Token[];
}

/** The loop in JavaScript: one native decode and one native sample per token, awaited. */
async function runSteps(
  sequence: LlamaContextSequence,
  internals: Internals,
  prompt: PreparedPrompt,
  options: TokenLoopRun,
  config: Record<string, unknown>,
  { take, finish, flush, generated }: Handlers,
): Promise<TokenLoopEnd> {
  const contextSize = sequence.contextSize;
  const contents = prompt.sequenceTokens.slice(0, options.cached);
  const sampler = internals.createSampler();
  sampler.applyConfig(config);
  /** Evaluates `tokens` and samples the next; undefined when they no longer fit the context. */
  const stepOn = (tokens: Token[]): Promise<number | undefined> | undefined =>
    contents.length + tokens.length > contextSize - 1
      ? undefined
      : internals.step(tokens, contents, sampler, options.signal);
  /** The step under way: the next token is computed while this one's text is handed on. */
  let next: Promise<number | undefined> | undefined;
  try {
    // first the prompt's tokens the cache does not hold, then each generated token
    next = stepOn(prompt.sequenceTokens.slice(options.cached));
    for (;;) {
      if (next === undefined) {
        flush();
        return { kind: 'contextFull', generated };
      }
      const token = (await next) as Token | undefined;
      next = undefined;
      if (token === undefined) return { kind: 'finished', reason: 'abort' };
      const { out, end } = take(token);
      // The next token's decode starts before this one's text goes out: handing it to the hive
      // is a write, and the native step runs on another thread meanwhile.
      if (end === undefined) next = stepOn([token]);
      finish(out, end);
      if (end !== undefined) return end;
    }
  } finally {
    // nothing native may run on the sequence once the loop has handed it back
    if (next !== undefined) await next.catch(() => undefined);
    sampler.dispose();
    internals.setContents(contents);
  }
}

/** How many tokens the native loop may sample ahead of the JavaScript that handles them. */
const NATIVE_WINDOW = 32;

/**
 * The loop on rbee's native thread (native-loop.ts): it decodes and samples on its own and hands
 * each token here, where it is handled (take) while the next one is decoded. An end found here (a
 * stop string) tells it to stop; the tokens it decoded meanwhile stay in the cache, and the
 * sequence is told so. Undefined when it could not start (nothing ran: the JavaScript loop serves).
 */
function runNative(
  addon: NativeLoopAddon,
  internals: Internals,
  prompt: PreparedPrompt,
  stops: Stops,
  options: TokenLoopRun,
  config: Record<string, unknown>,
  { take, finish, flush, generated }: Handlers,
): Promise<TokenLoopEnd | undefined> {
  const toEvaluate = prompt.sequenceTokens.slice(options.cached);
  if (toEvaluate.length === 0) return Promise.resolve(undefined);
  const { native } = internals;
  return new Promise((resolve, reject) => {
    /** Every token it sampled, in order: the cache holds the prompt, then as many of them as it decoded. */
    const sampled: Token[] = [];
    let end: TokenLoopEnd | undefined;
    /** What handling a token threw (the emit's write): the answer fails with it. */
    let failure: Error | undefined;
    const onTokens = (tokens: Int32Array): boolean => {
      for (const token of tokens) {
        sampled.push(token as Token);
        if (end !== undefined || failure !== undefined) continue;
        if (options.signal.aborted) {
          end = { kind: 'finished', reason: 'abort' };
          continue;
        }
        try {
          const taken = take(token as Token);
          end = taken.end;
          finish(taken.out, taken.end);
        } catch (error) {
          failure = error instanceof Error ? error : new Error('handling a token failed', { cause: error });
        }
      }
      return end !== undefined || failure !== undefined;
    };
    const onEnd = (reason: NativeLoopEnd, position: number, error: string | undefined): void => {
      options.signal.removeEventListener('abort', onAbort);
      internals.setContents([...prompt.sequenceTokens, ...sampled].slice(0, position));
      if (failure !== undefined) reject(failure);
      else if (end !== undefined) resolve(end);
      else if (reason === 'error') reject(new Error(error ?? 'the native token loop failed'));
      else if (reason === 'stopped') resolve({ kind: 'finished', reason: 'abort' });
      else {
        // the next token does not fit: the rest goes through LlamaCompletion (every other end
        // of the native loop's is one that take() found first)
        try {
          flush();
          resolve(
            reason === 'contextFull'
              ? { kind: 'contextFull', generated }
              : { kind: 'finished', reason: 'eog' },
          );
        } catch (error) {
          reject(error instanceof Error ? error : new Error(String(error)));
        }
      }
    };
    const bias = config.tokenBiasKeys as Uint32Array | undefined;
    const loop = addon.start(
      native.context,
      {
        contextSize: native.contextSize,
        batchSize: native.batchSize,
        sequenceId: native.sequenceId,
        position: options.cached,
        prompt: Uint32Array.from(toEvaluate),
        stopTokens: Uint32Array.from(stops.tokens),
        maxTokens: Math.min(options.maxTokens, 2 ** 31 - 1),
        window: NATIVE_WINDOW,
        temperature: config.temperature as number,
        minP: config.minP as number,
        topK: config.topK as number,
        topP: config.topP as number,
        seed: config.seed as number,
        ...(bias === undefined ? {} : { biasKeys: bias, biasValues: config.tokenBiasValues as Float32Array }),
      },
      onTokens,
      onEnd,
    );
    if (typeof loop === 'string') {
      nativeLoopUnavailable(loop);
      resolve(undefined);
      return;
    }
    const onAbort = (): void => loop.stop();
    if (options.signal.aborted) loop.stop();
    else options.signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** The earliest stop text in `text`. */
function firstStop(text: string, stops: Stops): { at: number; text: string; requested: boolean } | undefined {
  let first: { at: number; text: string; requested: boolean } | undefined;
  for (const stop of stops.texts) {
    const at = text.indexOf(stop.text);
    if (at >= 0 && (first === undefined || at < first.at)) first = { at, ...stop };
  }
  return first;
}

/** Whether `text` ends with the beginning of a stop text (more tokens decide). */
function mayBeginStop(text: string, stops: Stops): boolean {
  for (const { text: stop } of stops.texts) {
    for (let n = Math.min(stop.length - 1, text.length); n > 0; n--) {
      if (text.endsWith(stop.slice(0, n))) return true;
    }
  }
  return false;
}

/**
 * The sampler chain's settings, as node-llama-cpp's evaluate resolves them from the same request
 * (LlamaContextSequence._resolveSamplerConfig): its defaults, a seed of the current second when
 * none is given. Applied once per generation on a sampler of its own, so a seed gives the same
 * answer every time.
 */
function samplerConfig(
  request: GenerateRequest,
  logitBias: ReadonlyMap<Token, number>,
): Record<string, unknown> {
  return {
    temperature: request.temperature ?? 0,
    minP: request.minP ?? 0,
    topK: request.topK ?? 40,
    topP: request.topP ?? 0.95,
    seed: request.seed ?? Math.floor(Date.now() / 1000),
    repeatPenaltyMaxTokens: 64,
    ...(logitBias.size === 0
      ? {}
      : {
          tokenBiasKeys: Uint32Array.from(logitBias.keys()),
          tokenBiasValues: Float32Array.from(logitBias.values()),
        }),
  };
}
