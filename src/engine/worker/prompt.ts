/**
 * A request's prompt as tokens, before it has a slot: the slot pool compares these tokens with
 * what each free slot keeps in its KV cache to choose one, and the generation then evaluates only
 * the part that differs. Chat goes through the GGUF's own chat template; a raw prompt as is.
 */
import {
  LlamaVocabularyType,
  type ChatHistoryItem,
  type ChatModelFunctionCall,
  type ChatModelFunctions,
  type ChatModelResponse,
  type ChatWrapper,
  type LlamaModel,
  type LlamaText,
  type Token,
} from 'node-llama-cpp';
import { messagePrefixHashes, textPrefixHash, type PrefixKey } from '../../shared/prefix.js';
import type { ChatMessage, Tool } from '../../shared/wire.js';
import type { GenerateRequest } from '../types.js';

export interface PreparedPrompt {
  /** What the completion is given: the prompt's tokens and then any continued tokens, without BOS. */
  input: Token[];
  /** The chat template's stop triggers (none for a raw prompt). */
  stopTriggers: LlamaText[];
  /**
   * The tokens the slot's sequence holds once the prompt is evaluated: BOS (where the model wants
   * one) and `input`, cut to fit the context the way the completion cuts it. Its length is the
   * request's prompt size.
   */
  sequenceTokens: Token[];
  /**
   * The tokens the answer's first text is read after (detokenized with them, so that a SentencePiece
   * token's leading space is kept): the text the answer continues — a raw prompt, an assistant
   * message the answer goes on with, tokens continued from another worker. None where the answer
   * starts a turn of its own: a chat answer's leading space is the tokenizer's, not the model's
   * (LlamaCompletion drops it there too).
   */
  textBefore: Token[];
}

/**
 * Tokenizes a request's prompt as the completion will evaluate it. `contextSize` is the slot's:
 * an input longer than the completion keeps is cut the same way here, so that the tokens compared
 * with a slot's cache are the ones it will hold.
 */
export function preparePrompt(
  model: LlamaModel,
  chatWrapper: ChatWrapper,
  contextSize: number,
  request: GenerateRequest,
): PreparedPrompt {
  const prompt =
    request.messages === undefined
      ? completionPromptTokens(model, request.prompt ?? '')
      : chatPromptTokens(model, chatWrapper, request.messages, request.tools);
  const continued = (request.continueTokens ?? []) as Token[];
  const input = [...prompt.tokens, ...continued];
  const last = request.messages?.at(-1);
  const continuesText = request.messages === undefined || (last?.role === 'assistant' && last.content !== '');
  const bos = beginningToken(model);
  // LlamaCompletion keeps a tenth of the context free (its default context shift) and the input's tail
  const room = contextSize - Math.max(1, Math.floor(contextSize / 10)) - (bos === null ? 0 : 1);
  const kept = room <= 0 ? [] : input.slice(-Math.min(room, input.length));
  return {
    input,
    stopTriggers: prompt.stopTriggers,
    sequenceTokens: bos === null ? kept : [bos, ...kept],
    textBefore: (continuesText ? input : continued).slice(-16),
  };
}

/**
 * The prefix keys (see shared/prefix.ts) of what a slot keeps after a request: the prompt's first
 * message, the whole prompt, and the prompt with the answer as the client got it (the next turn of
 * a chat starts with exactly that). `keptTokens` is how many tokens the slot's cache holds now.
 */
export function prefixKeysAfter(
  model: LlamaModel,
  chatWrapper: ChatWrapper,
  request: GenerateRequest,
  prompt: PreparedPrompt,
  answer: string,
  keptTokens: number,
): PrefixKey[] {
  const offset = prompt.sequenceTokens.length - prompt.input.length;
  // a prompt cut to fit the context no longer starts where its keys would say
  if (offset < 0) return [];
  // keys name messages alone, and tools change the rendering of the first one (the system text);
  // the slot still reuses what it keeps, compared token by token
  if (request.tools !== undefined) return [];
  const promptTokens = Math.min(
    keptTokens,
    prompt.sequenceTokens.length - (request.continueTokens?.length ?? 0),
  );
  // an answer that went on from tokens of an earlier worker has text this worker never saw
  const withAnswer = request.continueTokens === undefined || request.continueTokens.length === 0;
  const keys: PrefixKey[] = [];
  if (request.messages !== undefined) {
    const messages = request.messages;
    const hashes = messagePrefixHashes(messages);
    if (messages.length > 1) {
      // tokens up to where the rendering of the first message alone parts from the whole prompt's
      const first = chatPromptTokens(model, chatWrapper, messages.slice(0, 1)).tokens;
      let shared = 0;
      while (shared < first.length && first[shared] === prompt.input[shared]) shared++;
      keys.push({
        kind: 'messages',
        length: 1,
        hash: hashes[0]!,
        tokens: Math.min(promptTokens, offset + shared),
      });
    }
    keys.push({ kind: 'messages', length: messages.length, hash: hashes.at(-1)!, tokens: promptTokens });
    if (withAnswer && answer !== '') {
      const last = messages.at(-1)!;
      // a trailing assistant message was continued: the answer is the rest of that message
      const answered: ChatMessage[] =
        last.role === 'assistant'
          ? [...messages.slice(0, -1), { role: 'assistant', content: last.content + answer }]
          : [...messages, { role: 'assistant', content: answer }];
      keys.push({
        kind: 'messages',
        length: answered.length,
        hash: messagePrefixHashes(answered).at(-1)!,
        tokens: keptTokens,
      });
    }
  } else {
    const text = request.prompt ?? '';
    keys.push({ kind: 'text', length: text.length, hash: textPrefixHash(text), tokens: promptTokens });
    if (withAnswer && answer !== '') {
      const whole = text + answer;
      keys.push({ kind: 'text', length: whole.length, hash: textPrefixHash(whole), tokens: keptTokens });
    }
  }
  return keys;
}

/**
 * The token the completion puts before its input, or null: node-llama-cpp's own rule (BOS where
 * the vocabulary asks for it, never for RWKV and UGM vocabularies).
 */
function beginningToken(model: LlamaModel): Token | null {
  const { vocabularyType, tokens } = model;
  if (vocabularyType === LlamaVocabularyType.rwkv || vocabularyType === LlamaVocabularyType.ugm) return null;
  if (vocabularyType === LlamaVocabularyType.wpm) return tokens.bos;
  return tokens.shouldPrependBosToken ? tokens.bos : null;
}

function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = [];
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    if (m.role === 'system') history.push({ type: 'system', text: m.content });
    else if (m.role === 'user') history.push({ type: 'user', text: m.content });
    // a tool message with no call before it to answer is the user's text (the API refuses those)
    else if (m.role === 'tool') history.push({ type: 'user', text: m.content });
    else {
      const response: ChatModelResponse['response'] = m.content === '' ? [] : [m.content];
      // the results that follow an assistant's calls belong to those calls, as the template renders them
      const results = new Map<string, string>();
      while (messages[i + 1]?.role === 'tool' && m.toolCalls !== undefined) {
        const result = messages[++i]!;
        results.set(result.toolCallId ?? '', result.content);
      }
      (m.toolCalls ?? []).forEach((call, index) => {
        const item: ChatModelFunctionCall = {
          type: 'functionCall',
          name: call.name,
          params: parseJson(call.arguments),
          result: parseJson(results.get(call.id) ?? ''),
          ...(index === 0 ? { startsNewChunk: true } : {}),
        };
        response.push(item);
      });
      history.push({ type: 'model', response });
    }
  }
  // A trailing assistant message is continued (a prefill), as is one whose calls were just answered;
  // otherwise the model answers anew.
  const last = messages.at(-1)?.role;
  if (last !== 'assistant' && history.at(-1)?.type !== 'model') history.push({ type: 'model', response: [] });
  return history;
}

/** A call's arguments or result as the template renders it: JSON where it is JSON, else the text. */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function functionsOf(tools: readonly Tool[]): ChatModelFunctions {
  return Object.fromEntries(
    tools.map((tool) => [
      tool.name,
      {
        ...(tool.description === undefined ? {} : { description: tool.description }),
        // rendered as documentation only; the API builds any grammar from the schemas itself
        ...(tool.parameters === undefined
          ? {}
          : { params: tool.parameters as ChatModelFunctions[string]['params'] }),
      },
    ]),
  );
}

/** The tokens a raw completion of `prompt` evaluates after the token that the completion prepends. */
function completionPromptTokens(
  model: LlamaModel,
  prompt: string,
): { tokens: Token[]; stopTriggers: LlamaText[] } {
  return {
    tokens: model.tokenizer(prompt, false, beginningToken(model) !== null ? 'trimLeadingSpace' : undefined),
    stopTriggers: [],
  };
}

/** The chat template's rendering of `messages` up to the answer, as tokens, without a leading BOS. */
function chatPromptTokens(
  model: LlamaModel,
  chatWrapper: ChatWrapper,
  messages: readonly ChatMessage[],
  tools?: readonly Tool[],
): { tokens: Token[]; stopTriggers: LlamaText[] } {
  const state = chatWrapper.generateContextState({
    chatHistory: toChatHistory(messages),
    ...(tools === undefined ? {} : { availableFunctions: functionsOf(tools), documentFunctionParams: true }),
  });
  const tokens = state.contextText.tokenize(model.tokenizer);
  // the completion prepends BOS itself; the template's rendering starts with one
  const bos = beginningToken(model);
  if (bos !== null && tokens[0] === bos) tokens.shift();
  return { tokens, stopTriggers: state.stopGenerationTriggers };
}
