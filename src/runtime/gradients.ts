/**
 * Gradient replacements that keep tfjs's results but avoid slow paths.
 *
 * `FusedBatchNorm` (tfjs-layers' BatchNormalization, e.g. the bundled MobileNetV2's
 * 52 BN layers): tfjs 4.22 materialises `tile(rsqrt(var + eps))` to the full
 * activation shape for dx and computes `x - mean` and `dy * scale` eagerly even
 * when only dx is needed; on WASM the tiles alone took about a third of
 * MobileNetV2's backward pass. This version broadcasts a per-channel factor and
 * computes each input's gradient only when asked. Same formulas, same values.
 *
 * `BatchMatMul`: the gradient of a matMul is two matMuls with a transposed operand,
 * which the WASM backend runs many times slower than an explicit transpose followed
 * by a plain matMul. Same products, reordered (no broadcasting batch dims: those
 * keep tfjs's gradient).
 *
 * `ClipByValue` (the clip of every ReLU6 in tfjs-layers' MobileNetV2: relu, then
 * clipByValue(0, 6)): on WASM, one SIMD pass ({@link clipByValueGrad}) instead of
 * tfjs's five (greaterEqual, lessEqual, logicalAnd, zerosLike, where), with the same
 * bits; other backends, and sizes not a multiple of 4, keep tfjs's gradient.
 */
import * as tf from "@tensorflow/tfjs";
import { clipByValueGrad, wasmSimdKernelsAvailable } from "./wasm-simd";

let registered = false;

/** Register the replacements (idempotent; all backends). */
export function registerFastGradients(): void {
  if (registered) return;
  registered = true;
  const matMulGrad = tf.getGradient("BatchMatMul");
  tf.registerGradient({
    kernelName: "BatchMatMul",
    inputsToSave: ["a", "b"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
      const [a, b] = saved as [tf.Tensor, tf.Tensor];
      const g = dy as tf.Tensor;
      const sameBatch = a.rank === b.rank && a.shape.slice(0, -2).every((d, i) => d === b.shape[i]);
      if (!sameBatch) return matMulGrad!.gradFunc(dy, saved, attrs);
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      const t = (x: tf.Tensor) => {
        const perm = x.shape.map((_, i) => i);
        [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1]!, perm[x.rank - 2]!];
        return tf.transpose(x, perm);
      };
      const mm = (x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y);
      if (!transposeA && !transposeB) return { a: () => mm(g, t(b)), b: () => mm(t(a), g) };
      if (!transposeA && transposeB) return { a: () => mm(g, b), b: () => mm(t(g), a) };
      if (transposeA && !transposeB) return { a: () => mm(b, t(g)), b: () => mm(a, g) };
      return { a: () => mm(t(b), t(g)), b: () => mm(t(g), t(a)) };
    },
  });
  const clipGrad = tf.getGradient("ClipByValue");
  tf.registerGradient({
    kernelName: "ClipByValue",
    inputsToSave: ["x"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
      const [x] = saved as [tf.Tensor];
      const g = dy as tf.Tensor;
      if (x.size === 0 || x.size % 4 !== 0 || x.dtype !== "float32" || g.dtype !== "float32" || !wasmSimdKernelsAvailable()) return clipGrad!.gradFunc(dy, saved, attrs);
      const { clipValueMin, clipValueMax } = attrs as unknown as { clipValueMin: number; clipValueMax: number };
      return { x: () => clipByValueGrad(x, g, clipValueMin, clipValueMax) };
    },
  });
  tf.registerGradient({
    kernelName: "FusedBatchNorm",
    inputsToSave: ["x", "mean", "variance", "scale"],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[], attrs: tf.NamedAttrMap) => {
      const g = dy as tf.Tensor;
      const eps = (attrs as unknown as { varianceEpsilon: number }).varianceEpsilon;
      const [x, mean, variance, scale] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor | undefined];
      const axes = tf.backend_util.getReductionAxes(mean.shape, x.shape);
      const perChannel = mean.rank === 1 && x.rank > 1;
      const reduce = (t: tf.Tensor) => (perChannel ? tf.sum(t, axes) : t);
      const inv = () => tf.rsqrt(tf.add(variance, eps));
      const s = () => (scale ?? tf.scalar(1));
      return {
        x: () => tf.mul(g, tf.mul(inv(), s())),
        mean: () => tf.reshape(tf.neg(reduce(tf.mul(g, tf.mul(inv(), s())))), mean.shape),
        variance: () => {
          const r = inv();
          return tf.reshape(reduce(tf.mul(tf.mul(g, tf.sub(x, mean)), tf.mul(tf.mul(tf.mul(r, r), r), tf.mul(s(), -0.5)))), mean.shape);
        },
        scale: () => tf.reshape(reduce(tf.mul(g, tf.mul(tf.sub(x, mean), inv()))), mean.shape),
        offset: () => tf.reshape(reduce(g), mean.shape),
      };
    },
  });
}

/**
 * Gradients of `f` at `xs` for the upstream gradient `dy`, computed from inside another
 * gradient's backward pass (gradient checkpointing). TF.js 4.22 keeps one active tape:
 * a nested `tf.grads` starts a fresh one and, when it finishes, sets the engine's tape
 * to null, so the outer backward could no longer release its saved tensors. The outer
 * tape is put back afterwards.
 */
export function recomputeGrads(f: (...xs: tf.Tensor[]) => tf.Tensor, xs: tf.Tensor[], dy: tf.Tensor): tf.Tensor[] {
  const state = tf.engine().state;
  const outerTape = state.activeTape;
  try {
    return tf.grads(f)(xs, dy);
  } finally {
    state.activeTape = outerTape;
  }
}
