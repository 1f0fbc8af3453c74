/**
 * A slot keeps its KV cache after a request, and the next request that starts the same way (a
 * chat's next turn) evaluates only what is new. Checked against a worker with reuse off, which
 * evaluates every prompt from scratch: the same answers, token for token, the same prompt sizes,
 * and a cached count that shows where each request went.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnWorker } from '../../src/engine/index.js';
import type {
  GenerateChunk,
  GenerateRequest,
  WorkerHandle,
  WorkerHeartbeat,
} from '../../src/engine/types.js';
import { cachedTokensFor } from '../../src/shared/prefix.js';
import type { ChatMessage } from '../../src/shared/wire.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';

type Done = Extract<GenerateChunk, { type: 'done' }>;
interface Answer {
  text: string;
  tokens: number[];
  done: Done;
}

const started: WorkerHandle[] = [];
let reference: WorkerHandle;

async function start(slots: number, prefixReuse: boolean, onHeartbeat?: (h: WorkerHeartbeat) => void) {
  const worker = await spawnWorker({
    modelPath: await tinyModelPath(),
    threads: 1,
    slots,
    prefixReuse,
    // the same logits however a prompt is split (see WorkerInit.flashAttention)
    flashAttention: false,
    heartbeatIntervalMs: 100,
    ...(onHeartbeat === undefined ? {} : { onHeartbeat }),
  });
  started.push(worker);
  return worker;
}

beforeAll(async () => {
  // every prompt evaluated from scratch: what each answer must equal
  reference = await start(1, false);
});
afterAll(async () => {
  await Promise.all(started.splice(0).map((w) => w.stop()));
});

async function ask(worker: WorkerHandle, request: GenerateRequest, signal?: AbortSignal): Promise<Answer> {
  let text = '';
  const tokens: number[] = [];
  for await (const chunk of worker.generate(request, signal === undefined ? {} : { signal })) {
    if (chunk.type === 'done') return { text, tokens, done: chunk };
    text += chunk.text;
    tokens.push(...chunk.tokens);
  }
  throw new Error('the stream ended without done');
}

const SYSTEM =
  'You are the librarian of a small town. ' +
  'Answer questions about the books on the shelves, the opening hours and the reading room. '.repeat(6);
const QUESTIONS = [
  'Which shelf has the atlases?',
  'When do you open on Sunday?',
  'Is the reading room quiet?',
];

/** Greedy unless a test says otherwise; the seed matters only where sampling is random. */
const sampling = { maxTokens: 24, temperature: 0, seed: 7 } as const;

/** The next turn of a chat: the messages so far, the answer it got, and the next question. */
const nextTurn = (messages: ChatMessage[], answer: string, question: string): ChatMessage[] => [
  ...messages,
  { role: 'assistant', content: answer },
  { role: 'user', content: question },
];

/** Asks both workers; the answers must be identical, and so must the prompt sizes. */
async function askBoth(worker: WorkerHandle, request: GenerateRequest): Promise<Answer> {
  const answer = await ask(worker, request);
  const expected = await ask(reference, request);
  expect(answer.tokens).toEqual(expected.tokens);
  expect(answer.text).toBe(expected.text);
  expect(answer.done.usage.promptTokens).toBe(expected.done.usage.promptTokens);
  expect(expected.done.usage.cachedPromptTokens).toBe(0);
  return answer;
}

describe('prefix reuse on one slot', () => {
  let worker: WorkerHandle;
  beforeAll(async () => {
    worker = await start(1, true);
  });

  it("evaluates only a chat's new turn, and answers as if it had evaluated everything", async () => {
    let messages: ChatMessage[] = [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: QUESTIONS[0]! },
    ];
    const first = await askBoth(worker, { messages, ...sampling });
    expect(first.done.usage.cachedPromptTokens).toBe(0);
    expect(first.done.usage.promptTokens).toBeGreaterThan(200);
    let previous = first;
    for (const question of QUESTIONS.slice(1)) {
      messages = nextTurn(messages, previous.text, question);
      const turn = await askBoth(worker, { messages, ...sampling });
      const { promptTokens, cachedPromptTokens = 0 } = turn.done.usage;
      // the whole previous prompt came from the cache, and the new question did not
      expect(cachedPromptTokens).toBeGreaterThanOrEqual(previous.done.usage.promptTokens);
      expect(cachedPromptTokens).toBeLessThan(promptTokens);
      previous = turn;
    }
  });

  it('reuses all but the last token of a request asked again, with seeded sampling too', async () => {
    const request: GenerateRequest = {
      messages: [
        { role: 'system', content: SYSTEM },
        { role: 'user', content: 'Tell me a story.' },
      ],
      maxTokens: 32,
      temperature: 0.9,
      seed: 42,
    };
    const once = await askBoth(worker, request);
    const again = await askBoth(worker, request);
    expect(again.done.usage.cachedPromptTokens).toBe(again.done.usage.promptTokens - 1);
    expect(again.tokens).toEqual(once.tokens);
  });

  it('answers a request that shares nothing but the first token', async () => {
    const raw = await askBoth(worker, { prompt: 'Zebras graze near the river', ...sampling });
    // the BOS token is all a raw prompt shares with a chat
    expect(raw.done.usage.cachedPromptTokens).toBe(1);
    const chat = await askBoth(worker, { messages: [{ role: 'user', content: 'Hi' }], ...sampling });
    expect(chat.done.usage.cachedPromptTokens).toBe(1);
  });

  it('continues from tokens already sent on top of the cached prompt', async () => {
    const request: GenerateRequest = { prompt: 'The river flows', ...sampling, maxTokens: 30 };
    const whole = await askBoth(worker, request);
    // not compared with the reference: evaluating the ten tokens in one batch rather than one by one
    // may flip a near-tie of the random weights (see continue.test.ts); from the cache it cannot
    const rest = await ask(worker, { ...request, continueTokens: whole.tokens.slice(0, 10), maxTokens: 20 });
    // the prompt and the ten tokens were all in the cache already
    expect(rest.done.usage.cachedPromptTokens).toBe(rest.done.usage.promptTokens - 1);
    expect(rest.tokens).toEqual(whole.tokens.slice(10));
  });

  it('keeps the slot consistent when a request is cancelled mid-answer or mid-prompt', async () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: 'Describe every book, please.' },
    ];
    // mid-answer: the answer so far stays in the cache and is a prefix of the next turn
    const controller = new AbortController();
    let partial = '';
    await expect(
      (async () => {
        for await (const chunk of worker.generate(
          { messages, ...sampling, maxTokens: 400 },
          { signal: controller.signal },
        )) {
          if (chunk.type !== 'token') continue;
          partial += chunk.text;
          if (partial.length > 10) controller.abort();
        }
      })(),
    ).rejects.toMatchObject({ code: 'JOB_CANCELLED' });
    const turn = await askBoth(worker, { messages: nextTurn(messages, partial, 'Go on.'), ...sampling });
    expect(turn.done.usage.cachedPromptTokens).toBeGreaterThan(200);
    // mid-prompt (or wherever the cancel lands): a long new prompt, cancelled at once
    const long: ChatMessage[] = [{ role: 'user', content: `${SYSTEM} ${SYSTEM} ${SYSTEM}` }];
    const early = new AbortController();
    const cancelled = ask(worker, { messages: long, ...sampling }, early.signal);
    setTimeout(() => early.abort(), 5);
    await cancelled.catch(() => undefined);
    await askBoth(worker, { messages: long, ...sampling });
    await askBoth(worker, { messages: nextTurn(messages, partial, 'Go on.'), ...sampling });
  });
});

describe('prefix reuse on two slots', () => {
  it('sends two interleaved chats each back to the slot that keeps it, and says so in the heartbeat', async () => {
    let heartbeat: WorkerHeartbeat | undefined;
    const worker = await start(2, true, (h) => (heartbeat = h));
    const chats: ChatMessage[][] = [
      [
        { role: 'system', content: SYSTEM },
        { role: 'user', content: QUESTIONS[0]! },
      ],
      // another chat: it shares only the template's first tokens with the first one
      [
        { role: 'system', content: 'You sell bicycles. '.repeat(20) },
        { role: 'user', content: 'Do you have a red one?' },
      ],
    ];
    const previous: (Answer | undefined)[] = [undefined, undefined];
    for (let turn = 0; turn < 3; turn++) {
      for (const c of [0, 1]) {
        if (turn > 0) chats[c] = nextTurn(chats[c]!, previous[c]!.text, `Question ${turn} of chat ${c}?`);
        const answer = await askBoth(worker, { messages: chats[c]!, ...sampling });
        const cached = answer.done.usage.cachedPromptTokens ?? 0;
        if (turn === 0) expect(cached, `chat ${c} turn ${turn}`).toBe(0);
        // on the other chat's slot it would find only those first few tokens
        else
          expect(cached, `chat ${c} turn ${turn}`).toBeGreaterThanOrEqual(
            previous[c]!.done.usage.promptTokens,
          );
        previous[c] = answer;
      }
    }
    // the heartbeat names what each slot keeps: each chat's next turn matches one slot, not the other
    const since = Date.now();
    await waitFor(
      () => heartbeat !== undefined && heartbeat.slotCache.every((s) => !s.busy) && Date.now() > since + 150,
      {
        what: 'a heartbeat after the last answer',
      },
    );
    const slotCache = heartbeat!.slotCache;
    expect(slotCache).toHaveLength(2);
    for (const c of [0, 1]) {
      const next = nextTurn(chats[c]!, previous[c]!.text, 'And then?');
      const found = slotCache.map((slot) => cachedTokensFor({ messages: next }, slot.prefixes));
      const [best, other] = [Math.max(...found), Math.min(...found)];
      expect(other, `chat ${c}`).toBe(0);
      expect(best, `chat ${c}`).toBeGreaterThan(previous[c]!.done.usage.promptTokens);
      expect(best, `chat ${c}`).toBeLessThanOrEqual(slotCache[found.indexOf(best)]!.tokens);
      // the first message alone matches too: another chat with the same system prompt would find it
      const sameSystem = [chats[c]![0]!, { role: 'user' as const, content: 'Something else' }];
      expect(
        Math.max(...slotCache.map((slot) => cachedTokensFor({ messages: sameSystem }, slot.prefixes))),
      ).toBeGreaterThan(50);
    }
  });

  it('publishes no prefixes when reuse is off', async () => {
    await waitFor(() => reference.lastHeartbeat?.slotCache.length === 1, { what: 'a heartbeat' });
    expect(reference.lastHeartbeat?.slotCache).toEqual([{ busy: false, tokens: 0, prefixes: [] }]);
  });
});
