/**
 * The cluster key as a libp2p private network: every byte of a connection, before noise and yamux,
 * runs through XSalsa20 keyed with the cluster key, so a machine without the key cannot even start a
 * handshake. This speaks exactly the wire protocol of @libp2p/pnet's `preSharedKey` (and go-libp2p's
 * pnet): each side sends a random 24-byte nonce first, then everything it sends is XORed with the
 * XSalsa20 key stream of (its own nonce, the key), one continuous stream per direction; what it
 * receives is XORed with the stream of (the remote nonce, the key). Nothing else is framed or added.
 *
 * The cipher is libsodium's (sodium-native's stateful `crypto_stream_xor_*`, native code) instead of
 * the WebAssembly `xsalsa20` package that @libp2p/pnet uses: over three times the throughput per
 * core, and no WebAssembly memory shared between ciphers that grows with the bytes sent.
 *
 * A wrong key is not detected here (neither does pnet detect it): the remote's bytes decrypt to noise
 * and the noise handshake that follows fails, so the dial fails and no connection is made.
 */
import { createRequire } from 'node:module';
import type {
  AbortOptions,
  ConnectionProtector,
  MessageStream,
  MultiaddrConnection,
} from '@libp2p/interface';
import { AbstractMultiaddrConnection, byteStream, type SendResult } from '@libp2p/utils';

/** What is used of sodium-native (it ships no type declarations). */
interface SodiumStream {
  readonly crypto_stream_xor_STATEBYTES: number;
  readonly crypto_stream_NONCEBYTES: number;
  readonly crypto_stream_KEYBYTES: number;
  crypto_stream_xor_init(state: Uint8Array, nonce: Uint8Array, key: Uint8Array): void;
  crypto_stream_xor_update(state: Uint8Array, output: Uint8Array, input: Uint8Array): void;
  crypto_stream_xor_final(state: Uint8Array): void;
}

/** The chunk list libp2p's streams pass around (Uint8ArrayList, as @libp2p/utils resolves it). */
type ByteList = Parameters<AbstractMultiaddrConnection['sendData']>[0];

const sodium = createRequire(import.meta.url)('sodium-native') as SodiumStream;

export const NONCE_BYTES = 24;
export const PRIVATE_NETWORK_KEY_BYTES = 32;
/** How long the nonce exchange may take when the caller gives no deadline (pnet's default too). */
const DEFAULT_TIMEOUT_MS = 1_000;

if (sodium.crypto_stream_NONCEBYTES !== NONCE_BYTES || sodium.crypto_stream_KEYBYTES !== 32) {
  throw new Error('sodium-native: crypto_stream is not XSalsa20 with a 24-byte nonce and a 32-byte key');
}

/** One direction's XSalsa20 key stream: each call continues where the previous one stopped. */
export class XSalsa20Stream {
  private readonly state = Buffer.alloc(sodium.crypto_stream_xor_STATEBYTES);
  private wiped = false;

  constructor(nonce: Uint8Array, key: Uint8Array) {
    if (nonce.byteLength !== NONCE_BYTES || key.byteLength !== PRIVATE_NETWORK_KEY_BYTES) {
      throw new RangeError(`XSalsa20 takes a ${NONCE_BYTES}-byte nonce and a 32-byte key`);
    }
    sodium.crypto_stream_xor_init(this.state, nonce, key);
  }

  /** `input` XORed with the next `input.byteLength` bytes of the stream, in a new buffer. */
  xor(input: Uint8Array): Uint8Array {
    this.assertLive();
    const output = Buffer.allocUnsafe(input.byteLength);
    sodium.crypto_stream_xor_update(this.state, output, input);
    return output;
  }

  /** The chunks of `input`, XORed in order into one new buffer (no concatenation first). */
  xorList(input: ByteList): Uint8Array {
    this.assertLive();
    const output = Buffer.allocUnsafe(input.byteLength);
    let at = 0;
    for (const chunk of input) {
      sodium.crypto_stream_xor_update(this.state, output.subarray(at, at + chunk.byteLength), chunk);
      at += chunk.byteLength;
    }
    return output;
  }

  /** Zeroes the state (it holds a key derived from the cluster key); the stream is unusable after. */
  wipe(): void {
    if (this.wiped) return;
    this.wiped = true;
    sodium.crypto_stream_xor_final(this.state);
  }

  private assertLive(): void {
    if (this.wiped) throw new Error('the private network cipher of a closed connection was used');
  }
}

interface BoxedConnectionInit {
  maConn: MultiaddrConnection;
  log: MultiaddrConnection['log'];
  localNonce: Uint8Array;
  remoteNonce: Uint8Array;
  key: Uint8Array;
}

/** The connection as the layers above see it: plain bytes in, XSalsa20 bytes on the wire. */
class BoxedConnection extends AbstractMultiaddrConnection {
  private readonly maConn: MultiaddrConnection;
  private readonly inbound: XSalsa20Stream;
  private readonly outbound: XSalsa20Stream;

  constructor(init: BoxedConnectionInit) {
    super({
      log: init.log,
      remoteAddr: init.maConn.remoteAddr,
      direction: init.maConn.direction,
    });
    this.maConn = init.maConn;
    this.inbound = new XSalsa20Stream(init.remoteNonce, init.key);
    this.outbound = new XSalsa20Stream(init.localNonce, init.key);

    this.maConn.addEventListener('message', (event) => {
      const data = event.data;
      this.onData(data instanceof Uint8Array ? this.inbound.xor(data) : this.inbound.xorList(data));
    });
    // resume sending when the underlying connection takes data again
    this.maConn.addEventListener('drain', () => this.onMuxerDrain());
    this.maConn.addEventListener('close', (event) => {
      if (event.error != null) {
        if (event.local) this.abort(event.error);
        else this.onRemoteReset();
      } else {
        this.onTransportClosed();
      }
      this.inbound.wipe();
      this.outbound.wipe();
    });
  }

  override async sendClose(options?: AbortOptions): Promise<void> {
    await this.maConn.close(options);
  }

  override sendData(data: ByteList): SendResult {
    const sentBytes = data.byteLength;
    return { sentBytes, canSendMore: this.maConn.send(this.outbound.xorList(data)) };
  }

  override sendReset(error: Error): void {
    this.maConn.abort(error);
  }

  override sendPause(): void {
    this.maConn.pause();
  }

  override sendResume(): void {
    this.maConn.resume();
  }
}

class PrivateNetworkProtector implements ConnectionProtector {
  readonly [Symbol.toStringTag] = 'rbee/private-network';

  constructor(
    private readonly key: Uint8Array,
    private readonly timeoutMs: number,
  ) {}

  async protect(connection: MessageStream, options?: AbortOptions): Promise<MessageStream> {
    const log = connection.log.newScope('pnet');
    const localNonce = new Uint8Array(NONCE_BYTES);
    crypto.getRandomValues(localNonce);
    const deadline = options ?? { signal: AbortSignal.timeout(this.timeoutMs) };
    const bytes = byteStream(connection);
    const [remote] = await Promise.all([
      bytes.read({ bytes: NONCE_BYTES, ...deadline }),
      bytes.write(localNonce, deadline),
    ]);
    log('exchanged nonces');
    return new BoxedConnection({
      localNonce,
      remoteNonce: remote.subarray(),
      key: this.key,
      log,
      // the upgrader hands the transport's connection here, whatever the interface's wider type says
      maConn: bytes.unwrap() as MultiaddrConnection,
    });
  }
}

export interface PrivateNetworkInit {
  /** The raw 32-byte cluster key. */
  key: Uint8Array;
  /** Deadline of the nonce exchange when the upgrader gives none. Defaults to 1 s. */
  timeoutMs?: number;
}

/** A libp2p `connectionProtector`: the cluster key's private network. */
export function privateNetwork(init: PrivateNetworkInit): () => ConnectionProtector {
  if (init.key.byteLength !== PRIVATE_NETWORK_KEY_BYTES) {
    throw new RangeError(
      `a private network key has ${PRIVATE_NETWORK_KEY_BYTES} bytes, not ${init.key.byteLength}`,
    );
  }
  const key = Uint8Array.from(init.key);
  const timeoutMs = init.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return () => new PrivateNetworkProtector(key, timeoutMs);
}
