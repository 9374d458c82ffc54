/**
 * Runs pbip's own WASM kernels on more than one thread.
 *
 * TensorFlow.js's threaded WASM build (started by `./wasm-threads`) gives XNNPACK's
 * convolutions and single matrix products every core, but any other kernel, pbip's
 * generated ones included, runs on the calling thread alone. The backend's memory is
 * a shared `WebAssembly.Memory` in that build, so a worker thread can instantiate the
 * same kernel module on it and compute part of the output in place. This pool keeps
 * `threads - 1` such workers; {@link runParts} runs one kernel call per part, the first
 * on the calling thread and the others on the workers, and returns when all are done.
 *
 * Synchronisation is by `Atomics` on a small shared control block per worker (Node lets
 * the main thread block in `Atomics.wait`), so a kernel keeps TensorFlow.js's synchronous
 * kernel contract. Modules reach a worker through a `MessagePort` that the worker reads
 * synchronously (`receiveMessageOnPort`) the first time it needs one. A worker that
 * fails reports the error back and the call throws it; one that does not answer within
 * {@link WORKER_TIMEOUT_MS} makes the call throw rather than hang.
 *
 * Parts must write disjoint outputs and each element must be computed the same way
 * whatever the partition (true of every caller: rows, images or vectors of an
 * element-wise kernel), so results are bit-identical to the single-threaded call.
 * Nothing changes where the memory is not shared (the single-threaded build) or where
 * the thread count is 1 ({@link setKernelThreads}).
 */
import { Worker, MessageChannel, type MessagePort } from "node:worker_threads";
import type { WasmMemory } from "./wasm-asm";

/** How long the caller waits for a worker's part before it gives up (a kernel part takes milliseconds). */
export const WORKER_TIMEOUT_MS = 120_000;
const MAX_ARGS = 16;
const ERR_BYTES = 1024;
// Control block layout (Int32Array indices).
const SEQ = 0; // commands issued (main increments)
const DONE = 1; // commands finished (worker sets to SEQ's value)
const FN = 2; // kernel id to run, -1 to stop
const STATUS = 3; // 0 ok, 1 failed (message in the error bytes)
const NARGS = 4;
const ERRLEN = 5;

const WORKER_SOURCE = `
const { workerData, receiveMessageOnPort } = require("node:worker_threads");
const { memory, ctrlBuf, argsBuf, errBuf, port } = workerData;
const ctrl = new Int32Array(ctrlBuf);
const args = new Float64Array(argsBuf);
const err = new Uint8Array(errBuf);
const fns = [];
let seen = 0;
for (;;) {
  Atomics.wait(ctrl, ${SEQ}, seen);
  seen = Atomics.load(ctrl, ${SEQ});
  const id = ctrl[${FN}];
  if (id < 0) break;
  try {
    while (!fns[id]) {
      const m = receiveMessageOnPort(port);
      if (!m) throw new Error("kernel " + id + " was never sent to this worker");
      fns[m.message.id] = new WebAssembly.Instance(m.message.module, { env: { memory } }).exports.f0;
    }
    const n = ctrl[${NARGS}];
    const a = new Array(n);
    for (let i = 0; i < n; i++) a[i] = args[i];
    fns[id](...a);
    ctrl[${STATUS}] = 0;
  } catch (e) {
    const bytes = new TextEncoder().encode(String(e && e.stack || e)).subarray(0, ${ERR_BYTES});
    err.set(bytes);
    ctrl[${ERRLEN}] = bytes.length;
    ctrl[${STATUS}] = 1;
  }
  Atomics.store(ctrl, ${DONE}, seen);
  Atomics.notify(ctrl, ${DONE});
}
`;

interface PoolWorker {
  worker: Worker;
  port: MessagePort;
  ctrl: Int32Array;
  args: Float64Array;
  err: Uint8Array;
  sent: Set<number>;
}

/** One kernel call: the compiled module (shared by all threads), a numeric id for it, and its arguments. */
export interface KernelPart {
  id: number;
  module: object;
  fn: (...args: number[]) => void;
  args: number[];
}

let wanted: number | undefined;
let splitCalls = 0;

/** Kernel calls run in more than one part so far in this process (for tests and benchmarks). */
export function poolStats(): { splitCalls: number; workers: number } {
  return { splitCalls, workers: pool?.workers.length ?? 0 };
}
let pool: { memory: WasmMemory; workers: PoolWorker[] } | undefined;

/**
 * Threads for pbip's WASM kernels (the calling thread included); `undefined` restores
 * the default, the WASM backend's own thread count. 1 runs every kernel on the calling
 * thread. Used by benchmarks to compare the two; results are the same bits either way.
 */
export function setKernelThreads(n: number | undefined): void {
  if (n !== undefined && (!Number.isInteger(n) || n < 1)) throw new Error(`setKernelThreads: need an integer >= 1, got ${n}`);
  wanted = n;
  if (pool && pool.workers.length + 1 !== kernelThreads(pool.memory)) closePool();
}

/** Threads pbip's kernels use on the backend whose memory is `memory`: 1 unless it is shared. */
export function kernelThreads(memory: WasmMemory): number {
  if (typeof SharedArrayBuffer === "undefined" || !(memory.buffer instanceof SharedArrayBuffer)) return 1;
  if (wanted !== undefined) return wanted;
  // The backend's thread count is fixed once it has started: look it up once per memory.
  if (threadsOf?.memory !== memory) threadsOf = { memory, n: backendThreads() };
  return threadsOf.n;
}

let threadsOf: { memory: WasmMemory; n: number } | undefined;

function backendThreads(): number {
  try {
    const wasm = require("@tensorflow/tfjs-backend-wasm") as { getThreadsCount?: () => number };
    return Math.max(1, wasm.getThreadsCount?.() ?? 1);
  } catch {
    return 1;
  }
}

/** Stop the workers (they are unref'd, so a process exits without this). */
export function closePool(): void {
  if (!pool) return;
  for (const w of pool.workers) {
    w.ctrl[FN] = -1;
    Atomics.add(w.ctrl, SEQ, 1);
    Atomics.notify(w.ctrl, SEQ);
    w.port.close();
  }
  pool = undefined;
}

function workersFor(memory: WasmMemory, n: number): PoolWorker[] {
  if (pool && pool.memory === memory && pool.workers.length >= n) return pool.workers;
  if (pool && pool.memory !== memory) closePool();
  const workers = pool?.workers ?? [];
  while (workers.length < n) {
    const ctrlBuf = new SharedArrayBuffer(8 * 4);
    const argsBuf = new SharedArrayBuffer(MAX_ARGS * 8);
    const errBuf = new SharedArrayBuffer(ERR_BYTES);
    const { port1, port2 } = new MessageChannel();
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { memory, ctrlBuf, argsBuf, errBuf, port: port2 }, transferList: [port2] });
    worker.unref();
    port1.unref();
    workers.push({ worker, port: port1, ctrl: new Int32Array(ctrlBuf), args: new Float64Array(argsBuf), err: new Uint8Array(errBuf), sent: new Set() });
  }
  pool = { memory, workers };
  return workers;
}

/**
 * Run `parts[0]` on the calling thread and `parts[1..]` on pool workers, all at once;
 * return when every part is done. Needs `parts.length <= kernelThreads(memory)`.
 */
export function runParts(memory: WasmMemory, parts: KernelPart[]): void {
  if (parts.length === 0) return;
  if (parts.length === 1) {
    parts[0]!.fn(...parts[0]!.args);
    return;
  }
  const workers = workersFor(memory, parts.length - 1);
  splitCalls++;
  const issued: [PoolWorker, number][] = [];
  for (let i = 1; i < parts.length; i++) {
    const w = workers[i - 1]!;
    const p = parts[i]!;
    if (p.args.length > MAX_ARGS) throw new Error(`pbip kernel pool: ${p.args.length} arguments (at most ${MAX_ARGS})`);
    if (!w.sent.has(p.id)) {
      w.port.postMessage({ id: p.id, module: p.module });
      w.sent.add(p.id);
    }
    w.ctrl[FN] = p.id;
    w.ctrl[NARGS] = p.args.length;
    w.args.set(p.args);
    const seq = Atomics.add(w.ctrl, SEQ, 1) + 1;
    Atomics.notify(w.ctrl, SEQ);
    issued.push([w, seq]);
  }
  let mainError: unknown;
  try {
    parts[0]!.fn(...parts[0]!.args);
  } catch (e) {
    mainError = e;
  }
  // Always wait for the workers: they write into tensors the caller is about to use or free.
  const failures: string[] = [];
  for (const [w, seq] of issued) {
    const t0 = Date.now();
    for (;;) {
      const done = Atomics.load(w.ctrl, DONE);
      if (done === seq) break;
      if (Date.now() - t0 > WORKER_TIMEOUT_MS) {
        closePool();
        throw new Error(`pbip kernel pool: a worker did not finish its part within ${WORKER_TIMEOUT_MS / 1000} s`);
      }
      Atomics.wait(w.ctrl, DONE, done, 1000);
    }
    if (w.ctrl[STATUS] !== 0) failures.push(new TextDecoder().decode(w.err.slice(0, w.ctrl[ERRLEN])));
  }
  if (mainError !== undefined) throw mainError;
  if (failures.length) throw new Error(`pbip kernel pool: a worker's part failed: ${failures[0]}`);
}

/**
 * Split `total` units into at most `threads` contiguous parts of at least `minUnits`
 * each (and sizes multiple of `align`), as [start, count] pairs; one part when `total`
 * is too small to be worth a second thread.
 */
export function partition(total: number, threads: number, minUnits: number, align = 1): [number, number][] {
  const n = Math.max(1, Math.min(threads, Math.floor(total / Math.max(1, minUnits))));
  if (n === 1) return [[0, total]];
  const parts: [number, number][] = [];
  let start = 0;
  for (let i = 0; i < n; i++) {
    const left = total - start;
    let count = i === n - 1 ? left : Math.ceil(left / (n - i) / align) * align;
    count = Math.min(count, left);
    if (count > 0) parts.push([start, count]);
    start += count;
  }
  return parts;
}

