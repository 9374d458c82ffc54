/**
 * Small ops that avoid backend bugs of tfjs 4.22.
 */
import * as tf from "@tensorflow/tfjs";

/**
 * A boolean (or 0/1 integer) tensor as float32 0/1, computed by a select instead of
 * `tf.cast`. On the WebGPU backend, `cast` of bool or int32 to float32 only relabels
 * the buffer (tfjs sees no "encoding loss"), and kernels that generate shaders from
 * the buffer's real type (transpose, for one) then fail to compile (`expected f32,
 * got i32`) and return garbage. (On WASM, `tf.oneHot` has a related bug: see
 * wasm-kernels.ts.)
 */
export function boolToFloat<T extends tf.Tensor>(cond: T): T {
  return tf.tidy(() => {
    const c = cond.dtype === "bool" ? cond : tf.notEqual(cond, 0);
    return tf.where(c, tf.ones(cond.shape, "float32"), tf.zeros(cond.shape, "float32")) as T;
  });
}
