/**
 * A weights hash for an encoder of your own: what goes into its identity's
 * `weightsHash`, so that a bank (which records it) is never used with other weights.
 */
import * as crypto from "node:crypto";
import type * as tf from "@tensorflow/tfjs";

/**
 * SHA-256 (first 16 hex digits) of named tensors: each name, shape and float32
 * value, in name order. The same weights give the same hash; any changed value,
 * shape or name another.
 *
 * @example
 * identity: { name: "my-encoder", dim: 64, weightsHash: weightsHashOf({ conv1: w }), preprocessing }
 */
export function weightsHashOf(tensors: Record<string, tf.Tensor>): string {
  const h = crypto.createHash("sha256");
  for (const name of Object.keys(tensors).sort()) {
    const t = tensors[name]!;
    h.update(`${name}\u0000${t.shape.join(",")}\u0000`);
    const v = Float32Array.from(t.dataSync() as ArrayLike<number>);
    const le = Buffer.alloc(v.length * 4);
    for (let i = 0; i < v.length; i++) le.writeFloatLE(v[i]!, i * 4);
    h.update(le);
  }
  return h.digest("hex").slice(0, 16);
}
