/**
 * A clear error when the TF.js WASM heap is full.
 *
 * WebAssembly memory is 32-bit: the WASM backend's heap, which holds every tensor,
 * stops at 4 GiB. TF.js allocates a tensor with the module's `_malloc` and never
 * checks the result. When the heap cannot grow, `_malloc` returns 0 and the tensor is
 * placed at address 0: it then silently overwrites other tensors, or a later kernel
 * fails with "memory access out of bounds", or (measured with the multi-threaded
 * build: the Swin-T input gradient of 65 images at 224 px) the process hangs or exits
 * with status 0 in the middle of the computation, printing nothing.
 *
 * {@link guardWasmHeap} wraps the backend's allocator so a failed allocation throws a
 * {@link WasmHeapFullError} that names the request, the heap and what to change;
 * the engine's scopes unwind normally, so a notebook cell can catch it and go on.
 * `initBackend` installs it whenever it starts the WASM backend.
 */
import * as tf from "@tensorflow/tfjs";
import { formatBytes } from "./memory";

/** The WASM backend's heap limit (32-bit memory). */
export const WASM_HEAP_LIMIT_BYTES = 4 * 2 ** 30;

/** A tensor allocation on the WASM heap failed: the 4 GiB heap is full. */
export class WasmHeapFullError extends Error {
  constructor(
    /** Bytes requested. */
    readonly requestedBytes: number,
    /** Size of the heap when the request failed. */
    readonly heapBytes: number,
    /** Bytes held by live tensors (the engine's count). */
    readonly tensorBytes: number,
    readonly numTensors: number,
  ) {
    super(
      `the WASM heap is full: allocating ${formatBytes(requestedBytes)} for a tensor failed ` +
        `(heap ${formatBytes(heapBytes)}; WebAssembly memory stops at 4 GiB; ${formatBytes(tensorBytes)} in ${numTensors} live tensors). ` +
        `Lower the batch size or the number of images that go through a network at once (match.encoderChunk, the encoders' batchSize), ` +
        `use the Swin encoder's memory: "lean", dispose tensors you no longer need, or use a native backend (see README "Compute backends"), which has no such limit.`,
    );
    this.name = "WasmHeapFullError";
  }
}

interface Allocator {
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  HEAPU8: Uint8Array;
  [GUARDED]?: true;
}

const GUARDED = Symbol.for("pbip.wasmHeapGuard");

/**
 * Make the WASM backend's tensor allocations throw {@link WasmHeapFullError} instead
 * of returning address 0. Idempotent. `be` is `tf.backend()` while "wasm" is active.
 */
export function guardWasmHeap(be: unknown = tf.backend()): void {
  const mod = (be as { wasm?: Allocator }).wasm;
  if (!mod || typeof mod._malloc !== "function") throw new Error("guardWasmHeap: the active backend is not TF.js's WASM backend");
  if (mod[GUARDED]) return;
  // Emscripten's `_malloc` replaces itself with the raw export on its first call;
  // call it once so the function wrapped below is the final one.
  mod._free(mod._malloc(8));
  const raw = mod._malloc;
  mod._malloc = (bytes: number): number => {
    const ptr = raw(bytes);
    if (ptr === 0 && bytes > 0) {
      const m = tf.memory();
      throw new WasmHeapFullError(bytes, mod.HEAPU8.length, m.numBytes, m.numTensors);
    }
    return ptr;
  };
  mod[GUARDED] = true;
}
