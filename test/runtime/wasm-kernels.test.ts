import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr, finiteDiff } from "../helpers";
import { sliceRuns, transposePlan } from "../../src/runtime/wasm-kernels";
import { poolStats } from "../../src/runtime/wasm-pool";

interface ConvCase {
  name: string;
  x: [number, number, number, number];
  f: [number, number, number, number];
  stride: number;
  pad: "same" | "valid" | number;
  dilation?: number;
}

const CONV: ConvCase[] = [
  { name: "3x3 s1 same", x: [2, 9, 9, 3], f: [3, 3, 3, 4], stride: 1, pad: "same" },
  { name: "3x3 s2 same odd", x: [2, 9, 11, 3], f: [3, 3, 3, 5], stride: 2, pad: "same" },
  { name: "7x7 s4 pad3 (MiT patch embed)", x: [1, 17, 17, 3], f: [7, 7, 3, 4], stride: 4, pad: 3 },
  { name: "4x4 s4 valid (Swin patch embed)", x: [2, 8, 8, 3], f: [4, 4, 3, 6], stride: 4, pad: "valid" },
  { name: "1x1 s1", x: [2, 5, 5, 6], f: [1, 1, 6, 3], stride: 1, pad: "valid" },
  { name: "1x1 s2 same", x: [2, 7, 6, 4], f: [1, 1, 4, 3], stride: 2, pad: "same" },
  { name: "1x1 s1 same (no padding needed)", x: [1, 4, 4, 5], f: [1, 1, 5, 2], stride: 1, pad: "same" },
  { name: "2x2 s2 valid (spatial reduction)", x: [1, 6, 6, 4], f: [2, 2, 4, 4], stride: 2, pad: "valid" },
];

function convGrads(c: ConvCase) {
  const x = tf.tensor4d(randomArray(c.x.reduce((a, b) => a * b), 1), c.x);
  const w = tf.tensor4d(randomArray(c.f.reduce((a, b) => a * b), 2), c.f);
  const g = tf.grads((xx: tf.Tensor, ww: tf.Tensor) => {
    const y = tf.conv2d(xx as tf.Tensor4D, ww as tf.Tensor4D, c.stride, c.pad);
    return tf.sum(tf.mul(y, tf.sin(y)));
  });
  const [dx, dw] = g([x, w]);
  const out = { dx: dx!.dataSync().slice(), dw: dw!.dataSync().slice() };
  tf.dispose([x, w, dx!, dw!]);
  return out;
}

for (const c of CONV) {
  test(`conv2d gradients on WASM match CPU: ${c.name}`, async () => {
    const cpu = await onBackend("cpu", () => convGrads(c));
    const before = await onBackend("wasm", () => tf.memory().numTensors);
    const wasm = convGrads(c);
    assert.equal(tf.memory().numTensors, before, "no tensors leaked");
    assert.ok(maxRelErr(wasm.dw, cpu.dw) < 1e-4, `dW rel err ${maxRelErr(wasm.dw, cpu.dw)}`);
    assert.ok(maxRelErr(wasm.dx, cpu.dx) < 1e-4, `dX rel err ${maxRelErr(wasm.dx, cpu.dx)}`);
  });
}

const DW: ConvCase[] = [
  { name: "3x3 s1 same", x: [2, 7, 7, 4], f: [3, 3, 4, 1], stride: 1, pad: "same" },
  { name: "3x3 s2 same (MobileNetV2 stride block)", x: [2, 9, 8, 3], f: [3, 3, 3, 1], stride: 2, pad: "same" },
  { name: "3x3 s2 valid", x: [1, 9, 9, 2], f: [3, 3, 2, 1], stride: 2, pad: "valid" },
  { name: "3x3 s1 dilation 2", x: [1, 9, 9, 3], f: [3, 3, 3, 1], stride: 1, pad: "same", dilation: 2 },
  { name: "3x3 multiplier 2", x: [1, 6, 6, 3], f: [3, 3, 3, 2], stride: 1, pad: "same" },
  { name: "5x5 s2 pad 2", x: [1, 10, 10, 2], f: [5, 5, 2, 1], stride: 2, pad: 2 },
  // Channels in fours: the input gradient runs on pbip's SIMD scatter kernel.
  { name: "3x3 s2 same, 8 channels (SIMD input gradient)", x: [2, 9, 8, 8], f: [3, 3, 8, 1], stride: 2, pad: "same" },
  { name: "3x3 s2 valid, 4 channels (SIMD)", x: [1, 9, 9, 4], f: [3, 3, 4, 1], stride: 2, pad: "valid" },
  { name: "3x3 s1 dilation 2, 4 channels (SIMD)", x: [1, 9, 9, 4], f: [3, 3, 4, 1], stride: 1, pad: "same", dilation: 2 },
  { name: "5x5 s2 pad 2, 12 channels (SIMD)", x: [2, 10, 11, 12], f: [5, 5, 12, 1], stride: 2, pad: 2 },
  { name: "3x3 s2 asymmetric padding (Keras ZeroPadding then valid), 4 channels (SIMD)", x: [1, 8, 8, 4], f: [3, 3, 4, 1], stride: 2, pad: [[0, 0], [0, 1], [0, 1], [0, 0]] as never },
];

function depthwiseLoss(c: ConvCase, x: tf.Tensor4D, w: tf.Tensor4D): tf.Scalar {
  const y = tf.depthwiseConv2d(x, w, c.stride, c.pad, "NHWC", c.dilation ?? 1);
  return tf.sum(tf.mul(y, tf.cos(y)));
}

function depthwiseGrads(c: ConvCase) {
  const x = tf.tensor4d(randomArray(c.x.reduce((a, b) => a * b), 3), c.x);
  const w = tf.tensor4d(randomArray(c.f.reduce((a, b) => a * b), 4), c.f);
  // Dilated depthwise gradients are not implemented by tfjs for any backend: use
  // the kernels directly there (the CPU backend has both kernels).
  let dx: tf.Tensor;
  let dw: tf.Tensor;
  if ((c.dilation ?? 1) > 1) {
    const dy = tf.tidy(() => {
      const y = tf.depthwiseConv2d(x, w, c.stride, c.pad, "NHWC", c.dilation);
      return tf.add(tf.cos(y), tf.mul(tf.neg(y), tf.sin(y)));
    });
    const attrs = { strides: c.stride, pad: c.pad, dilations: c.dilation, dimRoundingMode: undefined };
    dx = tf.engine().runKernel("DepthwiseConv2dNativeBackpropInput", { dy, filter: w }, { ...attrs, inputShape: c.x } as never) as tf.Tensor;
    dw = tf.engine().runKernel("DepthwiseConv2dNativeBackpropFilter", { x, dy }, { ...attrs, filterShape: c.f } as never) as tf.Tensor;
    dy.dispose();
  } else {
    [dx, dw] = tf.grads((xx: tf.Tensor, ww: tf.Tensor) => depthwiseLoss(c, xx as tf.Tensor4D, ww as tf.Tensor4D))([x, w]) as [tf.Tensor, tf.Tensor];
  }
  const f32 = (t: tf.Tensor) => Float32Array.from(t.dataSync());
  const out = { dx: f32(dx), dw: f32(dw), x: f32(x), w: f32(w) };
  tf.dispose([x, w, dx, dw]);
  return out;
}

/**
 * Loss gradients of {@link depthwiseLoss} in float64 by plain loops (stride 1, `same` padding,
 * any dilation): y = sum_k x[i + d*k - p] w[k]; dL/dy = cos y - y sin y; dx and dw by the chain rule.
 */
function depthwiseGrads64(c: ConvCase, x: Float32Array, w: Float32Array): { dx: Float64Array; dw: Float64Array } {
  const [B, H, W, C] = c.x;
  const [KH, KW] = c.f;
  const d = c.dilation ?? 1;
  if (c.stride !== 1 || c.pad !== "same") throw new Error("depthwiseGrads64: stride 1, same padding only");
  const pt = Math.floor(((KH! - 1) * d) / 2);
  const pl = Math.floor(((KW! - 1) * d) / 2);
  const at = (b: number, h: number, ww: number, ch: number) => ((b * H! + h) * W! + ww) * C! + ch;
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(w.length);
  for (let b = 0; b < B!; b++)
    for (let oh = 0; oh < H!; oh++)
      for (let ow = 0; ow < W!; ow++)
        for (let ch = 0; ch < C!; ch++) {
          const taps: [number, number][] = [];
          let y = 0;
          for (let kh = 0; kh < KH!; kh++)
            for (let kw = 0; kw < KW!; kw++) {
              const ih = oh + kh * d - pt;
              const iw = ow + kw * d - pl;
              if (ih < 0 || ih >= H! || iw < 0 || iw >= W!) continue;
              const wi = (kh * KW! + kw) * C! + ch;
              y += x[at(b, ih, iw, ch)]! * w[wi]!;
              taps.push([at(b, ih, iw, ch), wi]);
            }
          const dy = Math.cos(y) - y * Math.sin(y);
          for (const [xi, wi] of taps) {
            dx[xi]! += dy * w[wi]!;
            dw[wi]! += dy * x[xi]!;
          }
        }
  return { dx, dw };
}

for (const c of DW) {
  test(`depthwise conv2d gradients on WASM match CPU and finite differences: ${c.name}`, async () => {
    const cpu = await onBackend("cpu", () => depthwiseGrads(c));
    await onBackend("wasm", () => undefined);
    const before = tf.memory().numTensors;
    const wasm = depthwiseGrads(c);
    assert.equal(tf.memory().numTensors, before, "no tensors leaked");
    // The CPU backend's depthwise backprop kernels ignore dilation (tfjs 4.22), so a
    // dilated case is checked against loops in float64 instead.
    if ((c.dilation ?? 1) === 1) {
      assert.ok(maxRelErr(wasm.dw, cpu.dw) < 1e-4, `dW rel err ${maxRelErr(wasm.dw, cpu.dw)}`);
      assert.ok(maxRelErr(wasm.dx, cpu.dx) < 1e-4, `dX rel err ${maxRelErr(wasm.dx, cpu.dx)}`);
    } else {
      const ref = depthwiseGrads64(c, wasm.x, wasm.w);
      assert.ok(maxRelErr(wasm.dw, ref.dw) < 1e-4, `dilated dW vs float64 loops: rel err ${maxRelErr(wasm.dw, ref.dw)}`);
      assert.ok(maxRelErr(wasm.dx, ref.dx) < 1e-4, `dilated dX vs float64 loops: rel err ${maxRelErr(wasm.dx, ref.dx)}`);
      assert.ok(maxRelErr(wasm.dw, depthwiseGrads64({ ...c, dilation: 1 }, wasm.x, wasm.w).dw) > 1e-2, "the case depends on the dilation");
    }
    // Finite differences in float64 from the float32 forward pass on WASM.
    const loss = (xs: Float32Array, ws: Float32Array) =>
      tf.tidy(() => depthwiseLoss(c, tf.tensor4d(xs, c.x), tf.tensor4d(ws, c.f)).dataSync()[0]!);
    const xc = [0, 5, 17, Math.floor(wasm.x.length / 2), wasm.x.length - 1];
    const wc = Array.from({ length: wasm.w.length }, (_, i) => i).filter((i) => i % 3 === 0 || i === wasm.w.length - 1);
    const fdx = finiteDiff((xs) => loss(xs, wasm.w), wasm.x, xc);
    const fdw = finiteDiff((ws) => loss(wasm.x, ws), wasm.w, wc);
    xc.forEach((i, k) => assert.ok(Math.abs(fdx[k]! - wasm.dx[i]!) < 2e-2 * Math.max(1, Math.abs(fdx[k]!)), `dx[${i}] ${wasm.dx[i]} vs fd ${fdx[k]}`));
    wc.forEach((i, k) => assert.ok(Math.abs(fdw[k]! - wasm.dw[i]!) < 2e-2 * Math.max(1, Math.abs(fdw[k]!)), `dw[${i}] ${wasm.dw[i]} vs fd ${fdw[k]}`));
  });
}

test("conv2d filter gradient on WASM matches finite differences", async () => {
  const c = CONV[1]!;
  await onBackend("wasm", () => undefined);
  const xs = randomArray(c.x.reduce((a, b) => a * b), 1);
  const ws = randomArray(c.f.reduce((a, b) => a * b), 2);
  const loss = (w: Float32Array) =>
    tf.tidy(() => {
      const y = tf.conv2d(tf.tensor4d(xs, c.x), tf.tensor4d(w, c.f), c.stride, c.pad);
      return tf.sum(tf.mul(y, tf.sin(y))).dataSync()[0]!;
    });
  const { dw } = convGrads(c);
  const coords = [0, 7, 50, ws.length - 1];
  const fd = finiteDiff(loss, ws, coords);
  coords.forEach((i, k) => assert.ok(Math.abs(fd[k]! - dw[i]!) < 2e-2 * Math.max(1, Math.abs(fd[k]!)), `dw[${i}] ${dw[i]} vs fd ${fd[k]}`));
});

test("tf.oneHot on WASM still writes int bits into float32 (why UnsortedSegmentSum avoids it)", async () => {
  // If this starts failing, tfjs fixed the bug and the workaround in wasm-kernels.ts can go.
  const v = await onBackend("wasm", () => tf.tidy(() => tf.oneHot(tf.tensor1d([1], "int32"), 2, 1, 0, "float32").dataSync()[1]!));
  assert.ok(v !== 1 && v < 1e-40, `oneHot gave ${v}`);
});

test("gather gradient (UnsortedSegmentSum) on WASM matches CPU", async () => {
  const run = () =>
    tf.tidy(() => {
      const table = tf.tensor2d(randomArray(13 * 3, 9), [13, 3]);
      const idx = tf.tensor1d([0, 3, 3, 12, 5, 0, 7, 7, 7], "int32");
      const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, idx), tf.range(1, 28).reshape([9, 3]))))(table);
      return g.dataSync().slice();
    });
  const cpu = await onBackend("cpu", run);
  const wasm = await onBackend("wasm", run);
  assert.ok(maxRelErr(wasm, cpu) < 1e-6);
});

test("sliceRuns merges the axes a slice takes whole into one copy run (hand-worked plans)", () => {
  // [44,57,57,96] -> [44,56,56,96] from the origin: runs of 56*96, over 44 x 56 outer rows.
  assert.deepEqual(sliceRuns([44, 57, 57, 96], [0, 0, 0, 0], [44, 56, 56, 96]), { run: 5376, outer: [44, 56], strides: [311904, 5472], offset: 0 });
  // A cut in the last axis: runs of that axis only; the offset counts every begin.
  assert.deepEqual(sliceRuns([2, 3, 4, 5], [1, 1, 2, 1], [1, 2, 2, 3]), { run: 3, outer: [1, 2, 2], strides: [60, 20, 5], offset: 60 + 20 + 10 + 1 });
  // Whole trailing axes behind a cut in the first: one run (the contiguous case).
  assert.deepEqual(sliceRuns([6, 4, 8], [2, 0, 0], [3, 4, 8]), { run: 96, outer: [], strides: [], offset: 64 });
});

test("Slice on WASM (pbip's run copies) gives the CPU backend's values for float32, int32 and bool, long and short runs", async () => {
  const cases: [number[], number[], number[]][] = [
    [[5, 9, 9, 16], [0, 0, 0, 0], [5, 8, 8, 16]],
    [[3, 7, 11, 32], [1, 2, 3, 0], [2, 4, 5, 32]],
    [[4, 6, 70], [1, 1, 0], [2, 5, 70]],
    [[3, 130], [1, 0], [2, 130]],
    [[2, 5, 5, 3], [0, 1, 1, 0], [2, 3, 3, 3]],
    [[2, 3, 40, 4], [1, 0, 5, 1], [1, 3, 30, 2]],
    [[4, 3, 50, 2], [1, 0, 0, 0], [2, -1, -1, -1]],
    [[6, 4, 8], [2, 0, 0], [3, 4, 8]], // one contiguous block
    [[1000], [137], [500]], // rank 1
    [[7, 5, 3], [1, 1, 1], [5, 3, 2]], // runs of 2: element copies
    [[3, 4, 5, 6], [0, 1, 0, 2], [3, 2, 5, 3]], // runs of 3
  ];
  for (const dtype of ["float32", "int32", "bool"] as const) {
    for (const [shape, begin, size] of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const vals = Array.from(randomArray(n, n), (v) => (dtype === "float32" ? v : dtype === "int32" ? Math.round(v * 1000) : v > 0 ? 1 : 0));
      const run = () => tf.tidy(() => Array.from(tf.slice(tf.tensor(vals, shape, dtype), begin, size).dataSync()));
      const want = await onBackend("cpu", run);
      const got = await onBackend("wasm", run);
      assert.deepEqual(got, want, `${dtype} [${shape}] begin [${begin}] size [${size}]`);
    }
  }
});

test("SplitV on WASM (through pbip's Slice) gives the CPU backend's values on every axis, and no slice reads its whole input back", async () => {
  const cases: [number[], number[] | number, number][] = [
    [[14000], [3000, 1, 9000, 1999], 0], // the optimiser's flat update: contiguous parts
    [[6, 10, 4], [2, 5, 3], 1],
    [[6, 10, 4], 2, 2], // runs of 2
    [[5, 3, 70], [10, 60], 2],
  ];
  for (const dtype of ["float32", "int32", "bool"] as const) {
    for (const [shape, split, axis] of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const vals = Array.from(randomArray(n, n + axis), (v) => (dtype === "float32" ? v : dtype === "int32" ? Math.round(v * 1000) : v > 0 ? 1 : 0));
      const run = () => tf.tidy(() => tf.split(tf.tensor(vals, shape, dtype), split, axis).map((t) => [t.shape, Array.from(t.dataSync())]));
      const want = await onBackend("cpu", run);
      const got = await onBackend("wasm", run);
      assert.deepEqual(got, want, `${dtype} [${shape}] split ${JSON.stringify(split)} axis ${axis}`);
    }
  }
  // TF.js's own WASM Slice reads its input with readSync, a copy of the whole input per
  // slice (42 s to split a 14-million-element vector into 196 parts): pbip's reads none.
  await onBackend("wasm", () => {
    const be = tf.backend() as unknown as { readSync: (...a: unknown[]) => unknown };
    const orig = be.readSync;
    let reads = 0;
    be.readSync = (...a: unknown[]) => {
      reads++;
      return orig.apply(be, a);
    };
    try {
      tf.tidy(() => {
        const x = tf.ones([100, 50, 8]);
        tf.split(x, [30, 70]);
        tf.slice(x, [3, 0, 0], [1, 50, 8]);
        tf.slice(x, [0, 1, 1], [100, 3, 3]);
        tf.slice(tf.ones([4000]), [5], [10]);
      });
    } finally {
      be.readSync = orig;
    }
    assert.equal(reads, 0, "no readSync of a slice's input");
  });
});

test("transposePlan drops size-1 axes and merges axes that stay neighbours (hand-worked plans)", () => {
  // MiT's stride-phase split: nothing merges; strides of the output axes in the input.
  assert.deepEqual(transposePlan([10, 29, 2, 29, 2, 64], [0, 2, 4, 1, 3, 5]), { shape: [10, 29, 2, 29, 2, 64], perm: [0, 2, 4, 1, 3, 5], strides: [215296, 3712, 64, 7424, 128, 1] });
  // [b, n, heads, hd] -> [b, heads, n, hd] with b = 1: the size-1 axis goes, a 3-D transpose remains.
  assert.deepEqual(transposePlan([1, 196, 8, 64], [0, 2, 1, 3]), { shape: [196, 8, 64], perm: [1, 0, 2], strides: [64, 512, 1] });
  // Axes 1,2 stay neighbours in the output: merged into one of 15.
  assert.deepEqual(transposePlan([8, 3, 5, 7, 9], [4, 0, 3, 1, 2]), { shape: [8, 15, 7, 9], perm: [3, 0, 2, 1], strides: [1, 945, 9, 63] });
  // The identity collapses to one axis.
  assert.deepEqual(transposePlan([2, 3, 4], [0, 1, 2]), { shape: [24], perm: [0], strides: [1] });
});

test("Transpose on WASM (pbip's run copies above rank 4) gives the CPU backend's values for float32, int32 and bool", async () => {
  const cases: [number[], number[]][] = [
    [[3, 5, 2, 5, 2, 16], [0, 2, 4, 1, 3, 5]], // runs of 16: typed-array copies
    [[2, 2, 2, 7, 7, 20], [0, 3, 1, 4, 2, 5]],
    [[2, 6, 4, 6, 4, 3], [0, 2, 4, 1, 3, 5]], // runs of 3: element loop
    [[3, 5, 2, 5, 2, 16], [0, 5, 2, 4, 1, 3]], // the last axis moves: strided reads
    [[2, 3, 1, 4, 5, 6], [5, 3, 2, 0, 4, 1]], // a size-1 axis, rank 5 after dropping it
    [[2, 3, 4, 5, 6, 7, 2], [6, 1, 0, 3, 2, 5, 4]],
    [[8, 3, 5, 7, 9], [4, 0, 3, 1, 2]], // merges to rank 4: the original kernel
  ];
  for (const dtype of ["float32", "int32", "bool"] as const) {
    for (const [shape, perm] of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const vals = Array.from(randomArray(n, n + perm[0]!), (v) => (dtype === "float32" ? v : dtype === "int32" ? Math.round(v * 1000) : v > 0 ? 1 : 0));
      const run = () => tf.tidy(() => Array.from(tf.transpose(tf.tensor(vals, shape, dtype), perm).dataSync()));
      const want = await onBackend("cpu", run);
      const got = await onBackend("wasm", run);
      assert.deepEqual(got, want, `${dtype} [${shape}] perm [${perm}]`);
    }
  }
});

test("GatherV2 on WASM (pbip's slice copies) gives the CPU backend's values for float32, int32 and bool, on every axis, and rejects an index out of range", async () => {
  const cases: [number[], number[], number[], number][] = [
    [[10, 6, 6, 3], [3, 0, 9, 3, 7], [5], 0], // whole images
    [[12, 40], [11, 0, 4, 4], [2, 2], 0], // rows of 40, a 2-D index
    [[3, 7, 5, 8], [6, 1, 1], [3], 1], // slices of 40 after an outer axis of 3
    [[4, 9, 3], [8, 2], [2], 1], // slices of 3: the original kernel
    [[2, 3, 4, 20], [0, 3, 3], [3], 2],
  ];
  for (const dtype of ["float32", "int32", "bool"] as const) {
    for (const [shape, index, ishape, axis] of cases) {
      const n = shape.reduce((a, b) => a * b, 1);
      const vals = Array.from(randomArray(n, n + axis), (v) => (dtype === "float32" ? v : dtype === "int32" ? Math.round(v * 1000) : v > 0 ? 1 : 0));
      const run = () => tf.tidy(() => {
        const y = tf.gather(tf.tensor(vals, shape, dtype), tf.tensor(index, ishape, "int32"), axis);
        return { shape: y.shape, values: Array.from(y.dataSync()) };
      });
      const want = await onBackend("cpu", run);
      const got = await onBackend("wasm", run);
      assert.deepEqual(got, want, `${dtype} [${shape}] index [${index}] axis ${axis}`);
    }
  }
  await onBackend("wasm", () => {
    assert.throws(() => tf.tidy(() => tf.gather(tf.zeros([4, 20]), tf.tensor1d([1, 4], "int32"))), /the index value 4 is not in \[0, 3\]/);
  });
});

test("Identity on WASM (tf.clone, customGrad outputs) shares the buffer instead of copying it, and the clone outlives its source", async () => {
  await onBackend("wasm", async () => {
    const x = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
    const buffers = tf.memory().numDataBuffers;
    const y = tf.clone(x);
    assert.equal(tf.memory().numDataBuffers, buffers, "a clone adds no buffer");
    const be = tf.backend() as unknown as { dataIdMap: { get(id: object): { memoryOffset: number } } };
    assert.equal(be.dataIdMap.get(y.dataId).memoryOffset, be.dataIdMap.get(x.dataId).memoryOffset, "the same heap buffer");
    x.dispose();
    assert.deepEqual(Array.from(y.dataSync()), [1, 2, 3, 4, 5, 6], "the clone keeps its values once the source is gone");
    // A new tensor does not land on the clone's buffer while the clone lives.
    const z = tf.fill([2, 3], 7);
    assert.deepEqual(Array.from(y.dataSync()), [1, 2, 3, 4, 5, 6]);
    tf.dispose([y, z]);
    assert.equal(tf.memory().numDataBuffers, buffers - 1, "disposing the clone frees the buffer");
    // Through a custom gradient (its outputs pass through Identity): values and gradient as on CPU.
    const f = tf.customGrad(((a: tf.Tensor, save: tf.GradSaveFunc) => {
      save([a]);
      return { value: tf.square(a), gradFunc: (dy: tf.Tensor, [s]: tf.Tensor[]) => tf.mul(dy, tf.mul(s!, 2)) };
    }) as unknown as Parameters<typeof tf.customGrad>[0]);
    const a = tf.tensor1d([1, -2, 3]);
    const { value, grad } = tf.valueAndGrad((t: tf.Tensor) => tf.sum(f(t) as tf.Tensor))(a);
    assert.deepEqual(Array.from(value.dataSync()), [14]);
    assert.deepEqual(Array.from(grad.dataSync()), [2, -4, 6]);
    tf.dispose([a, value, grad]);
  });
});

test("Add, Sub and Multiply on WASM (pbip's kernel where one operand repeats) give the CPU backend's values; other broadcasts stay TF.js's", async () => {
  // [a shape, b shape]: same shapes (with a remainder), a bias, Swin's rank-5 attention bias, the
  // repeating operand first (subtraction's order), an odd period, leading 1s, and broadcasts the
  // kernel does not take (last-axis, both sides, scalar).
  const cases: [number[], number[]][] = [
    [[20001], [20001]],
    [[100, 384], [384]],
    [[8, 1, 3, 49, 49], [1, 3, 49, 49]],
    [[3, 49, 49], [6, 3, 49, 49]],
    [[2, 64, 64, 3], [1, 1, 1, 3]],
    [[600, 37], [37]],
    [[1, 1, 1500, 17], [1, 17]],
    [[2, 12, 49, 49], [2, 12, 49, 1]],
    [[30, 1, 64], [1, 20, 64]],
    [[20000], []],
  ];
  for (const name of ["add", "sub", "mul"] as const) {
    for (const [sa, sb] of cases) {
      const n = (s: number[]) => s.reduce((x, y) => x * y, 1);
      const va = randomArray(n(sa), n(sa) + 1);
      const vb = randomArray(n(sb), n(sb) + 2);
      const run = () => tf.tidy(() => {
        const [a, b] = [tf.tensor(va, sa), tf.tensor(vb, sb)];
        const y = name === "add" ? tf.add(a, b) : name === "sub" ? tf.sub(a, b) : tf.mul(a, b);
        return { shape: y.shape, values: Array.from(y.dataSync()) };
      });
      const want = await onBackend("cpu", run);
      const got = await onBackend("wasm", run);
      assert.deepEqual(got.shape, want.shape, `${name} [${sa}] [${sb}] shape`);
      assert.ok(got.values.every((v, i) => v === want.values[i]), `${name} [${sa}] [${sb}]: the CPU backend's values`);
    }
  }
  // The large repeating cases are split across the kernel threads when there are two.
  await onBackend("wasm", () => {
    const before = poolStats().splitCalls;
    tf.tidy(() => tf.add(tf.ones([256, 1, 3, 49, 49]), tf.ones([1, 3, 49, 49])).dataSync());
    const threads = (tf.backend() as unknown as { wasm: { wasmMemory?: { buffer: unknown } } }).wasm.wasmMemory?.buffer instanceof SharedArrayBuffer;
    if (threads) assert.ok(poolStats().splitCalls > before, "the attention-bias add ran on both threads");
  });
});
