import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr, finiteDiff } from "../helpers";
import { resizeBilinear } from "../../src/runtime/resize";

const CASES: { name: string; from: [number, number]; to: [number, number] }[] = [
  { name: "upsample 3x5 -> 7x11", from: [3, 5], to: [7, 11] },
  { name: "upsample x4 (stage map to patch)", from: [4, 4], to: [16, 16] },
  { name: "downsample 8x8 -> 5x4", from: [8, 8], to: [5, 4] },
  { name: "rows only", from: [6, 4], to: [9, 4] },
];

for (const c of CASES) {
  test(`resizeBilinear: forward equals tf.image.resizeBilinear (half-pixel), gradient equals finite differences: ${c.name}`, async () => {
    await onBackend("wasm", () => undefined);
    const shape: [number, number, number, number] = [2, c.from[0], c.from[1], 3];
    const xs = randomArray(shape.reduce((a, b) => a * b, 1), 5);
    const w = randomArray(2 * c.to[0] * c.to[1] * 3, 6);
    const x = tf.tensor4d(xs, shape);
    const ours = resizeBilinear(x, c.to);
    const ref = tf.image.resizeBilinear(x, c.to, false, true);
    assert.ok(maxRelErr(await ours.data(), await ref.data()) < 1e-6, "forward");
    const loss = (v: Float32Array) => tf.tidy(() => tf.sum(tf.mul(resizeBilinear(tf.tensor4d(v, shape), c.to), tf.tensor4d(w, [2, c.to[0], c.to[1], 3]))).dataSync()[0]!);
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(resizeBilinear(t as tf.Tensor4D, c.to), tf.tensor4d(w, [2, c.to[0], c.to[1], 3]))))(x);
    const gv = await g.data();
    const coords = [0, 1, 7, Math.floor(xs.length / 2), xs.length - 1];
    const fd = finiteDiff(loss, xs, coords, 1e-2);
    coords.forEach((i, k) => assert.ok(Math.abs(gv[i]! - fd[k]!) < 1e-3 * Math.max(1, Math.abs(fd[k]!)), `d/dx[${i}]: ${gv[i]} vs finite difference ${fd[k]}`));
    tf.dispose([x, ours, ref, g]);
  });
}

test("tf.image.resizeBilinear's own gradient with half-pixel centres is still wrong in tfjs 4.22 (why resizeBilinear exists)", async () => {
  // If this starts failing, tfjs fixed it, and runtime/resize.ts could go.
  await onBackend("wasm", () => undefined);
  const x = tf.tensor4d(randomArray(16, 1), [1, 4, 4, 1]);
  const w = tf.tensor4d(randomArray(64, 2), [1, 8, 8, 1]);
  const theirs = await tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.image.resizeBilinear(t as tf.Tensor4D, [8, 8], false, true), w)))(x).data();
  const ours = await tf.grad((t: tf.Tensor) => tf.sum(tf.mul(resizeBilinear(t as tf.Tensor4D, [8, 8]), w)))(x).data();
  assert.ok(maxRelErr(theirs, ours) > 1e-2, `tfjs gradient now agrees (${maxRelErr(theirs, ours)})`);
});
