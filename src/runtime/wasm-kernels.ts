/**
 * Kernels the TensorFlow.js WASM backend (4.22) lacks but training needs.
 *
 * The WASM backend ships forward convolutions but not the kernels their gradients
 * call: `Conv2DBackpropFilter`, `DepthwiseConv2dNativeBackpropInput`,
 * `DepthwiseConv2dNativeBackpropFilter`, and `UnsortedSegmentSum` (the gradient
 * of `gather`, used by relative position bias tables). Each is written here with
 * ops the WASM backend has (strided slices, matMul, depthwise convolution), which
 * keeps them exact and fast (im2col + matMul runs on XNNPACK).
 *
 * A kernel function receives plain TensorInfos; it wraps them as tensors, computes
 * inside `tidy`, and returns the result tensor, which the engine adopts. Ops run
 * inside a kernel are not recorded on the gradient tape.
 */
import * as tf from "@tensorflow/tfjs";
import { depthwiseInputGrad, periodicBinary, permuteCopy, permuteCopyFits, wasmSimdKernelsAvailable, type BinaryOp } from "./wasm-simd";
import { tensorAddress, type WasmBackendLike } from "./wasm-asm";

type Info = tf.TensorInfo;

/**
 * Wrap a kernel input as a tensor. `makeTensorFromTensorInfo` does not take a
 * reference on the data, so one is taken here; disposing the wrapper (the kernel's
 * `tidy` does) gives it back and leaves the caller's tensor intact.
 */
function asTensor(info: Info): tf.Tensor {
  const engine = tf.engine();
  const t = engine.makeTensorFromTensorInfo(info);
  engine.backend.incRef(info.dataId);
  return t;
}

/**
 * Pad, then take one window per filter tap: returns taps of shape [B, OH, OW, C], in
 * (kh, kw) order. The WASM backend runs strided slices in plain JavaScript (tens of
 * times slower than a plain slice), so a strided input is first split into its
 * stride x stride phases (one strided slice each, each 1/s^2 of the input); every
 * tap is then a plain slice of one phase.
 */
function filterTaps(x: tf.Tensor4D, info: tf.backend_util.Conv2DInfo): tf.Tensor4D[] {
  const { top, bottom, left, right } = info.padInfo;
  const [b, , , c] = x.shape;
  const sh = info.strideHeight;
  const sw = info.strideWidth;
  const needH = (info.outHeight - 1) * sh + (info.filterHeight - 1) * info.dilationHeight + 1;
  const needW = (info.outWidth - 1) * sw + (info.filterWidth - 1) * info.dilationWidth + 1;
  // Pad so that every tap's window exists, then to a multiple of the stride.
  let padB = Math.max(bottom, needH - x.shape[1] - top, 0);
  let padR = Math.max(right, needW - x.shape[2] - left, 0);
  padB += (sh - ((x.shape[1] + top + padB) % sh)) % sh;
  padR += (sw - ((x.shape[2] + left + padR) % sw)) % sw;
  const xp = top || padB || left || padR ? tf.pad(x, [[0, 0], [top, padB], [left, padR], [0, 0]]) : x;
  const phases = new Map<string, tf.Tensor4D>();
  const phase = (p: number, q: number): tf.Tensor4D => {
    const key = `${p},${q}`;
    let t = phases.get(key);
    if (!t) {
      t = sh === 1 && sw === 1 ? xp : (tf.stridedSlice(xp, [0, p, q, 0], [b, xp.shape[1], xp.shape[2], c], [1, sh, sw, 1]) as tf.Tensor4D);
      phases.set(key, t);
    }
    return t;
  };
  const taps: tf.Tensor4D[] = [];
  for (let kh = 0; kh < info.filterHeight; kh++) {
    for (let kw = 0; kw < info.filterWidth; kw++) {
      const h0 = kh * info.dilationHeight;
      const w0 = kw * info.dilationWidth;
      const ph = phase(h0 % sh, w0 % sw);
      taps.push(tf.slice(ph, [0, Math.floor(h0 / sh), Math.floor(w0 / sw), 0], [b, info.outHeight, info.outWidth, c]));
    }
  }
  return taps;
}

function checkNHWC(kernel: string, dataFormat: unknown): void {
  if (dataFormat !== undefined && dataFormat !== "NHWC") {
    throw new Error(`${kernel} on WASM (pbip kernel): only NHWC is supported, got ${String(dataFormat)}`);
  }
}

/** dW[kh,kw,ci,co] = sum over b,oh,ow of x_pad[b, oh*s+kh, ow*s+kw, ci] * dy[b,oh,ow,co]  (im2col + one matMul). */
export function conv2DBackpropFilter(x: tf.Tensor4D, dy: tf.Tensor4D, attrs: tf.Conv2DBackpropFilterAttrs): tf.Tensor4D {
  checkNHWC("Conv2DBackpropFilter", attrs.dataFormat);
  const filterShape = attrs.filterShape as [number, number, number, number];
  const info = tf.backend_util.computeConv2DInfo(
    x.shape,
    filterShape,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    "channelsLast",
  );
  return tf.tidy(() => {
    const n = info.batchSize * info.outHeight * info.outWidth;
    const dyFlat = tf.reshape(dy, [n, info.outChannels]);
    const k = info.filterHeight * info.filterWidth * info.inChannels;
    const onePixel = info.filterHeight === 1 && info.filterWidth === 1 && info.strideHeight === 1 && info.strideWidth === 1 && x.shape[1] === info.outHeight && x.shape[2] === info.outWidth;
    let colsT: tf.Tensor2D;
    if (onePixel) {
      // 1x1, stride 1, no padding (most convolutions of MobileNetV2): the input is its own im2col.
      colsT = tf.transpose(tf.reshape(x, [n, k])) as tf.Tensor2D;
    } else {
      const taps = filterTaps(x, info);
      const cols = taps.length === 1 ? taps[0]! : tf.concat(taps, 3);
      colsT = tf.transpose(tf.reshape(cols, [n, k])) as tf.Tensor2D;
    }
    // Transpose first, then an untransposed matMul: WASM's matMul with a transposed operand is far slower.
    return tf.reshape(tf.matMul(colsT, dyFlat), filterShape);
  });
}

/** dW[kh,kw,c,m] = sum over b,oh,ow of x_pad[b, oh*s+kh*d, ow*s+kw*d, c] * dy[b,oh,ow,c*M+m]. */
export function depthwiseConv2dNativeBackpropFilter(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  attrs: tf.DepthwiseConv2dNativeBackpropFilterAttrs,
): tf.Tensor4D {
  const filterShape = attrs.filterShape as [number, number, number, number];
  const info = tf.backend_util.computeConv2DInfo(
    x.shape,
    filterShape,
    attrs.strides,
    attrs.dilations,
    attrs.pad,
    attrs.dimRoundingMode,
    true,
    "channelsLast",
  );
  const [, , c, m] = filterShape;
  const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
  if ((sh === 1 && sw === 1) || (dh === 1 && dw === 1)) return depthwiseFilterByConv(x, dy, info, filterShape);
  return tf.tidy(() => {
    const taps = filterTaps(x, info);
    const dy5 = m === 1 ? dy : tf.reshape(dy, [info.batchSize, info.outHeight, info.outWidth, c, m]);
    const perTap = taps.map((t) => {
      if (m === 1) return tf.sum(tf.mul(t, dy5), [0, 1, 2]);
      return tf.sum(tf.mul(tf.expandDims(t, 4), dy5), [0, 1, 2]);
    });
    return tf.reshape(tf.stack(perTap), filterShape);
  });
}

/**
 * The depthwise filter gradient as one depthwise convolution (10x faster on WASM
 * than a slice, multiply and sum per tap): with the batch folded into the channels,
 * the padded input [1, H', W', B*C] is correlated with dy as the filter
 * [OH, OW, B*C, M]; filter dilation = the convolution's stride, output stride =
 * its dilation (tfjs needs one of the two to be 1). The output [KH, KW, B*C*M] is
 * summed over B.
 */
function depthwiseFilterByConv(x: tf.Tensor4D, dy: tf.Tensor4D, info: tf.backend_util.Conv2DInfo, filterShape: [number, number, number, number]): tf.Tensor4D {
  const [kh, kw, c, m] = filterShape;
  const { top, left } = info.padInfo;
  const b = info.batchSize;
  const needH = (info.outHeight - 1) * info.strideHeight + (kh - 1) * info.dilationHeight + 1;
  const needW = (info.outWidth - 1) * info.strideWidth + (kw - 1) * info.dilationWidth + 1;
  return tf.tidy(() => {
    const padB = Math.max(0, needH - top - x.shape[1]);
    const padR = Math.max(0, needW - left - x.shape[2]);
    let xp: tf.Tensor4D = top || left || padB || padR ? tf.pad(x, [[0, 0], [top, padB], [left, padR], [0, 0]]) : x;
    if (xp.shape[1] !== needH || xp.shape[2] !== needW) xp = tf.slice(xp, [0, 0, 0, 0], [b, needH, needW, c]);
    const input = tf.reshape(tf.transpose(xp, [1, 2, 0, 3]), [1, needH, needW, b * c]) as tf.Tensor4D;
    const dyT =
      m === 1
        ? tf.transpose(dy, [1, 2, 0, 3])
        : tf.transpose(tf.reshape(dy, [b, info.outHeight, info.outWidth, c, m]), [1, 2, 0, 3, 4]);
    const filter = tf.reshape(dyT, [info.outHeight, info.outWidth, b * c, m]) as tf.Tensor4D;
    const out = tf.depthwiseConv2d(input, filter, [info.dilationHeight, info.dilationWidth], "valid", "NHWC", [info.strideHeight, info.strideWidth]);
    const o = tf.slice(out, [0, 0, 0, 0], [1, kh, kw, b * c * m]);
    return tf.reshape(tf.sum(tf.reshape(o, [kh, kw, b, c * m]), 2), filterShape) as tf.Tensor4D;
  });
}

/**
 * dx = the transposed depthwise convolution of dy. With channel multiplier 1 and
 * channels in fours, pbip's SIMD scatter kernel ({@link depthwiseInputGrad}); else:
 * zero-insert dy by the stride, pad it fully, and correlate with the spatially
 * flipped filter (dilation kept).
 */
export function depthwiseConv2dNativeBackpropInput(
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  attrs: tf.DepthwiseConv2dNativeBackpropInputAttrs,
): tf.Tensor4D {
  const inputShape = attrs.inputShape as [number, number, number, number];
  const info = tf.backend_util.computeConv2DInfo(
    inputShape,
    filter.shape,
    attrs.strides,
    attrs.dilations,
    attrs.pad,
    attrs.dimRoundingMode,
    true,
    "channelsLast",
  );
  const [kh, kw, c, m] = filter.shape;
  // Channel multiplier 1 and channels in fours (every MobileNetV2 depthwise layer): one SIMD scatter pass.
  if (m === 1 && c % 4 === 0 && wasmSimdKernelsAvailable()) return depthwiseInputGrad(dy, filter, info);
  const { strideHeight: sh, strideWidth: sw, dilationHeight: dh, dilationWidth: dw } = info;
  const [b, h, w] = inputShape;
  return tf.tidy(() => {
    const cm = c * m;
    let up: tf.Tensor4D = dy;
    if (sh > 1 || sw > 1) {
      const six = tf.reshape(dy, [b, info.outHeight, 1, info.outWidth, 1, cm]);
      const padded = tf.pad(six, [[0, 0], [0, 0], [0, sh - 1], [0, 0], [0, sw - 1], [0, 0]]);
      const flat = tf.reshape<tf.Rank.R4>(padded, [b, info.outHeight * sh, info.outWidth * sw, cm]);
      up = tf.slice(flat, [0, 0, 0, 0], [b, (info.outHeight - 1) * sh + 1, (info.outWidth - 1) * sw + 1, cm]);
    }
    const ph = (kh - 1) * dh;
    const pw = (kw - 1) * dw;
    const full = tf.pad(up, [[0, 0], [ph, ph], [pw, pw], [0, 0]]);
    const flipped = tf.reverse(tf.reshape(filter, [kh, kw, cm, 1]), [0, 1]) as tf.Tensor4D;
    let out = tf.depthwiseConv2d(full, flipped, 1, "valid", "NHWC", [dh, dw]);
    if (m > 1) out = tf.sum(tf.reshape(out, [b, out.shape[1], out.shape[2], c, m]), 4) as tf.Tensor4D;
    // `out` is the gradient of the padded input, rows 0..L-1; rows no output touches get zeros.
    const { top, left } = info.padInfo;
    const needH = top + h - out.shape[1];
    const needW = left + w - out.shape[2];
    if (needH > 0 || needW > 0) out = tf.pad(out, [[0, 0], [0, Math.max(0, needH)], [0, Math.max(0, needW)], [0, 0]]);
    return tf.slice(out, [0, top, left, 0], [b, h, w, c]);
  });
}

/** out[s, ...] = sum of x[i, ...] over i with segmentIds[i] == s (ids outside [0, numSegments) are dropped), via a one-hot matMul. */
export function unsortedSegmentSum(x: tf.Tensor, segmentIds: tf.Tensor, numSegments: number): tf.Tensor {
  return tf.tidy(() => {
    const ids = tf.reshape(segmentIds, [-1]);
    const n = ids.shape[0];
    const rest = x.shape.slice(segmentIds.shape.length);
    const r = rest.reduce((a, v) => a * v, 1);
    const x2 = tf.reshape(x.dtype === "float32" ? x : tf.cast(x, "float32"), [n, r]);
    // Not tf.oneHot: the WASM OneHot kernel (4.22) writes int32 bits into a float32 output.
    const oneHot = tf.cast(tf.equal(tf.expandDims(tf.cast(ids, "int32"), 1), tf.expandDims(tf.range(0, numSegments, 1, "int32"), 0)), "float32");
    const out = tf.reshape(tf.matMul(tf.transpose(oneHot), x2), [numSegments, ...rest]);
    return x.dtype === "float32" ? out : tf.cast(out, x.dtype);
  });
}

let registered = false;

/** The kernel names this module adds to the `wasm` backend. */
export const WASM_EXTRA_KERNELS = [
  "Conv2DBackpropFilter",
  "DepthwiseConv2dNativeBackpropInput",
  "DepthwiseConv2dNativeBackpropFilter",
  "UnsortedSegmentSum",
] as const;

/** Register the missing kernels for the `wasm` backend (idempotent; skips any the backend already has). */
export function registerWasmKernels(): void {
  if (registered) return;
  registered = true;
  const have = new Set(tf.getKernelsForBackend("wasm").map((k) => k.kernelName));
  const add = (kernelName: string, fn: (inputs: Record<string, Info>, attrs: Record<string, unknown>) => tf.Tensor) => {
    if (have.has(kernelName)) return;
    tf.registerKernel({
      kernelName,
      backendName: "wasm",
      // tidy disposes the wrappers made by asTensor (the engine keeps the inputs alive).
      kernelFunc: ({ inputs, attrs }) =>
        tf.tidy(() => fn(inputs as unknown as Record<string, Info>, attrs as unknown as Record<string, unknown>)) as unknown as Info,
    });
  };
  add("Conv2DBackpropFilter", (i, a) =>
    conv2DBackpropFilter(asTensor(i.x!) as tf.Tensor4D, asTensor(i.dy!) as tf.Tensor4D, a as unknown as tf.Conv2DBackpropFilterAttrs),
  );
  add("DepthwiseConv2dNativeBackpropFilter", (i, a) =>
    depthwiseConv2dNativeBackpropFilter(
      asTensor(i.x!) as tf.Tensor4D,
      asTensor(i.dy!) as tf.Tensor4D,
      a as unknown as tf.DepthwiseConv2dNativeBackpropFilterAttrs,
    ),
  );
  add("DepthwiseConv2dNativeBackpropInput", (i, a) =>
    depthwiseConv2dNativeBackpropInput(
      asTensor(i.dy!) as tf.Tensor4D,
      asTensor(i.filter!) as tf.Tensor4D,
      a as unknown as tf.DepthwiseConv2dNativeBackpropInputAttrs,
    ),
  );
  add("UnsortedSegmentSum", (i, a) => unsortedSegmentSum(asTensor(i.x!), asTensor(i.segmentIds!), a.numSegments as number));
  overrideConv2DBackpropInput();
  overrideSlice();
  overrideTranspose();
  overrideGather();
  overrideIdentity();
  for (const [name, opName] of [["Add", "add"], ["Sub", "sub"], ["Multiply", "mul"]] as const) overrideBinary(name, opName);
}

/**
 * TF.js's WASM Add, Sub and Multiply run on one thread, and a broadcast of rank 5 on a
 * generic index loop (Swin-T's attention bias on [windows, 1, heads, 49, 49] scores: 22 ms
 * a call for 4 images). Where one float32 operand repeats along leading axes of the
 * other (same shapes included), pbip's SIMD kernel computes it on every thread
 * (`periodicBinary`); other broadcasts and types keep the original. Same IEEE results.
 */
function overrideBinary(name: string, opName: BinaryOp): void {
  overrideWasmKernel(name, (args, orig) => {
    const { a, b } = args.inputs as unknown as { a: Info; b: Info };
    if (tf.util.sizeFromShape(a.shape) + tf.util.sizeFromShape(b.shape) < BINARY_MIN_ELEMENTS) return orig(args);
    return periodicBinary(args.backend as unknown as WasmBackendLike, opName, a, b) ?? orig(args);
  });
}

/** Below this many elements TF.js's own kernel is as fast (no thread to wake, no checks). */
const BINARY_MIN_ELEMENTS = 1 << 14;

/**
 * The WASM backend's Identity copies its input into a new buffer. TF.js calls it for
 * every `tf.clone` and for each output of a `tf.customGrad` op (Swin-T's blocks and
 * linear layers, the trainer's stop-gradient): 1548 copies, 0.42 s and as many bytes of
 * heap in a release training step. Tensors are immutable, so this version shares the
 * input's buffer and counts a reference, as the CPU backend and the WASM backend's own
 * Reshape do. Strings keep the original.
 */
function overrideIdentity(): void {
  overrideWasmKernel("Identity", (args, orig) => {
    const x = (args.inputs as unknown as { x: Info }).x;
    if (x.dtype === "string") return orig(args);
    (args.backend as unknown as { incRef(dataId: unknown): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  });
}

/**
 * Copy plan of a slice: the innermost axes that the slice takes whole are merged with
 * the first one it cuts, so each contiguous run of the output is one copy. Returns the
 * run length, the outer sizes and strides (input elements) to walk, and the input
 * offset of the first run.
 */
export function sliceRuns(shape: readonly number[], begin: readonly number[], size: readonly number[]): { run: number; outer: number[]; strides: number[]; offset: number } {
  const strides = tf.util.computeStrides([...shape]);
  strides.push(1);
  let a = shape.length - 1;
  let run = size[a] ?? 1;
  while (a > 0 && size[a] === shape[a]) {
    a--;
    run *= size[a]!;
  }
  const offset = begin.reduce((o, b, i) => o + b * strides[i]!, 0);
  return { run, outer: size.slice(0, a), strides: strides.slice(0, a), offset };
}

/** The WASM backend's calls that the copy kernels below use (not in its public typings). */
interface HeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): Info;
  typedArrayFromHeap(t: Info): Float32Array | Int32Array | Uint8Array;
  readSync(dataId: unknown): ArrayLike<number>;
}

/**
 * Copy runs of `run` output elements, in output order, each starting at an input offset
 * that an odometer over the `outer` axes (input strides `strides`) advances from
 * `offset`, until `total` output elements are written; `copy(src, dst)` copies one run.
 */
function walkRuns(total: number, run: number, outer: readonly number[], strides: readonly number[], offset: number, copy: (src: number, dst: number) => void): void {
  const idx = new Array<number>(outer.length).fill(0);
  let src = offset;
  for (let dst = 0; dst < total; dst += run) {
    copy(src, dst);
    for (let d = idx.length - 1; d >= 0; d--) {
      src += strides[d]!;
      if (++idx[d]! < outer[d]!) break;
      src -= strides[d]! * outer[d]!;
      idx[d] = 0;
    }
  }
}

/**
 * The WASM backend's Slice reads its input with `readSync`, which copies the whole
 * input out of the heap, for every slice: splitting a 14-million-element vector into
 * 196 parts (the optimiser's flat update) took 42 s. And it copies one run of the
 * last axis at a time (a typed-array view and a copy per run): cutting one row and
 * column off [44, 57, 57, 96] (the gradient of MobileNetV2's asymmetric padding) made
 * 138 000 copies of 96 floats and took 0.4 s. This version reads through a view of
 * the heap, copies a contiguous slice in one go, and merges the axes the slice takes
 * whole into the run (2464 copies of 5376 floats there); runs under 16 elements are
 * copied element by element. Same bytes; strings keep the original kernel.
 */
function overrideSlice(): void {
  const origSlice = tf.getKernel("Slice", "wasm")?.kernelFunc;
  if (!origSlice) return;
  const slice = (args: KernelArgs): Info => {
    const x = (args.inputs as unknown as { x: Info }).x;
    const { begin, size } = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
    if (x.dtype === "string" || x.shape.length < 1) return origSlice(args) as Info;
    const [b, sz] = tf.slice_util.parseSliceParams(x as tf.Tensor, begin, size);
    const plan = sliceRuns(x.shape, b, sz);
    const be = args.backend as unknown as HeapBackend;
    // Views of the heap, taken after the output's allocation (which may grow it).
    const out = be.makeOutput(sz, x.dtype);
    const xs = be.typedArrayFromHeap(x);
    const os = be.typedArrayFromHeap(out);
    const run = plan.run;
    if (plan.outer.length === 0) os.set(xs.subarray(plan.offset, plan.offset + os.length));
    else if (run >= 16) walkRuns(os.length, run, plan.outer, plan.strides, plan.offset, (src, dst) => os.set(xs.subarray(src, src + run), dst));
    else {
      walkRuns(os.length, run, plan.outer, plan.strides, plan.offset, (src, dst) => {
        for (let i = 0; i < run; i++) os[dst + i] = xs[src + i]!;
      });
    }
    return out;
  };
  overrideWasmKernel("Slice", (args) => slice(args));
  // SplitV calls the backend's own Slice function, not the registered kernel: route it here too.
  overrideWasmKernel("SplitV", (args, orig) => {
    const x = (args.inputs as unknown as { x: Info }).x;
    if (x.dtype === "string") return orig(args);
    const { numOrSizeSplits, axis } = args.attrs as unknown as { numOrSizeSplits: number | number[]; axis: number | number[] };
    const ax = tf.util.parseAxisParam(axis, x.shape)[0]!;
    const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, ax);
    const begin = new Array<number>(x.shape.length).fill(0);
    return sizes.map((n) => {
      const size = [...x.shape];
      size[ax] = n;
      const part = slice({ ...args, inputs: { x } as unknown as KernelArgs["inputs"], attrs: { begin: [...begin], size } as unknown as KernelArgs["attrs"] });
      begin[ax]! += n;
      return part;
    });
  });
}

/**
 * A transpose reduced to its essentials: size-1 axes dropped, and axes that stay
 * neighbours in the same order merged into one. `shape` is the reduced input shape,
 * `perm` the permutation of it (output axis k is input axis perm[k]), `strides` the
 * input strides (elements) of the output axes in output order.
 */
export function transposePlan(shape: readonly number[], perm: readonly number[]): { shape: number[]; perm: number[]; strides: number[] } {
  // Drop size-1 axes, renumbering the rest.
  const kept = shape.map((n, i) => (n === 1 ? -1 : i)).filter((i) => i >= 0);
  const rank = new Map(kept.map((a, i) => [a, i]));
  let sh = kept.map((a) => shape[a]!);
  let pm = perm.filter((a) => shape[a] !== 1).map((a) => rank.get(a)!);
  // Merge output neighbours k, k+1 that are input neighbours perm[k], perm[k] + 1.
  for (let k = 0; k + 1 < pm.length; ) {
    const a = pm[k]!;
    if (pm[k + 1] !== a + 1) {
      k++;
      continue;
    }
    sh = [...sh.slice(0, a), sh[a]! * sh[a + 1]!, ...sh.slice(a + 2)];
    pm = pm.filter((_, i) => i !== k + 1).map((b) => (b > a ? b - 1 : b));
  }
  const inStrides = tf.util.computeStrides(sh);
  inStrides.push(1);
  return { shape: sh, perm: pm, strides: pm.map((a) => inStrides[a]!) };
}

/**
 * The WASM backend's Transpose runs ranks above 4 (after dropping size-1 axes) on a
 * loop that recomputes every element's index (about 100 ns an element: the stride
 * phase splits of MiT's patch embeddings and spatial reductions, [10,29,2,29,2,64]
 * and the like, took 1.1 s of a 6.7 s forward+backward). This version writes the
 * output a run of its last axis at a time, walking the other axes by their input
 * strides; when that axis is the input's last too, a run is one typed-array copy (for
 * 16 elements or more): 1-10 ms instead of 110-220 ms for the four above. Ranks up to
 * 4 keep the original kernel, which is faster there. Same bytes.
 */
function overrideTranspose(): void {
  overrideWasmKernel("Transpose", (args, orig) => {
    const x = (args.inputs as unknown as { x: Info }).x;
    const perm = (args.attrs as unknown as { perm: number[] }).perm;
    if (x.dtype === "string" || x.dtype === "complex64") return orig(args);
    const plan = transposePlan(x.shape, perm);
    const r = plan.perm.length;
    const be = args.backend as unknown as HeapBackend;
    if (r < 5) {
      // Ranks up to 4 have fast loops in the original (faster than the runs below there);
      // large ones of 4-byte elements go to pbip's copy kernel on every thread instead.
      const dims = plan.perm.map((a) => plan.shape[a]!);
      const wb = be as unknown as WasmBackendLike;
      if (x.dtype === "bool" || !permuteCopyFits(wb, dims)) return orig(args);
      const out = be.makeOutput(perm.map((a) => x.shape[a]!), x.dtype);
      permuteCopy(wb, tensorAddress(wb, x), tensorAddress(wb, out), dims, plan.strides);
      return out;
    }
    const out = be.makeOutput(perm.map((a) => x.shape[a]!), x.dtype);
    const xs = be.typedArrayFromHeap(x);
    const os = be.typedArrayFromHeap(out);
    const run = plan.shape[plan.perm[r - 1]!]!;
    const step = plan.strides[r - 1]!;
    const outer = plan.perm.slice(0, -1).map((a) => plan.shape[a]!);
    const copy =
      step === 1 && run >= 16
        ? (src: number, dst: number) => os.set(xs.subarray(src, src + run), dst)
        : (src: number, dst: number) => {
            for (let j = 0; j < run; j++) os[dst + j] = xs[src + j * step]!;
          };
    walkRuns(os.length, run, outer, plan.strides.slice(0, -1), 0, copy);
    return out;
  });
}

/**
 * The WASM backend's GatherV2 copies element by element (about 50 ns an element:
 * picking a release batch's images and maps per matching pair, [10,224,224,3] by 33
 * indices and the like, took 1.4 s of a step). With no batch dimensions and slices of
 * 16 elements or more, this version copies each picked slice with one typed-array copy.
 * Indices are checked as the original checks them (same error). Same bytes.
 */
function overrideGather(): void {
  overrideWasmKernel("GatherV2", (args, orig) => {
    const { x, indices } = args.inputs as unknown as { x: Info; indices: Info };
    const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims: number };
    if (x.dtype === "string" || x.dtype === "complex64" || (batchDims ?? 0) !== 0) return orig(args);
    const ax = tf.util.parseAxisParam(axis, x.shape)[0]!;
    const slice = tf.util.sizeFromShape(x.shape.slice(ax + 1));
    if (slice < 16 || tf.util.sizeFromShape(x.shape) === 0) return orig(args);
    const be = args.backend as unknown as HeapBackend;
    const idx = be.readSync(indices.dataId);
    const dim = x.shape[ax]!;
    for (let i = 0; i < idx.length; i++) {
      const v = idx[i]!;
      tf.util.assert(v <= dim - 1 && v >= 0, () => `GatherV2: the index value ${v} is not in [0, ${dim - 1}]`);
    }
    const outer = tf.util.sizeFromShape(x.shape.slice(0, ax));
    const out = be.makeOutput([...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)], x.dtype);
    const xs = be.typedArrayFromHeap(x);
    const os = be.typedArrayFromHeap(out);
    let dst = 0;
    for (let o = 0; o < outer; o++) {
      const base = o * dim * slice;
      for (let i = 0; i < idx.length; i++, dst += slice) os.set(xs.subarray(base + idx[i]! * slice, base + (idx[i]! + 1) * slice), dst);
    }
    return out;
  });
}

/**
 * The WASM backend's own Conv2DBackpropInput is about 10x slower than a matMul for
 * 1x1 stride-1 convolutions (most of MobileNetV2's): those go through
 * dx = dy . W^T (W pre-transposed: WASM's matMul is slow with a transposed
 * operand); every other case stays with the original kernel.
 */
function overrideConv2DBackpropInput(): void {
  overrideWasmKernel("Conv2DBackpropInput", (args, orig) => {
    const { dy, filter } = args.inputs as unknown as { dy: Info; filter: Info };
    const a = args.attrs as unknown as tf.Conv2DBackpropInputAttrs;
    const strides = typeof a.strides === "number" ? [a.strides, a.strides] : a.strides;
    const inShape = a.inputShape as number[];
    const pointwise =
      filter.shape[0] === 1 &&
      filter.shape[1] === 1 &&
      strides[0] === 1 &&
      strides[1] === 1 &&
      (a.dataFormat === undefined || a.dataFormat === "NHWC") &&
      dy.shape[1] === inShape[1] &&
      dy.shape[2] === inShape[2];
    if (!pointwise) return orig(args);
    return tf.tidy(() => {
      const [, , ci, co] = filter.shape as number[];
      const d = tf.reshape(asTensor(dy), [-1, co!]);
      const wT = tf.transpose(tf.reshape(asTensor(filter), [ci!, co!]));
      return tf.reshape(tf.matMul(d, wT), inShape);
    }) as unknown as Info;
  });
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

/**
 * Replace the `wasm` backend's kernel `name` by `fn`, which gets the original kernel
 * function to fall back on; the original's setup and dispose hooks are kept.
 */
function overrideWasmKernel(name: string, fn: (args: KernelArgs, orig: tf.KernelFunc) => Info | Info[]): void {
  const orig = tf.getKernel(name, "wasm");
  if (!orig) return;
  tf.unregisterKernel(name, "wasm");
  tf.registerKernel({
    kernelName: name,
    backendName: "wasm",
    setupFunc: orig.setupFunc,
    disposeFunc: orig.disposeFunc,
    kernelFunc: (args) => fn(args, orig.kernelFunc),
  });
}
