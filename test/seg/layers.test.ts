// Stage-2 layers: atrous convolution by space-to-batch against TF.js's own dilated
// convolution (forward) and finite differences (gradient); half-pixel bilinear
// upsampling against tf.image.resizeBilinear (forward) and finite differences;
// GroupNorm against a loop over the definition. On CPU and WASM.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, maxRelErr, randomArray, finiteDiff } from "../helpers";
import { atrousConv2d, upsampleBilinear, groupNorm, groupsFor } from "../../src/seg";
import { bilinearMatrix } from "../../src/runtime/resize";
import { atrousRatesFor } from "../../src/seg";

const BACKENDS = ["cpu", "wasm"] as const;

test("TF.js 4.22 still lacks the dilated-convolution gradient (why atrousConv2d exists)", async () => {
  await onBackend("cpu", () => {
    assert.throws(
      () => tf.tidy(() => tf.grad((x: tf.Tensor) => tf.sum(tf.conv2d(x as tf.Tensor4D, tf.ones([3, 3, 1, 1]) as tf.Tensor4D, 1, "same", "NHWC", 2)))(tf.ones([1, 5, 5, 1]))),
      /dilation/,
    );
  });
});

// [B, H, W, C, O, rate, depthwise]
const CASES: [number, number, number, number, number, number, boolean][] = [
  [2, 7, 7, 3, 4, 2, false],
  [1, 7, 9, 2, 3, 3, false], // sides not multiples of the rate, not square
  [2, 5, 5, 3, 2, 4, false],
  [1, 4, 4, 2, 2, 6, false], // rate >= side: centre tap only
  [2, 7, 7, 3, 1, 2, true],
  [1, 6, 8, 4, 1, 3, true],
  [1, 3, 3, 2, 1, 5, true],
  [1, 6, 6, 2, 3, 1, false],
  [1, 5, 9, 2, 3, 6, false], // rate >= height only: the row taps fall in the padding
  [2, 7, 7, 3, 1, 4, true], // DeepLab's case: a 7x7 stride-16 map (112 px) at rate 4
];

const METHODS = ["space-to-batch", "taps"] as const;

test("atrousConv2d (space-to-batch and taps) equals tf.conv2d / depthwiseConv2d with dilations (forward), CPU and WASM", async () => {
  for (const backend of BACKENDS) {
    await onBackend(backend, () => {
      for (const [b, h, w, c, o, r, dw] of CASES) for (const method of METHODS) {
        const before = tf.memory().numTensors;
        const [got, want] = tf.tidy(() => {
          const x = tf.tensor4d(randomArray(b * h * w * c, 1), [b, h, w, c]);
          const f = tf.tensor4d(randomArray(9 * c * o, 2), [3, 3, c, o]);
          const direct = dw ? tf.depthwiseConv2d(x, f, 1, "same", "NHWC", r) : tf.conv2d(x, f, 1, "same", "NHWC", r);
          return [atrousConv2d(x, f, r, dw, method).arraySync(), direct.arraySync()];
        });
        assert.equal(tf.memory().numTensors, before, "no leak");
        const flat = (a: unknown) => Float32Array.from((a as number[]).flat(4) as number[]);
        assert.ok(maxRelErr(flat(got), flat(want)) < 1e-5, `${backend} ${method} ${[b, h, w, c, o, r, dw]}: rel err ${maxRelErr(flat(got), flat(want))}`);
      }
    });
  }
});

test("atrousConv2d gradients (input and filter, both methods) match finite differences, CPU and WASM", async () => {
  for (const backend of BACKENDS) {
    await onBackend(backend, () => {
      for (const [b, h, w, c, o, r, dw] of [CASES[1]!, CASES[3]!, CASES[5]!, CASES[8]!, CASES[9]!]) for (const method of METHODS) {
        const x0 = randomArray(b * h * w * c, 3);
        const f0 = randomArray(9 * c * o, 4);
        const probe = randomArray(b * h * w * (dw ? c * o : o), 5);
        const outShape = [b, h, w, dw ? c * o : o];
        const loss = (x: tf.Tensor, f: tf.Tensor) => tf.sum(tf.mul(atrousConv2d(x as tf.Tensor4D, f as tf.Tensor4D, r, dw, method), tf.tensor(probe, outShape)));
        const [gx, gf] = tf.tidy(() => tf.grads(loss)([tf.tensor4d(x0, [b, h, w, c]), tf.tensor4d(f0, [3, 3, c, o])]).map((g) => g.dataSync().slice()));
        const fx = (x: Float32Array) => tf.tidy(() => loss(tf.tensor4d(x, [b, h, w, c]), tf.tensor4d(f0, [3, 3, c, o])).dataSync()[0]!);
        const ff = (f: Float32Array) => tf.tidy(() => loss(tf.tensor4d(x0, [b, h, w, c]), tf.tensor4d(f, [3, 3, c, o])).dataSync()[0]!);
        const cx = [0, 5, Math.floor(x0.length / 2), x0.length - 1];
        const cf = Array.from({ length: f0.length }, (_, i) => i); // every tap, the far ones included
        finiteDiff(fx, x0, cx).forEach((v, i) => assert.ok(Math.abs(v - gx![cx[i]!]!) < 2e-3, `${backend} ${method} r${r} dx[${cx[i]}] ${gx![cx[i]!]} vs fd ${v}`));
        finiteDiff(ff, f0, cf).forEach((v, i) => assert.ok(Math.abs(v - gf![cf[i]!]!) < 2e-3, `${backend} ${method} r${r} dw[${cf[i]}] ${gf![cf[i]!]} vs fd ${v}`));
      }
    });
  }
});

test("bilinearMatrix rows sum to 1 and reproduce PyTorch's align_corners=False weights", () => {
  const m = bilinearMatrix(8, 2);
  // out i samples (i + 0.5) / 4 - 0.5: i=0 -> -0.375 -> clamped 0; i=3 -> 0.375; i=4 -> 0.625.
  assert.deepEqual(Array.from(m.subarray(0, 2)), [1, 0]);
  assert.ok(Math.abs(m[3 * 2]! - 0.625) < 1e-7 && Math.abs(m[3 * 2 + 1]! - 0.375) < 1e-7);
  assert.ok(Math.abs(m[4 * 2]! - 0.375) < 1e-7 && Math.abs(m[4 * 2 + 1]! - 0.625) < 1e-7);
  for (let i = 0; i < 8; i++) assert.ok(Math.abs(m[i * 2]! + m[i * 2 + 1]! - 1) < 1e-7);
});

test("upsampleBilinear equals resizeBilinear(halfPixelCenters) forward; its gradient matches finite differences", async () => {
  for (const backend of BACKENDS) {
    await onBackend(backend, () => {
      for (const [h, w, oh, ow] of [
        [3, 3, 7, 7],
        [4, 4, 16, 16],
        [3, 5, 11, 8],
      ] as const) {
        const x0 = randomArray(2 * h * w * 3, 6);
        const [got, want] = tf.tidy(() => {
          const x = tf.tensor4d(x0, [2, h, w, 3]);
          return [upsampleBilinear(x, [oh, ow]).dataSync().slice(), tf.image.resizeBilinear(x, [oh, ow], false, true).dataSync().slice()];
        });
        assert.ok(maxRelErr(got, want) < 1e-5, `${backend} ${h}x${w}->${oh}x${ow}: ${maxRelErr(got, want)}`);
        const probe = randomArray(2 * oh * ow * 3, 7);
        const loss = (x: tf.Tensor) => tf.sum(tf.mul(upsampleBilinear(x as tf.Tensor4D, [oh, ow]), tf.tensor(probe, [2, oh, ow, 3])));
        const g = tf.tidy(() => tf.grad(loss)(tf.tensor4d(x0, [2, h, w, 3])).dataSync().slice());
        const coords = Array.from({ length: x0.length }, (_, i) => i).filter((i) => i % 5 === 0);
        finiteDiff((x) => tf.tidy(() => loss(tf.tensor4d(x, [2, h, w, 3])).dataSync()[0]!), x0, coords).forEach((v, i) =>
          assert.ok(Math.abs(v - g[coords[i]!]!) < 2e-3, `${backend} d[${coords[i]}] ${g[coords[i]!]} vs ${v}`),
        );
      }
    });
  }
});

test("groupNorm matches the definition computed by loops, and its gradient matches finite differences", async () => {
  const [b, h, w, c, groups] = [2, 3, 2, 6, 3];
  const x0 = Float32Array.from(randomArray(b * h * w * c, 8), (v) => 3 * v + 1);
  const gamma = Float32Array.from(randomArray(c, 9), (v) => 1 + 0.5 * v);
  const beta = randomArray(c, 10);
  const ref = new Float32Array(x0.length);
  const cg = c / groups;
  for (let n = 0; n < b; n++) {
    for (let g = 0; g < groups; g++) {
      const idx: number[] = [];
      for (let p = 0; p < h * w; p++) for (let k = 0; k < cg; k++) idx.push((n * h * w + p) * c + g * cg + k);
      const mean = idx.reduce((a, i) => a + x0[i]!, 0) / idx.length;
      const v = idx.reduce((a, i) => a + (x0[i]! - mean) ** 2, 0) / idx.length;
      for (const i of idx) ref[i] = ((x0[i]! - mean) / Math.sqrt(v + 1e-5)) * gamma[i % c]! + beta[i % c]!;
    }
  }
  for (const backend of BACKENDS) {
    await onBackend(backend, () => {
      const got = tf.tidy(() => groupNorm(tf.tensor4d(x0, [b, h, w, c]), tf.tensor1d(gamma), tf.tensor1d(beta), groups).dataSync().slice());
      assert.ok(maxRelErr(got, ref) < 1e-5, `${backend} forward ${maxRelErr(got, ref)}`);
      const probe = randomArray(x0.length, 11);
      const loss = (x: tf.Tensor) => tf.sum(tf.mul(groupNorm(x as tf.Tensor4D, tf.tensor1d(gamma), tf.tensor1d(beta), groups), tf.tensor(probe, [b, h, w, c])));
      const g = tf.tidy(() => tf.grad(loss)(tf.tensor4d(x0, [b, h, w, c])).dataSync().slice());
      const coords = [0, 7, 19, 33, x0.length - 1];
      finiteDiff((x) => tf.tidy(() => loss(tf.tensor4d(x, [b, h, w, c])).dataSync()[0]!), x0, coords, 1e-2).forEach((v, i) =>
        assert.ok(Math.abs(v - g[coords[i]!]!) < 5e-3, `${backend} GN dx[${coords[i]}] ${g[coords[i]!]} vs ${v}`),
      );
    });
  }
  assert.equal(groupsFor(128), 32);
  assert.equal(groupsFor(48), 24);
  assert.equal(groupsFor(5), 5);
});

test("atrousRatesFor scales DeepLab's 6/12/18 (513 px, output stride 16) to the input size", () => {
  assert.deepEqual(atrousRatesFor(513), [6, 12, 18]);
  assert.deepEqual(atrousRatesFor(224), [3, 5, 8]);
  assert.deepEqual(atrousRatesFor(112), [1, 3, 4]);
  assert.deepEqual(atrousRatesFor(64), [1, 2, 3]);
});
