// Speed of the SegFormer Mix Transformer backbone (not a test).
//
//   npx tsx bench/mit-speed.ts [--model mit-b1] [--backend wasm] [--batch 10] [--size 224]
//                              [--reps 3] [--profile]
//
// Times a forward pass at batch 1, a forward pass at --batch, and a forward+backward
// pass (variableGrads over every backbone variable, stochastic depth on) at --batch,
// each as the median of --reps runs after one warm-up. --profile adds a per-kernel
// breakdown (TF.js profiler) of one forward+backward pass, grouped into attention
// matMuls, linear layers, convolutions, LayerNorm/GELU element-wise work, etc.
import * as tf from "@tensorflow/tfjs";
import { initBackend, type BackendChoice } from "../src/runtime";
import { buildMiT, type MiTName, type MixTransformer } from "../src/model/backbones";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
}

async function time(label: string, reps: number, fn: () => Promise<void>): Promise<number> {
  await fn(); // warm-up
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    ts.push((performance.now() - t0) / 1000);
  }
  const m = median(ts);
  console.log(`${label.padEnd(44)} ${m.toFixed(3)} s  (runs: ${ts.map((t) => t.toFixed(3)).join(", ")})`);
  return m;
}

function forward(model: MixTransformer, x: tf.Tensor4D): Promise<void> {
  const outs = model.apply(x, false);
  return Promise.all(outs.map((o) => o.data())).then(() => tf.dispose(outs));
}

function forwardBackward(model: MixTransformer, x: tf.Tensor4D, vars: tf.Variable[]): Promise<void> {
  const { value, grads } = tf.variableGrads(() => tf.addN(model.apply(x, true).map((m) => tf.mean(m))) as tf.Scalar, vars);
  return Promise.all(Object.values(grads).map((g) => g.data())).then(() => {
    value.dispose();
    tf.dispose(grads);
  });
}

/**
 * A kernel's share of the work. Attention products are batched over images (first dim
 * = batch), while 2-D matMuls (linears and their gradients) reach the kernel as
 * [1, N, K]; so run the profile with batch > 1. `unnamed scope` entries are custom
 * gradient wrappers whose time is already counted in the kernels they ran.
 */
function category(kernel: string, shapes: (number[] | null)[], batch: number): string | null {
  const k = kernel.toLowerCase();
  if (k === "unnamed scope" || k.endsWith("__op")) return null;
  if (k.includes("batchmatmul") || k.includes("fusedmatmul") || k === "pbipgemm") {
    const lead = shapes[0]?.[0] ?? 1;
    return lead === batch && batch > 1 ? "attention matMul (q k^T, p v) + grads" : "linear matMul (q, kv, proj, fc1, fc2, im2col) + grads";
  }
  if (k.includes("depthwise")) return "depthwise conv (Mix-FFN)";
  if (k.startsWith("pbipgelu")) return "GELU (pbip's kernels)";
  if (k.startsWith("pbiplayernorm")) return "LayerNorm (pbip's kernels)";
  if (k === "pbipcolumnsums") return "bias gradients (column sums)";
  if (k.includes("conv2d")) return "conv (patch embed forward)";
  if (k.includes("softmax")) return "softmax";
  if (k.includes("transpose")) return "transpose";
  if (["erf", "exp"].includes(k)) return "GELU erf / exp";
  if (["mean", "sum", "max"].includes(k)) return "reductions";
  if (["slice", "stridedslice", "concat", "padv2", "reshape", "identity", "tile", "pack", "reverse"].includes(k)) return "copies (slice/concat/pad/stack)";
  return "element-wise (LayerNorm, GELU, residual, ...)";
}

async function main(): Promise<void> {
  const backend = arg("backend", "wasm") as BackendChoice;
  const name = arg("model", "mit-b1") as MiTName;
  const batch = Number(arg("batch", "10"));
  const size = Number(arg("size", "224"));
  const reps = Number(arg("reps", "3"));
  const report = await initBackend({ backend });
  console.log(`${name}, backend ${report.backend} (${report.device}, ${report.threads} thread(s)), input ${size}x${size}, strides [4,2,2,1]`);
  const model = buildMiT(name, { seed: 0 });
  const vars = [...model.namedVariables().values()];
  const x1 = tf.randomNormal([1, size, size, 3]) as tf.Tensor4D;
  const xb = tf.randomNormal([batch, size, size, 3]) as tf.Tensor4D;

  await time(`forward, batch 1`, reps, () => forward(model, x1));
  await time(`forward, batch ${batch}`, reps, () => forward(model, xb));
  await time(`forward+backward, batch ${batch}`, reps, () => forwardBackward(model, xb, vars));

  if (flag("profile")) {
    const info = await tf.profile(() => {
      const { value, grads } = tf.variableGrads(() => tf.addN(model.apply(xb, true).map((m) => tf.mean(m))) as tf.Scalar, vars);
      value.dispose();
      tf.dispose(grads);
    });
    const by = new Map<string, number>();
    const byKernel = new Map<string, number>();
    let total = 0;
    for (const k of info.kernels) {
      const ms = typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
      const c = category(k.name, k.inputShapes as (number[] | null)[], batch);
      if (c === null) continue;
      total += ms;
      by.set(c, (by.get(c) ?? 0) + ms);
      byKernel.set(k.name, (byKernel.get(k.name) ?? 0) + ms);
    }
    console.log(`\nprofile of one forward+backward at batch ${batch}: ${(total / 1000).toFixed(2)} s of kernel time`);
    for (const [c, ms] of [...by].sort((a, b) => b[1] - a[1])) console.log(`  ${c.padEnd(48)} ${(ms / 1000).toFixed(3)} s  ${((100 * ms) / total).toFixed(1)}%`);
    console.log("  top kernels:");
    for (const [k, ms] of [...byKernel].sort((a, b) => b[1] - a[1]).slice(0, 24)) console.log(`    ${k.padEnd(40)} ${(ms / 1000).toFixed(3)} s`);
    if (flag("shapes")) {
      // Per kernel and input shapes: calls, time, and for matMuls the rate reached.
      const byShape = new Map<string, { ms: number; calls: number; flops: number }>();
      for (const k of info.kernels) {
        if (category(k.name, k.inputShapes as (number[] | null)[], batch) === null) continue;
        const shapes = (k.inputShapes as (number[] | null)[]).filter((s): s is number[] => Array.isArray(s));
        let flops = 0;
        if (/matmul|gemm/i.test(k.name) && shapes.length >= 2) {
          const out = k.outputShapes[0] as number[];
          const a = shapes[0]!;
          const kDim = out ? (tf.util.sizeFromShape(a) * tf.util.sizeFromShape(shapes[1]!)) / Math.max(1, tf.util.sizeFromShape(out)) : 0;
          // 2 M N K per product; M N = output size / batch, K from the operand sizes.
          flops = out ? 2 * tf.util.sizeFromShape(out) * Math.sqrt(kDim / Math.max(1, out.slice(0, -2).reduce((p, d) => p * d, 1))) : 0;
        }
        const key = `${k.name} ${shapes.map((s) => `[${s.join(",")}]`).join(" ")}`;
        const e = byShape.get(key) ?? { ms: 0, calls: 0, flops: 0 };
        e.ms += typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
        e.calls += 1;
        e.flops += flops;
        byShape.set(key, e);
      }
      console.log("  top kernels by input shapes (GFLOP/s for matMuls):");
      for (const [k, e] of [...byShape].sort((a, b) => b[1].ms - a[1].ms).slice(0, 40)) {
        const rate = e.flops > 0 ? `  ${(e.flops / (e.ms * 1e6)).toFixed(1)} GFLOP/s` : "";
        console.log(`    ${(e.ms / 1000).toFixed(3)} s  x${e.calls}  ${k}${rate}`);
      }
    }
  }
  tf.dispose([x1, xb]);
  model.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
