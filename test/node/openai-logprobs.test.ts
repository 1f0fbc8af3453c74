/**
 * Log probabilities over the OpenAI routes, with the official `openai` client against a real node
 * on the demo model: OpenAI's shapes, whole and streamed, with figures that hold together.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testNodeConfig } from '../helpers/test-node.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';

let home: string;
let node: RunningNode;
let client: OpenAI;

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), 'rbee-logprobs-'));
  node = await startNode(testNodeConfig(home));
  client = new OpenAI({ baseURL: `${node.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await node.close('test done');
  rmSync(home, { recursive: true, force: true });
});

const utf8 = (text: string): number[] => [...Buffer.from(text, 'utf8')];

interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
  top_logprobs: { token: string; logprob: number; bytes: number[] | null }[];
}

/** What every token's figures must satisfy, greedy: the chosen token is the most likely one. */
function checkGreedy(content: ChatTokenLogprob[], top: number): void {
  for (const entry of content) {
    expect(entry.bytes).toEqual(utf8(entry.token));
    expect(entry.logprob).toBeLessThanOrEqual(0);
    expect(entry.top_logprobs).toHaveLength(top);
    expect(entry.top_logprobs[0]!.token).toBe(entry.token);
    expect(entry.top_logprobs[0]!.logprob).toBeCloseTo(entry.logprob, 5);
    const sum = entry.top_logprobs.reduce((s, t) => s + Math.exp(t.logprob), 0);
    expect(sum).toBeLessThanOrEqual(1 + 1e-5);
    for (const t of entry.top_logprobs) expect(t.bytes).toEqual(utf8(t.token));
  }
}

describe('logprobs on chat completions', () => {
  const params = {
    model: 'demo',
    messages: [{ role: 'user' as const, content: 'Tell me something' }],
    max_tokens: 8,
    temperature: 0,
    logprobs: true,
    top_logprobs: 3,
  };

  it('answers whole with one entry per token, the same streamed', async () => {
    const whole = await client.chat.completions.create(params);
    const choice = whole.choices[0]!;
    const content = choice.logprobs!.content! as ChatTokenLogprob[];
    expect(content).toHaveLength(whole.usage!.completion_tokens);
    expect(content.map((c) => c.token).join('')).toBe(choice.message.content);
    checkGreedy(content, 3);
    expect(content.some((c) => c.logprob < -0.01)).toBe(true);

    const stream = await client.chat.completions.create({ ...params, stream: true });
    const streamed: ChatTokenLogprob[] = [];
    let text = '';
    for await (const chunk of stream) {
      const delta = chunk.choices[0];
      text += delta?.delta.content ?? '';
      streamed.push(...((delta?.logprobs?.content ?? []) as ChatTokenLogprob[]));
    }
    expect(text).toBe(choice.message.content);
    expect(streamed).toEqual(content);
  });

  it('has no logprobs unless asked, and refuses top_logprobs without logprobs', async () => {
    const plain = await client.chat.completions.create({ ...params, logprobs: false, top_logprobs: 0 });
    expect(plain.choices[0]!.logprobs ?? null).toBeNull();
    await expect(
      client.chat.completions.create({ ...params, logprobs: false, top_logprobs: 2 }),
    ).rejects.toMatchObject({ status: 400, code: 'BAD_REQUEST' });
    await expect(client.chat.completions.create({ ...params, top_logprobs: 21 })).rejects.toMatchObject({
      status: 400,
    });
  });
});

describe('logprobs on completions', () => {
  const params = { model: 'demo', prompt: 'Once upon a time', max_tokens: 6, temperature: 0, logprobs: 2 };

  it('answers tokens, token_logprobs, top_logprobs and text_offset, whole and streamed', async () => {
    const whole = await client.completions.create(params);
    const choice = whole.choices[0]!;
    const logprobs = choice.logprobs!;
    const n = whole.usage!.completion_tokens;
    expect(logprobs.tokens).toHaveLength(n);
    expect(logprobs.token_logprobs).toHaveLength(n);
    expect(logprobs.top_logprobs).toHaveLength(n);
    expect(logprobs.tokens!.join('')).toBe(choice.text);
    // each token starts where the ones before it end
    let at = 0;
    logprobs.tokens!.forEach((token, i) => {
      expect(logprobs.text_offset![i]).toBe(at);
      at += token.length;
      const top = logprobs.top_logprobs![i]!;
      expect(Object.keys(top).length).toBeGreaterThan(0);
      expect(Object.keys(top).length).toBeLessThanOrEqual(2);
      // greedy: the chosen token is the most likely one
      expect(top[token]).toBeCloseTo(logprobs.token_logprobs![i]!, 5);
      expect(Math.max(...Object.values(top))).toBeCloseTo(logprobs.token_logprobs![i]!, 5);
    });

    const stream = await client.completions.create({ ...params, stream: true });
    const tokens: string[] = [];
    const offsets: number[] = [];
    const values: number[] = [];
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.logprobs;
      if (piece == null) continue;
      tokens.push(...piece.tokens!);
      offsets.push(...piece.text_offset!);
      values.push(...piece.token_logprobs!);
    }
    expect(tokens).toEqual(logprobs.tokens);
    expect(offsets).toEqual(logprobs.text_offset);
    expect(values).toEqual(logprobs.token_logprobs);
  });

  it('logprobs: 0 reports the chosen tokens only', async () => {
    const answer = await client.completions.create({ ...params, logprobs: 0 });
    const logprobs = answer.choices[0]!.logprobs!;
    expect(logprobs.token_logprobs).toHaveLength(answer.usage!.completion_tokens);
    for (const top of logprobs.top_logprobs!) expect(top).toEqual({});
  });
});
