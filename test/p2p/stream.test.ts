import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { RbeeError } from '../../src/shared/errors.js';
import { createStreams, defineStream, type Streams } from '../../src/p2p/stream.js';
import type { P2pHost } from '../../src/p2p/host.js';
import { waitFor } from '../helpers/wait-for.js';
import { createScope, hostPair, rejection } from './helpers.js';

const tokens = defineStream('test.tokens', {
  params: z.object({ count: z.number().int() }),
  up: z.object({ stop: z.boolean() }),
  down: z.object({ token: z.string() }),
});
const bytes = defineStream('test.bytes', {
  params: z.object({ chunks: z.number().int(), size: z.number().int() }),
  up: z.never(),
  down: z.instanceof(Uint8Array),
});
const broken = defineStream('test.broken', { params: z.object({}), up: z.never(), down: z.string() });

/** yamux's frame type of a window update (its FrameType enum is not exported). */
const WINDOW_UPDATE = 1;

const scope = createScope();
afterEach(() => scope.cleanup());

interface Producer {
  written: number;
  channel?: { readonly drainWaits: number };
  done: boolean;
  signal?: AbortSignal;
}

async function setup(): Promise<{ a: P2pHost; b: P2pHost; client: Streams; producer: Producer }> {
  const [a, b] = await hostPair(scope);
  const client = createStreams({ host: a });
  const server = createStreams({ host: b });
  await client.start();
  await server.start();
  scope.defer(() => Promise.resolve(server.stop()));
  const producer: Producer = { written: 0, done: false };
  server.handle(tokens, async ({ params, channel, signal }) => {
    producer.signal = signal;
    for (let i = 0; i < params.count; i += 1) {
      await channel.write({ token: `t${i}` }, { signal });
      producer.written += 1;
    }
    producer.done = true;
  });
  server.handle(bytes, async ({ params, channel, signal }) => {
    producer.channel = channel;
    for (let i = 0; i < params.chunks; i += 1) {
      await channel.write(new Uint8Array(params.size).fill(i % 251), { signal });
      producer.written += 1;
    }
    producer.done = true;
  });
  server.handle(broken, async ({ channel }) => {
    await channel.write('first');
    throw new RbeeError('WORKER_CRASHED', 'the worker died');
  });
  return { a, b, client, producer };
}

describe('stream protocol', () => {
  it('delivers every frame in order and ends cleanly', async () => {
    const { client, b } = await setup();
    const channel = await client.open(b.peerId, tokens, { count: 200 });
    const got: string[] = [];
    for await (const frame of channel) got.push(frame.token);
    expect(got).toEqual(Array.from({ length: 200 }, (_, i) => `t${i}`));
  });

  it('grants the sender more window once per half window, not once per frame', async () => {
    const { client, b } = await setup();
    const channel = await client.open(b.peerId, tokens, { count: 2000 });
    // the receiving end's muxer stream: count the window updates it sends from now on
    const stream = channel.stream as unknown as {
      sendFrame: (header: { type: number }, data?: unknown) => unknown;
    };
    const send = stream.sendFrame;
    let updates = 0;
    stream.sendFrame = (header, data) => {
      if (header.type === WINDOW_UPDATE) updates += 1;
      return send(header, data);
    };
    let got = 0;
    for await (const _frame of channel) got += 1;
    expect(got).toBe(2000);
    // 2000 frames of ~20 bytes are far less than half of a 256 KiB window: no update at all was due
    expect(updates).toBeLessThanOrEqual(2);
  });

  it('ends with the handler error after the frames sent before it', async () => {
    const { client, b } = await setup();
    const channel = await client.open(b.peerId, broken, {});
    expect(await channel.read()).toBe('first');
    const error = await rejection(channel.read());
    expect(error.code).toBe('WORKER_CRASHED');
  });

  it('refuses an unknown kind with NOT_FOUND', async () => {
    const { client, b } = await setup();
    const unknown = defineStream('test.none', { params: z.object({}), up: z.never(), down: z.never() });
    const error = await rejection(client.open(b.peerId, unknown, {}));
    expect(error.code).toBe('NOT_FOUND');
    expect(b.frameStats.unknown).toBe(1);
  });

  it('a slow reader holds the writer back instead of letting it buffer everything', async () => {
    const { client, b, producer } = await setup();
    const size = 64 * 1024;
    const chunks = 160; // 10 MiB if nothing held the producer back
    const channel = await client.open(b.peerId, bytes, { chunks, size }, { highWaterMarkBytes: 256 * 1024 });
    const first = await channel.read();
    expect(first?.byteLength).toBe(size);
    // the reader stops here; the writer must come to a halt well before the end
    await waitFor(() => (producer.channel?.drainWaits ?? 0) > 0, { what: 'the producer to wait for drain' });
    const stalledAt = producer.written;
    expect(producer.done).toBe(false);
    // bounded: our queue, the yamux window and the send buffer, nowhere near 20 MiB
    expect(stalledAt * size).toBeLessThan(4 * 1024 * 1024);
    expect(channel.queuedBytes).toBeLessThanOrEqual(256 * 1024 + size + 16);

    let received = 1;
    for await (const chunk of channel) {
      expect(chunk[0]).toBe(received % 251);
      received += 1;
    }
    expect(received).toBe(chunks);
    expect(producer.done).toBe(true);
  });

  it('aborting the reader aborts the handler', async () => {
    const { client, b, producer } = await setup();
    const controller = new AbortController();
    const channel = await client.open(b.peerId, tokens, { count: 1_000_000 }, { signal: controller.signal });
    await channel.read();
    controller.abort();
    await waitFor(() => producer.signal?.aborted, { what: 'the handler signal to abort' });
    expect(producer.done).toBe(false);
  });

  describe('standby streams', () => {
    /** The ids of the libp2p streams a has open to b. */
    const streamIds = (a: P2pHost, b: P2pHost): string[] =>
      a.libp2p.getConnections(b.libp2p.peerId).flatMap((c) => c.streams.map((s) => s.id));

    it('opens the next stream to a peer on one made ready after the last open, waiting past 5 s', async () => {
      const { client, a, b } = await setup();
      const first = await client.open(b.peerId, tokens, { count: 1 });
      expect((await first.read())?.token).toBe('t0');
      // ready streams wait for their use longer than a fresh stream may take to say what it is
      await waitFor(() => streamIds(a, b).length >= 2, { what: 'standby streams' });
      await new Promise((resolve) => setTimeout(resolve, 5_500));
      const ready = streamIds(a, b);
      const second = await client.open(b.peerId, tokens, { count: 3 });
      expect(ready).toContain(second.stream.id);
      const got: string[] = [];
      for await (const frame of second) got.push(frame.token);
      expect(got).toEqual(['t0', 't1', 't2']);
      // a refused kind on a ready stream is refused as on a fresh one
      const unknown = defineStream('test.none', { params: z.object({}), up: z.never(), down: z.never() });
      await waitFor(() => streamIds(a, b).length >= 2, { what: 'standby streams again' });
      expect((await rejection(client.open(b.peerId, unknown, {}))).code).toBe('NOT_FOUND');
    }, 20_000);

    it('does not carry a stream across a partition', async () => {
      const { client, a, b } = await setup();
      await client.open(b.peerId, tokens, { count: 1 });
      await waitFor(() => streamIds(a, b).length >= 2, { what: 'standby streams' });
      a.partition.drop(b.peerId);
      const error = await rejection(client.open(b.peerId, tokens, { count: 1 }, { openTimeoutMs: 300 }));
      expect(error.code).toBe('TIMEOUT');
    });
  });
});
