/**
 * The classification loss L_CLS (paper eq. 7-8; METHOD.md section 3).
 *
 * Per stage i, the pooled subclass logits are merged to class logits and compared
 * with the image's multi-hot label by a sigmoid binary cross-entropy averaged over
 * the batch and the classes; the stage losses are summed with stage weights
 * (release: 0, 0.1, 1, 1 over the four MiT stages; the paper: three stages, weight 1).
 */
import * as tf from "@tensorflow/tfjs";
import { UsageError } from "../util/errors";
import { mergeSubclassLogits, subclassCount, type SubclassMerge } from "./merge";

/**
 * Sigmoid binary cross-entropy with logits, averaged over every element of [B, N]
 * (one term of eq. 7).
 *
 * Equal to PyTorch's `F.multilabel_soft_margin_loss(x, y)` (mean over the N classes,
 * then over the batch) and to `nn.BCEWithLogitsLoss()(x, y)` (mean over all B*N
 * elements): without class weights the two are the same number, so either
 * reading of the release is matched (its `train_stage_1.py` builds
 * `nn.BCEWithLogitsLoss()`). Computed in the stable form
 * `relu(x) - x*y + log1p(exp(-|x|))`, which never overflows.
 *
 * @param logits [B, N] class logits.
 * @param labels [B, N] targets in [0, 1] (multi-hot image labels).
 * @returns a scalar.
 */
export function multilabelSoftMarginLoss(logits: tf.Tensor2D, labels: tf.Tensor2D): tf.Scalar {
  if (logits.rank !== 2 || labels.rank !== 2 || logits.shape[0] !== labels.shape[0] || logits.shape[1] !== labels.shape[1]) {
    throw new UsageError(`multilabelSoftMarginLoss: logits [${logits.shape.join(", ")}] and labels [${labels.shape.join(", ")}] must both be [B, N]`);
  }
  return tf.tidy(() => {
    const x = logits.dtype === "float32" ? logits : tf.cast(logits, "float32");
    const y = labels.dtype === "float32" ? labels : tf.cast(labels, "float32");
    const perElement = tf.add(tf.sub(tf.relu(x), tf.mul(x, y)), tf.log1p(tf.exp(tf.neg(tf.abs(x)))));
    return tf.mean(perElement) as tf.Scalar;
  });
}

/** Options of {@link classificationLoss}. */
export interface ClassificationLossOptions {
  /** Subclasses per class (length N, summing to S). */
  k: readonly number[];
  /** One weight per stage, in stage order (release: [0, 0.1, 1, 1]; paper eq. 8: all 1). */
  stageWeights: readonly number[];
  /** Subclass merge for the training loss; the release uses `mean`. Default `mean`. */
  merge?: SubclassMerge;
}

/** What {@link classificationLoss} returns; every tensor is new and owned by the caller (`tf.dispose(result)`). */
export type ClassificationLossResult = {
  /** sum_i w_i * L_CLS[i] (eq. 8 with stage weights). */
  total: tf.Scalar;
  /** L_CLS[i] per stage, unweighted (eq. 7), for logging. */
  perStage: tf.Scalar[];
};

/**
 * The multi-stage classification loss L_CLS (paper eq. 7-8, weighted as in the release).
 *
 * For each stage i: merge the [B, S] pooled subclass logits to [B, N]
 * ({@link mergeSubclassLogits}), take the sigmoid BCE against the labels
 * ({@link multilabelSoftMarginLoss}, mean over B and N), and sum with the stage
 * weights. A stage of weight 0 is still computed and reported (the release logs
 * it too) and contributes exactly zero to the total and its gradient.
 *
 * @param stageLogits one [B, S] tensor per stage (pooled similarity maps).
 * @param labels      [B, N] multi-hot image labels.
 */
export function classificationLoss(
  stageLogits: readonly tf.Tensor2D[],
  labels: tf.Tensor2D,
  options: ClassificationLossOptions,
): ClassificationLossResult {
  const s = subclassCount(options.k);
  const n = options.k.length;
  if (stageLogits.length === 0) throw new UsageError("classificationLoss: no stages given");
  if (stageLogits.length !== options.stageWeights.length) {
    throw new UsageError(`classificationLoss: ${stageLogits.length} stages of logits but ${options.stageWeights.length} stage weights`);
  }
  if (labels.rank !== 2 || labels.shape[1] !== n) {
    throw new UsageError(`classificationLoss: labels must be [B, N=${n}], got [${labels.shape.join(", ")}]`);
  }
  stageLogits.forEach((l, i) => {
    if (l.rank !== 2 || l.shape[0] !== labels.shape[0] || l.shape[1] !== s) {
      throw new UsageError(`classificationLoss: stage ${i} logits must be [B=${labels.shape[0]}, S=${s}], got [${l.shape.join(", ")}]`);
    }
  });
  for (const [i, w] of options.stageWeights.entries()) {
    if (!Number.isFinite(w)) throw new UsageError(`classificationLoss: stage weight ${i} is ${w}`);
  }
  return tf.tidy(() => {
    const perStage = stageLogits.map((l) => multilabelSoftMarginLoss(mergeSubclassLogits(l, options.k, options.merge ?? "mean"), labels));
    const total = tf.addN(perStage.map((loss, i) => tf.mul(loss, options.stageWeights[i]!))) as tf.Scalar;
    return { total, perStage };
  });
}
