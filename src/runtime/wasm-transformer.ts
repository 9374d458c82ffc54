/**
 * WebAssembly SIMD kernels for transformer blocks (the Swin-T encoder and the MiT
 * backbone) on the TensorFlow.js WASM backend, which runs batched products of small
 * matrices (a 49x32 by 32x49 product per window and head) on a scalar fallback loop,
 * gathers rows slowly, and computes erf and exp with scalar library calls:
 *
 * - `windowMatMul(a, b, transposeA)`: C[i] = A[i] @ B[i] (or A[i]^T @ B[i]) for a batch
 *   of small row-major matrices, on pbip's generated GEMM (`src/runtime/wasm-simd.ts`).
 * - `gatherRows(x, index)`: out[r] = x[index[r]] (rows of C floats), 0 where index < 0.
 *   Swin's window partition with cyclic shift and zero padding, and its inverse,
 *   are such permutations.
 * - `geluWasm(x)`, `geluGradWasm(x, dy)`: exact-erf GELU and dy * GELU'(x) in one pass.
 * - `layerNormWasm`, `layerNormGradWasm`: LayerNorm forward (saving xhat, rstd) and its
 *   input gradient, each in one pass.
 * - `softmaxGradWasm(p, dp)`: the softmax's input gradient p (dp - sum(p dp)) in one pass
 *   per row (TF.js: four passes, the last-axis broadcasts on one thread; `npx tsx
 *   bench/kernel-speed.ts`). The forward softmax stays TF.js's (XNNPACK, both threads): a
 *   fused bias-and-softmax kernel on pbip's exp was tried and measured slower (1.3
 *   against 1.1 ns per value on Swin-T's attention for 20 images), so it was not kept.
 *
 * The Swin encoder (`src/encoders/swin.ts`) uses them all, the MiT backbone
 * (`src/model/backbones/mit.ts`) the GELU and LayerNorm kernels.
 *
 * The modules are assembled byte by byte (`src/runtime/wasm-asm.ts`, no toolchain), import the WASM
 * backend's own memory, and reads and writes tensors in place. Kernels are
 * registered for the `wasm` backend only; callers use {@link transformerKernelsAvailable}
 * and fall back to ordinary TensorFlow.js ops elsewhere. They are tested against
 * `tf.matMul`, index arithmetic and a float64 erf.
 */
import * as tf from "@tensorflow/tfjs";
import { gemm, relaxedSimdAvailable } from "./wasm-simd";
import { F32, I32, V128, WebAssemblyApi, assemble, bitselect, f32x4Abs, f32x4Add, f32x4Const, f32x4Div, f32x4Extract, f32x4Ge, f32x4Max, f32x4Mul, f32x4Nearest, f32x4Splat, f32x4Sub, i32x4Add, i32x4Const, i32x4Shl, i32x4TruncSat, op, v128Load, v128Store, v128Zero, compiledKernelInfo, runSplit, tensorAddress as addr, type FuncDef, type WasmBackendLike } from "./wasm-asm";

/** Four-float vectors below which an element-wise pass is not split across threads (about 0.1 ms of one thread). */
const MIN_PART_VECTORS = 1 << 15;

// ------------------------------------------------------------------ kernels

/**
 * Batched row gather: for each of `batch` images, out rows = x rows of that image
 * picked by the shared `idx` (zeros where idx < 0). Rows are `c4` four-float vectors.
 * Params: (x, idx, out, rows per image of idx, c4, batch, bytes per image of x).
 */
function gatherFunc(): FuncDef {
  const [X, IDX, OUT, ROWS, C4, BATCH, XSTEP, r, src, j, bi, ip] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
  const b: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((x) => b.push(...x));
  emit(op.i32(0), op.set(bi), op.block, op.loop);
  emit(op.get(IDX), op.set(ip), op.i32(0), op.set(r), op.block, op.loop);
  emit(op.get(ip), op.i32Load(), op.set(src), op.i32(0), op.set(j));
  emit(op.get(src), op.i32(0), op.ltS, op.if);
  // zero row
  emit(op.block, op.loop, op.get(OUT), v128Zero(), v128Store(), op.get(OUT), op.i32(16), op.add, op.set(OUT));
  emit(op.get(j), op.i32(1), op.add, op.tee(j), op.get(C4), op.ltS, op.brIf(0), op.end, op.end);
  emit(op.else);
  emit(op.get(X), op.get(src), op.get(C4), op.mul, op.i32(16), op.mul, op.add, op.set(src));
  emit(op.block, op.loop, op.get(OUT), op.get(src), v128Load(), v128Store(), op.get(OUT), op.i32(16), op.add, op.set(OUT), op.get(src), op.i32(16), op.add, op.set(src));
  emit(op.get(j), op.i32(1), op.add, op.tee(j), op.get(C4), op.ltS, op.brIf(0), op.end, op.end);
  emit(op.end);
  emit(op.get(ip), op.i32(4), op.add, op.set(ip));
  emit(op.get(r), op.i32(1), op.add, op.tee(r), op.get(ROWS), op.ltS, op.brIf(0), op.end, op.end);
  emit(op.get(X), op.get(XSTEP), op.add, op.set(X));
  emit(op.get(bi), op.i32(1), op.add, op.tee(bi), op.get(BATCH), op.ltS, op.brIf(0), op.end, op.end);
  return { params: [I32, I32, I32, I32, I32, I32, I32], locals: [I32, I32, I32, I32, I32], body: b };
}

/**
 * Exact-erf GELU, element-wise over `n4` four-float vectors. Forward (params x, y, n4):
 * y = x Phi(x). Backward (params x, dy, dx, n4): dx = dy (Phi(x) + x phi(x)).
 * Phi comes from erfc by Abramowitz and Stegun 7.1.26 (|error of erf| <= 1.5e-7, about
 * two float32 ulps at 1), and exp(-x^2/2) from a degree-7 Taylor polynomial after
 * Cody-Waite range reduction (relative error < 1e-7).
 */
function geluFunc(backward: boolean, unroll = GELU_UNROLL): FuncDef {
  // Forward params: x, y, n4. Backward params: x, dy, dx, n4. Then an i32 counter and eight v128 locals per unrolled vector.
  const X = 0;
  const Y = 1;
  const OUT = 2;
  const nParams = backward ? 4 : 3;
  const cnt = nParams - 1;
  const i = nParams;
  const local = (u: number) => {
    const base = nParams + 1 + 8 * u;
    return { x: base, ax: base + 1, t: base + 2, e: base + 3, q: base + 4, phi: base + 5, n: base + 6, r: base + 7 };
  };
  const ptrs = backward ? [X, Y, OUT] : [X, Y];
  const b: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((z) => b.push(...z));
  const A = [0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429];
  /** The vector at byte offset 16 u from the pointers, in locals of its own. */
  const vector = (u: number) => {
    const L = local(u);
    const off = 16 * u;
    emit(op.get(X), v128Load(off), op.tee(L.x), f32x4Abs(), op.set(L.ax));
    // t = 1 / (1 + (p / sqrt 2) |x|)
    emit(f32x4Const(1), f32x4Const(1), f32x4Const(0.3275911 / Math.SQRT2), op.get(L.ax), f32x4Mul(), f32x4Add(), f32x4Div(), op.set(L.t));
    // e = exp(-x^2 / 2)
    emit(op.get(L.x), op.get(L.x), f32x4Mul(), f32x4Const(-0.5), f32x4Mul(), op.set(L.r));
    emitExp(emit, L.r, L.n, L.r);
    emit(op.set(L.e));
    // q = Phi(-|x|) = 0.5 t (a1 + t (a2 + ...)) e
    emit(f32x4Const(A[4]!));
    for (let k = 3; k >= 0; k--) emit(op.get(L.t), f32x4Mul(), f32x4Const(A[k]!), f32x4Add());
    emit(op.get(L.t), f32x4Mul(), op.get(L.e), f32x4Mul(), f32x4Const(0.5), f32x4Mul(), op.set(L.q));
    // Phi(x) = x >= 0 ? 1 - q : q
    emit(f32x4Const(1), op.get(L.q), f32x4Sub(), op.get(L.q), op.get(L.x), f32x4Const(0), f32x4Ge(), bitselect(), op.set(L.phi));
    if (!backward) {
      emit(op.get(Y), op.get(L.x), op.get(L.phi), f32x4Mul(), v128Store(off));
    } else {
      emit(op.get(OUT), op.get(Y), v128Load(off), op.get(L.phi), op.get(L.x), op.get(L.e), f32x4Mul(), f32x4Const(1 / Math.sqrt(2 * Math.PI)), f32x4Mul(), f32x4Add(), f32x4Mul(), v128Store(off));
    }
  };
  /** While `vectors` more remain: run them (independent chains the CPU overlaps), advance. */
  const loop = (vectors: number) => {
    emit(op.block, op.loop);
    // break when n4 < i + vectors
    emit(op.get(cnt), op.get(i), op.i32(vectors), op.add, op.ltS, op.brIf(1));
    for (let u = 0; u < vectors; u++) vector(u);
    for (const p of ptrs) emit(op.get(p), op.i32(16 * vectors), op.add, op.set(p));
    emit(op.get(i), op.i32(vectors), op.add, op.set(i), op.br(0), op.end, op.end);
  };
  emit(op.i32(0), op.set(i));
  if (unroll > 1) loop(unroll);
  loop(1);
  return { params: new Array(nParams).fill(I32), locals: [I32, ...new Array(8 * Math.max(1, unroll)).fill(V128)], body: b };
}
/** Vectors per loop step: two independent chains overlap (1.86 -> 1.57 ns per element on two threads: `npx tsx bench/kernel-speed.ts`). */
const GELU_UNROLL = 2;

/**
 * e^v of the four floats in local `v` onto the stack, for v <= 88 (v is clamped below at
 * -87, where e^v is 1.6e-38): n = nearest(v log2 e), r = v - n ln 2 (Cody-Waite, two
 * parts), e^r by a degree-7 Taylor polynomial (relative error < 1e-7), times 2^n built in
 * the exponent bits. Uses locals `n` and `r` (r may be v).
 */
function emitExp(emit: (...xs: number[][]) => void, v: number, n: number, r: number): void {
  emit(op.get(v), f32x4Const(-87), f32x4Max(), op.set(r));
  emit(op.get(r), f32x4Const(Math.LOG2E), f32x4Mul(), f32x4Nearest(), op.set(n));
  emit(op.get(r), op.get(n), f32x4Const(0.693145751953125), f32x4Mul(), f32x4Sub(), op.get(n), f32x4Const(1.428606820309417e-6), f32x4Mul(), f32x4Sub(), op.set(r));
  emit(f32x4Const(EXP_TAYLOR[0]!));
  for (let k = 1; k < EXP_TAYLOR.length; k++) emit(op.get(r), f32x4Mul(), f32x4Const(EXP_TAYLOR[k]!), f32x4Add());
  emit(op.get(n), i32x4TruncSat(), i32x4Const(127), i32x4Add(), op.i32(23), i32x4Shl(), f32x4Mul());
}
const EXP_TAYLOR = [1 / 5040, 1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1, 1];

/**
 * The softmax's input gradient over rows of `T` floats: out = p (dp - sum(p dp)).
 * Params (p, dp, out, rows).
 */
function softmaxGradFunc(T: number): FuncDef {
  const [P, DP, OUT, ROWS] = [0, 1, 2, 3];
  const r = 4;
  const [acc, d] = [5, 6];
  const fd = 7;
  const T4 = Math.floor(T / 4);
  const tail = T - 4 * T4;
  const b: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((z) => b.push(...z));
  emit(op.i32(0), op.set(r), op.block, op.loop);
  emit(v128Zero(), op.set(acc));
  for (let j = 0; j < T4; j++) emit(op.get(P), v128Load(16 * j), op.get(DP), v128Load(16 * j), f32x4Mul(), op.get(acc), f32x4Add(), op.set(acc));
  emit(hsum(acc), op.set(fd));
  for (let l = 0; l < tail; l++) emit(op.get(fd), op.get(P), op.f32Load(16 * T4 + 4 * l), op.get(DP), op.f32Load(16 * T4 + 4 * l), op.f32Mul, op.f32Add, op.set(fd));
  emit(op.get(fd), f32x4Splat(), op.set(d));
  for (let j = 0; j < T4; j++) emit(op.get(OUT), op.get(P), v128Load(16 * j), op.get(DP), v128Load(16 * j), op.get(d), f32x4Sub(), f32x4Mul(), v128Store(16 * j));
  for (let l = 0; l < tail; l++) {
    const o = 16 * T4 + 4 * l;
    emit(op.get(OUT), op.get(P), op.f32Load(o), op.get(DP), op.f32Load(o), op.get(fd), op.f32Sub, op.f32Mul, op.f32Store(o));
  }
  for (const p of [P, DP, OUT]) emit(op.get(p), op.i32(4 * T), op.add, op.set(p));
  emit(op.get(r), op.i32(1), op.add, op.tee(r), op.get(ROWS), op.ltS, op.brIf(0), op.end, op.end);
  return { params: [I32, I32, I32, I32], locals: [I32, V128, V128, F32], body: b };
}

/** Horizontal sum of the v128 in local `v` onto the stack (f32). */
function hsum(v: number): number[] {
  return [...op.get(v), ...f32x4Extract(0), ...op.get(v), ...f32x4Extract(1), ...op.f32Add, ...op.get(v), ...f32x4Extract(2), ...op.f32Add, ...op.get(v), ...f32x4Extract(3), ...op.f32Add];
}

/**
 * LayerNorm over rows of `c4` four-float vectors, saving what the backward needs.
 * Params (x, g, b, y, xhat, rstd, rows, c4, invC: f32, eps: f32):
 * mean and variance per row (two passes), rstd = 1/sqrt(var + eps),
 * xhat = (x - mean) rstd, y = xhat g + b.
 */
function layerNormFunc(): FuncDef {
  const [X, G, B, Y, XH, RS, ROWS, C4, INVC, EPS] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
  const [r, j, px, acc, mean, rs, v] = [10, 11, 12, 13, 14, 15, 16];
  const b: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((z) => b.push(...z));
  const rowLoop = (body: () => void) => {
    emit(op.i32(0), op.set(j), op.get(X), op.set(px), op.block, op.loop);
    body();
    emit(op.get(px), op.i32(16), op.add, op.set(px), op.get(j), op.i32(1), op.add, op.tee(j), op.get(C4), op.ltS, op.brIf(0), op.end, op.end);
  };
  emit(op.i32(0), op.set(r), op.block, op.loop);
  // mean
  emit(v128Zero(), op.set(acc));
  rowLoop(() => emit(op.get(acc), op.get(px), v128Load(), f32x4Add(), op.set(acc)));
  emit(hsum(acc), op.get(INVC), op.f32Mul, f32x4Splat(), op.set(mean));
  // variance
  emit(v128Zero(), op.set(acc));
  rowLoop(() => emit(op.get(px), v128Load(), op.get(mean), f32x4Sub(), op.tee(v), op.get(v), f32x4Mul(), op.get(acc), f32x4Add(), op.set(acc)));
  emit(op.get(RS), op.f32Const(1), hsum(acc), op.get(INVC), op.f32Mul, op.get(EPS), op.f32Add, op.f32Sqrt, op.f32Div, op.f32Store(), op.get(RS), op.f32Load(), f32x4Splat(), op.set(rs));
  // normalise; g and b are walked with the row offset j*16
  rowLoop(() => {
    emit(op.get(px), v128Load(), op.get(mean), f32x4Sub(), op.get(rs), f32x4Mul(), op.set(v));
    emit(op.get(XH), op.get(v), v128Store(), op.get(Y), op.get(v), op.get(G), op.get(j), op.i32(16), op.mul, op.add, v128Load(), f32x4Mul());
    emit(op.get(B), op.get(j), op.i32(16), op.mul, op.add, v128Load(), f32x4Add(), v128Store());
    emit(op.get(XH), op.i32(16), op.add, op.set(XH), op.get(Y), op.i32(16), op.add, op.set(Y));
  });
  emit(op.get(px), op.set(X), op.get(RS), op.i32(4), op.add, op.set(RS));
  emit(op.get(r), op.i32(1), op.add, op.tee(r), op.get(ROWS), op.ltS, op.brIf(0), op.end, op.end);
  return { params: [I32, I32, I32, I32, I32, I32, I32, I32, F32, F32], locals: [I32, I32, I32, V128, V128, V128, V128], body: b };
}

/**
 * LayerNorm input gradient plus a residual: out = res + rstd (d - mean(d) - xhat mean(d xhat)),
 * d = dy g. Params (dy, xhat, rstd, g, res, out, rows, c4, invC: f32). Without `withRes`
 * the residual is not read (res is ignored): out = rstd (...).
 */
function layerNormGradFunc(withRes = true): FuncDef {
  const [DY, XH, RS, G, RES, OUT, ROWS, C4, INVC] = [0, 1, 2, 3, 4, 5, 6, 7, 8];
  const [r, j, off, s1, s2, d, m1, m2, rs] = [9, 10, 11, 12, 13, 14, 15, 16, 17];
  const b: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((z) => b.push(...z));
  const rowLoop = (body: () => void) => {
    emit(op.i32(0), op.set(j), op.i32(0), op.set(off), op.block, op.loop);
    body();
    emit(op.get(off), op.i32(16), op.add, op.set(off), op.get(j), op.i32(1), op.add, op.tee(j), op.get(C4), op.ltS, op.brIf(0), op.end, op.end);
  };
  const at = (base: number) => [...op.get(base), ...op.get(off), ...op.add];
  emit(op.i32(0), op.set(r), op.block, op.loop);
  emit(v128Zero(), op.set(s1), v128Zero(), op.set(s2));
  rowLoop(() => {
    emit(at(DY), v128Load(), op.get(G), op.get(j), op.i32(16), op.mul, op.add, v128Load(), f32x4Mul(), op.tee(d));
    emit(op.get(s1), f32x4Add(), op.set(s1), op.get(d), at(XH), v128Load(), f32x4Mul(), op.get(s2), f32x4Add(), op.set(s2));
  });
  emit(hsum(s1), op.get(INVC), op.f32Mul, f32x4Splat(), op.set(m1), hsum(s2), op.get(INVC), op.f32Mul, f32x4Splat(), op.set(m2));
  emit(op.get(RS), op.f32Load(), f32x4Splat(), op.set(rs));
  rowLoop(() => {
    emit(at(OUT));
    if (withRes) emit(at(RES), v128Load());
    emit(at(DY), v128Load(), op.get(G), op.get(j), op.i32(16), op.mul, op.add, v128Load(), f32x4Mul(), op.get(m1), f32x4Sub());
    emit(at(XH), v128Load(), op.get(m2), f32x4Mul(), f32x4Sub(), op.get(rs), f32x4Mul());
    if (withRes) emit(f32x4Add());
    emit(v128Store());
  });
  for (const p of [DY, XH, RES, OUT]) emit(op.get(p), op.get(C4), op.i32(16), op.mul, op.add, op.set(p));
  emit(op.get(RS), op.i32(4), op.add, op.set(RS));
  emit(op.get(r), op.i32(1), op.add, op.tee(r), op.get(ROWS), op.ltS, op.brIf(0), op.end, op.end);
  return { params: [I32, I32, I32, I32, I32, I32, I32, I32, F32], locals: [I32, I32, I32, V128, V128, V128, V128, V128, V128], body: b };
}

// ------------------------------------------------------------------ registration


const GATHER = "PbipGatherRows";
const GELU = "PbipGelu";
const GELU_GRAD = "PbipGeluGrad";
const LN = "PbipLayerNorm";
const LN_GRAD = "PbipLayerNormGrad";
const SOFTMAX_GRAD = "PbipSoftmaxGrad";
/**
 * Register an element-wise kernel over four-float vectors: params (the inputs' addresses
 * in `inputNames` order, the output's, the vector count), split across the kernel threads.
 */
function elementwiseKernel(kernelName: string, key: string, make: () => FuncDef, inputNames: string[]): void {
  tf.registerKernel({
    kernelName,
    backendName: "wasm",
    kernelFunc: ({ inputs, backend }) => {
      const be = backend as unknown as WasmBackendLike;
      const kernel = compiledKernelInfo(be, key, make);
      const ins = inputNames.map((n) => (inputs as Record<string, tf.TensorInfo>)[n]!);
      const out = be.makeOutput(ins[0]!.shape, "float32");
      const ptrs = [...ins, out].map((t) => addr(be, t));
      runSplit(be, tf.util.sizeFromShape(out.shape) / 4, MIN_PART_VECTORS / 4, (s, n) => ({ kernel, args: [...ptrs.map((p) => p + 16 * s), n] }));
      return out;
    },
  });
}

let registered: boolean | undefined;
function register(): boolean {
  if (registered !== undefined) return registered;
  registered = false;
  try {
    if (!tf.findBackend("wasm")) return false;
    if (!WebAssemblyApi.validate(assemble([gatherFunc(), geluFunc(false), geluFunc(true), layerNormFunc(), layerNormGradFunc(), layerNormGradFunc(false), softmaxGradFunc(49), softmaxGradFunc(3)]))) return false;
    // Another copy of this module (e.g. src and dist in one process) may have registered
    // the kernels already; they are self-contained, so use those.
    if (tf.getKernel(GATHER, "wasm") && tf.getKernel(LN_GRAD, "wasm")) {
      registered = true;
      return true;
    }
    tf.registerKernel({
      kernelName: GATHER,
      backendName: "wasm",
      kernelFunc: ({ inputs, backend, attrs }) => {
        const be = backend as unknown as WasmBackendLike;
        const kernel = compiledKernelInfo(be, "swin.gather", gatherFunc);
        const { x, index } = inputs as { x: tf.TensorInfo; index: tf.TensorInfo };
        const { rows, cols, batch } = attrs as unknown as { rows: number; cols: number; batch: number };
        const out = be.makeOutput([rows * batch, cols], "float32");
        const xStep = (x.shape[0]! / batch) * cols * 4;
        const [px, pi, po] = [addr(be, x), addr(be, index), addr(be, out)];
        const rowVectors = cols / 4;
        if (batch > 1) runSplit(be, batch, Math.ceil(MIN_PART_VECTORS / (rows * rowVectors)), (s, n) => ({ kernel, args: [px + s * xStep, pi, po + 16 * s * rows * rowVectors, rows, rowVectors, n, xStep] }));
        else runSplit(be, rows, Math.ceil(MIN_PART_VECTORS / rowVectors), (s, n) => ({ kernel, args: [px, pi + 4 * s, po + 16 * s * rowVectors, n, rowVectors, 1, xStep] }));
        return out;
      },
    });
    tf.registerKernel({
      kernelName: SOFTMAX_GRAD,
      backendName: "wasm",
      kernelFunc: ({ inputs, backend, attrs }) => {
        const be = backend as unknown as WasmBackendLike;
        const { p, dp } = inputs as { p: tf.TensorInfo; dp: tf.TensorInfo };
        const T = (attrs as unknown as { T: number }).T;
        const kernel = compiledKernelInfo(be, `swin.softmaxGrad.${T}`, () => softmaxGradFunc(T));
        const out = be.makeOutput(p.shape, "float32");
        const [pp, pd, po] = [addr(be, p), addr(be, dp), addr(be, out)];
        // Whole rows per thread.
        runSplit(be, tf.util.sizeFromShape(p.shape) / T, Math.ceil((4 * MIN_PART_VECTORS) / T), (st, n) => ({ kernel, args: [pp + 4 * T * st, pd + 4 * T * st, po + 4 * T * st, n] }));
        return out;
      },
    });
    elementwiseKernel(GELU, "swin.gelu", () => geluFunc(false), ["x"]);
    elementwiseKernel(GELU_GRAD, "swin.geluGrad", () => geluFunc(true), ["x", "dy"]);
    tf.registerKernel({
      kernelName: LN,
      backendName: "wasm",
      kernelFunc: ({ inputs, backend, attrs }) => {
        const be = backend as unknown as WasmBackendLike;
        const kernel = compiledKernelInfo(be, "swin.layerNorm", layerNormFunc);
        const { x, g, b } = inputs as { x: tf.TensorInfo; g: tf.TensorInfo; b: tf.TensorInfo };
        const [rows, cols] = x.shape as [number, number];
        const y = be.makeOutput([rows, cols], "float32");
        const xhat = be.makeOutput([rows, cols], "float32");
        const rstd = be.makeOutput([rows, 1], "float32");
        const m = be.dataIdMap;
        const o = (t: tf.TensorInfo) => m.get(t.dataId).memoryOffset;
        const eps = (attrs as unknown as { eps: number }).eps;
        const rowBytes = 4 * cols;
        runSplit(be, rows, Math.ceil(MIN_PART_VECTORS / 2 / (cols / 4)), (s, n) => ({ kernel, args: [o(x) + s * rowBytes, o(g), o(b), o(y) + s * rowBytes, o(xhat) + s * rowBytes, o(rstd) + 4 * s, n, cols / 4, 1 / cols, eps] }));
        return [y, xhat, rstd];
      },
    });
    tf.registerKernel({
      kernelName: LN_GRAD,
      backendName: "wasm",
      kernelFunc: ({ inputs, backend }) => {
        const be = backend as unknown as WasmBackendLike;
        const { dy, xhat, rstd, g, res } = inputs as Record<"dy" | "xhat" | "rstd" | "g" | "res", tf.TensorInfo | undefined>;
        const kernel = res ? compiledKernelInfo(be, "swin.layerNormGrad", layerNormGradFunc) : compiledKernelInfo(be, "swin.layerNormGrad0", () => layerNormGradFunc(false));
        const [rows, cols] = dy!.shape as [number, number];
        const out = be.makeOutput([rows, cols], "float32");
        const m = be.dataIdMap;
        const o = (t: tf.TensorInfo) => m.get(t.dataId).memoryOffset;
        const rowBytes = 4 * cols;
        runSplit(be, rows, Math.ceil(MIN_PART_VECTORS / 2 / (cols / 4)), (s, n) => ({ kernel, args: [o(dy!) + s * rowBytes, o(xhat!) + s * rowBytes, o(rstd!) + 4 * s, o(g!), res ? o(res) + s * rowBytes : 0, o(out) + s * rowBytes, n, cols / 4, 1 / cols] }));
        return out;
      },
    });
    registered = true;
  } catch {
    registered = false;
  }
  return registered;
}

/** True when the active backend is `wasm` with SIMD and the kernels are registered. */
export function transformerKernelsAvailable(): boolean {
  return tf.getBackend() === "wasm" && register();
}

/**
 * Batched product of small matrices on the WASM backend: a [n, M, K] (or, with
 * `transposeA`, [n, K, M], multiplied as its transpose) times b [n, K, N] -> [n, M, N].
 * Leading dimensions of rank-4 inputs are kept. Not differentiable by itself (used
 * inside custom-gradient ops). Requires {@link transformerKernelsAvailable}. Runs on
 * pbip's generated GEMM ({@link gemm}).
 */
export function windowMatMul(a: tf.Tensor, b: tf.Tensor, transposeA = false): tf.Tensor {
  if (!transformerKernelsAvailable()) throw new Error("windowMatMul: needs the wasm backend with SIMD (check transformerKernelsAvailable() first)");
  return gemm(a, b, { transposeA, tile: { mr: 4, nv: 2, fma: relaxedSimdAvailable() } });
}

/**
 * A linear layer's product x [M, K] @ w [K, N] (+ bias [N], added as the rows' starting
 * values) -> [M, N] on pbip's GEMM: w packed into
 * column panels, rows of x split across the kernel threads (`./wasm-pool`), and fused
 * multiply-adds where relaxed SIMD is on ({@link relaxedSimdAvailable}). On two threads
 * 5-30% faster than XNNPACK's product on Swin-T's and MiT-b1's layer shapes for a batch
 * (`npx tsx bench/gemm-speed.ts`); the Swin encoder's and MiT's linear layers use it.
 * The bias is where the rows start (as XNNPACK's fused product does), not a separate
 * pass. Not differentiable by itself. Requires {@link transformerKernelsAvailable}.
 */
export function linearMatMul(x: tf.Tensor2D, w: tf.Tensor2D, bias?: tf.Tensor1D): tf.Tensor2D {
  if (!transformerKernelsAvailable()) throw new Error("linearMatMul: needs the wasm backend with SIMD (check transformerKernelsAvailable() first)");
  return gemm(x, w, { tile: { mr: 4, nv: 2, fma: relaxedSimdAvailable() }, bias }) as tf.Tensor2D;
}

/**
 * A linear layer's weight gradient x^T dy for x [K, M] and dy [K, N] -> [M, N] on pbip's
 * GEMM, x read transposed in place (no transposed copy), the shared dimension (the
 * batch's tokens, 31360 for MiT-b1's first stage at batch 10 and 224 px) in blocks,
 * rows split across the kernel threads. Not differentiable by itself. Requires
 * {@link transformerKernelsAvailable}.
 */
export function weightGradMatMul(x: tf.Tensor2D, dy: tf.Tensor2D): tf.Tensor2D {
  if (!transformerKernelsAvailable()) throw new Error("weightGradMatMul: needs the wasm backend with SIMD (check transformerKernelsAvailable() first)");
  return gemm(x, dy, { transposeA: true, tile: { mr: 4, nv: 2, fma: relaxedSimdAvailable() } }) as tf.Tensor2D;
}

/**
 * Row gather per image: x holds `batch` images of R rows each ([batch * R, C], C a
 * multiple of 4); the result holds, for every image, its rows picked by `index`
 * (length R'), zero rows where index < 0: [batch * R', C]. WASM only.
 */
export function gatherRows(x: tf.Tensor2D, index: tf.Tensor1D, batch = 1): tf.Tensor2D {
  const cols = x.shape[1];
  if (cols % 4 !== 0) throw new Error(`gatherRows: ${cols} columns is not a multiple of 4`);
  if (x.shape[0] % batch !== 0) throw new Error(`gatherRows: ${x.shape[0]} rows do not split into ${batch} images`);
  return tf.engine().runKernel(GATHER, { x, index }, { rows: index.shape[0], cols, batch } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
}

/**
 * Exact-erf GELU, x Phi(x), in one pass (WASM; size a multiple of 4). See {@link geluFunc}
 * for the accuracy (erf within 1.5e-7).
 */
export function geluWasm(x: tf.Tensor): tf.Tensor {
  if (x.size % 4 !== 0) throw new Error(`geluWasm: ${x.size} elements is not a multiple of 4`);
  return tf.engine().runKernel(GELU, { x }, {}) as tf.Tensor;
}

/** dy * GELU'(x) = dy (Phi(x) + x phi(x)) in one pass (WASM; size a multiple of 4). */
export function geluGradWasm(x: tf.Tensor, dy: tf.Tensor): tf.Tensor {
  if (x.size % 4 !== 0 || dy.size !== x.size) throw new Error(`geluGradWasm: sizes ${x.size} and ${dy.size}`);
  return tf.engine().runKernel(GELU_GRAD, { x, dy }, {}) as tf.Tensor;
}

/** The softmax's input gradient p (dp - sum(p dp)) over the last axis, in one pass per row (WASM). */
export function softmaxGradWasm(p: tf.Tensor, dp: tf.Tensor): tf.Tensor {
  if (!tf.util.arraysEqual(p.shape, dp.shape)) throw new Error(`softmaxGradWasm: shapes [${p.shape}] and [${dp.shape}]`);
  return tf.engine().runKernel(SOFTMAX_GRAD, { p, dp }, { T: p.shape[p.rank - 1]! } as unknown as tf.NamedAttrMap) as tf.Tensor;
}

/**
 * LayerNorm over the last axis of x [N, C] (C a multiple of 4) in one WASM kernel:
 * returns y = xhat g + b, xhat = (x - mean) rstd and rstd [N, 1] = 1/sqrt(var + eps).
 */
export function layerNormWasm(x: tf.Tensor2D, g: tf.Tensor1D, b: tf.Tensor1D, eps: number): { y: tf.Tensor2D; xhat: tf.Tensor2D; rstd: tf.Tensor2D } {
  if (x.shape[1] % 4 !== 0) throw new Error(`layerNormWasm: ${x.shape[1]} channels is not a multiple of 4`);
  const [y, xhat, rstd] = tf.engine().runKernel(LN, { x, g, b }, { eps } as unknown as tf.NamedAttrMap) as tf.Tensor2D[];
  return { y: y!, xhat: xhat!, rstd: rstd! };
}

/**
 * The LayerNorm input gradient rstd (dy g - mean(dy g) - xhat mean(dy g xhat)), plus
 * `res` when given (a residual branch's gradient, added in the same pass), in one WASM kernel.
 */
export function layerNormGradWasm(dy: tf.Tensor2D, xhat: tf.Tensor2D, rstd: tf.Tensor2D, g: tf.Tensor1D, res?: tf.Tensor2D): tf.Tensor2D {
  return tf.engine().runKernel(LN_GRAD, res ? { dy, xhat, rstd, g, res } : { dy, xhat, rstd, g }, {}) as tf.Tensor2D;
}
