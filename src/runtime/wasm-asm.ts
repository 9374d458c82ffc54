/**
 * A tiny WebAssembly assembler: enough of core WASM and the SIMD proposal to write
 * pbip's kernels for the TensorFlow.js WASM backend by hand, byte by byte, with no
 * toolchain. Modules import the backend's memory as `env.memory` and export their
 * functions as f0, f1, ... Used by `src/runtime/wasm-transformer.ts` (Swin and MiT kernels) and
 * `src/runtime/wasm-simd.ts` (matrix products and reductions).
 */
import type * as tf from "@tensorflow/tfjs";
import { kernelThreads, partition, runParts } from "./wasm-pool";

/** A WebAssembly memory (the WASM backend's). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
}
/** The parts of the WebAssembly JS API pbip uses (the project's TypeScript libs do not declare it). */
export interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
  validate(bytes: Uint8Array): boolean;
}
export const WebAssemblyApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

// ------------------------------------------------------------------ a tiny assembler

export const I32 = 0x7f;
export const F32 = 0x7d;
export const V128 = 0x7b;

export function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

export function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

export const str = (s: string) => [...uleb(s.length), ...Buffer.from(s, "utf8")];
export const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];
export const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];

/** Instruction emitters (a subset of core WASM and SIMD). */
export const op = {
  get: (i: number) => [0x20, ...uleb(i)],
  set: (i: number) => [0x21, ...uleb(i)],
  tee: (i: number) => [0x22, ...uleb(i)],
  i32: (v: number) => [0x41, ...sleb(v)],
  add: [0x6a],
  mul: [0x6c],
  ltU: [0x49],
  ltS: [0x48],
  f32Load: (offset = 0) => [0x2a, 2, ...uleb(offset)],
  f32Store: (offset = 0) => [0x38, 2, ...uleb(offset)],
  i32Load: (offset = 0) => [0x28, 2, ...uleb(offset)],
  i32Store: (offset = 0) => [0x36, 2, ...uleb(offset)],
  block: [0x02, 0x40],
  loop: [0x03, 0x40],
  if: [0x04, 0x40],
  else: [0x05],
  end: [0x0b],
  brIf: (d: number) => [0x0d, ...uleb(d)],
  br: (d: number) => [0x0c, ...uleb(d)],
  simd: (code: number, ...imm: number[]) => [0xfd, ...uleb(code), ...imm],
  f32Add: [0x92],
  f32Sub: [0x93],
  f32Mul: [0x94],
  f32Div: [0x95],
  f32Sqrt: [0x91],
  f32Const: (v: number) => {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v, 0);
    return [0x43, ...b];
  },
};
export const v128Load = (offset = 0) => op.simd(0x00, 2, ...uleb(offset));
export const v128Store = (offset = 0) => op.simd(0x0b, 2, ...uleb(offset));
export const v128Zero = () => op.simd(0x0c, ...new Array(16).fill(0));
export const f32x4Splat = () => op.simd(0x13);
export const f32x4Add = () => op.simd(0xe4);
export const f32x4Mul = () => op.simd(0xe6);
export const f32x4Extract = (lane: number) => op.simd(0x1f, lane);
export const f32x4Replace = (lane: number) => op.simd(0x20, lane);
export const f32x4Sub = () => op.simd(0xe5);
export const f32x4Div = () => op.simd(0xe7);
export const f32x4Max = () => op.simd(0xe9);
export const f32x4Abs = () => op.simd(0xe0);
export const f32x4Ge = () => op.simd(0x46);
export const f32x4Le = () => op.simd(0x45);
export const v128And = () => op.simd(0x4e);
export const f32x4Nearest = () => op.simd(0x6a);
export const i32x4TruncSat = () => op.simd(0xf8);
export const i32x4Add = () => op.simd(0xae);
export const i32x4Shl = () => op.simd(0xab);
export const bitselect = () => op.simd(0x52);
/** v128.const with four equal float32 lanes. */
export function f32x4Const(v: number): number[] {
  const b = Buffer.alloc(16);
  for (let l = 0; l < 4; l++) b.writeFloatLE(v, 4 * l);
  return op.simd(0x0c, ...b);
}
export function i32x4Const(v: number): number[] {
  const b = Buffer.alloc(16);
  for (let l = 0; l < 4; l++) b.writeInt32LE(v, 4 * l);
  return op.simd(0x0c, ...b);
}
/**
 * A counted loop that runs its body at least once: `v = 0; do { inner(); v += step } while (v < limit)`,
 * with `limit` the instructions that push the bound (a local's `get` or an `i32` constant).
 */
export function countedLoop(emit: (...xs: number[][]) => void, v: number, limit: number[], inner: () => void, step = 1): void {
  emit(op.i32(0), op.set(v), op.block, op.loop);
  inner();
  emit(op.get(v), op.i32(step), op.add, op.tee(v), limit, op.ltS, op.brIf(0), op.end, op.end);
}
/** `for v in 0..count` where the count (a local) may be 0, unlike {@link countedLoop}'s do-while. */
export function guardedLoop(emit: (...xs: number[][]) => void, v: number, count: number, inner: () => void): void {
  emit(op.i32(0), op.get(count), op.ltS, op.if);
  countedLoop(emit, v, op.get(count), inner);
  emit(op.end);
}
/** Counted loops nested outermost first, each over [counter local, bound instructions], around `inner`. */
export function countedLoops(emit: (...xs: number[][]) => void, loops: [number, number[]][], inner: () => void): void {
  const [first, ...rest] = loops;
  if (!first) return inner();
  countedLoop(emit, first[0], first[1], () => countedLoops(emit, rest, inner));
}
export const load32Zero = (offset = 0) => op.simd(0x5c, 2, ...uleb(offset));
export const load64Zero = (offset = 0) => op.simd(0x5d, 2, ...uleb(offset));

export interface FuncDef {
  params: number[];
  locals: number[];
  body: number[];
}

/**
 * Assemble a module of functions exported as f0, f1, ... that import `env.memory`
 * (declared shared when `sharedMemory`: the multi-threaded WASM build's memory is).
 */
export function assemble(funcs: FuncDef[], sharedMemory = false): Uint8Array {
  const types = funcs.map((f) => [0x60, ...vec(f.params.map((t) => [t])), 0]);
  // Memory limits: at least one page; a shared memory (the threaded WASM build's) must be
  // declared shared, with a maximum (4 GiB, no smaller than the backend's own).
  const limits = sharedMemory ? [0x03, 0x01, ...uleb(65536)] : [0x00, 0x01];
  const imports = vec([[...str("env"), ...str("memory"), 0x02, ...limits]]);
  const fsec = vec(funcs.map((_, i) => uleb(i)));
  const exps = vec(funcs.map((_, i) => [...str(`f${i}`), 0x00, ...uleb(i)]));
  const bodies = funcs.map((f) => {
    const groups: number[][] = [];
    for (const t of f.locals) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]!++;
      else groups.push([1, t]);
    }
    const body = [...vec(groups.map((g) => [...uleb(g[0]!), g[1]!])), ...f.body, 0x0b];
    return [...uleb(body.length), ...body];
  });
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, vec(types)),
    ...section(2, imports),
    ...section(3, fsec),
    ...section(7, exps),
    ...section(10, vec(bodies)),
  ]);
}


/** The parts of TF.js's WASM backend that pbip's kernels use. */
export interface WasmBackendLike {
  /** The Emscripten module: the single-threaded build exports its memory (`asm.memory`), the threaded build imports a shared one (`wasmMemory`). */
  wasm: { asm: { memory?: WasmMemory }; wasmMemory?: WasmMemory };
  dataIdMap: { get(id: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(dataId: object): boolean;
}

/** The backend's memory, and whether it is shared (multi-threaded build). Throws when neither build's memory is found. */
export function backendMemory(be: WasmBackendLike): { memory: WasmMemory; shared: boolean } {
  const memory = be.wasm.asm.memory ?? be.wasm.wasmMemory;
  if (!memory) throw new Error("pbip WASM kernels: the TF.js WASM backend exposes no memory (unknown build)");
  return { memory, shared: typeof SharedArrayBuffer !== "undefined" && memory.buffer instanceof SharedArrayBuffer };
}

/** A compiled kernel: numbers (byte addresses, counts) in, nothing out. */
export type KernelFn = (...args: number[]) => void;

/** A compiled kernel with its module (for pool workers) and a process-wide id. */
export interface CompiledKernel {
  fn: KernelFn;
  module: object;
  id: number;
}

let boundMemory: WasmMemory | undefined;
const kernelCache = new Map<string, CompiledKernel>();
let nextId = 0;

/**
 * The kernel `key`, assembled by `make` on first use and cached, bound to the backend's
 * current memory (a new backend instance has a new memory, which empties the cache).
 */
export function compiledKernelInfo(be: WasmBackendLike, key: string, make: () => FuncDef): CompiledKernel {
  const { memory, shared } = backendMemory(be);
  if (boundMemory !== memory) {
    boundMemory = memory;
    kernelCache.clear();
  }
  let k = kernelCache.get(key);
  if (!k) {
    const module = new WebAssemblyApi.Module(assemble([make()], shared));
    const inst = new WebAssemblyApi.Instance(module, { env: { memory } });
    k = { fn: inst.exports.f0 as KernelFn, module, id: nextId++ };
    kernelCache.set(key, k);
  }
  return k;
}

/** {@link compiledKernelInfo}'s function alone. */
export function compiledKernel(be: WasmBackendLike, key: string, make: () => FuncDef): KernelFn {
  return compiledKernelInfo(be, key, make).fn;
}

/**
 * Run a kernel over `total` units (rows, images, vectors) split into contiguous parts,
 * one per thread of pbip's kernel pool (`./wasm-pool`), when there are at least
 * `minUnits` units per part; `part(start, count)` gives the kernel and arguments of the
 * units [start, start + count). Part sizes are multiples of `align` (the last excepted).
 * Parts must write disjoint outputs; the result is the same bits as one call over all.
 */
export function runSplit(be: WasmBackendLike, total: number, minUnits: number, part: (start: number, count: number) => { kernel: CompiledKernel; args: number[] }, align = 1): void {
  const { memory } = backendMemory(be);
  const parts = partition(total, kernelThreads(memory), minUnits, align).map(([s, c]) => {
    const { kernel, args } = part(s, c);
    return { id: kernel.id, module: kernel.module, fn: kernel.fn, args };
  });
  runParts(memory, parts);
}

/** Byte address of a tensor's data in the backend's memory. */
export function tensorAddress(be: WasmBackendLike, t: tf.TensorInfo): number {
  return be.dataIdMap.get(t.dataId).memoryOffset;
}
