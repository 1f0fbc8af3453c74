/**
 * rbee's private network (src/p2p/private-network.ts) against @libp2p/pnet's `preSharedKey`, the
 * protocol it must speak byte for byte: a host of each connects with the same key and carries a large
 * echo both ways; another key is refused either way round; a silent peer fails the nonce exchange.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@libp2p/yamux';
import { preSharedKey } from '@libp2p/pnet';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { multiaddrConnectionPair } from '@libp2p/utils';
import type { Stream } from '@libp2p/interface';
import { createP2pHost, type P2pHost } from '../../src/p2p/host.js';
import { clusterKeyToPsk, generateClusterKey } from '../../src/p2p/keys.js';
import { privateNetwork, XSalsa20Stream } from '../../src/p2p/private-network.js';
import { createScope } from './helpers.js';

const ECHO = '/rbee-test/echo/1.0.0';
const MiB = 1024 * 1024;

const scope = createScope();
afterEach(() => scope.cleanup());

/** A plain libp2p host protected by @libp2p/pnet, that echoes every stream of ECHO back. */
async function pnetHost(key: Uint8Array): Promise<Libp2p> {
  const node = await createLibp2p({
    privateKey: await generateKeyPair('Ed25519'),
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionProtector: preSharedKey({ psk: clusterKeyToPsk(key) }),
  });
  scope.defer(async () => {
    await node.stop();
  });
  await node.handle(ECHO, async (stream) => {
    for await (const chunk of stream) {
      if (!stream.send(chunk)) await waitForDrain(stream);
    }
    await stream.close();
  });
  return node;
}

async function rbeeHost(key: Uint8Array): Promise<P2pHost> {
  const host = await createP2pHost({
    peerKeyPath: join(await scope.dir(), 'peer.key'),
    clusterKey: key,
    listen: ['/ip4/127.0.0.1/tcp/0'],
  });
  scope.defer(() => host.stop());
  return host;
}

async function waitForDrain(stream: Stream): Promise<void> {
  if (!stream.writableNeedsDrain) return;
  await new Promise<void>((resolve, reject) => {
    stream.addEventListener('drain', () => resolve(), { once: true });
    stream.addEventListener('close', (event) => reject(event.error ?? new Error('closed')), { once: true });
  });
}

/** Writes `total` bytes of a counting pattern in chunks of varied sizes; the digests of what went and came back. */
async function echo(
  stream: Stream,
  total: number,
): Promise<{ sent: string; received: string; bytes: number }> {
  const sent = createHash('sha256');
  const received = createHash('sha256');
  let bytes = 0;
  const reading = (async () => {
    for await (const chunk of stream) {
      const data = chunk instanceof Uint8Array ? chunk : chunk.subarray();
      received.update(data);
      bytes += data.byteLength;
    }
  })();
  // odd sizes, so the key stream's 64-byte blocks are split at every possible offset
  const sizes = [1, 63, 65, 1000, 4096, 16_411, 65_536, 131_071];
  let written = 0;
  for (let i = 0; written < total; i += 1) {
    const size = Math.min(sizes[i % sizes.length]!, total - written);
    const chunk = new Uint8Array(size);
    for (let at = 0; at < size; at += 1) chunk[at] = (written + at) & 0xff;
    sent.update(chunk);
    written += size;
    if (!stream.send(chunk)) await waitForDrain(stream);
  }
  await stream.close();
  await reading;
  return { sent: sent.digest('hex'), received: received.digest('hex'), bytes };
}

describe("the cluster key's private network", () => {
  it("speaks @libp2p/pnet's wire protocol: an rbee host dials a pnet host with the same key and 16 MiB echo back whole", async () => {
    const key = generateClusterKey();
    const other = await pnetHost(key);
    const host = await rbeeHost(key);
    const result = await echo(await host.libp2p.dialProtocol(other.getMultiaddrs()[0]!, ECHO), 16 * MiB);
    expect(result.bytes).toBe(16 * MiB);
    expect(result.received).toBe(result.sent);
  });

  it('and the other way round: a pnet host dials an rbee host and 16 MiB echo back whole', async () => {
    const key = generateClusterKey();
    const host = await rbeeHost(key);
    await host.libp2p.handle(ECHO, async (stream) => {
      for await (const chunk of stream) {
        if (!stream.send(chunk)) await waitForDrain(stream);
      }
      await stream.close();
    });
    const other = await pnetHost(key);
    const result = await echo(await other.dialProtocol(host.libp2p.getMultiaddrs()[0]!, ECHO), 16 * MiB);
    expect(result.bytes).toBe(16 * MiB);
    expect(result.received).toBe(result.sent);
  });

  it('refuses a peer with another key, whichever side dials', async () => {
    const host = await rbeeHost(generateClusterKey());
    const stranger = await pnetHost(generateClusterKey());
    await expect(
      host.libp2p.dial(stranger.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(1_500) }),
    ).rejects.toThrow();
    await expect(
      stranger.dial(host.libp2p.getMultiaddrs()[0]!, { signal: AbortSignal.timeout(1_500) }),
    ).rejects.toThrow();
    expect(host.connectedPeers()).toEqual([]);
    expect(stranger.getPeers()).toEqual([]);
  });

  it('gives up on a peer that never sends its nonce', async () => {
    const [outbound] = multiaddrConnectionPair();
    const protector = privateNetwork({ key: generateClusterKey(), timeoutMs: 200 })();
    // the other end is never protected: no nonce ever comes
    await expect(protector.protect(outbound)).rejects.toThrow(/abort|time/i);
  });

  it('continues one key stream across chunks of any size, as one XOR of the whole', () => {
    const key = generateClusterKey();
    const nonce = new Uint8Array(24).fill(9);
    const whole = new Uint8Array(200_000).map((_, i) => i * 7);
    const once = new XSalsa20Stream(nonce, key).xor(whole);
    const pieces = new XSalsa20Stream(nonce, key);
    const parts: Uint8Array[] = [];
    const sizes = [1, 2, 61, 64, 65, 127, 4_099, 9_000];
    for (let at = 0, i = 0; at < whole.length; i += 1) {
      const size = sizes[i % sizes.length]!;
      parts.push(pieces.xor(whole.subarray(at, at + size)));
      at += size;
    }
    expect(Buffer.concat(parts).equals(once)).toBe(true);
    expect(Buffer.from(once).equals(whole)).toBe(false);
  });
});
