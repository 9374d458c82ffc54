// Speed of batched matrix products on the WASM backend (not a test):
//
//   npx tsx bench/gemm-speed.ts [--reps 10]
//
// For the batched shapes of MiT-b1 attention at batch 10 and 224 px, and of Swin-T
// window attention, compares TF.js's own BatchMatMul (a scalar loop for any batch
// above 1), pbip's generated SIMD GEMM (`src/runtime/wasm-simd.ts`) with its default
// tile and a few others, and XNNPACK's single-matrix path on a square product as the
// yardstick. Prints GFLOP/s of the kernel calls alone (output not read back).
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../src/runtime";
import { gemm, relaxedSimdAvailable, wasmSimdKernelsAvailable, type GemmTile } from "../src/runtime/wasm-simd";
import { kernelThreads } from "../src/runtime/wasm-pool";
import { backendMemory, type WasmBackendLike } from "../src/runtime/wasm-asm";

const tileName = (t: GemmTile) => `${t.mr}x${4 * t.nv}${t.fma ? "f" : ""}`;
const kernelThreadsNote = () => `pbip's kernels on ${kernelThreads(backendMemory(tf.backend() as unknown as WasmBackendLike).memory)} thread(s)`;

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

async function main(): Promise<void> {
  await initBackend({ backend: "wasm" });
  if (!wasmSimdKernelsAvailable()) throw new Error("pbip's WASM SIMD kernels did not register");
  const reps = Number(arg("reps", "10"));
  // [batch, M, K, N, transposeA, what]
  const shapes: [number, number, number, number, boolean, string][] = [
    [80, 196, 64, 196, false, "MiT-b1 stage 3 q k^T"],
    [80, 196, 196, 64, false, "MiT-b1 stage 3 p v"],
    [10, 3136, 64, 49, false, "MiT-b1 stage 1 q k^T"],
    [10, 3136, 49, 64, false, "MiT-b1 stage 1 p v"],
    [10, 49, 3136, 64, true, "MiT-b1 stage 1 dV = p^T dy"],
    [2304, 49, 32, 49, false, "Swin-T window q k^T"],
    [2304, 49, 49, 32, false, "Swin-T window p v"],
    [1, 512, 512, 512, false, "square, one matrix"],
    [1, 1960, 512, 2048, false, "MiT-b1 stage 3 fc1"],
    [1, 31360, 64, 256, false, "MiT-b1 stage 1 fc1"],
    [1, 31360, 256, 64, false, "MiT-b1 stage 1 fc2"],
    [1, 512, 1960, 2048, true, "MiT-b1 stage 3 fc1 dW"],
    [1, 256, 31360, 64, true, "MiT-b1 stage 1 fc2 dW"],
    [1, 64, 31360, 256, true, "MiT-b1 stage 1 fc1 dW"],
    [1, 20 * 3136, 96, 384, false, "Swin-T stage 1 fc1, 20 img"],
    [1, 20 * 3136, 384, 96, false, "Swin-T stage 1 fc2, 20 img"],
    [1, 20 * 196, 384, 1536, false, "Swin-T stage 3 fc1, 20 img"],
    [1, 20 * 196, 1536, 384, false, "Swin-T stage 3 fc2, 20 img"],
    [1, 20 * 49, 768, 3072, false, "Swin-T stage 4 fc1, 20 img"],
  ];
  // 4x8f: the default tile with relaxed SIMD's fused multiply-add (linearMatMul's), where available.
  const tiles: GemmTile[] = [{ mr: 4, nv: 2 }, { mr: 3, nv: 3 }, { mr: 6, nv: 2 }, ...(relaxedSimdAvailable() ? [{ mr: 4, nv: 2, fma: true }] : [])];
  const timeIt = (f: () => tf.Tensor): number => {
    f().dispose(); // compile + warm up
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) f().dispose();
    return (performance.now() - t0) / reps;
  };
  console.log(`GFLOP/s, mean of ${reps} calls, ${kernelThreadsNote()}; ${tiles.map((t) => `pbip ${tileName(t)}`).join(", ")} = pbip GEMM tiles (rows x columns, f = fused multiply-add); a single product packs B and splits rows across the threads`);
  for (const [n, M, K, N, tA, what] of shapes) {
    const a = tf.randomNormal(tA ? [n, K, M] : [n, M, K]);
    const b = tf.randomNormal([n, K, N]);
    const gf = (ms: number) => ((2 * n * M * K * N) / (ms * 1e6)).toFixed(1);
    const cells = [`TF.js ${gf(timeIt(() => tf.matMul(a, b, tA, false)))}`];
    // One matrix: XNNPACK, with A transposed explicitly first when needed (as pbip's linear layers do).
    if (n === 1) cells.push(`XNNPACK ${gf(timeIt(() => tf.tidy(() => tf.matMul(tA ? tf.transpose(a, [0, 2, 1]) : a, b))))}`);
    for (const t of tiles) cells.push(`pbip ${tileName(t)} ${gf(timeIt(() => gemm(a, b, { transposeA: tA, tile: t })))}`);
    console.log(`${what.padEnd(28)} [${n},${M},${K}]${tA ? "^T" : ""}x[${K},${N}]  ${cells.join("  ")}`);
    tf.dispose([a, b]);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
