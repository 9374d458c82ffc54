// Speed of WASM Transpose, GatherV2, Slice and SplitV on the shapes a release training step runs (not a test).
//
//   npx tsx bench/copy-kernels.ts [--backend wasm]
//
// pbip replaces TF.js's WASM Transpose for ranks above 4 and its GatherV2 for slices of
// 16 elements or more, and its Slice and SplitV for every non-string slice
// (src/runtime/wasm-kernels.ts); the other shapes below run TF.js's own kernels and are
// there for comparison. Each line: mean of 3 calls after a warm-up.
import * as tf from "@tensorflow/tfjs";
import { initBackend, formatBackendReport, type BackendChoice } from "../src/runtime/backend";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

function time(fn: () => tf.Tensor): number {
  fn().dispose();
  const t0 = performance.now();
  for (let r = 0; r < 3; r++) fn().dispose();
  return (performance.now() - t0) / 3;
}

async function main(): Promise<void> {
  console.log(formatBackendReport(await initBackend({ backend: arg("backend", "wasm") as BackendChoice })));
  const transposes: [number[], number[], string][] = [
    [[10, 29, 2, 29, 2, 64], [0, 2, 4, 1, 3, 5], "MiT stage-2 stride phases"],
    [[10, 2, 2, 29, 29, 64], [0, 3, 1, 4, 2, 5], "their gradient"],
    [[10, 58, 4, 58, 4, 3], [0, 2, 4, 1, 3, 5], "MiT stage-1 phases (runs of 3)"],
    [[10, 15, 2, 15, 2, 128], [0, 2, 4, 1, 3, 5], "MiT stage-3 stride phases"],
    [[10, 784, 5, 64], [0, 2, 1, 3], "rank 4: TF.js's kernel"],
    [[31360, 256], [1, 0], "rank 2: TF.js's kernel"],
  ];
  for (const [shape, perm, what] of transposes) {
    const x = tf.randomNormal(shape);
    console.log(`Transpose [${shape}] perm [${perm}] (${what}): ${time(() => tf.transpose(x, perm)).toFixed(2)} ms`);
    x.dispose();
  }
  const gathers: [number[], number, string][] = [
    [[10, 224, 224, 3], 33, "a batch's images per matching pair"],
    [[120, 50176], 16, "maps per pair"],
  ];
  for (const [shape, n, what] of gathers) {
    const x = tf.randomNormal(shape);
    const idx = tf.tensor1d(Array.from({ length: n }, (_, k) => (k * 7) % shape[0]!), "int32");
    console.log(`GatherV2 [${shape}] by ${n} indices (${what}): ${time(() => tf.gather(x, idx)).toFixed(2)} ms`);
    tf.dispose([x, idx]);
  }
  // The fused AdamW update splits MiT-b1's parameters, one flat vector, back into its
  // 196 tensors (sizes here: 196 parts of 1 000 to 141 000 values, 13.9 M in all).
  const sizes = Array.from({ length: 196 }, (_, i) => 1000 + ((i * 7919) % 140000));
  const flat = tf.randomNormal([sizes.reduce((a, b) => a + b, 0)]);
  const splitMs = time(() => {
    const parts = tf.split(flat, sizes);
    tf.dispose(parts.slice(1));
    return parts[0]!;
  });
  console.log(`SplitV [${flat.size}] into ${sizes.length} parts (the fused AdamW update): ${splitMs.toFixed(2)} ms`);
  const x = tf.randomNormal([10, 224, 224, 3]);
  console.log(`Slice [10,224,224,3] -> one image (a contiguous block): ${time(() => tf.slice(x, [3, 0, 0, 0], [1, 224, 224, 3])).toFixed(2)} ms`);
  tf.dispose([flat, x]);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
