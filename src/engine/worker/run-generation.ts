/**
 * One generation on one context sequence (a slot), inside the worker process: chat through the
 * GGUF's own chat template, or raw completion. Text is streamed through onTextChunk, which
 * detokenizes with context (per-token detokenizing drops SentencePiece leading spaces).
 */
import {
  LlamaCompletion,
  type ChatHistoryItem,
  type ChatWrapper,
  type LlamaChatResponse,
  type LlamaCompletionResponse,
  type LlamaContextSequence,
  type LlamaText,
  type LlamaGrammar,
  type LLamaContextualRepeatPenalty,
  type Token,
} from 'node-llama-cpp';
import type { ChatMessage, FinishReason, Usage } from '../../shared/wire.js';
import type { GenerateRequest } from '../types.js';

export interface GenerationResult {
  finishReason: FinishReason;
  usage: Usage;
  timeToFirstTokenMs: number;
  tokensPerSecond: number;
}

export interface RunGenerationOptions {
  sequence: LlamaContextSequence;
  chatWrapper: ChatWrapper;
  request: GenerateRequest;
  /** Built from the request's grammar or jsonSchema before it was queued (see grammar.ts). */
  grammar?: LlamaGrammar | undefined;
  /** performance.now() when the request reached the worker: time to first token counts from here. */
  receivedAt: number;
  onText: (text: string) => void;
  /** Called with the tokens generated, as they are generated (tok/s, and continuing a job exactly). */
  onTokens: (tokens: readonly number[]) => void;
  signal: AbortSignal;
}

type StopReason =
  LlamaChatResponse['metadata']['stopReason'] | LlamaCompletionResponse['metadata']['stopReason'];

export async function runGeneration(options: RunGenerationOptions): Promise<GenerationResult> {
  const { sequence, request, signal } = options;
  let completionTokens = 0;
  let firstTokenAt: number | undefined;
  let lastTokenAt = 0;
  let promptTokens: number | undefined;
  // A continued answer's first text is detokenized without the tokens before it, which drops a
  // SentencePiece token's leading space: that chunk is detokenized again with them.
  const continued = (request.continueTokens ?? []) as Token[];
  let firstChunkTokens: Token[] | undefined = continued.length > 0 ? [] : undefined;
  const onToken = (tokens: Token[]): void => {
    firstChunkTokens?.push(...tokens);
    const now = performance.now();
    // The sequence is cleared before every request, so at the first generated token everything
    // evaluated so far is the prompt (the generated token itself is not evaluated yet).
    promptTokens ??= sequence.nextTokenIndex;
    firstTokenAt ??= now;
    lastTokenAt = now;
    completionTokens += tokens.length;
    options.onTokens(tokens);
  };
  const onTextChunk = (chunk: string): void => {
    let text = chunk;
    if (firstChunkTokens !== undefined) {
      const withContext = sequence.model.detokenize(firstChunkTokens, false, continued.slice(-16));
      if (withContext !== text && withContext.endsWith(text)) text = withContext;
      firstChunkTokens = undefined;
    }
    if (text !== '') options.onText(text);
  };
  const common = {
    onTextChunk,
    onToken,
    signal,
    // A cancelled request returns what it has instead of throwing, so the slot is released through
    // the same path as a finished one.
    stopOnAbortSignal: true,
    // Without a bound a model that never emits EOS would generate forever (context shifts keep going).
    maxTokens: request.maxTokens ?? sequence.contextSize,
    temperature: request.temperature,
    topP: request.topP,
    topK: request.topK,
    minP: request.minP,
    seed: request.seed,
    customStopTriggers: request.stop,
    repeatPenalty: repeatPenaltyOf(request),
    grammar: options.grammar,
  };

  let stopReason: StopReason;
  if (request.messages !== undefined || request.continueTokens !== undefined) {
    // One token-exact path for chat and for continuing any answer: the prompt's tokens (the chat
    // template's rendering up to the answer), then the tokens generated so far, as one completion.
    // A job moved to another worker mid-stream then goes on exactly where it was: its text would
    // not re-tokenize to the same tokens, and LlamaChat renders a partial answer unlike its own
    // output and drifts from a plain completion after a while, so chat does not use it.
    const input =
      request.messages === undefined
        ? completionPromptTokens(sequence, request.prompt ?? '')
        : chatPromptTokens(sequence, options.chatWrapper, request.messages);
    const completion = new LlamaCompletion({ contextSequence: sequence });
    try {
      const response = await completion.generateCompletionWithMeta(
        [...input.tokens, ...((request.continueTokens ?? []) as Token[])],
        {
          ...common,
          customStopTriggers: [...(request.stop ?? []), ...input.stopTriggers],
        },
      );
      stopReason = response.metadata.stopReason;
    } finally {
      completion.dispose({ disposeSequence: false });
    }
  } else {
    const completion = new LlamaCompletion({ contextSequence: sequence });
    try {
      const response = await completion.generateCompletionWithMeta(request.prompt ?? '', common);
      stopReason = response.metadata.stopReason;
    } finally {
      completion.dispose({ disposeSequence: false });
    }
  }

  const end = performance.now();
  const first = firstTokenAt ?? end;
  return {
    finishReason: signal.aborted ? 'cancelled' : toFinishReason(stopReason),
    usage: { promptTokens: promptTokens ?? sequence.nextTokenIndex, completionTokens },
    timeToFirstTokenMs: first - options.receivedAt,
    // From the first token to the last: the first token's latency is time to first token's business.
    tokensPerSecond:
      completionTokens > 1 && lastTokenAt > first
        ? ((completionTokens - 1) * 1000) / (lastTokenAt - first)
        : 0,
  };
}

/**
 * Penalties as node-llama-cpp takes them. Without any, `undefined` keeps its default: a window of
 * 64 tokens with every penalty neutral (llama.cpp then adds no penalty sampler at all).
 */
function repeatPenaltyOf(request: GenerateRequest): LLamaContextualRepeatPenalty | false | undefined {
  const { repeatPenalty, presencePenalty, frequencyPenalty, repeatLastTokens } = request;
  if (repeatLastTokens === 0) return false;
  if (
    repeatPenalty === undefined &&
    presencePenalty === undefined &&
    frequencyPenalty === undefined &&
    repeatLastTokens === undefined
  ) {
    return undefined;
  }
  // Newline tokens stay exempt (node-llama-cpp's default), so code and JSON keep their layout.
  const penalty: LLamaContextualRepeatPenalty = {};
  if (repeatLastTokens !== undefined) penalty.lastTokens = repeatLastTokens;
  if (repeatPenalty !== undefined) penalty.penalty = repeatPenalty;
  if (presencePenalty !== undefined) penalty.presencePenalty = presencePenalty;
  if (frequencyPenalty !== undefined) penalty.frequencyPenalty = frequencyPenalty;
  return penalty;
}

function toFinishReason(reason: StopReason): FinishReason {
  switch (reason) {
    case 'maxTokens':
      return 'length';
    case 'abort':
      return 'cancelled';
    default:
      return 'stop';
  }
}

function toChatHistory(messages: ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = messages.map((m): ChatHistoryItem => {
    if (m.role === 'system') return { type: 'system', text: m.content };
    if (m.role === 'user') return { type: 'user', text: m.content };
    return { type: 'model', response: [m.content] };
  });
  // A trailing assistant message is continued (a prefill); otherwise the model answers anew.
  if (messages.at(-1)?.role !== 'assistant') history.push({ type: 'model', response: [] });
  return history;
}

/** The tokens a raw completion of `prompt` evaluates after the BOS that the completion prepends. */
function completionPromptTokens(
  sequence: LlamaContextSequence,
  prompt: string,
): { tokens: Token[]; stopTriggers: LlamaText[] } {
  const { tokenizer, tokens } = sequence.model;
  const prependsBos = resolvesBos(sequence);
  return {
    tokens: tokenizer(prompt, false, prependsBos && tokens.bos !== null ? 'trimLeadingSpace' : undefined),
    stopTriggers: [],
  };
}

/** The chat template's rendering of `messages` up to the answer, as tokens, without its leading BOS. */
function chatPromptTokens(
  sequence: LlamaContextSequence,
  chatWrapper: ChatWrapper,
  messages: ChatMessage[],
): { tokens: Token[]; stopTriggers: LlamaText[] } {
  const state = chatWrapper.generateContextState({ chatHistory: toChatHistory(messages) });
  const tokens = state.contextText.tokenize(sequence.model.tokenizer);
  // the completion prepends BOS itself; the template's rendering starts with one
  if (resolvesBos(sequence) && tokens[0] === sequence.model.tokens.bos) tokens.shift();
  return { tokens, stopTriggers: state.stopGenerationTriggers };
}

function resolvesBos(sequence: LlamaContextSequence): boolean {
  return sequence.model.tokens.shouldPrependBosToken && sequence.model.tokens.bos !== null;
}
