/**
 * The hive's side of a `hive.run` stream: its events go to the entry node in order, tokens at most
 * one frame per `intervalMs`. Every frame between nodes costs the same whatever it carries — a
 * yamux frame, a noise encryption and a socket write here, their reverse on the entry node — and
 * a small model generates a token every 0.7 ms on a CPU, so a frame per token doubled the node
 * work per token. Tokens that come within the interval of the last frame wait for the next one (a
 * `tokens` frame carrying them all); the first token after a pause, and every other event, goes at
 * once. The entry node hands each token on as its own event, so its clients see every token.
 */
import type { PromptSize, TokenLogprob } from '../../shared/wire.js';
import type { HiveEvent } from '../hive/index.js';

/** Frames the relay writes: what the hive emitted, and runs of tokens. */
export type RelayFrame = HiveEvent | TokenRun;
export interface TokenRun {
  type: 'tokens';
  /** `logprobs` only for a job that asked for them. */
  tokens: Array<{ text: string; tokens: number[]; logprobs?: TokenLogprob[] } & PromptSize>;
}

/** A token frame carries at most this many: well below the protocol's frame limit. */
export const MAX_TOKENS_PER_FRAME = 256;
/** The most a token waits for its frame. */
export const DEFAULT_RELAY_INTERVAL_MS = 2;
/** Frames written but not yet taken by the stream, past which a token's emit waits for them. */
const MAX_FRAMES_IN_FLIGHT = 4;

export interface TokenRelay {
  /**
   * Queues an event. Resolves at once for a token that waits for its frame, unless frames are
   * behind (a full frame's worth waits): then once the frame in flight is written, so that a slow
   * entry node holds the hive back. Other events resolve once written.
   */
  emit(event: HiveEvent): Promise<void> | undefined;
  /** Writes what waits and resolves once every frame is written (or rejects with the write's error). */
  flush(): Promise<void>;
}

export function createTokenRelay(init: {
  write: (frame: RelayFrame) => Promise<void>;
  intervalMs?: number;
  now?: () => number;
}): TokenRelay {
  const interval = init.intervalMs ?? DEFAULT_RELAY_INTERVAL_MS;
  const now = init.now ?? performance.now.bind(performance);
  let pending: TokenRun['tokens'] = [];
  let lastFrameAt = -Infinity;
  let timer: NodeJS.Timeout | undefined;
  // writes go out one after another, in order; a failed write fails every later one
  let written: Promise<void> = Promise.resolve();
  let inFlight = 0;
  const landed = (): void => void inFlight--;

  const send = (frame: RelayFrame): Promise<void> => {
    inFlight++;
    written = written.then(() => init.write(frame));
    written.then(landed, landed);
    return written;
  };

  const sendPending = (): Promise<void> => {
    clearTimeout(timer);
    timer = undefined;
    if (pending.length === 0) return written;
    const [only] = pending;
    const frame: RelayFrame =
      pending.length === 1 && only !== undefined
        ? { type: 'token', ...only }
        : { type: 'tokens', tokens: pending };
    pending = [];
    lastFrameAt = now();
    return send(frame);
  };

  return {
    emit(event) {
      if (event.type !== 'token') {
        void sendPending();
        return send(event);
      }
      const { type: _type, ...token } = event; // text, tokens and any logprobs, as emitted
      pending.push(token);
      if (pending.length >= MAX_TOKENS_PER_FRAME) return sendPending();
      if (timer === undefined) {
        const wait = lastFrameAt + interval - now();
        if (wait <= 0) void sendPending();
        else timer = setTimeout(() => void sendPending(), wait);
      }
      // the entry node is behind: the hive waits for it instead of queueing frames without end
      return inFlight >= MAX_FRAMES_IN_FLIGHT ? written : undefined;
    },
    flush: () => sendPending(),
  };
}
