// The bundled MobileNetV2 encoder's forward pass and input gradient on region images
// (what the `image` region mode runs), by two routes interleaved in one process; not a test.
//
//   npx tsx bench/encoder-grad.ts [--regions 44] [--size 112] [--reps 3]
//
// "layers": `model.apply` (tfjs-layers' fused convolutions, which compute every filter
// gradient too) with TF.js's own ClipByValue gradient. "pbip": `applyFrozen` with pbip's
// one-pass clip gradient. Both use pbip's other WASM kernels (Slice, depthwise input
// gradient), which are registered for the whole backend. The two routes' gradients are
// compared bit for bit.
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../src/runtime";
import { instantiateBundledMobileNetV2 } from "../src/encoders/bundled";
import { applyFrozen } from "../src/encoders/frozen";

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { regions: { type: "string", default: "44" }, size: { type: "string", default: "112" }, reps: { type: "string", default: "3" } } });
  const tfjsClip = tf.getGradient("ClipByValue")!;
  console.log((await initBackend({ backend: "wasm" })).device);
  const pbipClip = tf.getGradient("ClipByValue")!;
  const { model } = await instantiateBundledMobileNetV2();
  model.trainable = false;
  const n = Number(values.regions);
  const size = Number(values.size);
  const x = tf.randomUniform([n, size, size, 3], -1, 1, "float32", 1) as tf.Tensor4D;
  const routes: [string, tf.GradConfig, (z: tf.Tensor) => tf.Tensor][] = [
    ["layers", tfjsClip, (z) => model.apply(z, { training: false }) as tf.Tensor],
    ["pbip", pbipClip, (z) => applyFrozen(model, z)[0]!],
  ];
  const warn = console.warn;
  console.warn = () => {}; // registerGradient warns when it replaces one
  const times: Record<string, number[]> = {};
  let first: Buffer | undefined;
  try {
    for (let r = 0; r <= Number(values.reps); r++) {
      for (const [name, grad, f] of r % 2 ? [...routes].reverse() : routes) {
        tf.registerGradient(grad);
        const t = performance.now();
        const g = tf.tidy(() => tf.grad((z: tf.Tensor) => tf.sum(tf.mean(f(z), [1, 2])))(x));
        const bits = Buffer.from((g.dataSync() as Float32Array).buffer);
        g.dispose();
        if (r > 0) (times[name] ??= []).push((performance.now() - t) / 1000);
        if (!first) first = bits;
        else if (!first.equals(bits)) throw new Error(`${name}: the input gradient differs from the other route's`);
      }
    }
  } finally {
    tf.registerGradient(pbipClip);
    console.warn = warn;
  }
  console.log(`forward + input gradient of ${n} images at ${size} px (first pass is warm-up; gradients bit-identical):`);
  for (const [k, v] of Object.entries(times)) {
    const med = [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
    console.log(`  ${k.padEnd(7)} median ${med.toFixed(2)} s  (runs: ${v.map((t) => t.toFixed(2)).join(", ")})`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
