/**
 * One generation on one context sequence (a slot), inside the worker process: chat through the
 * GGUF's own chat template, or raw completion. Text is streamed through onTextChunk, which
 * detokenizes with context (per-token detokenizing drops SentencePiece leading spaces).
 */
import {
  LlamaChat,
  LlamaCompletion,
  type ChatHistoryItem,
  type ChatWrapper,
  type LlamaChatResponse,
  type LlamaCompletionResponse,
  type LlamaContextSequence,
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
  /** Called with the number of tokens generated, as they are generated (for the heartbeat's tok/s). */
  onTokens: (count: number) => void;
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
  const onToken = (tokens: Token[]): void => {
    const now = performance.now();
    // The sequence is cleared before every request, so at the first generated token everything
    // evaluated so far is the prompt (the generated token itself is not evaluated yet).
    promptTokens ??= sequence.nextTokenIndex;
    firstTokenAt ??= now;
    lastTokenAt = now;
    completionTokens += tokens.length;
    options.onTokens(tokens.length);
  };
  const onTextChunk = (text: string): void => {
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
  if (request.messages !== undefined) {
    const chat = new LlamaChat({ contextSequence: sequence, chatWrapper: options.chatWrapper });
    try {
      const response = await chat.generateResponse(toChatHistory(request.messages), common);
      stopReason = response.metadata.stopReason;
    } finally {
      chat.dispose({ disposeSequence: false });
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
