/**
 * rbee's own token loop (src/engine/worker/token-loop.ts) against node-llama-cpp's LlamaCompletion,
 * the path it replaces for plain requests: the same model, the same prompt tokens, the same
 * sampling settings must give the same text, the same tokens and the same end, and the sequence
 * must know what its cache holds afterwards (the next request reuses it). Every case runs twice: on
 * rbee's native loop (native-loop.ts, built here first) and with the steps in JavaScript.
 */
import {
  getLlama,
  LlamaCompletion,
  LlamaLogLevel,
  resolveChatWrapper,
  TokenBias,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateRequest } from '../../src/engine/types.js';
import { preparePrompt } from '../../src/engine/worker/prompt.js';
import { runGeneration, type GenerationResult } from '../../src/engine/worker/run-generation.js';
import { nativeLoopAddon, prepareNativeLoop, useNativeLoop } from '../../src/engine/worker/native-loop.js';
import { tokenLoopFor } from '../../src/engine/worker/token-loop.js';
import { tinyModelPath } from '../helpers/tiny-model.js';

let model: LlamaModel;
let loopContext: LlamaContext;
let referenceContext: LlamaContext;
/** One sequence each: a context of one sequence is what the token loop serves. */
let loopSequence: LlamaContextSequence;
let referenceSequence: LlamaContextSequence;

beforeAll(async () => {
  const llama = await getLlama({ gpu: false, build: 'never', maxThreads: 1, logLevel: LlamaLogLevel.error });
  model = await llama.loadModel({ modelPath: await tinyModelPath() });
  const options = { sequences: 1, contextSize: 256, threads: 1, flashAttention: false } as const;
  loopContext = await model.createContext(options);
  referenceContext = await model.createContext(options);
  loopSequence = loopContext.getSequence();
  referenceSequence = referenceContext.getSequence();
  await prepareNativeLoop({ log: (text) => console.error(text) });
});

afterAll(async () => {
  await loopContext?.dispose();
  await referenceContext?.dispose();
  await model?.dispose();
});

interface Answer {
  text: string;
  tokens: number[];
  result: GenerationResult;
}

/**
 * Through runGeneration, as the worker's slot runs it; `loop`: whether the token loop serves it.
 * Checks that the sequence knows what its cache holds afterwards (the next request reuses it).
 */
async function viaWorkerPath(
  request: GenerateRequest,
  options: { reuse?: boolean; signal?: AbortSignal; onTokens?: (count: number) => void } = {},
): Promise<Answer & { loop: boolean }> {
  const sequence = loopSequence;
  const prompt = preparePrompt(model, resolveChatWrapper(model), loopContext.contextSize, request);
  const tokenLoop = tokenLoopFor(sequence, request, prompt, false);
  const loop = tokenLoop !== undefined;
  // where the token loop serves, the native loop does in the native pass
  if (loop) expect(tokenLoop.native).toBe(native);
  let text = '';
  const tokens: number[] = [];
  const result = await runGeneration({
    sequence,
    request,
    prompt,
    reuse: options.reuse ?? false,
    receivedAt: performance.now(),
    signal: options.signal ?? new AbortController().signal,
    onText: (chunk) => (text += chunk),
    onTokens: (generated) => {
      tokens.push(...generated);
      options.onTokens?.(tokens.length);
    },
  });
  if (
    result.finishReason === 'length' &&
    prompt.sequenceTokens.length + tokens.length < loopContext.contextSize
  ) {
    // the prompt, then every token of the answer but the last (never evaluated)
    expect(sequence.contextTokens).toEqual([...prompt.sequenceTokens, ...tokens.slice(0, -1)]);
  } else {
    expect(sequence.contextTokens).toHaveLength(sequence.nextTokenIndex);
  }
  return { text, tokens, result, loop };
}

/**
 * LlamaCompletion alone, given the same prompt tokens and settings; on the reference context, which
 * runs the same requests in the same order as the loop's (where a context's earlier use put the
 * cache's cells decides the order of the attention's sums, and so the last bits of the logits).
 */
async function viaLlamaCompletion(
  request: GenerateRequest,
  sequence = referenceSequence,
): Promise<Omit<Answer, 'result'> & { stop: string }> {
  await sequence.clearHistory();
  const completion = new LlamaCompletion({ contextSequence: sequence });
  try {
    const prompt = preparePrompt(model, resolveChatWrapper(model), referenceContext.contextSize, request);
    let text = '';
    const tokens: number[] = [];
    const response = await completion.generateCompletionWithMeta(prompt.input, {
      onTextChunk: (chunk) => (text += chunk),
      onToken: (generated) => tokens.push(...generated),
      maxTokens: request.maxTokens ?? referenceContext.contextSize,
      temperature: request.temperature,
      topP: request.topP,
      topK: request.topK,
      minP: request.minP,
      seed: request.seed,
      customStopTriggers: [...(request.stop ?? []), ...prompt.stopTriggers],
      repeatPenalty: false,
      tokenBias: biasOf(request.logitBias),
    });
    return {
      text: leadingSpaceKept(request, prompt.sequenceTokens, tokens, text),
      tokens,
      stop: response.metadata.stopReason,
    };
  } finally {
    completion.dispose({ disposeSequence: false });
  }
}

/**
 * LlamaCompletion's text as rbee gives it: LlamaCompletion reads an answer's first token alone, which
 * drops a SentencePiece leading space; after a raw prompt rbee reads it after the prompt and keeps
 * it (as llama.cpp's server does).
 */
function leadingSpaceKept(
  request: GenerateRequest,
  promptTokens: Token[],
  tokens: number[],
  text: string,
): string {
  if (request.messages !== undefined || tokens.length === 0) return text;
  const first = [tokens[0]!] as Token[];
  const afterPrompt = model.detokenize(first, false, promptTokens);
  const alone = model.detokenize(first);
  expect(afterPrompt.endsWith(alone)).toBe(true);
  return afterPrompt.slice(0, afterPrompt.length - alone.length) + text;
}

/** The request's logit_bias as node-llama-cpp's own TokenBias. */
function biasOf(logitBias: GenerateRequest['logitBias']): TokenBias | undefined {
  if (logitBias === undefined) return undefined;
  const bias = TokenBias.for(model);
  for (const [id, value] of Object.entries(logitBias)) {
    bias.set(Number(id) as Token, value <= -100 ? 'never' : { logit: value });
  }
  return bias;
}

const chat = (content: string): GenerateRequest['messages'] => [{ role: 'user', content }];

/** Whether this pass runs on the native loop. */
let native = false;

it('builds and loads the native loop on this machine', () => {
  expect(nativeLoopAddon()).toBeDefined();
});

describe.each(['native', 'JavaScript'])('the token loop, %s', (pass) => {
  beforeAll(() => {
    native = pass === 'native';
    useNativeLoop(native);
  });

  it.each<[string, GenerateRequest]>([
    ['a raw prompt, greedy', { prompt: 'The weather today is', maxTokens: 64, temperature: 0 }],
    ['a chat, greedy', { messages: chat('Tell me a story'), maxTokens: 64, temperature: 0 }],
    ['sampled with a seed', { prompt: 'Once upon a time', maxTokens: 64, temperature: 1, seed: 3 }],
    [
      'sampled with top-k, top-p and min-p',
      { messages: chat('hi'), maxTokens: 48, temperature: 0.8, topK: 5, topP: 0.5, minP: 0.05, seed: 11 },
    ],
  ])('gives what LlamaCompletion gives: %s', async (_name, request) => {
    const ours = await viaWorkerPath(request);
    expect(ours.loop).toBe(true);
    const reference = await viaLlamaCompletion(request);
    expect(ours.tokens).toEqual(reference.tokens);
    expect(ours.text).toBe(reference.text);
    expect(ours.result.finishReason).toBe(reference.stop === 'maxTokens' ? 'length' : 'stop');
    expect(ours.result.usage.completionTokens).toBe(reference.tokens.length);
  });

  it('stops right before a stop string spanning tokens, and names it', async () => {
    const request: GenerateRequest = { prompt: 'The weather today is', maxTokens: 64, temperature: 0 };
    const whole = (await viaLlamaCompletion(request)).text;
    // a stop string that starts inside one token's text and ends in another's
    const stop = whole.slice(20, 26);
    expect(stop).toHaveLength(6);
    const ours = await viaWorkerPath({ ...request, stop: [stop] });
    const reference = await viaLlamaCompletion({ ...request, stop: [stop] });
    expect(ours.text).toBe(whole.slice(0, whole.indexOf(stop)));
    // the same tokens; LlamaCompletion drops a space the stop's token had before the stop, the loop
    // keeps everything the model said before it (as OpenAI's API does)
    expect(ours.tokens).toEqual(reference.tokens);
    expect(ours.text.trimEnd()).toBe(reference.text.trimEnd());
    expect(ours.result).toMatchObject({ finishReason: 'stop', stopSequence: stop });
  });

  it('applies logit_bias: a banned token never comes, and the answer is still LlamaCompletion-exact', async () => {
    const request: GenerateRequest = { prompt: 'The weather today is', maxTokens: 32, temperature: 0 };
    const plain = await viaWorkerPath(request);
    const [banned, favoured] = [plain.tokens[0]!, plain.tokens[5]!];
    const biased: GenerateRequest = { ...request, logitBias: { [banned]: -100, [favoured]: 3 } };
    const ours = await viaWorkerPath(biased);
    expect(ours.loop).toBe(true);
    expect(ours.tokens).not.toContain(banned);
    expect(ours.tokens).not.toEqual(plain.tokens);
    expect(ours.tokens).toEqual((await viaLlamaCompletion(biased)).tokens);
  });

  it('hands an answer longer than the context to LlamaCompletion, which shifts it and goes on', async () => {
    const request: GenerateRequest = { prompt: 'The weather today is', maxTokens: 400, temperature: 0 };
    const ours = await viaWorkerPath(request);
    expect(ours.loop).toBe(true);
    expect(ours.result.finishReason).toBe('length');
    expect(ours.tokens).toHaveLength(400);
    // up to the end of the context, token for token what LlamaCompletion gives
    const reference = await viaLlamaCompletion(request);
    const fits =
      256 - 1 - preparePrompt(model, resolveChatWrapper(model), 256, request).sequenceTokens.length;
    expect(ours.tokens.slice(0, fits)).toEqual(reference.tokens.slice(0, fits));
  });

  it('after a stop string, the next request reuses what the cache holds and answers as a fresh one', async () => {
    const request: GenerateRequest = { messages: chat('Tell me a story'), maxTokens: 48, temperature: 0 };
    const whole = (await viaLlamaCompletion(request)).text;
    const stop = whole.slice(12, 16);
    // the native loop decodes on while the stop is being found: what it decoded stays in the cache
    const first = await viaWorkerPath({ ...request, stop: [stop] });
    expect(first.result).toMatchObject({ finishReason: 'stop', stopSequence: stop });
    const prompt = preparePrompt(model, resolveChatWrapper(model), 256, request);
    expect(loopSequence.contextTokens.slice(0, prompt.sequenceTokens.length)).toEqual(prompt.sequenceTokens);
    const next: GenerateRequest = {
      messages: [...chat('Tell me a story')!, { role: 'assistant', content: first.text }, ...chat('More')!],
      maxTokens: 24,
      temperature: 0,
    };
    const reused = await viaWorkerPath(next, { reuse: true });
    expect(reused.result.usage.cachedPromptTokens).toBeGreaterThan(10);
    const fresh = await viaWorkerPath(next);
    expect(reused.tokens).toEqual(fresh.tokens);
  });

  it('reuses what the sequence kept from the previous request, with the same answer', async () => {
    const first = await viaWorkerPath({ messages: chat('Tell me a story'), maxTokens: 24, temperature: 0 });
    const next: GenerateRequest = {
      messages: [
        ...chat('Tell me a story')!,
        { role: 'assistant', content: first.text },
        { role: 'user', content: 'And then?' },
      ],
      maxTokens: 24,
      temperature: 0,
    };
    const reused = await viaWorkerPath(next, { reuse: true });
    expect(reused.result.usage.cachedPromptTokens).toBeGreaterThan(10);
    const fresh = await viaWorkerPath(next);
    expect(fresh.result.usage.cachedPromptTokens).toBe(0);
    expect(reused.tokens).toEqual(fresh.tokens);
    expect(reused.text).toBe(fresh.text);
  });

  it("keeps a raw completion's first leading space on either path; a chat answer starts without it", async () => {
    // a token whose text begins with a space where it follows text ("▁w" in "Hello world")
    const words = model.tokenize('Hello world');
    const spaced = words.find(
      (t, i) => i > 0 && model.detokenize([t], false, words.slice(0, i)).startsWith(' '),
    )!;
    const word = model.detokenize([spaced]);
    expect(word.startsWith(' ')).toBe(false); // read alone, as LlamaCompletion reads a first token
    const raw: GenerateRequest = {
      prompt: 'Hello',
      maxTokens: 3,
      temperature: 0,
      logitBias: { [spaced]: 100 },
    };
    const loop = await viaWorkerPath(raw);
    expect(loop.loop).toBe(true);
    expect(loop.text).toBe(` ${word} ${word} ${word}`);
    // with log probabilities LlamaCompletion serves it: the same text
    const completion = await viaWorkerPath({ ...raw, logprobs: 0 });
    expect(completion.loop).toBe(false);
    expect(completion.text).toBe(loop.text);
    expect(completion.tokens).toEqual(loop.tokens);
    const answer = await viaWorkerPath({
      messages: chat('Hello'),
      maxTokens: 3,
      temperature: 0,
      logitBias: raw.logitBias,
    });
    expect(answer.text).toBe(`${word} ${word} ${word}`);
    // an assistant message the answer goes on with is text before it, as a raw prompt is
    const prefill = await viaWorkerPath({
      messages: [...chat('Hello')!, { role: 'assistant', content: 'Well' }],
      maxTokens: 3,
      temperature: 0,
      logitBias: raw.logitBias,
    });
    expect(prefill.text).toBe(` ${word} ${word} ${word}`);
  });

  it('stops at once when cancelled and says so', async () => {
    const controller = new AbortController();
    const request: GenerateRequest = { prompt: 'The weather today is', maxTokens: 200, temperature: 0 };
    const { result } = await viaWorkerPath(request, {
      signal: controller.signal,
      onTokens: (count) => {
        if (count >= 5) controller.abort();
      },
    });
    expect(result.finishReason).toBe('cancelled');
    expect(result.usage.completionTokens).toBeLessThan(10);
  });

  it('leaves grammars, log probabilities and real penalties to LlamaCompletion', () => {
    const prompt = preparePrompt(model, resolveChatWrapper(model), 256, { prompt: 'x' });
    expect(tokenLoopFor(loopSequence, { prompt: 'x' }, prompt, false)).toBeDefined();
    expect(tokenLoopFor(loopSequence, { prompt: 'x' }, prompt, true)).toBeUndefined();
    expect(tokenLoopFor(loopSequence, { prompt: 'x', logprobs: 0 }, prompt, false)).toBeUndefined();
    expect(tokenLoopFor(loopSequence, { prompt: 'x', repeatPenalty: 1.1 }, prompt, false)).toBeUndefined();
    // neutral penalties, as many clients send them, change nothing: the loop serves them
    const neutral = { prompt: 'x', repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 };
    expect(tokenLoopFor(loopSequence, neutral, prompt, false)).toBeDefined();
  });

  it('runs the slots of a shared context side by side, each as it would run alone', async () => {
    const shared = await model.createContext({ sequences: 2, contextSize: 256, threads: 1 });
    try {
      const sequences = [shared.getSequence(), shared.getSequence()];
      const order: number[] = [];
      const generate = async (slot: number, request: GenerateRequest, reuse: boolean) => {
        const sequence = sequences[slot]!;
        const prompt = preparePrompt(model, resolveChatWrapper(model), shared.contextSize, request);
        expect(tokenLoopFor(sequence, request, prompt, false)).toBeDefined();
        const tokens: number[] = [];
        let text = '';
        const result = await runGeneration({
          sequence,
          request,
          prompt,
          reuse,
          receivedAt: performance.now(),
          signal: new AbortController().signal,
          onText: (chunk) => (text += chunk),
          onTokens: (generated) => {
            tokens.push(...generated);
            for (const _ of generated) order.push(slot);
          },
        });
        expect(sequence.contextTokens).toEqual([...prompt.sequenceTokens, ...tokens.slice(0, -1)]);
        return { tokens, text, result };
      };
      const requests: GenerateRequest[] = [
        { prompt: 'The weather today is', maxTokens: 48, temperature: 0 },
        { messages: chat('Tell me a story'), maxTokens: 40, temperature: 0 },
      ];
      // something in both slots' caches first: the pair's first steps erase part of it, which
      // needs the context between the other slot's tokens
      await generate(0, { prompt: 'The weather today was', maxTokens: 8, temperature: 0 }, false);
      await generate(1, { prompt: 'Once upon a time', maxTokens: 8, temperature: 0 }, false);
      order.length = 0;
      // the second starts once the first streams, as requests come
      const first = generate(0, requests[0]!, true);
      while (order.length === 0) await new Promise((resolve) => setImmediate(resolve));
      const answers = await Promise.all([first, generate(1, requests[1]!, true)]);
      // side by side: each slot had tokens out while the other was still generating
      expect(order.indexOf(1)).toBeLessThan(order.lastIndexOf(0));
      expect(order.indexOf(0)).toBeLessThan(order.lastIndexOf(1));
      for (const [i, request] of requests.entries()) {
        // as this request alone gives it on a fresh context
        const fresh = await model.createContext({ sequences: 1, contextSize: 256, threads: 1 });
        const reference = await viaLlamaCompletion(request, fresh.getSequence()).finally(() =>
          fresh.dispose(),
        );
        expect(answers[i]!.tokens).toEqual(reference.tokens);
        expect(answers[i]!.text).toBe(reference.text);
        expect(answers[i]!.result.finishReason).toBe('length');
      }
    } finally {
      await shared.dispose();
    }
  });
});
