/**
 * Swin cases for the WebGPU-vs-CPU harness (test/webgpu/harness.ts): the tiny Swin
 * (random seeded weights, window 3, 72 px: shifted windows with the mask, padding,
 * odd merging) forward, its input gradient, and the gradient that reaches a map
 * through the encoder in the `image` region mode (X_FG = M X, X_BG = (1 - M) X, eq. 5).
 */
import * as tf from "@tensorflow/tfjs";
import { randomArray } from "../helpers";
import type { BackendCase } from "../webgpu/harness";
import { createSwinEncoder } from "../../src/encoders/swin";
import type { SwinConfig } from "../../src/encoders/swin-weights";

const TINY: SwinConfig = { patchSize: 4, inChannels: 3, embedDim: 8, depths: [2, 2, 2, 2], numHeads: [1, 2, 2, 4], windowSize: 3, mlpRatio: 4, layerNormEps: 1e-5 };
const S = 72;

async function encoder() {
  return createSwinEncoder({ randomSeed: 9, config: TINY, projectionDim: 16, preprocessing: { inputSize: S } });
}

export const cases: BackendCase[] = [
  {
    name: "tiny Swin encoder: pooled, dense, input gradient",
    async run() {
      const enc = await encoder();
      const out = tf.tidy(() => {
        const x = tf.tensor4d(randomArray(2 * S * S * 3, 1).map((v) => (v + 1) / 2), [2, S, S, 3]);
        const { pooled, dense } = enc.apply(x, { dense: true });
        const r = tf.tensor2d(randomArray(2 * 16, 2), [2, 16]);
        const g = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(enc.apply(xx as tf.Tensor4D).pooled, r)))(x);
        return { pooled, dense: dense!, gradInput: g };
      });
      enc.dispose();
      return out;
    },
  },
  {
    name: "image region mode: gradient of a prototype loss w.r.t. the map",
    async run() {
      const enc = await encoder();
      const out = tf.tidy(() => {
        const images = tf.tensor4d(randomArray(2 * S * S * 3, 3).map((v) => (v + 1) / 2), [2, S, S, 3]);
        const logits = tf.tensor4d(randomArray(2 * S * S, 4), [2, S, S, 1]);
        const protos = tf.tensor2d(randomArray(4 * 16, 5), [4, 16]);
        const loss = (l: tf.Tensor) => {
          const m = tf.sigmoid(l);
          const f = enc.apply(tf.concat([tf.mul(m, images), tf.mul(tf.sub(1, m), images)], 0) as tf.Tensor4D).pooled;
          const sim = tf.matMul(tf.div(f, tf.norm(f, 2, 1, true)), tf.div(protos, tf.norm(protos, 2, 1, true)), false, true);
          return tf.neg(tf.sum(tf.mul(tf.logSoftmax(tf.div(sim, 0.07)), tf.tensor2d([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1], [4, 4]))));
        };
        const { value, grad } = tf.valueAndGrad(loss)(logits);
        return { loss: value, gradMap: grad };
      });
      enc.dispose();
      return out;
    },
  },
];
