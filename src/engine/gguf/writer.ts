/**
 * A minimal GGUF v3 writer: typed metadata, tensor infos and 32-byte aligned tensor data, streamed
 * to disk tensor by tensor so that a 170 MB model never sits in one Buffer. The file is written to
 * `path + '.partial'` and renamed at the end, so a crash never leaves a half-written `.gguf`.
 * The layout it writes is in docs/test-models.md.
 */
import { open, rename, rm } from 'node:fs/promises';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { encodeTensorData, type GgmlType, Q8_0_BLOCK, Q8_0_BLOCK_BYTES } from './encoders.js';

const GGML_TYPE_ID: Record<GgmlType, number> = { f32: 0, f16: 1, q8_0: 8 };

/** Metadata value types (GGUF spec ids). */
const VALUE_TYPE = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
} as const;

export type GgufScalarType = Exclude<keyof typeof VALUE_TYPE, 'array' | 'u64' | 'i64' | 'string' | 'bool'>;

export type GgufValue =
  | { type: GgufScalarType; value: number }
  | { type: 'u64' | 'i64'; value: bigint }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; itemType: 'string'; value: readonly string[] }
  | { type: 'array'; itemType: GgufScalarType; value: ArrayLike<number> };

/** Shorthands for building metadata: `{ 'llama.block_count': gguf.u32(2) }`. */
export const gguf = {
  u32: (value: number): GgufValue => ({ type: 'u32', value }),
  i32: (value: number): GgufValue => ({ type: 'i32', value }),
  f32: (value: number): GgufValue => ({ type: 'f32', value }),
  bool: (value: boolean): GgufValue => ({ type: 'bool', value }),
  string: (value: string): GgufValue => ({ type: 'string', value }),
  strings: (value: readonly string[]): GgufValue => ({ type: 'array', itemType: 'string', value }),
  f32s: (value: ArrayLike<number>): GgufValue => ({ type: 'array', itemType: 'f32', value }),
  i32s: (value: ArrayLike<number>): GgufValue => ({ type: 'array', itemType: 'i32', value }),
};

export interface GgufTensorSpec {
  name: string;
  /** ggml order: the row length (ne[0]) first. */
  dims: readonly number[];
  type: GgmlType;
  /**
   * Fills `out` with the values of elements `[start, start + out.length)` in storage order. Called
   * with consecutive, increasing ranges, so a sequential generator can back it.
   */
  fill: (out: Float32Array, start: number) => void;
}

export interface WriteGgufInit {
  path: string;
  /** Written in insertion order. Must not contain `general.alignment` (the writer adds it). */
  metadata: Readonly<Record<string, GgufValue>>;
  tensors: readonly GgufTensorSpec[];
  /** Defaults to 32, the GGUF default. */
  alignment?: number;
  signal?: AbortSignal;
}

export interface WriteGgufResult {
  path: string;
  bytes: number;
}

/** Elements per chunk handed to `fill`: a multiple of the Q8_0 block, a few MB of floats. */
const CHUNK_ELEMENTS = 1 << 20;

export function elementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

export function tensorByteSize(type: GgmlType, elements: number): number {
  switch (type) {
    case 'f32':
      return elements * 4;
    case 'f16':
      return elements * 2;
    case 'q8_0':
      return (elements / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
  }
}

export async function writeGguf(init: WriteGgufInit): Promise<WriteGgufResult> {
  const alignment = init.alignment ?? 32;
  validate(init, alignment);
  const { signal } = init;
  throwIfAborted(signal);

  const sizes = init.tensors.map((t) => tensorByteSize(t.type, elementCount(t.dims)));
  const offsets: number[] = [];
  let dataSize = 0;
  for (const size of sizes) {
    offsets.push(dataSize);
    dataSize = alignUp(dataSize + size, alignment);
  }
  const header = encodeHeader(init, offsets, alignment);
  const headerPadded = alignUp(header.length, alignment);

  const partial = `${init.path}.partial`;
  const file = await open(partial, 'w').catch((error: unknown) => {
    throw ioError(error, partial);
  });
  let closed = false;
  try {
    let position = 0;
    const write = async (buffer: Uint8Array): Promise<void> => {
      let done = 0;
      while (done < buffer.length) {
        const { bytesWritten } = await file.write(buffer, done, buffer.length - done, position);
        done += bytesWritten;
        position += bytesWritten;
      }
    };
    await write(header);
    await write(new Uint8Array(headerPadded - header.length));

    const floats = new Float32Array(CHUNK_ELEMENTS);
    const out = Buffer.alloc(CHUNK_ELEMENTS * 4);
    for (const [i, tensor] of init.tensors.entries()) {
      const total = elementCount(tensor.dims);
      for (let start = 0; start < total; start += CHUNK_ELEMENTS) {
        throwIfAborted(signal);
        const count = Math.min(CHUNK_ELEMENTS, total - start);
        const src = floats.subarray(0, count);
        tensor.fill(src, start);
        const bytes = encodeTensorData(tensor.type, src, out);
        await write(out.subarray(0, bytes));
      }
      const size = sizes[i] ?? 0;
      const padding = alignUp(size, alignment) - size;
      if (padding > 0) await write(new Uint8Array(padding));
    }
    await file.sync();
    await file.close();
    closed = true;
    await rename(partial, init.path);
    return { path: init.path, bytes: position };
  } catch (error) {
    if (!closed) await file.close().catch(() => undefined);
    await rm(partial, { force: true }).catch(() => undefined);
    throw error instanceof RbeeError ? error : ioError(error, init.path);
  }
}

/** Like `signal.throwIfAborted()`, but as an RbeeError (JOB_CANCELLED, or TIMEOUT for a deadline). */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw toRbeeError(signal.reason);
}

function validate(init: WriteGgufInit, alignment: number): void {
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) {
    throw new RbeeError('BAD_REQUEST', `GGUF alignment must be a positive multiple of 8, got ${alignment}`);
  }
  if (Object.hasOwn(init.metadata, 'general.alignment')) {
    throw new RbeeError('BAD_REQUEST', 'general.alignment is set by the writer; pass `alignment` instead');
  }
  const names = new Set<string>();
  for (const t of init.tensors) {
    if (names.has(t.name)) throw new RbeeError('BAD_REQUEST', `duplicate tensor name ${t.name}`);
    names.add(t.name);
    if (t.dims.length === 0 || t.dims.length > 4 || t.dims.some((d) => !Number.isInteger(d) || d <= 0)) {
      throw new RbeeError('BAD_REQUEST', `tensor ${t.name} has invalid dims [${t.dims.join(', ')}]`);
    }
    // Q8_0 blocks run along rows; ggml requires the row length to be a whole number of blocks.
    if (t.type === 'q8_0' && (t.dims[0] ?? 0) % Q8_0_BLOCK !== 0) {
      throw new RbeeError('BAD_REQUEST', `tensor ${t.name}: Q8_0 needs a row length divisible by 32`);
    }
  }
}

function ioError(error: unknown, path: string): RbeeError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC'
    ? new RbeeError('DISK_FULL', `disk full while writing ${path}`, { cause: error })
    : toRbeeError(error);
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** Builds header, metadata and tensor infos (small: the vocab is the largest part). */
function encodeHeader(init: WriteGgufInit, offsets: readonly number[], alignment: number): Buffer {
  const out = new ByteSink();
  out.bytes(Buffer.from('GGUF', 'ascii'));
  out.u32(3);
  out.u64(init.tensors.length);
  const entries = Object.entries(init.metadata);
  out.u64(entries.length + 1);
  writeKv(out, 'general.alignment', gguf.u32(alignment));
  for (const [key, value] of entries) writeKv(out, key, value);
  for (const [i, t] of init.tensors.entries()) {
    out.string(t.name);
    out.u32(t.dims.length);
    for (const d of t.dims) out.u64(d);
    out.u32(GGML_TYPE_ID[t.type]);
    out.u64(offsets[i] ?? 0);
  }
  return out.finish();
}

function writeKv(out: ByteSink, key: string, value: GgufValue): void {
  out.string(key);
  out.u32(VALUE_TYPE[value.type]);
  switch (value.type) {
    case 'string':
      out.string(value.value);
      return;
    case 'bool':
      out.u8(value.value ? 1 : 0);
      return;
    case 'u64':
      out.big(value.value, false);
      return;
    case 'i64':
      out.big(value.value, true);
      return;
    case 'array':
      out.u32(VALUE_TYPE[value.itemType]);
      out.u64(value.value.length);
      if (value.itemType === 'string') for (const s of value.value) out.string(s);
      else for (let i = 0; i < value.value.length; i++) out.scalar(value.itemType, value.value[i] ?? 0);
      return;
    default:
      out.scalar(value.type, value.value);
  }
}

const SCALAR_BYTES: Record<GgufScalarType, number> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  f64: 8,
};

/** A growable little-endian byte buffer. */
class ByteSink {
  private buf = Buffer.alloc(64 * 1024);
  private len = 0;

  private reserve(n: number): number {
    if (this.len + n > this.buf.length) {
      const next = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
    }
    const at = this.len;
    this.len += n;
    return at;
  }

  // reserve() may swap `this.buf`, so it must run before `this.buf` is read.
  bytes(b: Uint8Array): void {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
  }
  u8(v: number): void {
    const at = this.reserve(1);
    this.buf.writeUInt8(v, at);
  }
  u32(v: number): void {
    const at = this.reserve(4);
    this.buf.writeUInt32LE(v, at);
  }
  u64(v: number): void {
    const at = this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), at);
  }
  big(v: bigint, signed: boolean): void {
    const at = this.reserve(8);
    if (signed) this.buf.writeBigInt64LE(v, at);
    else this.buf.writeBigUInt64LE(v, at);
  }
  string(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.bytes(b);
  }
  scalar(type: GgufScalarType, v: number): void {
    const at = this.reserve(SCALAR_BYTES[type]);
    const buf = this.buf;
    switch (type) {
      case 'u8':
        return void buf.writeUInt8(v, at);
      case 'i8':
        return void buf.writeInt8(v, at);
      case 'u16':
        return void buf.writeUInt16LE(v, at);
      case 'i16':
        return void buf.writeInt16LE(v, at);
      case 'u32':
        return void buf.writeUInt32LE(v, at);
      case 'i32':
        return void buf.writeInt32LE(v, at);
      case 'f32':
        return void buf.writeFloatLE(v, at);
      case 'f64':
        return void buf.writeDoubleLE(v, at);
    }
  }
  finish(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}
