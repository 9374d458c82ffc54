import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray } from "../helpers";
import { buildMiT } from "../../src/model/backbones";

test("MiT stochastic depth is a function of the step seed (exact resume with drop path > 0)", async () => {
  await onBackend("wasm", () => undefined);
  const m = buildMiT("mit-b0", { config: { embedDims: [8, 16, 24, 32], depths: [2, 2, 2, 2], numHeads: [1, 1, 1, 1], dropPathRate: 0.5 }, seed: 3 });
  const x = tf.tensor4d(randomArray(2 * 32 * 32 * 3, 4), [2, 32, 32, 3]);
  const run = async (seed: number) => {
    m.setStepSeed(seed);
    const outs = m.apply(x, true);
    const v = Float32Array.from(await outs[3]!.data());
    tf.dispose(outs);
    return v;
  };
  const a = await run(7);
  const b = await run(8);
  const c = await run(7);
  assert.deepEqual(Array.from(c), Array.from(a), "same step seed, same drop masks");
  assert.notDeepEqual(Array.from(b), Array.from(a), "another step seed draws other masks (drop path 0.5, 8 blocks, batch 2)");
  tf.dispose(x);
  m.dispose();
});
