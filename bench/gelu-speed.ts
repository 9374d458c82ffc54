// Speed of pbip's exact-erf GELU kernels on the WASM backend (not a test):
//
//   npx tsx bench/gelu-speed.ts
//
// GELU and its gradient over 16 M float32 values, with TF.js's Add beside them as
// the memory-bound yardstick; median of five runs of four calls, ns per element.
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../src/runtime/backend";
import { geluGradWasm, geluWasm, transformerKernelsAvailable } from "../src/runtime/wasm-transformer";

async function main(): Promise<void> {
  const report = await initBackend({ backend: "wasm" });
  if (!transformerKernelsAvailable()) throw new Error("pbip's WASM transformer kernels did not register");
  console.log(report.device);
  const n = 1 << 24;
  const x = tf.randomNormal([n]);
  const dy = tf.randomNormal([n]);
  const cases: [string, () => tf.Tensor][] = [
    ["GELU", () => geluWasm(x)],
    ["GELU gradient", () => geluGradWasm(x, dy)],
    ["Add (TF.js, one thread)", () => tf.add(x, dy)],
  ];
  for (const [name, f] of cases) {
    f().dispose();
    const ts: number[] = [];
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      for (let i = 0; i < 4; i++) f().dispose();
      ts.push((performance.now() - t0) / 4);
    }
    ts.sort((a, b) => a - b);
    console.log(`${name.padEnd(24)} ${ts[2]!.toFixed(1)} ms for ${n} values, ${((ts[2]! * 1e6) / n).toFixed(2)} ns per value`);
  }
  tf.dispose([x, dy]);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
