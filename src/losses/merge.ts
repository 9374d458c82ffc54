/**
 * Subclass bookkeeping and the subclass-to-class merge of image-level logits
 * (METHOD.md section 3, "Image-level logits").
 *
 * Conventions used by every loss in this folder:
 * - N classes; class n has K_n subclasses (`k: number[]`, K may differ per class);
 * - S = sum(K_n) subclass channels, ordered class-major: class 0's subclasses
 *   first, then class 1's, ... (the release's `k_list` and cumulative offsets);
 * - prototypes P have shape [S, d] in that same order.
 */
import * as tf from "@tensorflow/tfjs";
import { UsageError } from "../util/errors";

/**
 * How the K_n subclass logits of a class become one class logit.
 * - `mean`: their mean (the release while training, `merge_train: mean`);
 * - `softmax`: `sum(softmax(s) * s)` over the class's K_n logits, a soft maximum
 *   (the release at inference; its code calls this method `max`).
 */
export type SubclassMerge = "mean" | "softmax";

/** Validate a subclass count list and return S = sum(K_n). */
export function subclassCount(k: readonly number[]): number {
  if (k.length === 0) throw new UsageError("k (subclasses per class) is empty: need at least one class");
  for (const [n, kn] of k.entries()) {
    if (!Number.isInteger(kn) || kn < 1) throw new UsageError(`k[${n}] = ${kn}: every class needs a whole number >= 1 of subclasses`);
  }
  return k.reduce((a, b) => a + b, 0);
}

/**
 * The first subclass channel of each class, plus S at the end: `[0, K_0, K_0+K_1, ..., S]`
 * (the release's cumulative offsets).
 */
export function subclassOffsets(k: readonly number[]): number[] {
  subclassCount(k);
  const out = [0];
  for (const kn of k) out.push(out[out.length - 1]! + kn);
  return out;
}

/** The class of each subclass channel: `[0,0,0,1,1,1,...]` for k = [3,3,...]. Length S. */
export function subclassToClass(k: readonly number[]): number[] {
  subclassCount(k);
  const out: number[] = [];
  k.forEach((kn, n) => {
    for (let j = 0; j < kn; j++) out.push(n);
  });
  return out;
}

function mergeGroup(s: tf.Tensor, mode: SubclassMerge, axis: number): tf.Tensor {
  if (mode === "mean") return tf.mean(s, axis);
  // softmax along the last axis; callers put the subclass axis last.
  return tf.sum(tf.mul(tf.softmax(s), s), axis);
}

/**
 * Merge pooled subclass logits into class logits (METHOD.md section 3; the paper's
 * image-level prediction y-hat that feeds eq. 7).
 *
 * @param logits [B, S] subclass logits (global average pooled similarity maps M_i), class-major.
 * @param k      subclasses per class, length N, summing to S.
 * @param mode   `mean` (training, release) or `softmax` (`sum(softmax(s)*s)`, inference).
 * @returns      [B, N] class logits. A class with K_n = 1 passes its logit through in both modes.
 */
export function mergeSubclassLogits(logits: tf.Tensor2D, k: readonly number[], mode: SubclassMerge = "mean"): tf.Tensor2D {
  const s = subclassCount(k);
  if (logits.rank !== 2 || logits.shape[1] !== s) {
    throw new UsageError(`mergeSubclassLogits: logits must be [B, S=${s}] for k = [${k.join(", ")}], got [${logits.shape.join(", ")}]`);
  }
  if (mode !== "mean" && mode !== "softmax") throw new UsageError(`mergeSubclassLogits: unknown merge mode "${String(mode)}" (use mean or softmax)`);
  const b = logits.shape[0];
  const n = k.length;
  return tf.tidy(() => {
    if (k.every((kn) => kn === k[0])) {
      // Equal K: one reshape to [B, N, K] and a reduction over the last axis.
      return mergeGroup(tf.reshape(logits, [b, n, k[0]!]), mode, 2) as tf.Tensor2D;
    }
    const offsets = subclassOffsets(k);
    const cols = k.map((kn, i) => mergeGroup(tf.slice(logits, [0, offsets[i]!], [b, kn]), mode, 1).reshape([b, 1]));
    return tf.concat(cols, 1) as tf.Tensor2D;
  });
}
