import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr } from "../helpers";
import { createSwinEncoder } from "../../src/encoders/swin";
import type { SwinConfig } from "../../src/encoders/swin-weights";

// A training step in the `image` region mode, reduced to its shape: a trainable map M
// (here free logits), regions X_FG = M * X and X_BG = (1 - M) * X (eq. 5) through the
// frozen encoder, a contrastive-style loss on the L2-normalised projected features
// against fixed prototypes, and an SGD update of M. Gradients reach M only through
// the encoder's input gradient. Tiny Swin (window 3, 72 px) with random weights.
const TINY: SwinConfig = { patchSize: 4, inChannels: 3, embedDim: 8, depths: [2, 2, 2, 2], numHeads: [1, 2, 2, 4], windowSize: 3, mlpRatio: 4, layerNormEps: 1e-5 };
const B = 2;
const S = 72;

async function steps(n: number): Promise<{ grads: Float32Array[]; losses: number[]; tensors: number[] }> {
  const enc = await createSwinEncoder({ randomSeed: 9, config: TINY, projectionDim: 16, preprocessing: { inputSize: S } });
  const images = tf.tensor4d(randomArray(B * S * S * 3, 1).map((v) => (v + 1) / 2), [B, S, S, 3]);
  const protos = tf.tidy(() => tf.div(tf.tensor2d(randomArray(6 * 16, 2), [6, 16]), 1));
  const init = tf.tensor4d(randomArray(B * S * S, 3), [B, S, S, 1]);
  const logits = tf.variable(init, true, `swin-train-test-logits-${tf.getBackend()}`);
  init.dispose();
  const opt = tf.train.sgd(0.5);
  const out = { grads: [] as Float32Array[], losses: [] as number[], tensors: [] as number[] };
  const loss = () =>
    tf.tidy(() => {
      const m = tf.sigmoid(logits);
      const fg = tf.mul(m, images) as tf.Tensor4D;
      const bg = tf.mul(tf.sub(1, m), images) as tf.Tensor4D;
      const f = enc.apply(tf.concat([fg, bg], 0) as tf.Tensor4D).pooled;
      const fn = tf.div(f, tf.norm(f, 2, 1, true));
      const pn = tf.div(protos, tf.norm(protos, 2, 1, true));
      const sim = tf.div(tf.matMul(fn, pn, false, true), 0.07); // [2B, 6]
      // FG regions should match prototype 0/1, BG regions prototype 5: cross-entropy over prototypes.
      const target = tf.tensor1d([0, 1, 5, 5], "int32");
      const onehot = tf.cast(tf.equal(tf.expandDims(target, 1), tf.expandDims(tf.range(0, 6, 1, "int32"), 0)), "float32");
      return tf.neg(tf.mean(tf.sum(tf.mul(onehot, tf.logSoftmax(sim)), 1))) as tf.Scalar;
    });
  for (let i = 0; i < n; i++) {
    const { value, grads } = tf.variableGrads(loss, [logits]);
    out.losses.push(value.dataSync()[0]!);
    out.grads.push(Float32Array.from(grads[logits.name]!.dataSync()));
    opt.applyGradients(grads);
    tf.dispose([value, ...Object.values(grads)]);
    out.tensors.push(tf.memory().numTensors);
  }
  tf.dispose([images, protos, logits]);
  opt.dispose();
  enc.dispose();
  return out;
}

test("a training step through the Swin encoder (image region mode) runs on WASM and matches the CPU backend", async (t) => {
  const cpu = await onBackend("cpu", () => steps(2));
  const before = await onBackend("wasm", () => tf.memory().numTensors);
  const wasm = await steps(3);
  assert.equal(tf.memory().numTensors, before, "everything disposed");
  t.diagnostic(`losses wasm ${wasm.losses.map((l) => l.toFixed(5)).join(", ")}; cpu ${cpu.losses.map((l) => l.toFixed(5)).join(", ")}`);
  assert.equal(wasm.tensors[1], wasm.tensors[0], "tensor count stable across steps");
  assert.equal(wasm.tensors[2], wasm.tensors[1], "tensor count stable across steps");
  assert.ok(Math.abs(wasm.losses[0]! - cpu.losses[0]!) < 1e-4 * Math.abs(cpu.losses[0]!), "same loss");
  for (let s = 0; s < 2; s++) {
    const err = maxRelErr(wasm.grads[s]!, cpu.grads[s]!);
    t.diagnostic(`step ${s + 1}: d loss / d logits, WASM vs CPU max relative error ${err.toExponential(2)}`);
    assert.ok(err < 1e-4, `step ${s + 1}: ${err}`);
  }
  assert.ok(Math.max(...cpu.grads[0]!.map(Math.abs)) > 0, "the gradient reaches the map");
  assert.ok(wasm.losses[2]! < wasm.losses[0]!, "SGD on the map lowers the loss");
});
