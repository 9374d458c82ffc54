import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray } from "../helpers";
import { applyFrozen, walkable } from "../../src/encoders/frozen";
import { instantiateBundledMobileNetV2 } from "../../src/encoders/bundled";

const bits = (t: tf.Tensor) => Buffer.from((t.dataSync() as Float32Array).slice().buffer);

/** Forward values, input gradient (of a fixed random projection) and the gradient's kernels, by both routes. */
async function compare(model: tf.LayersModel, x: tf.Tensor) {
  const routes = {
    layers: (z: tf.Tensor) => model.apply(z, { training: false }) as tf.Tensor,
    frozen: (z: tf.Tensor) => applyFrozen(model, z)[0]!,
  };
  const shape = tf.tidy(() => routes.layers(x).shape);
  const w = tf.tensor(randomArray(shape.reduce((a, b) => a * b, 1), 9), shape);
  const out: Record<string, { y: Buffer; g: Buffer; kernels: string[] }> = {};
  for (const [name, f] of Object.entries(routes)) {
    const y = tf.tidy(() => bits(f(x)));
    const prof = await tf.profile(() => tf.tidy(() => tf.grad((z: tf.Tensor) => tf.sum(tf.mul(f(z), w)))(x)));
    const g = prof.result as tf.Tensor;
    out[name] = { y, g: bits(g), kernels: prof.kernels.map((k) => k.name) };
    g.dispose();
  }
  w.dispose();
  return out as Record<keyof typeof routes, { y: Buffer; g: Buffer; kernels: string[] }>;
}

for (const backend of ["cpu", "wasm"] as const) {
  test(`applyFrozen on the bundled MobileNetV2 (${backend}): the same bits as model.apply, forward and input gradient, without a filter gradient; also stopped at an early layer`, async () => {
    await onBackend(backend, async () => {
      const { model } = await instantiateBundledMobileNetV2();
      model.trainable = false;
      const early = tf.model({ inputs: model.inputs, outputs: model.getLayer("block_4_add").output as tf.SymbolicTensor });
      const x = tf.tensor4d(randomArray(2 * 32 * 32 * 3, 3), [2, 32, 32, 3]);
      let before = -1;
      try {
        for (const m of [model, early, model]) {
          // tfjs-layers caches a few constants on first use; count from the second pass.
          if (m === early) before = tf.memory().numTensors;
          assert.ok(walkable(m));
          const r = await compare(m, x);
          assert.ok(r.frozen.y.equals(r.layers.y), "forward values differ");
          assert.ok(r.frozen.g.equals(r.layers.g), "input gradients differ");
          // model.apply's fused convolutions compute the filter gradients no one asked for.
          assert.ok(r.layers.kernels.includes("Conv2DBackpropFilter"), r.layers.kernels.join(" "));
          assert.ok(!r.frozen.kernels.includes("Conv2DBackpropFilter"), r.frozen.kernels.join(" "));
          assert.ok(r.frozen.kernels.includes("Conv2DBackpropInput"));
        }
        assert.equal(tf.memory().numTensors, before, "no tensors leaked");
      } finally {
        x.dispose();
        model.dispose();
      }
    });
  });
}

test("applyFrozen: convolutions with bias or activation run as themselves; a model with a shared layer falls back to model.apply", async () => {
  await onBackend("wasm", async () => {
    const inp = tf.input({ shape: [12, 12, 4] });
    const a = tf.layers.conv2d({ filters: 8, kernelSize: 3, padding: "same", useBias: true }).apply(inp) as tf.SymbolicTensor;
    const b = tf.layers.conv2d({ filters: 8, kernelSize: 3, strides: 2, padding: "valid", useBias: false, dilationRate: 1 }).apply(a) as tf.SymbolicTensor;
    const c = tf.layers.conv2d({ filters: 8, kernelSize: 1, useBias: false }).apply(b) as tf.SymbolicTensor;
    const sum = tf.layers.add().apply([b, c]) as tf.SymbolicTensor;
    const model = tf.model({ inputs: inp, outputs: sum });
    const x = tf.tensor4d(randomArray(3 * 12 * 12 * 4, 5), [3, 12, 12, 4]);
    const r = await compare(model, x);
    assert.ok(r.frozen.y.equals(r.layers.y) && r.frozen.g.equals(r.layers.g));
    // The biased convolution runs as itself (fused, so it still computes its filter gradient); the others do not.
    assert.equal(r.frozen.kernels.filter((k) => k === "Conv2DBackpropFilter").length, 1);
    assert.equal(r.layers.kernels.filter((k) => k === "Conv2DBackpropFilter").length, 3);

    const shared = tf.layers.conv2d({ filters: 4, kernelSize: 1, useBias: false });
    const s1 = shared.apply(inp) as tf.SymbolicTensor;
    const s2 = shared.apply(s1) as tf.SymbolicTensor;
    const twice = tf.model({ inputs: inp, outputs: s2 });
    assert.equal(walkable(twice), false);
    const r2 = await compare(twice, x);
    assert.ok(r2.frozen.y.equals(r2.layers.y) && r2.frozen.g.equals(r2.layers.g));
    tf.dispose(x);
    model.dispose();
    twice.dispose();
  });
});
