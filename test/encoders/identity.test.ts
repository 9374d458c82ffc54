import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as tf from "@tensorflow/tfjs";
import { weightsHashOf } from "../../src/encoders/identity";

test("weightsHashOf: by hand on one tensor; name order does not matter; a value, shape or name change does", () => {
  const a = tf.tensor2d([1, 2, 3, 4], [2, 2]);
  const b = tf.tensor1d([0.5]);
  const le = Buffer.alloc(16);
  [1, 2, 3, 4].forEach((v, i) => le.writeFloatLE(v, i * 4));
  const byHand = createHash("sha256").update("w\u00002,2\u0000").update(le).digest("hex").slice(0, 16);
  assert.equal(weightsHashOf({ w: a }), byHand);
  assert.equal(weightsHashOf({ a, b }), weightsHashOf({ b, a }));
  const a2 = tf.tensor2d([1, 2, 3, 4.0001], [2, 2]);
  const flat = tf.tensor1d([1, 2, 3, 4]);
  const others: Record<string, tf.Tensor>[] = [{ a: a2, b }, { a: flat, b }, { c: a, b }];
  for (const other of others) assert.notEqual(weightsHashOf(other), weightsHashOf({ a, b }));
  tf.dispose([a, b, a2, flat]);
});
