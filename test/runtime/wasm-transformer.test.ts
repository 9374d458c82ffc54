import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr } from "../helpers";
import { gatherRows, geluGradWasm, geluWasm, layerNormGradWasm, layerNormWasm, softmaxGradWasm, transformerKernelsAvailable, windowMatMul } from "../../src/runtime/wasm-transformer";

// Shapes of Swin-T's window attention (T = 49 tokens, head dim 32) and of odd sizes that
// exercise every column remainder (N % 4 = 0..3) and more than 12 vectors per row.
const CASES: [number, number, number, number, boolean][] = [
  [6, 49, 32, 49, false],
  [5, 49, 49, 32, false],
  [4, 49, 49, 32, true],
  [3, 9, 4, 9, false],
  [2, 3, 5, 7, true],
  [2, 6, 3, 50, false],
  [1, 5, 7, 101, true],
  [3, 4, 2, 6, false],
];

test("windowMatMul (generated WASM SIMD kernel) matches tf.matMul on the CPU backend", async () => {
  for (const [n, M, K, N, tA] of CASES) {
    const aShape = tA ? [n, K, M] : [n, M, K];
    const a = randomArray(n * M * K, M * 100 + K);
    const b = randomArray(n * K * N, N * 7 + 1);
    const cpu = await onBackend("cpu", () => tf.tidy(() => tf.matMul(tf.tensor(a, aShape), tf.tensor(b, [n, K, N]), tA, false).dataSync()));
    await onBackend("wasm", () => {
      assert.ok(transformerKernelsAvailable(), "SIMD kernels register on the WASM backend");
      const before = tf.memory().numTensors;
      const out = tf.tidy(() => {
        const c = windowMatMul(tf.tensor(a, aShape), tf.tensor(b, [n, K, N]), tA);
        assert.deepEqual(c.shape, [n, M, N]);
        return c.dataSync();
      });
      assert.equal(tf.memory().numTensors, before);
      const err = maxRelErr(out, cpu);
      assert.ok(err < 1e-6, `[${n},${M},${K},${N}] transposeA=${tA}: max relative error ${err}`);
    });
  }
  // Rank-4 inputs keep their leading dimensions.
  await onBackend("wasm", () => {
    const c = tf.tidy(() => windowMatMul(tf.ones([2, 3, 4, 5]), tf.ones([2, 3, 5, 6])));
    assert.deepEqual(c.shape, [2, 3, 4, 6]);
    assert.ok(c.dataSync().every((v) => v === 5));
    c.dispose();
    assert.throws(() => tf.tidy(() => windowMatMul(tf.ones([2, 4, 5]), tf.ones([2, 4, 6]))), /do not match/);
  });
});

test("gatherRows copies rows by index and writes zeros for negative indices", async () => {
  await onBackend("wasm", () => {
    const x = tf.tensor2d(randomArray(10 * 8, 3), [10, 8]);
    const idx = tf.tensor1d([3, -1, 0, 9, 9, 2], "int32");
    const out = gatherRows(x, idx);
    const xs = x.dataSync();
    const got = out.dataSync();
    [3, -1, 0, 9, 9, 2].forEach((src, r) => {
      for (let c = 0; c < 8; c++) assert.equal(got[r * 8 + c], src < 0 ? 0 : xs[src * 8 + c]);
    });
    assert.throws(() => tf.tidy(() => gatherRows(tf.zeros([2, 6]) as tf.Tensor2D, idx)), /not a multiple of 4/);
    // Per image: 2 images of 5 rows, the same index applied to each.
    const idx2 = tf.tensor1d([4, -1, 0], "int32");
    const out2 = gatherRows(x, idx2, 2);
    assert.deepEqual(out2.shape, [6, 8]);
    const g2 = out2.dataSync();
    [4, -1, 0, 9, -1, 5].forEach((src, r) => {
      for (let c = 0; c < 8; c++) assert.equal(g2[r * 8 + c], src < 0 ? 0 : xs[src * 8 + c]);
    });
    tf.dispose([idx2, out2]);
    tf.dispose([x, idx, out]);
  });
  await onBackend("cpu", () => assert.equal(transformerKernelsAvailable(), false, "not on other backends"));
});

/** erf in float64: Taylor series below 3, continued fraction for erfc above (|error| < 1e-15). */
function erf64(z: number): number {
  const a = Math.abs(z);
  let r: number;
  if (a < 3) {
    let sum = 0;
    let term = a;
    for (let k = 0; k < 200 && (k < 3 || Math.abs(term) > 1e-18); k++) {
      sum += term / (2 * k + 1);
      term *= (-a * a) / (k + 1);
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    let f = 0;
    for (let k = 60; k >= 1; k--) f = k / 2 / (a + f);
    r = 1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + f);
  }
  return z < 0 ? -r : r;
}

test("WASM GELU and its gradient match exact erf GELU in float64 (error < 5e-7)", async () => {
  await onBackend("wasm", () => {
    const n = 40004; // an odd number of vectors: the unrolled loop's tail runs too
    const xs = new Float32Array(n);
    for (let i = 0; i < n; i++) xs[i] = -12 + (24 * i) / n;
    xs.set([0, -0, 60, -60, 1e-30, -1e-30]);
    const dys = randomArray(n, 8);
    const [y, d] = tf.tidy(() => {
      const x = tf.tensor1d(xs);
      return [geluWasm(x).dataSync(), geluGradWasm(x, tf.tensor1d(dys)).dataSync()];
    });
    let ey = 0;
    let ed = 0;
    for (let i = 0; i < n; i++) {
      const v = xs[i]!;
      const phi = 0.5 * (1 + erf64(v / Math.SQRT2));
      ey = Math.max(ey, Math.abs(y![i]! - v * phi) / Math.max(1, Math.abs(v * phi)));
      const gd = phi + (v * Math.exp((-v * v) / 2)) / Math.sqrt(2 * Math.PI);
      ed = Math.max(ed, Math.abs(d![i]! - dys[i]! * gd));
    }
    assert.ok(ey < 5e-7, `GELU error ${ey}`);
    assert.ok(ed < 5e-7, `GELU gradient error ${ed}`);
    assert.ok(y!.every(Number.isFinite) && d!.every(Number.isFinite));
  });
});

test("WASM LayerNorm (forward with saved xhat, rstd; input gradient with and without a residual) matches the op-by-op computation on CPU", async () => {
  const N = 37;
  const C = 24;
  const xs = randomArray(N * C, 1).map((v) => 3 * v + 2);
  const gs = randomArray(C, 2);
  const bs = randomArray(C, 3);
  const dys = randomArray(N * C, 4);
  const res = randomArray(N * C, 5);
  const reference = await onBackend("cpu", () =>
    tf.tidy(() => {
      const x = tf.tensor2d(xs, [N, C]);
      const g = tf.tensor1d(gs);
      const b = tf.tensor1d(bs);
      const f = (xx: tf.Tensor) => {
        const { mean, variance } = tf.moments(xx, -1, true);
        return tf.add(tf.mul(tf.mul(tf.sub(xx, mean), tf.rsqrt(tf.add(variance, 1e-5))), g), b);
      };
      const dx = tf.grad(f)(x, tf.tensor2d(dys, [N, C]));
      return { y: f(x).dataSync(), dx: tf.add(dx, tf.tensor2d(res, [N, C])).dataSync(), dxOnly: dx.dataSync() };
    }),
  );
  await onBackend("wasm", () => {
    const before = tf.memory().numTensors;
    const got = tf.tidy(() => {
      const r = layerNormWasm(tf.tensor2d(xs, [N, C]), tf.tensor1d(gs), tf.tensor1d(bs), 1e-5);
      assert.deepEqual(r.rstd.shape, [N, 1]);
      const dx = layerNormGradWasm(tf.tensor2d(dys, [N, C]), r.xhat, r.rstd, tf.tensor1d(gs), tf.tensor2d(res, [N, C]));
      const dxOnly = layerNormGradWasm(tf.tensor2d(dys, [N, C]), r.xhat, r.rstd, tf.tensor1d(gs));
      return { y: r.y.dataSync(), dx: dx.dataSync(), dxOnly: dxOnly.dataSync() };
    });
    assert.equal(tf.memory().numTensors, before);
    assert.ok(maxRelErr(got.y, reference.y) < 1e-6, `y: ${maxRelErr(got.y, reference.y)}`);
    assert.ok(maxRelErr(got.dx, reference.dx) < 1e-5, `dx: ${maxRelErr(got.dx, reference.dx)}`);
    assert.ok(maxRelErr(got.dxOnly, reference.dxOnly) < 1e-5, `dx without residual: ${maxRelErr(got.dxOnly, reference.dxOnly)}`);
  });
});

/** p (dp - sum(p dp)) per row of T in float64. */
function refSoftmaxGrad(p: Float32Array, dp: Float32Array, T: number): Float64Array {
  const ds = new Float64Array(p.length);
  for (let r = 0; r < p.length / T; r++) {
    let d = 0;
    for (let j = 0; j < T; j++) d += p[r * T + j]! * dp[r * T + j]!;
    for (let j = 0; j < T; j++) ds[r * T + j] = p[r * T + j]! * (dp[r * T + j]! - d);
  }
  return ds;
}

test("WASM softmax input gradient matches float64 (rows of 49 with a one-float tail, 16, 9, 3; a split across threads)", async () => {
  await onBackend("wasm", () => {
    assert.ok(transformerKernelsAvailable());
    for (const [n, heads, T] of [
      [12, 2, 49],
      [6, 1, 16],
      [10, 3, 9],
      [4, 2, 3],
      [640, 3, 49], // 94080 rows: split across the kernel threads
    ] as const) {
      // Probabilities as the forward pass makes them (TF.js's softmax), some rows peaked by Swin's -100 mask.
      const logits = randomArray(n * heads * T * T, T + n).map((v, i) => (i % 7 === 3 ? -100 : 8 * v));
      const dp = randomArray(logits.length, T + 2);
      const before = tf.memory().numTensors;
      const [p, ds] = tf.tidy(() => {
        const pt = tf.softmax(tf.tensor4d(logits, [n, heads, T, T]));
        return [pt.dataSync() as Float32Array, softmaxGradWasm(pt, tf.tensor4d(dp, [n, heads, T, T])).dataSync()];
      });
      assert.equal(tf.memory().numTensors, before);
      const want = refSoftmaxGrad(p!, dp, T);
      let err = 0;
      for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(ds![i]! - want[i]!));
      assert.ok(err < 1e-6, `[${n},${heads},${T},${T}]: max error ${err}`);
    }
    assert.throws(() => tf.tidy(() => softmaxGradWasm(tf.zeros([5, 4]), tf.zeros([4, 5]))), /shapes/);
  });
});
