/**
 * The similarity losses L_FGS and L_BGS (paper eq. 9-13; METHOD.md section 4).
 *
 * Inputs are the encoded regions of the P (image, subclass) pairs of a batch:
 * `features` [P, d] (f for the foreground region X_FG, g for the background
 * region X_BG), `positives` [P] (the subclass channel of each pair's own
 * prototype p+), and the prototypes [S, d] in class-major order. f, g and the
 * prototypes are L2-normalised here, so every dot product is a cosine. The
 * negatives P- of a pair are the other S-1 prototypes, the pair's sibling
 * subclasses included (the release; METHOD.md section 4).
 *
 * Two reductions:
 * - `batch` (the release): the sums over all pairs of the batch sit inside the
 *   log, so the batch gives one ratio;
 * - `pair`: the same ratio per pair, then the mean of the per-pair losses (the
 *   usual InfoNCE form; a project variant, not the release).
 *
 * Everything is computed in log space with log-sum-exp, so a temperature of 0.07
 * (logits up to 1/0.07 = 14.3 in magnitude) or far smaller never overflows.
 */
import * as tf from "@tensorflow/tfjs";
import { boolToFloat } from "../runtime/ops";
import { UsageError } from "../util/errors";

/** How the per-pair terms of a similarity loss are combined; see the module comment. */
export type ContrastiveReduction = "batch" | "pair";

/** Options of {@link foregroundContrastiveLoss} and {@link backgroundContrastiveLoss}. */
export interface ContrastiveLossOptions {
  /** Temperature t of eq. 9 and 11 (release 0.07, paper 1). Must be > 0. */
  temperature: number;
  /** `batch` (release: sums over the batch inside the log) or `pair` (mean of per-pair losses). Default `batch`. */
  reduction?: ContrastiveReduction;
}

/**
 * The subclass index of each pair's own prototype, as given by pair selection.
 * Host arrays are range-checked. An int32 tensor is used on the device as it is,
 * without reading it back (a synchronous read fails on WebGPU in Node), so it is
 * not range-checked: an index outside [0, S) leaves its pair without a positive.
 */
export type PositiveIndices = readonly number[] | Int32Array | tf.Tensor1D;

/** Added to a logit to remove it from a log-sum-exp (exp underflows to exactly 0; no inf, so no NaN in gradients). */
const EXCLUDE = -1e30;
/** F.normalize's epsilon: a row is divided by max(||x||, 1e-12). */
const NORM_EPS = 1e-12;

/** Rows divided by their L2 norm, as F.normalize(x, dim=-1): x / max(||x||, eps), with a gradient that stays finite at 0. */
export function l2NormalizeTensorRows(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.mul(x, tf.rsqrt(tf.maximum(tf.sum(tf.square(x), 1, true), NORM_EPS * NORM_EPS))) as tf.Tensor2D);
}

/** Validate the inputs; for host positives, build the positive mask on the host (tf.oneHot is broken on WASM). */
function validate(fn: string, features: tf.Tensor2D, positives: PositiveIndices, prototypes: tf.Tensor2D, opts: ContrastiveLossOptions) {
  if (features.rank !== 2) throw new UsageError(`${fn}: features must be [P, d], got [${features.shape.join(", ")}]`);
  if (prototypes.rank !== 2) throw new UsageError(`${fn}: prototypes must be [S, d], got [${prototypes.shape.join(", ")}]`);
  const [p, d] = features.shape;
  const [s, dp] = prototypes.shape;
  if (d !== dp) throw new UsageError(`${fn}: features have d = ${d} but prototypes have d = ${dp}`);
  if (s < 2) throw new UsageError(`${fn}: need at least 2 prototypes (one positive, one negative), got S = ${s}`);
  if (!(opts.temperature > 0) || !Number.isFinite(opts.temperature)) throw new UsageError(`${fn}: temperature must be a finite number > 0, got ${opts.temperature}`);
  const reduction = opts.reduction ?? "batch";
  if (reduction !== "batch" && reduction !== "pair") throw new UsageError(`${fn}: unknown reduction "${String(reduction)}" (use batch or pair)`);
  let mask: Float32Array | tf.Tensor1D;
  if (positives instanceof tf.Tensor) {
    if (positives.rank !== 1 || positives.shape[0] !== p) throw new UsageError(`${fn}: positives must be a tensor [P=${p}], got [${positives.shape.join(", ")}]`);
    if (positives.dtype !== "int32") throw new UsageError(`${fn}: a positives tensor must be int32, got ${positives.dtype}`);
    mask = positives;
  } else {
    if (positives.length !== p) throw new UsageError(`${fn}: ${positives.length} positive indices for ${p} pairs of features`);
    mask = new Float32Array(p * s);
    for (let i = 0; i < p; i++) {
      const j = positives[i]!;
      if (!Number.isInteger(j) || j < 0 || j >= s) throw new UsageError(`${fn}: positives[${i}] = ${j} is not a subclass index in [0, ${s})`);
      mask[i * s + j] = 1;
    }
  }
  return { p, s, mask, reduction };
}

/** z [P, S] = cos(x_p, P_s) / t, and the [P, S] float mask: 1 at each pair's positive prototype, else 0. */
function prepare(features: tf.Tensor2D, prototypes: tf.Tensor2D, mask: Float32Array | tf.Tensor1D, p: number, s: number, t: number) {
  const z = tf.div(tf.matMul(l2NormalizeTensorRows(features), l2NormalizeTensorRows(prototypes), false, true), t) as tf.Tensor2D;
  // a one-hot by comparison (tf.oneHot writes wrong values on WASM)
  const m = mask instanceof tf.Tensor ? boolToFloat(tf.equal(tf.reshape(mask, [p, 1]), tf.range(0, s, 1, "int32").reshape([1, s]))) : tf.tensor2d(mask, [p, s]);
  return { z, mask: m as tf.Tensor2D };
}

/**
 * A zero scalar for a batch without pairs, still connected to the inputs so their
 * gradients exist (all zero) and tf.variableGrads finds the connection. (+0, not -0.)
 */
function emptyLoss(features: tf.Tensor2D, prototypes: tf.Tensor2D): tf.Scalar {
  return tf.add(tf.mul(tf.add(tf.sum(features), tf.sum(prototypes)), 0), 0) as tf.Scalar;
}

/**
 * The foreground similarity loss L_FGS (paper eq. 9-10, release semantics).
 *
 * With z_ps = cos(f_p, P_s) / t:
 * - `batch`: `-log( S+ / (S+ + S-) )`, S+ = sum_p exp(z_{p,p+}),
 *   S- = sum_p sum_{s != p+} exp(z_ps). Since each pair's positive plus its S-1
 *   negatives are all S prototypes, this is `LSE(all z) - LSE_p(z_{p,p+})`.
 * - `pair`: mean over p of `-log( exp(z_{p,p+}) / sum_s exp(z_ps) )`, a
 *   cross-entropy over the S prototypes with target p+.
 *
 * @param fgFeatures [P, d] foreground region features f (any scale; normalised here).
 * @param positives  [P] subclass index of each pair's own prototype, in [0, S).
 * @param prototypes [S, d] prototypes, class-major (normalised here; the release's are unit already).
 * @returns a scalar. With P = 0 pairs: zero, connected to `fgFeatures` and `prototypes` with zero gradients.
 */
export function foregroundContrastiveLoss(
  fgFeatures: tf.Tensor2D,
  positives: PositiveIndices,
  prototypes: tf.Tensor2D,
  options: ContrastiveLossOptions,
): tf.Scalar {
  const { p, s, mask, reduction } = validate("foregroundContrastiveLoss", fgFeatures, positives, prototypes, options);
  return tf.tidy(() => {
    if (p === 0) return emptyLoss(fgFeatures, prototypes);
    const { z, mask: m } = prepare(fgFeatures, prototypes, mask, p, s, options.temperature);
    const pos = tf.sum(tf.mul(z, m), 1); // [P] z_{p,p+}
    if (reduction === "batch") return tf.sub(tf.logSumExp(z), tf.logSumExp(pos)) as tf.Scalar;
    return tf.mean(tf.sub(tf.logSumExp(z, 1), pos)) as tf.Scalar;
  });
}

/**
 * The background similarity loss L_BGS (paper eq. 11-12, release semantics).
 *
 * With z_ps = cos(g_p, P_s) / t:
 * - `batch`: `-log( B- / (B- + B+) )`, B- = sum_p mean_{s != p+} exp(z_ps),
 *   B+ = sum_p exp(z_{p,p+}): the background feature should resemble the other
 *   prototypes (on average) more than its own. In log space the mean is a shift
 *   of the negatives' logits by -log(S-1).
 * - `pair`: mean over p of `-log( B-_p / (B-_p + B+_p) )`.
 *
 * @param bgFeatures [P, d] background region features g (normalised here).
 * @param positives  [P] subclass index of each pair's own prototype, in [0, S).
 * @param prototypes [S, d] prototypes, class-major.
 * @returns a scalar. With P = 0 pairs: zero, connected to `bgFeatures` and `prototypes` with zero gradients.
 */
export function backgroundContrastiveLoss(
  bgFeatures: tf.Tensor2D,
  positives: PositiveIndices,
  prototypes: tf.Tensor2D,
  options: ContrastiveLossOptions,
): tf.Scalar {
  const { p, s, mask, reduction } = validate("backgroundContrastiveLoss", bgFeatures, positives, prototypes, options);
  return tf.tidy(() => {
    if (p === 0) return emptyLoss(bgFeatures, prototypes);
    const { z, mask: m } = prepare(bgFeatures, prototypes, mask, p, s, options.temperature);
    // w: negatives shifted by -log(S-1) (their exp is divided by S-1, giving the mean), positives unchanged.
    const w = tf.sub(z, tf.mul(tf.sub(1, m), Math.log(s - 1)));
    const negOnly = tf.add(w, tf.mul(m, EXCLUDE));
    if (reduction === "batch") return tf.sub(tf.logSumExp(w), tf.logSumExp(negOnly)) as tf.Scalar;
    return tf.mean(tf.sub(tf.logSumExp(w, 1), tf.logSumExp(negOnly, 1))) as tf.Scalar;
  });
}
