import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  createTokenRelay,
  MAX_TOKENS_PER_FRAME,
  type RelayFrame,
} from '../../src/node/cluster/token-relay.js';

const token = (text: string, id: number) => ({ type: 'token' as const, text, tokens: [id] });

describe('token relay (hive → entry node)', () => {
  let clock = 0;
  let frames: RelayFrame[];
  const write = (frame: RelayFrame): Promise<void> => {
    frames.push(frame);
    return Promise.resolve();
  };
  beforeEach(() => {
    vi.useFakeTimers();
    clock = 1000;
    frames = [];
  });
  afterEach(() => vi.useRealTimers());
  const advance = async (ms: number): Promise<void> => {
    clock += ms;
    await vi.advanceTimersByTimeAsync(ms);
  };

  it("keeps each token's log probabilities, alone or in a run", async () => {
    const relay = createTokenRelay({ write, intervalMs: 2, now: () => clock });
    const withLogprobs = (text: string, id: number) => ({
      ...token(text, id),
      logprobs: [{ token: text, logprob: -id, top: [{ token: text, logprob: -id }] }],
    });
    void relay.emit(withLogprobs('a', 1));
    clock += 0.5;
    void relay.emit(withLogprobs('b', 2));
    void relay.emit(withLogprobs('c', 3));
    await relay.flush();
    expect(frames).toEqual([
      withLogprobs('a', 1),
      {
        type: 'tokens',
        tokens: [2, 3].map((id) => {
          const { type: _type, ...rest } = withLogprobs(id === 2 ? 'b' : 'c', id);
          return rest;
        }),
      },
    ]);
  });

  it('sends the first token at once and the tokens within the interval together, in order', async () => {
    const relay = createTokenRelay({ write, intervalMs: 2, now: () => clock });
    void relay.emit(token('a', 1));
    await vi.advanceTimersByTimeAsync(0);
    expect(frames).toEqual([{ type: 'token', text: 'a', tokens: [1] }]);
    clock += 0.5;
    void relay.emit(token('b', 2));
    clock += 0.5;
    void relay.emit(token('c', 3));
    await vi.advanceTimersByTimeAsync(0);
    expect(frames).toHaveLength(1); // b and c wait for the interval
    await advance(1);
    expect(frames[1]).toEqual({
      type: 'tokens',
      tokens: [
        { text: 'b', tokens: [2] },
        { text: 'c', tokens: [3] },
      ],
    });
    // after a pause the next token goes at once again
    await advance(10);
    void relay.emit(token('d', 4));
    await vi.advanceTimersByTimeAsync(0);
    expect(frames[2]).toEqual({ type: 'token', text: 'd', tokens: [4] });
  });

  it('writes waiting tokens before any other event, and flush sends the rest', async () => {
    const relay = createTokenRelay({ write, intervalMs: 2, now: () => clock });
    void relay.emit(token('a', 1));
    void relay.emit(token('b', 2));
    const narration = { type: 'narration' as const, source: 'worker' as const, node: 'c', text: 'n' };
    await relay.emit(narration);
    void relay.emit(token('c', 3));
    await relay.flush();
    expect(frames.map((f) => f.type)).toEqual(['token', 'token', 'narration', 'token']);
    expect(frames.map((f) => ('text' in f ? f.text : ''))).toEqual(['a', 'b', 'n', 'c']);
  });

  it('without an interval sends a frame per token (entry nodes that read no token runs)', async () => {
    const relay = createTokenRelay({ write, intervalMs: 0, now: () => clock });
    for (let i = 0; i < 5; i++) void relay.emit(token(String(i), i));
    await relay.flush();
    expect(frames.map((f) => f.type)).toEqual(['token', 'token', 'token', 'token', 'token']);
  });

  it('sends a full frame at once, however soon', async () => {
    const relay = createTokenRelay({ write, intervalMs: 1000, now: () => clock });
    void relay.emit(token('first', 0));
    for (let i = 1; i <= MAX_TOKENS_PER_FRAME; i++) void relay.emit(token('x', i));
    await vi.advanceTimersByTimeAsync(0);
    expect(frames).toHaveLength(2);
    expect(frames[1]).toMatchObject({ type: 'tokens' });
    expect((frames[1] as { tokens: unknown[] }).tokens).toHaveLength(MAX_TOKENS_PER_FRAME);
  });

  it('holds the hive back once frames wait for a slow entry node, and lets it go when they are written', async () => {
    const waiting: Array<() => void> = [];
    const slow = (frame: RelayFrame): Promise<void> =>
      new Promise((resolve) => waiting.push(() => (frames.push(frame), resolve())));
    const relay = createTokenRelay({ write: slow, intervalMs: 2, now: () => clock });
    const results: Array<Promise<void> | undefined> = [];
    for (let i = 0; i < 8; i++) {
      results.push(relay.emit(token(String(i), i)));
      await advance(2);
    }
    // the first frames are accepted without waiting; later tokens wait for the backlog
    expect(results.slice(0, 3).every((r) => r === undefined)).toBe(true);
    const held = results.at(-1);
    expect(held).toBeInstanceOf(Promise);
    let released = false;
    void held?.then(() => (released = true));
    await vi.advanceTimersByTimeAsync(0);
    expect(released).toBe(false);
    while (waiting.length > 0) {
      waiting.shift()?.();
      await vi.advanceTimersByTimeAsync(0);
    }
    expect(released).toBe(true);
  });

  it('fails flush with the write error', async () => {
    const relay = createTokenRelay({
      write: () => Promise.reject(new Error('stream reset')),
      intervalMs: 2,
      now: () => clock,
    });
    void relay.emit(token('a', 1));
    await expect(relay.flush()).rejects.toThrow('stream reset');
  });
});
