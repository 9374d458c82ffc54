/**
 * The total PBIP objective (paper eq. 6 and 13; METHOD.md section 4, "Total").
 */
import * as tf from "@tensorflow/tfjs";
import { UsageError } from "../util/errors";

/** The weights of the total loss; see METHOD.md section 6 for the `paper` and `release` values. */
export interface PbipLossWeights {
  /** alpha of eq. 6, on L_CLS (paper 1, release 1). */
  alpha: number;
  /** beta of eq. 6, on L_SIM (paper 0.5, release 0.1: its `l5`). */
  beta: number;
  /** theta1 of eq. 13, on L_FGS (paper 1, release 1). */
  theta1: number;
  /** theta2 of eq. 13, on L_BGS (paper 0.5, release 1). */
  theta2: number;
  /** Weight of mean(M_4) inside the beta term (release 0.0005; the paper has none: 0). */
  camRegWeight: number;
}

/** The terms {@link pbipLoss} combines. Absent terms count as zero (e.g. a classification-only run). */
export interface PbipLossTerms {
  /** L_CLS, a scalar (from {@link classificationLoss}'s `total`). */
  cls: tf.Scalar;
  /** L_FGS, a scalar ({@link foregroundContrastiveLoss}). */
  fg?: tf.Scalar;
  /** L_BGS, a scalar ({@link backgroundContrastiveLoss}). */
  bg?: tf.Scalar;
  /** The map the regulariser averages: the release passes the stage-4 similarity maps M_4 (any shape); a scalar is its own mean. */
  camReg?: tf.Tensor;
}

/** What {@link pbipLoss} returns. Every tensor is new and owned by the caller: `tf.dispose(result)` frees them all. */
export type PbipLossResult = {
  /** alpha*L_CLS + beta*(theta1*L_FGS + theta2*L_BGS + camRegWeight*mean(M_4)). */
  total: tf.Scalar;
  /** L_CLS, unweighted (a copy of the input). */
  cls: tf.Scalar;
  /** L_FGS, unweighted (zero when absent). */
  fg: tf.Scalar;
  /** L_BGS, unweighted (zero when absent). */
  bg: tf.Scalar;
  /** mean(M_4), unweighted (zero when absent). */
  camReg: tf.Scalar;
  /** L_SIM as the release adds it: theta1*L_FGS + theta2*L_BGS + camRegWeight*mean(M_4) (eq. 13 plus the regulariser). */
  sim: tf.Scalar;
};

/**
 * The total loss `L = alpha*L_CLS + beta*(theta1*L_FGS + theta2*L_BGS + camRegWeight*mean(M_4))`
 * (paper eq. 6 and 13; the camRegWeight term is the release's `0.0005*mean(cam4)`,
 * added inside the beta term). The release's values: alpha 1, beta 0.1,
 * theta1 = theta2 = 1, camRegWeight 0.0005; the paper's: 1, 0.5, 1, 0.5, 0.
 */
export function pbipLoss(terms: PbipLossTerms, weights: PbipLossWeights): PbipLossResult {
  for (const key of ["alpha", "beta", "theta1", "theta2", "camRegWeight"] as const) {
    if (!Number.isFinite(weights[key])) throw new UsageError(`pbipLoss: weight ${key} is ${weights[key]}`);
  }
  for (const key of ["cls", "fg", "bg"] as const) {
    const t = terms[key];
    if (t !== undefined && t.rank !== 0) throw new UsageError(`pbipLoss: ${key} must be a scalar, got shape [${t.shape.join(", ")}]`);
  }
  return tf.tidy(() => {
    const cls = tf.clone(terms.cls);
    const fg = terms.fg ? tf.clone(terms.fg) : tf.scalar(0);
    const bg = terms.bg ? tf.clone(terms.bg) : tf.scalar(0);
    const camReg = terms.camReg ? (tf.mean(terms.camReg) as tf.Scalar) : tf.scalar(0);
    const sim = tf.addN([tf.mul(fg, weights.theta1), tf.mul(bg, weights.theta2), tf.mul(camReg, weights.camRegWeight)]) as tf.Scalar;
    const total = tf.add(tf.mul(cls, weights.alpha), tf.mul(sim, weights.beta)) as tf.Scalar;
    return { total, cls, fg, bg, camReg, sim };
  });
}
