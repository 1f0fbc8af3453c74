/**
 * The event-stream writer on a real fastify server on 127.0.0.1, with a client socket that reads
 * only when told: back-pressure, the buffer limit and the stall limit.
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { createSse, type SseInit, type SseStream } from '../../src/node/api/sse.js';
import { waitFor } from '../helpers/wait-for.js';

const cleanup: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

/** A server whose one route hands its stream to the test; a client that has asked for it. */
async function setup(init: SseInit) {
  const drops: Array<{ why: string; bufferedBytes: number }> = [];
  const openSse = createSse({ ...init, onDrop: (drop) => drops.push(drop) });
  let stream: SseStream | undefined;
  const app: FastifyInstance = Fastify();
  app.get('/events', (_request, reply) => {
    stream = openSse(reply, () => 'event: error\ndata: {"code":"CLIENT_TOO_SLOW"}\n\n');
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  cleanup.push(() => app.close());
  const { port } = app.server.address() as AddressInfo;
  const socket: Socket = connect(port, '127.0.0.1');
  cleanup.push(() => void socket.destroy());
  socket.on('error', () => undefined);
  socket.pause();
  await once(socket, 'connect');
  socket.write('GET /events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n');
  const sse = await waitFor(() => stream, { what: 'the stream to open' });
  let closed = false;
  socket.once('close', () => (closed = true));
  let received = '';
  const read = (): void => {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.resume();
  };
  return { sse, drops, read, closed: () => closed, received: () => received };
}

/** Writes 64 KiB chunks until the stream says the client is behind; returns the bytes written. */
function fillUntilBehind(sse: SseStream): number {
  const chunk = `data: ${'x'.repeat(64 * 1024)}\n\n`;
  let written = 0;
  while (sse.write(chunk)) written += chunk.length;
  return written + chunk.length;
}

describe('event-stream writer', () => {
  it('says when the client is behind, and drained() resolves once it reads', async () => {
    const { sse, drops, read, received } = await setup({ maxBufferedBytes: 64 * 2 ** 20 });
    const written = fillUntilBehind(sse);
    const drained = sse.drained();
    read();
    await drained;
    expect(sse.open).toBe(true);
    sse.end('data: end\n\n');
    await waitFor(() => received().includes('data: end'), { what: 'the whole stream' });
    expect(received().length).toBeGreaterThan(written);
    expect(drops).toEqual([]);
  });

  it('drops a client with more than maxBufferedBytes waiting, with a last error event', async () => {
    const { sse, drops, read, closed, received } = await setup({ maxBufferedBytes: 256 * 1024 });
    const chunk = `data: ${'x'.repeat(16 * 1024)}\n\n`;
    // a live feed keeps writing whatever write() says, until the writer gives up on the client
    while (sse.open) sse.write(chunk);
    expect(drops).toEqual([expect.objectContaining({ why: 'buffer' })]);
    expect(drops[0]!.bufferedBytes).toBeGreaterThan(256 * 1024);
    expect(drops[0]!.bufferedBytes).toBeLessThanOrEqual(256 * 1024 + chunk.length);
    expect(sse.write(chunk)).toBe(false);
    read();
    await waitFor(closed, { what: 'the dropped connection to close' });
    expect(received()).toMatch(/event: error\ndata: \{"code":"CLIENT_TOO_SLOW"\}\n\n/);
  });

  it('drops a client that leaves a waiting route waiting for stallMs', async () => {
    const { sse, drops, read, closed } = await setup({ maxBufferedBytes: 64 * 2 ** 20, stallMs: 50 });
    // more than the kernel's socket buffers hold, so that no 'drain' can come while nobody reads
    const chunk = `data: ${'x'.repeat(64 * 1024)}\n\n`;
    for (let bytes = 0; bytes < 24 * 2 ** 20; bytes += chunk.length) sse.write(chunk);
    await sse.drained(); // resolves with the drop, not with the client
    expect(sse.open).toBe(false);
    expect(drops).toEqual([expect.objectContaining({ why: 'stall' })]);
    read();
    await waitFor(closed, { what: 'the dropped connection to close' });
  });
});
