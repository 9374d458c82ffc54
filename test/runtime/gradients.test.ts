import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr } from "../helpers";
import { registerFastGradients } from "../../src/runtime/gradients";

for (const backend of ["cpu", "wasm"] as const) {
  for (const shape of [[2, 5, 4, 3], [6, 3]] as number[][]) {
    test(`batchNorm gradients (pbip's FusedBatchNorm gradient) equal autodiff of the explicit formula: ${backend}, x [${shape}]`, async () => {
      await onBackend(backend, () => registerFastGradients());
      const c = shape[shape.length - 1]!;
      const n = shape.reduce((a, b) => a * b, 1);
      const x = tf.tensor(randomArray(n, 1), shape);
      const mean = tf.tensor1d(randomArray(c, 2));
      const variance = tf.tensor1d(Array.from(randomArray(c, 3), (v) => 0.5 + Math.abs(v)));
      const scale = tf.tensor1d(randomArray(c, 4));
      const offset = tf.tensor1d(randomArray(c, 5));
      const w = tf.tensor(randomArray(n, 6), shape);
      const eps = 1e-3;
      const fused = (a: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: tf.Tensor, o: tf.Tensor) => tf.sum(tf.mul(tf.batchNorm(a, m as tf.Tensor1D, v as tf.Tensor1D, o as tf.Tensor1D, s as tf.Tensor1D, eps), w));
      const explicit = (a: tf.Tensor, m: tf.Tensor, v: tf.Tensor, s: tf.Tensor, o: tf.Tensor) => tf.sum(tf.mul(tf.add(tf.mul(tf.mul(tf.sub(a, m), tf.rsqrt(tf.add(v, eps))), s), o), w));
      const before = tf.memory().numTensors;
      const gf = tf.grads(fused)([x, mean, variance, scale, offset]);
      const ge = tf.grads(explicit)([x, mean, variance, scale, offset]);
      for (let i = 0; i < 5; i++) {
        const e = maxRelErr(await gf[i]!.data(), await ge[i]!.data());
        assert.ok(e < 1e-5, `input ${["x", "mean", "variance", "scale", "offset"][i]}: relative error ${e}`);
      }
      tf.dispose([...gf, ...ge]);
      assert.equal(tf.memory().numTensors, before, "no tensors leaked");
      tf.dispose([x, mean, variance, scale, offset, w]);
    });
  }
}

for (const backend of ["cpu", "wasm"] as const) {
  for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
    for (const batched of [false, true]) {
      test(`matMul gradients (pbip's BatchMatMul gradient) equal autodiff of explicit products: ${backend}, transposeA ${ta}, transposeB ${tb}${batched ? ", batched" : ""}`, async () => {
        await onBackend(backend, () => registerFastGradients());
        const [m, k, n] = [3, 4, 5];
        const pre = batched ? [2] : [];
        const aShape = [...pre, ...(ta ? [k, m] : [m, k])];
        const bShape = [...pre, ...(tb ? [n, k] : [k, n])];
        const a = tf.tensor(randomArray(aShape.reduce((x, y) => x * y, 1), 7), aShape);
        const b = tf.tensor(randomArray(bShape.reduce((x, y) => x * y, 1), 8), bShape);
        const w = tf.tensor(randomArray([...pre, m, n].reduce((x, y) => x * y, 1), 9), [...pre, m, n]);
        // Reference: elementwise products and sums only (no matMul, so no matMul gradient).
        const explicit = (x: tf.Tensor, y: tf.Tensor) => {
          const xa = ta ? tf.transpose(x, batched ? [0, 2, 1] : [1, 0]) : x; // [.., m, k]
          const yb = tb ? tf.transpose(y, batched ? [0, 2, 1] : [1, 0]) : y; // [.., k, n]
          const prod = tf.sum(tf.mul(tf.expandDims(xa, -1), tf.expandDims(yb, -3)), -2); // [.., m, n]
          return tf.sum(tf.mul(prod, w));
        };
        const fused = (x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y, ta, tb), w));
        const gf = tf.grads(fused)([a, b]);
        const ge = tf.grads(explicit)([a, b]);
        for (let i = 0; i < 2; i++) {
          const e = maxRelErr(await gf[i]!.data(), await ge[i]!.data());
          assert.ok(e < 1e-5, `${i === 0 ? "a" : "b"}: relative error ${e}`);
        }
        tf.dispose([...gf, ...ge, a, b, w]);
      });
    }
  }
}

test("clipByValue's gradient (pbip's one-pass WASM kernel) has the same bits as TF.js's on the CPU, through a Keras-style ReLU6 and for odd sizes", async () => {
  const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
  for (const shape of [[2, 7, 5, 8], [6]] as number[][]) {
    const n = shape.reduce((a, b) => a * b, 1);
    const x = Float32Array.from(randomArray(n, 21), (v, i) => (i % 9 === 0 ? 6 : i % 13 === 0 ? 0 : 9 * v));
    const w = randomArray(n, 22);
    // relu then clipByValue(0, 6), as tfjs-layers' ReLU(maxValue = 6); and a clip alone.
    const grads = (backend: "cpu" | "wasm") =>
      onBackend(backend, () => {
        registerFastGradients();
        return tf.tidy(() => {
          const xt = tf.tensor(x, shape);
          const wt = tf.tensor(w, shape);
          const relu6 = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.clipByValue(tf.relu(a), 0, 6), wt)))(xt).dataSync() as Float32Array;
          const clip = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.clipByValue(a, -2.5, 4), wt)))(xt).dataSync() as Float32Array;
          return { relu6, clip };
        });
      });
    const cpu = await grads("cpu");
    const wasm = await grads("wasm");
    assert.deepEqual(bits(wasm.relu6), bits(cpu.relu6), `relu6 [${shape}]`);
    assert.deepEqual(bits(wasm.clip), bits(cpu.clip), `clip [${shape}]`);
    // The WASM gradient is the one-pass kernel where the size allows, tfjs's five kernels elsewhere.
    const kernels = await onBackend("wasm", async () => {
      const xt = tf.tensor(x, shape);
      const prof = await tf.profile(() => tf.tidy(() => tf.grad((a: tf.Tensor) => tf.sum(tf.clipByValue(a, 0, 6)))(xt)));
      xt.dispose();
      tf.dispose(prof.result as tf.Tensor);
      return prof.kernelNames;
    });
    assert.equal(kernels.includes("PbipClipByValueGrad"), n % 4 === 0, kernels.join(" "));
    assert.equal(kernels.includes("LogicalAnd"), n % 4 !== 0, kernels.join(" "));
    // And the values are the clip's derivative: w inside [lo, hi], 0 outside.
    for (let i = 0; i < n; i++) assert.equal(cpu.clip[i], x[i]! >= -2.5 && x[i]! <= 4 ? Math.fround(w[i]!) : 0);
  }
});
