// Speed of pbip's element-wise and row kernels on the WASM backend (not a test):
//
//   npx tsx bench/kernel-speed.ts
//
// GELU and its gradient over 16 M float32 values, with TF.js's Add beside them as
// the memory-bound yardstick; the softmax's input gradient on Swin-T's attention
// probabilities for 20 images ([1280, 3, 49, 49]) against the same formula in TF.js
// ops, and TF.js's own softmax forward; median of five runs, ns per value.
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../src/runtime/backend";
import { geluGradWasm, geluWasm, softmaxGradWasm, transformerKernelsAvailable } from "../src/runtime/wasm-transformer";

async function main(): Promise<void> {
  const report = await initBackend({ backend: "wasm" });
  if (!transformerKernelsAvailable()) throw new Error("pbip's WASM transformer kernels did not register");
  console.log(report.device);
  const n = 1 << 24;
  const x = tf.randomNormal([n]);
  const dy = tf.randomNormal([n]);
  const p = tf.softmax(tf.randomNormal([1280, 3, 49, 49]));
  const dp = tf.randomNormal(p.shape);
  const cases: [string, number, () => tf.Tensor][] = [
    ["GELU", n, () => geluWasm(x)],
    ["GELU gradient", n, () => geluGradWasm(x, dy)],
    ["Add (TF.js, one thread)", n, () => tf.add(x, dy)],
    ["softmax gradient", p.size, () => softmaxGradWasm(p, dp)],
    ["the same in TF.js ops", p.size, () => tf.tidy(() => tf.mul(p, tf.sub(dp, tf.sum(tf.mul(dp, p), -1, true))))],
    ["softmax (TF.js: XNNPACK)", p.size, () => tf.softmax(dp)],
  ];
  for (const [name, size, f] of cases) {
    f().dispose();
    const ts: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      for (let i = 0; i < 4; i++) f().dispose();
      ts.push((performance.now() - t0) / 4);
    }
    ts.sort((a, b) => a - b);
    console.log(`${name.padEnd(26)} ${ts[2]!.toFixed(1)} ms for ${size} values, ${((ts[2]! * 1e6) / size).toFixed(2)} ns per value`);
  }
  tf.dispose([x, dy, p, dp]);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
