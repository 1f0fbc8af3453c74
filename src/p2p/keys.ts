/**
 * The two secrets a node keeps: its peer key (a stable identity across restarts) and the cluster key
 * (a libp2p private-network pre-shared key: without it no connection can even be opened), plus the
 * join code that carries a cluster key from one machine to another.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { PrivateKey } from '@libp2p/interface';
import { RbeeError } from '../shared/errors.js';

export const CLUSTER_KEY_BYTES = 32;
const PSK_HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n';
const JOIN_CODE_PREFIX = 'rbee-';
const CHECKSUM_BYTES = 4;

export interface PeerKey {
  privateKey: PrivateKey;
  peerId: string;
  /** True when this call generated the key (first start). */
  created: boolean;
}

export interface ClusterKey {
  /** The raw 32-byte secret. */
  key: Uint8Array;
  created: boolean;
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

/** Writes a secret with mode 0600 through a temporary file, so a crash never leaves half a key. */
async function writeSecret(path: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, data, { mode: 0o600, flag: 'wx' });
  await rename(tmp, path);
  // rename keeps the mode, but an umask-less platform or a pre-existing file is not worth trusting
  await chmod(path, 0o600);
}

/** Loads the peer key at `path`, creating an Ed25519 key there (mode 0600) when there is none. */
export async function loadOrCreatePeerKey(path: string): Promise<PeerKey> {
  let bytes: Buffer | undefined;
  try {
    bytes = await readFile(path);
  } catch (error) {
    if (!isNotFound(error)) {
      throw new RbeeError('CONFIG_INVALID', `cannot read the peer key ${path}`, { cause: error });
    }
  }
  if (bytes !== undefined) {
    try {
      const privateKey = privateKeyFromProtobuf(bytes);
      return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString(), created: false };
    } catch (error) {
      throw new RbeeError('CONFIG_INVALID', `the peer key ${path} is corrupt`, { cause: error });
    }
  }
  const privateKey = await generateKeyPair('Ed25519');
  await writeSecret(path, privateKeyToProtobuf(privateKey));
  return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString(), created: true };
}

export function generateClusterKey(): Uint8Array {
  return new Uint8Array(randomBytes(CLUSTER_KEY_BYTES));
}

/** The key in the pnet "swarm.key" v1 format that `@libp2p/pnet`'s `preSharedKey({ psk })` expects. */
export function clusterKeyToPsk(key: Uint8Array): Uint8Array {
  assertClusterKey(key);
  return new TextEncoder().encode(PSK_HEADER + Buffer.from(key).toString('hex'));
}

/** Parses the swarm.key v1 text format. */
export function clusterKeyFromPsk(text: string): Uint8Array {
  const lines = text.split(/\r?\n/).map((line) => line.trim());
  const hex = lines[2] ?? '';
  if (lines[0] !== '/key/swarm/psk/1.0.0/' || lines[1] !== '/base16/' || !/^[0-9a-fA-F]{64}$/.test(hex)) {
    throw new RbeeError('CONFIG_INVALID', 'the cluster key file is not a swarm.key v1 with a 32-byte key');
  }
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

function assertClusterKey(key: Uint8Array): void {
  if (key.byteLength !== CLUSTER_KEY_BYTES) {
    throw new RbeeError(
      'CONFIG_INVALID',
      `a cluster key has ${CLUSTER_KEY_BYTES} bytes, not ${key.byteLength}`,
    );
  }
}

/** Reads the cluster key at `path`; `undefined` when there is none yet. */
export async function loadClusterKey(path: string): Promise<Uint8Array | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw new RbeeError('CONFIG_INVALID', `cannot read the cluster key ${path}`, { cause: error });
  }
  try {
    return clusterKeyFromPsk(text);
  } catch (error) {
    throw new RbeeError('CONFIG_INVALID', `the cluster key ${path} is corrupt`, { cause: error });
  }
}

/** Stores `key` at `path` (mode 0600), replacing any previous key: this is what `rbee join` does. */
export async function saveClusterKey(path: string, key: Uint8Array): Promise<void> {
  assertClusterKey(key);
  await writeSecret(path, PSK_HEADER + Buffer.from(key).toString('hex') + '\n');
}

/** The first start of a cluster creates its key; every later start reads it back. */
export async function loadOrCreateClusterKey(path: string): Promise<ClusterKey> {
  const existing = await loadClusterKey(path);
  if (existing !== undefined) return { key: existing, created: false };
  const key = generateClusterKey();
  await saveClusterKey(path, key);
  return { key, created: true };
}

function checksum(key: Uint8Array): Buffer {
  return createHash('sha256').update(key).digest().subarray(0, CHECKSUM_BYTES);
}

/** `rbee-` + base64url(key ‖ first 4 bytes of sha256(key)): short enough to paste, and typos are caught. */
export function encodeJoinCode(key: Uint8Array): string {
  assertClusterKey(key);
  return JOIN_CODE_PREFIX + Buffer.concat([key, checksum(key)]).toString('base64url');
}

export function decodeJoinCode(code: string): Uint8Array {
  const trimmed = code.replace(/\s+/g, '');
  const body = trimmed.startsWith(JOIN_CODE_PREFIX) ? trimmed.slice(JOIN_CODE_PREFIX.length) : '';
  const bytes = /^[A-Za-z0-9_-]+$/.test(body) ? Buffer.from(body, 'base64url') : Buffer.alloc(0);
  if (bytes.byteLength !== CLUSTER_KEY_BYTES + CHECKSUM_BYTES) {
    throw new RbeeError(
      'CONFIG_INVALID',
      'this is not an rbee join code (expected rbee-… from `rbee cluster code`)',
    );
  }
  const key = bytes.subarray(0, CLUSTER_KEY_BYTES);
  if (!checksum(key).equals(bytes.subarray(CLUSTER_KEY_BYTES))) {
    throw new RbeeError('CONFIG_INVALID', 'the join code is damaged (checksum mismatch): copy it again');
  }
  return new Uint8Array(key);
}
