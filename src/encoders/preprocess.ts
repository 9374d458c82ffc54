import * as tf from "@tensorflow/tfjs";
import type { Preprocessing } from "./types";
import { resizeBilinear } from "../runtime/resize";

/**
 * The input transform of an encoder, applied by the library so that bank patches
 * and foreground/background regions always see the same preprocessing: resize to
 * `inputSize` (bilinear, half-pixel centres as PyTorch's `align_corners=False`),
 * reorder channels (pbip images are RGB; a BGR encoder gets them flipped), then
 * `(x * scale - mean) / std`. Input: RGB in [0, 1], NHWC. Differentiable.
 */
export function preprocessForEncoder(images: tf.Tensor4D, p: Preprocessing): tf.Tensor4D {
  return tf.tidy(() => {
    let x: tf.Tensor4D = images;
    if (x.shape[1] !== p.inputSize || x.shape[2] !== p.inputSize) {
      x = resizeBilinear(x, [p.inputSize, p.inputSize]);
    }
    if (p.channelOrder === "BGR") x = tf.reverse(x, -1);
    if (p.scale !== 1) x = tf.mul(x, p.scale);
    const mean = tf.tensor1d(p.mean);
    const std = tf.tensor1d(p.std);
    return tf.div(tf.sub(x, mean), std);
  });
}

/** Normalise RGB [0,1] images with per-channel mean/std (ClassNet input normalisation). */
export function normalizeImages(images: tf.Tensor4D, stats: { mean: readonly number[]; std: readonly number[] }): tf.Tensor4D {
  return tf.tidy(() => tf.div(tf.sub(images, tf.tensor1d(stats.mean as number[])), tf.tensor1d(stats.std as number[])));
}
