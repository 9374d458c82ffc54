/**
 * The stage-2 objective: pixel-wise cross-entropy of a segmentation network's
 * logits against the stage-1 pseudo-masks (METHOD.md section 5; the paper trains
 * DeepLab-v2 on them).
 *
 * Background handling: the network has N+1 outputs in mask-id order (channel k
 * scores mask id k; background is the dataset's `backgroundId`). Pseudo-masks
 * made by the release's rule have no background pixels (every pixel gets a
 * class), so the background output is then never a target; masks with background
 * (the `power`/`white` CAM modes) train it as an ordinary class. Pixels with the
 * ignore id (255), or any id outside [0, N], are skipped, and
 * `background: "ignore"` skips background pixels too.
 */
import * as tf from "@tensorflow/tfjs";
import { boolToFloat } from "../runtime/ops";

/** Options of {@link pixelCrossEntropy}. */
export interface PixelCrossEntropyOptions {
  /**
   * Weight per mask id (length C = N+1). The loss is the weighted mean, as
   * `torch.nn.CrossEntropyLoss(weight=w, ignore_index=255)`:
   * `sum_p w[y_p] * -log softmax(z_p)[y_p] / sum_p w[y_p]`. Default all 1.
   */
  classWeights?: readonly number[];
  /** Mask ids whose pixels are skipped besides those outside [0, C) such as 255 (e.g. `[backgroundId]`). */
  ignoreIds?: readonly number[];
}

/**
 * Pixel-wise softmax cross-entropy, numerically stable (log-softmax), ignoring
 * pixels whose target is outside [0, C) (the ignore id 255) or in `ignoreIds`.
 * One-hot targets are built by comparison (`tf.oneHot` is broken on WASM).
 * With no counted pixel the loss is 0 (PyTorch would return NaN).
 *
 * @param logits `[B, H, W, C]`
 * @param targets mask ids `[B, H, W]` (int32), same spatial size as `logits`
 * @returns the scalar loss
 */
export function pixelCrossEntropy(logits: tf.Tensor4D, targets: tf.Tensor3D, o: PixelCrossEntropyOptions = {}): tf.Scalar {
  const [b, h, w, c] = logits.shape;
  if (targets.shape[0] !== b || targets.shape[1] !== h || targets.shape[2] !== w) {
    throw new Error(`pixelCrossEntropy: logits [${logits.shape}] and targets [${targets.shape}] differ in batch or size`);
  }
  const weights = Array.from({ length: c }, (_, k) => (o.ignoreIds?.includes(k) ? 0 : (o.classWeights?.[k] ?? 1)));
  if (o.classWeights && o.classWeights.length !== c) throw new Error(`pixelCrossEntropy: ${o.classWeights.length} class weights for ${c} outputs`);
  if (weights.some((x) => !(x >= 0) || !Number.isFinite(x))) throw new Error(`pixelCrossEntropy: class weights must be finite and >= 0, got [${weights}]`);
  return tf.tidy(() => {
    // One-hot by comparison against range(c); ids outside [0, c) (255) give an empty row.
    // (On WASM this broadcasting equal costs ~65 ms per notebook batch. tf.oneHot would be
    // ~9x faster, but the WASM backend's oneHot writes int bits into float32 outputs, so
    // the loss came out 0: see test/runtime/wasm-kernels.test.ts.)
    const onehot = boolToFloat(tf.equal(tf.expandDims(targets.dtype === "int32" ? targets : tf.cast(targets, "int32"), 3), tf.range(0, c, 1, "int32")));
    // Per-pixel weight w[y_p]; 0 for ignored pixels (their one-hot row is empty).
    const pw = tf.sum(tf.mul(onehot, tf.tensor1d(weights)), 3);
    const nll = tf.neg(tf.sum(tf.mul(onehot, tf.logSoftmax(logits, -1)), 3));
    const num = tf.sum(tf.mul(pw, nll));
    const den = tf.sum(pw);
    return tf.div(num, tf.maximum(den, 1e-12)) as tf.Scalar;
  });
}

/**
 * Class weights from pixel counts, `w_k = (total / (C' * count_k))^power` over the
 * C' ids present (absent ids get 0), normalised to mean 1 over the present ids:
 * `power` 1 is inverse frequency, 0.5 its square root (a common, milder choice).
 */
export function classWeightsFromCounts(counts: readonly number[], power = 0.5): number[] {
  const present = counts.filter((n) => n > 0).length;
  const total = counts.reduce((a, b) => a + b, 0);
  if (present === 0) throw new Error("classWeightsFromCounts: every count is 0");
  const raw = counts.map((n) => (n > 0 ? Math.pow(total / (present * n), power) : 0));
  const mean = raw.reduce((a, b) => a + b, 0) / present;
  return raw.map((x) => x / mean);
}
