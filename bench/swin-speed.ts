// Speed of the Swin-T encoder (the release's "MedCLIP": Swin-T + Linear(768, 512)); not a test.
//
//   npx tsx bench/swin-speed.ts [--backend wasm] [--batch 20] [--size 224] [--reps 2] [--memory fast|lean] [--profile]
//
// Random weights (seeded; speed does not depend on the values). Times, as the median
// of --reps runs after one warm-up:
//   forward        encode() without gradients (bank building), --batch images
//   forward+input  the training use: gradient of a loss on the projected features
//                  with respect to the input images (weights frozen), --batch images
// The release's training step encodes about two regions per image (foreground and
// background) for a batch of 10, i.e. 20 encoder images. --profile adds a per-kernel
// breakdown (TF.js profiler) of one forward+backward pass.
import * as tf from "@tensorflow/tfjs";
import { initBackend, memorySnapshot, formatBytes, type BackendChoice } from "../src/runtime";
import { createSwinEncoder } from "../src/encoders/swin";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}
const flag = (name: string) => process.argv.includes(`--${name}`);

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
}

// Wall time and this process's CPU time (user + system): on a shared machine the CPU
// time is what one WASM thread actually needed; on an idle one the two agree.
async function time(label: string, reps: number, fn: () => Promise<void>): Promise<number> {
  await fn();
  const ts: number[] = [];
  const cs: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    await fn();
    const c = process.cpuUsage(c0);
    ts.push((performance.now() - t0) / 1000);
    cs.push((c.user + c.system) / 1e6);
  }
  const m = median(cs);
  console.log(`${label.padEnd(34)} CPU ${m.toFixed(2)} s, wall ${median(ts).toFixed(2)} s  (runs, CPU: ${cs.map((t) => t.toFixed(2)).join(", ")})`);
  return m;
}

async function main(): Promise<void> {
  const backend = arg("backend", "wasm") as BackendChoice;
  const batch = Number(arg("batch", "20"));
  const size = Number(arg("size", "224"));
  const reps = Number(arg("reps", "2"));
  const report = await initBackend({ backend });
  console.log(`backend ${report.backend}: ${report.device}; batch ${batch} x ${size} px`);
  const t0 = performance.now();
  const memory = arg("memory", "fast") as "fast" | "lean";
  const enc = await createSwinEncoder({ randomSeed: 1, memory });
  console.log(`memory mode: ${memory}`);
  console.log(`built Swin-T with random weights in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const images = tf.randomUniform([batch, size, size, 3], 0, 1, "float32", 3) as tf.Tensor4D;
  const r = tf.randomNormal([batch, 512], 0, 1, "float32", 4);
  // Tensor bytes the forward pass leaves for the backward pass (what a kept region costs in the two-pass image mode).
  let taped = 0;
  const loss = (x: tf.Tensor4D) => {
    const before = tf.memory().numBytes;
    const pooled = enc.apply(x).pooled;
    taped = tf.memory().numBytes - before;
    return tf.sum(tf.mul(pooled, r)) as tf.Scalar;
  };
  const grad = tf.grad((x: tf.Tensor) => loss(x as tf.Tensor4D));

  await time("forward (encode, no gradients)", reps, async () => {
    const out = await enc.encode(images);
    await out.pooled.data();
    out.pooled.dispose();
  });
  let peak = 0;
  await time("forward + input gradient", reps, async () => {
    const g = grad(images);
    await g.data();
    peak = Math.max(peak, memorySnapshot().rssBytes);
    g.dispose();
  });
  const heap = (tf.backend() as unknown as { wasm?: { HEAPU8: Uint8Array } }).wasm?.HEAPU8.length;
  console.log(
    `process RSS after forward+backward: ${formatBytes(peak)}${heap ? `; WASM heap ${formatBytes(heap)} (it only grows; the limit is 4 GiB)` : ""}; tensors alive ${tf.memory().numTensors}`,
  );
  console.log(`held by the forward pass for the backward pass: ${formatBytes(taped)}, ${formatBytes(taped / batch)} per image`);

  if (flag("profile")) {
    const kernels = new Set(tf.getKernelsForBackend(tf.getBackend()).map((k) => k.kernelName));
    const info = await tf.profile(() => {
      const g = grad(images);
      g.dataSync();
      g.dispose();
    });
    const by = new Map<string, { ms: number; n: number }>();
    let total = 0;
    for (const k of info.kernels) {
      if (!kernels.has(k.name)) continue; // custom-gradient ops wrap real kernels: count those only
      const ms = Number(k.kernelTimeMs) || 0;
      const shapes = k.inputShapes.map((s) => (s ? s.length : 0));
      const key = k.name === "BatchMatMul" ? (shapes.some((r) => r >= 3) ? "BatchMatMul (attention, batched)" : "BatchMatMul (2-D: linear layers)") : k.name;
      const e = by.get(key) ?? { ms: 0, n: 0 };
      e.ms += ms;
      e.n++;
      by.set(key, e);
      total += ms;
    }
    console.log(`\nprofile of one forward + input gradient: ${(total / 1000).toFixed(2)} s in kernels`);
    for (const [k, e] of [...by.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 25)) {
      console.log(`  ${k.padEnd(36)} ${(e.ms / 1000).toFixed(2).padStart(7)} s  ${((100 * e.ms) / total).toFixed(1).padStart(5)} %  (${e.n} calls)`);
    }
  }
  tf.dispose([images, r]);
  enc.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
