import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { RbeeError } from '../../src/shared/errors.js';
import { createRpc, defineMethod, type Rpc } from '../../src/p2p/rpc.js';
import type { P2pHost } from '../../src/p2p/host.js';
import { waitFor } from '../helpers/wait-for.js';
import { createScope, hostPair, rejection } from './helpers.js';

const add = defineMethod(
  'test.add',
  z.object({ a: z.number(), b: z.number() }),
  z.object({ sum: z.number() }),
);
const wait = defineMethod('test.wait', z.object({}), z.null());
const fail = defineMethod('test.fail', z.object({}), z.null());
const missing = defineMethod('test.missing', z.object({}), z.null());

const scope = createScope();
afterEach(() => scope.cleanup());

async function setup(): Promise<{ a: P2pHost; b: P2pHost; client: Rpc; server: Rpc; seen: AbortSignal[] }> {
  const [a, b] = await hostPair(scope);
  const client = createRpc({ host: a });
  const server = createRpc({ host: b });
  await client.start();
  await server.start();
  const seen: AbortSignal[] = [];
  server.handle(add, ({ a: x, b: y }) => ({ sum: x + y }));
  server.handle(wait, async (_params, { signal }) => {
    seen.push(signal);
    await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
    return null;
  });
  server.handle(fail, () => {
    throw new RbeeError('MODEL_NOT_FOUND', 'nothing here', { details: { model: 'x' } });
  });
  return { a, b, client, server, seen };
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  return (await rejection(promise)).code;
}

describe('rpc', () => {
  it('calls a typed handler and returns its result', async () => {
    const { client, b } = await setup();
    expect(await client.call(b.peerId, add, { a: 2, b: 40 })).toEqual({ sum: 42 });
    const many = await Promise.all(
      Array.from({ length: 50 }, (_, i) => client.call(b.peerId, add, { a: i, b: 1 })),
    );
    expect(many.map((r) => r.sum)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  });

  it('carries the handler error code and details back to the caller', async () => {
    const { client, b } = await setup();
    const error = await rejection(client.call(b.peerId, fail, {}));
    expect(error.code).toBe('MODEL_NOT_FOUND');
    expect(error.details).toEqual({ model: 'x' });
  });

  it('refuses and counts unknown methods and bad params', async () => {
    const { client, b } = await setup();
    expect(await codeOf(client.call(b.peerId, missing, {}))).toBe('NOT_FOUND');
    expect(b.frameStats.unknown).toBe(1);
    const badAdd = defineMethod('test.add', z.object({ a: z.string() }), z.object({ sum: z.number() }));
    expect(await codeOf(client.call(b.peerId, badAdd, { a: 'x' }))).toBe('BAD_REQUEST');
    expect(b.frameStats.malformed).toBe(1);
    // the server is still fine
    expect(await client.call(b.peerId, add, { a: 1, b: 1 })).toEqual({ sum: 2 });
  });

  it('times out at the deadline, and the handler sees its signal abort', async () => {
    const { client, b, seen } = await setup();
    expect(await codeOf(client.call(b.peerId, wait, {}, { timeoutMs: 300 }))).toBe('TIMEOUT');
    await waitFor(() => seen[0]?.aborted, { what: 'the handler to be aborted' });
    expect(client.stats.timeouts).toBe(1);
  });

  it('aborts when the caller aborts, and the handler sees it', async () => {
    const { client, b, seen } = await setup();
    const controller = new AbortController();
    const pending = client.call(b.peerId, wait, {}, { signal: controller.signal, timeoutMs: 30_000 });
    await waitFor(() => seen.length === 1, { what: 'the call to reach the handler' });
    controller.abort();
    expect(await codeOf(pending)).toBe('JOB_CANCELLED');
    await waitFor(() => seen[0]?.aborted, { what: 'the handler to be aborted' });
  });

  it('a dropped link makes calls time out instead of hanging', async () => {
    const { client, a, b } = await setup();
    a.partition.drop(b.peerId);
    expect(await codeOf(client.call(b.peerId, add, { a: 1, b: 2 }, { timeoutMs: 200 }))).toBe('TIMEOUT');
    a.partition.undrop(b.peerId);
    expect(await client.call(b.peerId, add, { a: 1, b: 2 })).toEqual({ sum: 3 });
  });

  it('fails fast with NODE_UNREACHABLE when not connected and dialling is off', async () => {
    const { client, b, a } = await setup();
    await a.libp2p.hangUp(b.libp2p.peerId);
    await waitFor(() => !a.isConnected(b.peerId));
    expect(await codeOf(client.call(b.peerId, add, { a: 1, b: 2 }, { dial: false }))).toBe(
      'NODE_UNREACHABLE',
    );
  });
});
