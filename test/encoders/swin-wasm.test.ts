import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr } from "../helpers";
import { gatherRows, swinWasmKernelsAvailable, windowMatMul } from "../../src/encoders/swin-wasm";

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
      assert.ok(swinWasmKernelsAvailable(), "SIMD kernels register on the WASM backend");
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
    assert.throws(() => gatherRows(tf.zeros([2, 6]) as tf.Tensor2D, idx), /not a multiple of 4/);
    tf.dispose([x, idx, out]);
  });
  await onBackend("cpu", () => assert.equal(swinWasmKernelsAvailable(), false, "not on other backends"));
});
