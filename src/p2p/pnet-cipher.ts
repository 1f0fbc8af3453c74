/**
 * Keeps the cluster key's cipher from outgrowing its memory. @libp2p/pnet encrypts every byte of a
 * connection with the `xsalsa20` package (1.2.0), whose WebAssembly build works in one memory shared
 * by all ciphers of the process (two per connection, one each way) and capped at 1000 pages
 * (62.5 MiB). Each cipher keeps its own view of that memory; when one grows it, the others' views
 * are left on the old, now detached buffer, which reads as length 0. The next call on such a cipher
 * then "grows" the memory by its whole input again, detaching the others' views in turn. A
 * connection's two directions alternate all the time (data one way, window updates the other), so
 * the memory grows by about the bytes sent until `grow` throws "Maximum memory size exceeded": the
 * connection is aborted after 45–60 MB, and every stream on it ends mid-frame.
 *
 * The library has no setting for it, so its cipher's `update` is wrapped on the prototype: a view
 * that is not on the memory's current buffer is renewed first, and the library's own size check then
 * grows the memory only when the input does not fit (the memory stays at the largest single write).
 * Should a later version change that shape, nothing breaks here; `installPnetCipherFix` returns false
 * and connections break off as before.
 */
import { createRequire } from 'node:module';

interface WasmXor {
  _memory: Uint8Array;
  realloc: (this: WasmXor, size: number) => void;
  update: (this: WasmXor, input: Uint8Array, output: Uint8Array) => void;
  finalize: (this: WasmXor) => void;
}
/** What is used of WebAssembly.Memory (Node's types declare too little of it). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow: (this: WasmMemory, delta: number) => number;
}
const memoryPrototype = (globalThis as unknown as { WebAssembly: { Memory: { prototype: WasmMemory } } })
  .WebAssembly.Memory.prototype;
type XSalsa20 = (nonce: Uint8Array, key: Uint8Array) => { _xor?: unknown; finalize(): void };

let installed = false;

function isWasmXor(value: unknown): value is WasmXor {
  if (typeof value !== 'object' || value === null) return false;
  const xor = value as Partial<WasmXor>;
  return (
    xor._memory instanceof Uint8Array &&
    typeof xor.realloc === 'function' &&
    typeof xor.update === 'function' &&
    typeof xor.finalize === 'function'
  );
}

/** The `xsalsa20` module exactly as @libp2p/pnet resolves it (the instance its connections use). */
function loadPnetXsalsa20(): XSalsa20 | undefined {
  try {
    const required: unknown = createRequire(import.meta.resolve('@libp2p/pnet'))('xsalsa20');
    return typeof required === 'function' ? (required as XSalsa20) : undefined;
  } catch {
    return undefined;
  }
}

/** Idempotent; returns whether the fix is in place (true too where no WebAssembly build is used). */
export function installPnetCipherFix(): boolean {
  if (installed) return true;
  const xsalsa20 = loadPnetXsalsa20();
  if (xsalsa20 === undefined) return false;
  const probe = xsalsa20(new Uint8Array(24), new Uint8Array(32));
  const xor = probe._xor;
  if (!isWasmXor(xor)) {
    probe.finalize();
    // the pure JavaScript build (no WebAssembly) has no shared memory to outgrow
    return typeof xor === 'object' && xor !== null && !('_memory' in xor);
  }
  // the memory is private to the module: catch it in the one place the module touches it, a
  // `realloc` to the size it already has (grow by 0 pages, which only renews the buffer)
  let memory: WasmMemory | undefined;
  const grow = memoryPrototype.grow;
  memoryPrototype.grow = new Proxy(grow, {
    apply(target, memoryThis: WasmMemory, args: [number]) {
      memory ??= memoryThis;
      return Reflect.apply(target, memoryThis, args);
    },
  });
  try {
    xor.realloc(xor._memory.length);
  } finally {
    memoryPrototype.grow = grow;
    probe.finalize();
  }
  const shared = memory;
  if (shared === undefined) return false;
  const proto = Object.getPrototypeOf(xor) as WasmXor;
  const update = proto.update;
  proto.update = function (this: WasmXor, input: Uint8Array, output: Uint8Array): void {
    if (this._memory.buffer !== shared.buffer) this._memory = new Uint8Array(shared.buffer);
    update.call(this, input, output);
  };
  installed = true;
  return true;
}
