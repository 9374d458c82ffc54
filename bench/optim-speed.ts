// AdamW update time, one parameter tensor at a time against fused (flat) groups, on
// ClassNet's parameters (MiT-b1 + heads, the release profile; or the notebook
// profile's MobileNetV2), with random gradients. Alternates the two, prints medians, and
// each one's memory peak (tf.profile) and kernel count for one more update.
//
//   npx tsx bench/optim-speed.ts [--backend wasm|webgpu|cpu] [--profile release|notebook] [--reps 5]
import * as tf from "@tensorflow/tfjs";
import { initBackend, formatBackendReport, parseBackendChoice } from "../src/runtime/backend";
import { buildModels, sizesFor } from "../src/cli/commands/bench";
import { AdamW } from "../src/train/optim";

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

async function main(): Promise<void> {
  const r = await initBackend({ backend: parseBackendChoice(arg("backend", "wasm"), "--backend"), acceptSoftwareGpu: true });
  console.log(formatBackendReport(r));
  const profile = arg("profile", "release") as "release" | "notebook";
  const reps = Number(arg("reps", "5"));
  const m = await buildModels(profile, "feature", sizesFor({ smoke: false, full: true, cases: [], labelsPerImage: 2, requireGpu: false }, false), {}, false);
  const params = m.net.trainableVariables();
  const n = [...params.values()].reduce((a, v) => a + v.size, 0);
  console.log(`${profile}: ${params.size} parameter tensors, ${(n / 1e6).toFixed(2)} M values`);
  const grads = new Map([...params].map(([k, v], i) => [k, tf.randomNormal(v.shape, 0, 1e-3, "float32", i + 1)]));
  const times: Record<string, number[]> = { "one at a time": [], fused: [] };
  const opts = { "one at a time": new AdamW(params, { lr: 1e-4, weightDecay: 1e-3, fuse: false }), fused: new AdamW(params, { lr: 1e-4, weightDecay: 1e-3, fuse: true }) };
  for (let rep = 0; rep < reps + 1; rep++) {
    for (const [name, opt] of Object.entries(opts)) {
      const t0 = performance.now();
      opt.step(grads, 1e-4);
      // wait for the device: read one value of the last parameter
      await [...params.values()].at(-1)!.data();
      const ms = performance.now() - t0;
      if (rep > 0) times[name]!.push(ms);
    }
  }
  for (const [name, ts] of Object.entries(times)) {
    const s = [...ts].sort((a, b) => a - b);
    // Memory: the engine's peak during one more update, above the tensors alive before it.
    const live = tf.memory().numBytes;
    const prof = await tf.profile(() => void opts[name as keyof typeof opts].step(grads, 1e-4));
    const peak = ((prof.peakBytes - live) / 2 ** 20).toFixed(0);
    console.log(`${name}: median ${s[Math.floor(s.length / 2)]!.toFixed(1)} ms (min ${s[0]!.toFixed(1)}, max ${s.at(-1)!.toFixed(1)}, ${s.length} reps); peak ${peak} MiB above the live tensors, ${prof.kernels.length} kernels`);
  }
  for (const o of Object.values(opts)) o.dispose();
  tf.dispose([...grads.values()]);
  m.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
