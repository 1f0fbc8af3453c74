import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { streamPair } from '@libp2p/utils';
import { RbeeError } from '../../src/shared/errors.js';
import {
  createFrameChannel,
  createFrameStats,
  encodeFrame,
  FrameDecoder,
  frameToSend,
  type FrameStats,
} from '../../src/p2p/codec.js';

const msg = z.object({ n: z.number().int() });
const msgOrBytes = z.union([msg, z.instanceof(Uint8Array)]);

/** A raw frame with a chosen kind byte, to forge what a broken or hostile peer might send. */
function rawFrame(kind: number, body: Uint8Array): Uint8Array {
  // bodies here are short, so the varint length is one byte
  return Uint8Array.from([body.length + 1, kind, ...body]);
}

async function pair(stats: FrameStats, maxFrameBytes?: number) {
  const [outbound, inbound] = await streamPair();
  const writer = createFrameChannel<unknown, unknown>(outbound, {
    schema: z.unknown(),
    stats,
    maxFrameBytes,
  });
  const reader = createFrameChannel<z.infer<typeof msgOrBytes>, unknown>(inbound, {
    schema: msgOrBytes,
    stats,
    maxFrameBytes,
  });
  return { outbound, inbound, writer, reader };
}

async function expectRbeeError(promise: Promise<unknown>, code: string): Promise<RbeeError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(RbeeError);
  expect((error as RbeeError).code).toBe(code);
  return error as RbeeError;
}

describe('FrameDecoder', () => {
  it('reassembles frames split at every byte boundary', () => {
    const frames = [encodeFrame({ n: 1 }), encodeFrame(new Uint8Array(300).fill(7)), encodeFrame({ n: 2 })];
    const all = new Uint8Array(frames.reduce((s, f) => s + f.byteLength, 0));
    let offset = 0;
    for (const f of frames) {
      all.set(f, offset);
      offset += f.byteLength;
    }
    for (let cut = 1; cut < all.byteLength; cut += 1) {
      const decoder = new FrameDecoder();
      const out = [...decoder.push(all.slice(0, cut)), ...decoder.push(all.slice(cut))];
      expect(out.map((p) => p.byteLength)).toEqual([
        frames[0]!.byteLength - 1,
        301,
        frames[2]!.byteLength - 1,
      ]);
      expect(decoder.pendingBytes).toBe(0);
    }
  });

  it('reassembles frames of any size from chunks of any size, byte for byte', () => {
    const bodies = [100_000, 5, 40_000, 1, 300_000, 17_000].map((n, k) =>
      new Uint8Array(n).map((_, i) => (i * 31 + k) & 0xff),
    );
    const stream = Buffer.concat(bodies.map((b) => encodeFrame(b)));
    // chunks smaller than a frame, about a frame, several frames at once
    for (const size of [1_000, 65_519, 150_000, stream.byteLength]) {
      const decoder = new FrameDecoder();
      const out: Uint8Array[] = [];
      for (let at = 0; at < stream.byteLength; at += size) {
        out.push(...decoder.push(stream.subarray(at, at + size)));
      }
      expect(out.map((p) => Buffer.from(p.subarray(1)))).toEqual(bodies.map((b) => Buffer.from(b)));
      expect(out.every((p) => p[0] === 1)).toBe(true);
      expect(decoder.pendingBytes).toBe(0);
    }
  });

  it('refuses a length over the limit before buffering the body', () => {
    const decoder = new FrameDecoder(100);
    expect(() => [...decoder.push(Uint8Array.from([0xe5, 0x8e, 0x26]))]).toThrow(/exceeds/);
  });
});

describe('frame channel', () => {
  it('carries JSON and bytes frames in order, then ends cleanly', async () => {
    const stats = createFrameStats();
    const { writer, reader } = await pair(stats);
    await writer.write({ n: 1 });
    await writer.write(new Uint8Array([1, 2, 3]));
    await writer.write({ n: 2 });
    await writer.close();
    const got: unknown[] = [];
    for await (const frame of reader) got.push(frame);
    expect(got).toEqual([{ n: 1 }, new Uint8Array([1, 2, 3]), { n: 2 }]);
    expect(stats.framesIn).toBe(3);
    expect(stats.framesOut).toBe(3);
  });

  it('sends a large bytes frame without copying it, as the same bytes on the wire, whole at the reader', async () => {
    const body = new Uint8Array(128 * 1024 + 3).map((_, i) => (i * 13) & 0xff);
    const parts = frameToSend(body);
    expect(parts).not.toBeInstanceOf(Uint8Array);
    const wire = parts instanceof Uint8Array ? parts : parts.subarray();
    expect(Buffer.from(wire).equals(encodeFrame(body))).toBe(true);
    // the caller's array itself goes to the stream, no copy of it
    expect(parts instanceof Uint8Array ? [] : [...parts].map((chunk) => chunk.buffer)).toContain(body.buffer);

    const stats = createFrameStats();
    const { writer, reader } = await pair(stats, 1024 * 1024);
    const small = new Uint8Array(100).fill(5);
    await writer.write(body);
    await writer.write(small);
    await writer.write({ n: 7 });
    await writer.close();
    const got: unknown[] = [];
    for await (const frame of reader) got.push(frame);
    expect(got).toHaveLength(3);
    expect(Buffer.from(got[0] as Uint8Array).equals(body)).toBe(true);
    expect(got.slice(1)).toEqual([small, { n: 7 }]);
  });

  it('refuses and counts malformed JSON, schema mismatches and unknown kinds, and keeps going', async () => {
    const stats = createFrameStats();
    const { outbound, writer, reader } = await pair(stats);
    outbound.send(rawFrame(0, new TextEncoder().encode('{not json')));
    await writer.write({ n: 'three' });
    outbound.send(rawFrame(9, new Uint8Array([1, 2])));
    await writer.write({ n: 4 });
    await writer.close();

    await expectRbeeError(reader.read(), 'BAD_REQUEST');
    await expectRbeeError(reader.read(), 'BAD_REQUEST');
    await expectRbeeError(reader.read(), 'BAD_REQUEST');
    expect(await reader.read()).toEqual({ n: 4 });
    expect(await reader.read()).toBeUndefined();
    expect(stats).toMatchObject({ malformed: 2, unknown: 1, oversized: 0, framesIn: 1 });
  });

  it('refuses an oversized frame, counts it and aborts the stream', async () => {
    const stats = createFrameStats();
    const { outbound, inbound, reader } = await pair(stats, 1024);
    // the sender may be hostile: it ignores our limit
    outbound.send(encodeFrame({ pad: 'x'.repeat(5000) }, 10_000));
    const error = await expectRbeeError(reader.read(), 'BAD_REQUEST');
    expect(error.details).toEqual({ frame: 'oversized' });
    expect(stats.oversized).toBe(1);
    expect(inbound.status).not.toBe('open');
  });

  it('refuses to send a frame over the limit', async () => {
    const stats = createFrameStats();
    const { writer } = await pair(stats, 1024);
    await expectRbeeError(writer.write({ pad: 'x'.repeat(5000) }), 'BAD_REQUEST');
    // and a bytes frame large enough to go without a copy
    await expectRbeeError(writer.write(new Uint8Array(20_000)), 'BAD_REQUEST');
    expect(stats.framesOut).toBe(0);
  });

  it('counts a frame cut off by the end of the stream as malformed', async () => {
    const stats = createFrameStats();
    const { outbound, reader } = await pair(stats);
    outbound.send(encodeFrame({ n: 5 }).subarray(0, 4));
    await outbound.close();
    await expectRbeeError(reader.read(), 'BAD_REQUEST');
    expect(stats.malformed).toBe(1);
  });

  it('delivers an error frame as the remote RbeeError', async () => {
    const stats = createFrameStats();
    const { writer, reader } = await pair(stats);
    await writer.fail(new RbeeError('MODEL_NOT_FOUND', 'no such model'));
    const error = await expectRbeeError(reader.read(), 'MODEL_NOT_FOUND');
    expect(error.message).toBe('no such model');
    expect(stats.malformed).toBe(0);
  });

  it('refuses and counts an error frame where the protocol has none, and keeps going', async () => {
    const stats = createFrameStats();
    const [outbound, inbound] = await streamPair();
    const writer = createFrameChannel<unknown, unknown>(outbound, { schema: z.unknown(), stats });
    const reader = createFrameChannel<z.infer<typeof msg>, unknown>(inbound, {
      schema: msg,
      stats,
      errorFrames: false,
    });
    // a well-formed error frame: a peer may not end an rpc session (or a stream it opened) with one
    await writer.fail(new RbeeError('MODEL_NOT_FOUND', 'not from you'));
    const error = await expectRbeeError(reader.read(), 'BAD_REQUEST');
    expect(error.details).toEqual({ frame: 'unknown' });
    expect(stats.unknown).toBe(1);
    expect(await reader.read()).toBeUndefined();
  });

  it('read honours an abort signal', async () => {
    const { reader } = await pair(createFrameStats());
    const controller = new AbortController();
    const pending = reader.read({ signal: controller.signal });
    controller.abort(new Error('stop'));
    await expect(pending).rejects.toThrow('stop');
  });
});
