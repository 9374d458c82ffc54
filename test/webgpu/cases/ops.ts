/**
 * Op-level cases for the WebGPU-vs-CPU comparison: the operations the models of
 * this project are built from (convolutions of MobileNetV2 and MiT patch embeddings,
 * depthwise convolutions, attention matMuls, layer norm, bilinear resizing of
 * maps, softmax, erf-GELU), forward and gradients, at small shapes. Every input
 * and upstream gradient is seeded, so both backends see the same numbers.
 */
import * as tf from "@tensorflow/tfjs";
import { randomArray } from "../../helpers";
import type { BackendCase } from "../harness";

/** A seeded tensor with entries in [-scale, scale). */
export function seeded(shape: number[], seed: number, scale = 1): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(randomArray(n, seed).map((v) => v * scale), shape);
}

/**
 * Forward value and gradients of `f` with respect to `inputs`, under a seeded
 * upstream gradient dy (so the gradients are not just sums). Returns
 * `{ y, d0, d1, ... }`; disposes the inputs.
 */
export function withGrads(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], seed: number): Record<string, tf.Tensor> {
  const out = tf.tidy(() => {
    const y = f(...inputs);
    const dy = seeded(y.shape, seed);
    const grads = tf.grads((...xs: tf.Tensor[]) => f(...xs))(inputs, dy);
    const named: Record<string, tf.Tensor> = { y };
    grads.forEach((g, i) => (named[`d${i}`] = g));
    return named;
  });
  tf.dispose(inputs);
  return out;
}

/** Layer norm over the last axis, as the MiT/Swin blocks compute it (eps 1e-6). */
function layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor): tf.Tensor {
  const { mean, variance } = tf.moments(x, -1, true);
  return x.sub(mean).mul(tf.rsqrt(variance.add(1e-6))).mul(gamma).add(beta);
}

/** GELU with the exact erf form, as PyTorch's nn.GELU(). */
function geluErf(x: tf.Tensor): tf.Tensor {
  return x.mul(0.5).mul(tf.erf(x.mul(Math.SQRT1_2)).add(1));
}

export const cases: BackendCase[] = [
  {
    name: "conv2d 3x3 stride 1 same",
    run: () => withGrads((x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, "same"), [seeded([2, 9, 9, 3], 1), seeded([3, 3, 3, 8], 2, 0.5)], 3),
  },
  {
    name: "conv2d 7x7 stride 4 (patch embedding)",
    run: () => withGrads((x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 4, "same"), [seeded([1, 16, 16, 3], 4), seeded([7, 7, 3, 6], 5, 0.3)], 6),
  },
  {
    name: "conv2d 3x3 stride 2 valid, dilation-free, with bias",
    run: () =>
      withGrads(
        (x, w, b) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, "valid").add(b!),
        [seeded([2, 11, 11, 4], 7), seeded([3, 3, 4, 5], 8, 0.5), seeded([5], 9)],
        10,
      ),
  },
  {
    name: "conv2d 1x1 (pointwise)",
    run: () => withGrads((x, w) => tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, "same"), [seeded([2, 6, 6, 16], 11), seeded([1, 1, 16, 12], 12, 0.3)], 13),
  },
  {
    // Forward only: tfjs 4.22 has no conv2d gradient for dilation > 1 on any backend.
    name: "conv2d dilation 2 (atrous), forward",
    run: () =>
      tf.tidy(() => ({ y: tf.conv2d(seeded([1, 10, 10, 3], 14) as tf.Tensor4D, seeded([3, 3, 3, 4], 15, 0.5) as tf.Tensor4D, 1, "same", "NHWC", 2) })),
  },
  {
    name: "depthwise conv2d 3x3 stride 1",
    run: () =>
      withGrads((x, w) => tf.depthwiseConv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, "same"), [seeded([2, 8, 8, 6], 17), seeded([3, 3, 6, 1], 18, 0.5)], 19),
  },
  {
    name: "depthwise conv2d 3x3 stride 2",
    run: () =>
      withGrads((x, w) => tf.depthwiseConv2d(x as tf.Tensor4D, w as tf.Tensor4D, 2, "same"), [seeded([1, 9, 9, 8], 20), seeded([3, 3, 8, 1], 21, 0.5)], 22),
  },
  {
    name: "depthwise conv2d channel multiplier 2",
    run: () =>
      withGrads((x, w) => tf.depthwiseConv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, "valid"), [seeded([1, 7, 7, 4], 23), seeded([3, 3, 4, 2], 24, 0.5)], 25),
  },
  {
    name: "matMul",
    run: () => withGrads((a, b) => tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D), [seeded([17, 33], 26), seeded([33, 9], 27)], 28),
  },
  {
    name: "batched matMul with transposeB (attention scores)",
    run: () =>
      withGrads((q, k) => tf.matMul(q as tf.Tensor3D, k as tf.Tensor3D, false, true).mul(0.125), [seeded([3, 20, 16], 29), seeded([3, 12, 16], 30)], 31),
  },
  {
    name: "layer norm over the last axis",
    run: () => withGrads((x, g, b) => layerNorm(x!, g!, b!), [seeded([2, 10, 32], 32, 2), seeded([32], 33), seeded([32], 34)], 35),
  },
  // Square inputs: the CPU backend's ResizeBilinearGrad returns [B, W, H, C] (H and W
  // swapped) for non-square images. And on every backend (CPU, WASM, WebGPU) the
  // gradient ignores halfPixelCenters (it is the align-corners=false gradient), so
  // these cases prove agreement between backends, not a correct half-pixel gradient.
  {
    name: "resizeBilinear upsample x4 (half-pixel centres)",
    run: () => withGrads((x) => tf.image.resizeBilinear(x as tf.Tensor4D, [24, 24], false, true), [seeded([2, 6, 6, 3], 36)], 37),
  },
  {
    name: "resizeBilinear upsample x2.5",
    run: () => withGrads((x) => tf.image.resizeBilinear(x as tf.Tensor4D, [15, 15], false, false), [seeded([1, 6, 6, 4], 47)], 48),
  },
  {
    name: "resizeBilinear downsample, align corners",
    run: () => withGrads((x) => tf.image.resizeBilinear(x as tf.Tensor4D, [5, 5], true), [seeded([1, 13, 13, 2], 38)], 39),
  },
  {
    name: "softmax over the last axis",
    run: () => withGrads((x) => tf.softmax(x!.mul(3)), [seeded([4, 7, 10], 40)], 41),
  },
  {
    name: "erf-GELU",
    run: () => withGrads((x) => geluErf(x!), [seeded([3, 50], 42, 3)], 43),
  },
  {
    name: "sigmoid BCE-style reduction and global average pool",
    run: () =>
      withGrads(
        (x, y) => tf.mean(tf.sigmoid(x!).sub(y!).square(), [1, 2]).sum(),
        [seeded([2, 6, 6, 5], 44, 2), tf.tidy(() => seeded([2, 6, 6, 5], 45).greater(0).toFloat())],
        46,
      ),
  },
  {
    // 12 inputs need more storage buffers than WebGPU's default per-stage limit (8):
    // the device must be requested with the adapter's limits (runtime/backend.ts).
    name: "addN of 12 tensors (storage-buffer limit), with gradients",
    run: () => withGrads((...xs) => tf.addN(xs.map((x, i) => tf.mul(x, i + 1))), Array.from({ length: 12 }, (_, i) => seeded([3, 5], 200 + i)), 212),
  },
  {
    // tf.cast of bool to float32 only relabels the buffer on WebGPU; a transpose of
    // the result used to compile an invalid shader (runtime/webgpu-kernels.ts).
    name: "cast bool -> float32, then transpose",
    run: () => {
      const x = tf.tidy(() => tf.add(seeded([2, 16, 16, 8], 300), tf.zeros([2, 16, 16, 8]))); // large enough to run on the GPU
      const y = tf.tidy(() => tf.transpose(tf.cast(tf.greaterEqual(x, 0), "float32"), [0, 3, 1, 2]));
      x.dispose();
      return { y };
    },
  },
  {
    name: "addN of 40 tensors (more than any device's per-stage buffer limit)",
    run: () => withGrads((...xs) => tf.addN(xs), Array.from({ length: 40 }, (_, i) => seeded([2, 3], 400 + i)), 440),
  },
];
