/**
 * Prototype projection and similarity heads (METHOD.md section 3, the paper's eq. 2),
 * as pure functions of tensors plus the small stateful pieces that hold their weights.
 */
import * as tf from "@tensorflow/tfjs";
import type { SimilarityForm } from "../config/profiles";
import { mergeSubclassLogits } from "../losses/merge";

/** PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. */
function torchLinearInit(fanIn: number, shape: number[], seed: number): tf.Tensor {
  const bound = 1 / Math.sqrt(fanIn);
  return tf.randomUniform(shape, -bound, bound, "float32", seed);
}

/**
 * The per-stage prototype projection MLP: Linear(d, h), ReLU, Linear(h, C_i). It maps
 * the bank's prototypes P [S, d] into the stage's feature space, P_i [S, C_i].
 */
export class PrototypeProjection {
  readonly w1: tf.Variable;
  readonly b1: tf.Variable;
  readonly w2: tf.Variable;
  readonly b2: tf.Variable;
  constructor(
    readonly name: string,
    inDim: number,
    hidden: number,
    outDim: number,
    seed: number,
  ) {
    // Variables are not given tfjs names (those must be unique per process); stable
    // names for checkpoints come from named().
    // (Inside tidy: tf.variable shares its initial tensor's data, which must be released.)
    this.w1 = tf.tidy(() => tf.variable(torchLinearInit(inDim, [inDim, hidden], seed)));
    this.b1 = tf.tidy(() => tf.variable(torchLinearInit(inDim, [hidden], seed + 1)));
    this.w2 = tf.tidy(() => tf.variable(torchLinearInit(hidden, [hidden, outDim], seed + 2)));
    this.b2 = tf.tidy(() => tf.variable(torchLinearInit(hidden, [outDim], seed + 3)));
  }
  /** P [S, d] -> P_i [S, C_i]. */
  apply(prototypes: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => {
      const h = tf.relu(tf.add(tf.matMul(prototypes, this.w1), this.b1));
      return tf.add(tf.matMul(h, this.w2), this.b2) as tf.Tensor2D;
    });
  }
  variables(): tf.Variable[] {
    return [this.w1, this.b1, this.w2, this.b2];
  }
  /** Variables by stable checkpoint name. */
  named(): [string, tf.Variable][] {
    return [
      [`${this.name}/fc1/weight`, this.w1],
      [`${this.name}/fc1/bias`, this.b1],
      [`${this.name}/fc2/weight`, this.w2],
      [`${this.name}/fc2/bias`, this.b2],
    ];
  }
}

/** L2-normalise along the last axis (eps as torch's F.normalize: 1e-12 on the norm). */
export function l2Normalize<T extends tf.Tensor>(x: T, eps = 1e-12): T {
  // x * rsqrt(max(|x|^2, eps^2)): the same values as x / max(|x|, eps), but a finite
  // gradient at x = 0 (tf.norm's gradient there is 0/0 = NaN, and ReLU features can
  // be all zero at a pixel).
  return tf.tidy(() => tf.mul(x, tf.rsqrt(tf.maximum(tf.sum(tf.square(x), -1, true), eps * eps))) as T);
}

/**
 * Similarity maps, eq. 2: one channel per subclass prototype.
 *
 * - `release`: `M = s * normalize(F) . P_i^T` — only the pixel feature is normalised.
 * - `paper`: `M = s * normalize(F) . normalize(P_i)^T` — a true cosine (scaled by s,
 *   so that sigmoid logits are not confined to [-1, 1]; s = 1 gives eq. 2 as printed).
 *
 * @param features F_i [B, h, w, C_i]
 * @param projected P_i [S, C_i]
 * @param scale s_i, a scalar tensor
 * @returns M_i [B, h, w, S]
 */
export function similarityMaps(features: tf.Tensor4D, projected: tf.Tensor2D, scale: tf.Scalar | number, form: SimilarityForm): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c] = features.shape;
    const f = l2Normalize(tf.reshape(features, [b * h * w, c]) as tf.Tensor2D);
    const p = form === "paper" ? l2Normalize(projected) : projected;
    // p^T first: WASM's matMul is much slower with a transposed operand.
    const m = tf.mul(tf.matMul(f, tf.transpose(p)), scale);
    return tf.reshape(m, [b, h, w, projected.shape[0]]) as tf.Tensor4D;
  });
}

/** Image-level subclass logits: global average pooling of each map, [B, h, w, S] -> [B, S]. */
export function poolLogits(maps: tf.Tensor4D): tf.Tensor2D {
  return tf.mean(maps, [1, 2]) as tf.Tensor2D;
}

/**
 * Merge the K subclass channels of each class into one (logits [B, S] or maps
 * [..., S] -> [..., N]). `mean` is used while training; `softmax` is the release's
 * inference rule `sum(softmax(s) * s)` over a class's K values.
 */
export function mergeSubclasses<T extends tf.Tensor>(x: T, k: readonly number[], mode: "mean" | "softmax"): T {
  const total = k.reduce((a, b) => a + b, 0);
  const s = x.shape[x.rank - 1]!;
  if (total !== s) throw new Error(`mergeSubclasses: K per class [${k}] sums to ${total}, but the input has ${s} channels`);
  // Any rank: flatten to [*, S] and use the losses' merge (one reshape when K is equal per class).
  return tf.tidy(() => tf.reshape(mergeSubclassLogits(tf.reshape(x, [-1, s]) as tf.Tensor2D, k, mode), [...x.shape.slice(0, -1), k.length]) as T);
}

/** The Table 5 ablation head: a 1x1 convolution F_i -> S channels instead of similarity to prototypes. */
export class Conv1x1Head {
  readonly kernel: tf.Variable;
  readonly bias: tf.Variable;
  constructor(
    readonly name: string,
    inChannels: number,
    outChannels: number,
    seed: number,
  ) {
    this.kernel = tf.tidy(() => tf.variable(torchLinearInit(inChannels, [1, 1, inChannels, outChannels], seed)));
    this.bias = tf.tidy(() => tf.variable(torchLinearInit(inChannels, [outChannels], seed + 1)));
  }
  apply(features: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => tf.add(tf.conv2d(features, this.kernel as tf.Tensor4D, 1, "valid"), this.bias) as tf.Tensor4D);
  }
  variables(): tf.Variable[] {
    return [this.kernel, this.bias];
  }
  named(): [string, tf.Variable][] {
    return [
      [`${this.name}/conv/weight`, this.kernel],
      [`${this.name}/conv/bias`, this.bias],
    ];
  }
}
