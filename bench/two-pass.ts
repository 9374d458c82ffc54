// The release's image-mode training step (MiT-b1 ClassNet, Swin-T encoder with random
// weights, batch 10, 224 px) under different two-pass settings, interleaved in one
// process so that they share the machine's conditions; not a test.
//
//   npx tsx bench/two-pass.ts [0:fast,auto:fast,auto:lean]
//
// Each variant is `<match.encoderKeep>:<Swin memory mode>`. After one warm-up step the
// variants run in the given order and then in reverse, one training step each; the
// table gives each variant's step times, how many region images kept their encoder
// activations, how many were run forward again, and the WASM heap afterwards.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../src/runtime/backend";
import { resolveConfig, type PbipConfig } from "../src/config/profiles";
import { buildMiT } from "../src/model/backbones";
import { ClassNet } from "../src/model/classnet";
import { createSwinEncoder, type SwinMemoryMode } from "../src/encoders/swin";
import { PbipTask } from "../src/train/trainer";
import { runTraining } from "../src/train/loop";
import type { Batch } from "../src/data/types";
import { Rng } from "../src/util/rng";

const BCSS = { mean: [0.6679, 0.4779, 0.7062], std: [0.1737, 0.2256, 0.1982] };

async function main(): Promise<void> {
  console.log((await initBackend({ backend: process.env.PBIP_BACKEND === "cpu" ? "cpu" : "wasm" })).device);
  const base = resolveConfig("release", {});
  const backbone = buildMiT("mit-b1", { strides: base.model.strides, dropPathRate: base.model.dropPathRate, seed: 1 });
  const enc = await createSwinEncoder({ randomSeed: 1, projectionDim: 512 });
  const protos = tf.tidy(() => {
    const p = tf.randomNormal([12, 512], 0, 1, "float32", 11);
    return tf.div(p, tf.norm(p, "euclidean", 1, true)) as tf.Tensor2D;
  });
  const net = new ClassNet({ backbone, prototypes: protos, k: [3, 3, 3, 3], model: base.model, normalization: BCSS, seed: 1 });
  const variants = (process.argv[2] ?? "0:fast,auto:fast,auto:lean").split(",");
  const order = ["0:fast", ...variants, ...variants.slice().reverse()];
  const rows: Record<string, string[]> = {};
  for (const [i, v] of order.entries()) {
    const [keep, mem] = v.split(":") as [string, SwinMemoryMode];
    enc.memory = mem;
    const cfg = resolveConfig(base, { match: { encoderKeep: keep === "auto" ? "auto" : Number(keep) } as PbipConfig["match"] });
    const task = new PbipTask({ config: cfg, net, encoder: enc, bankPrototypes: protos, backgroundId: 4 });
    const rng = new Rng(5);
    const labels = new Float32Array(40);
    for (let b = 0; b < 10; b++) for (const c of rng.shuffle([0, 1, 2, 3]).slice(0, 2)) labels[b * 4 + c] = 1;
    const source = {
      batchesPerEpoch: 1,
      async *epoch(): AsyncGenerator<Batch> {
        yield { images: tf.randomUniform([10, 224, 224, 3], 0, 1, "float32", 3) as tf.Tensor4D, labels: tf.tensor2d(labels, [10, 4]), ids: Array.from({ length: 10 }, (_, b) => `random-${b}`) };
      },
    };
    const outDir = fs.mkdtempSync(path.join(os.tmpdir(), "pbip-two-pass-"));
    try {
      for await (const ev of runTraining(task, { config: { ...cfg, train: { ...cfg.train, epochs: 1, maxSteps: 0, valEvery: 1e9, checkpointEvery: 1e9 } }, train: source, outDir, resume: false, stopAfter: 1 })) {
        if (ev.type !== "step") continue;
        const heap = (tf.backend() as unknown as { wasm?: { HEAPU8: Uint8Array } }).wasm?.HEAPU8.length;
        const line = `${ev.seconds.step.toFixed(1)} s (kept ${ev.counts.encoderKept}, again ${ev.counts.encoderRecomputed}${heap ? `, heap ${(heap / 2 ** 30).toFixed(2)} GiB` : ""})`;
        console.log(`${i === 0 ? "warm-up" : v}: ${line}`);
        if (i > 0) (rows[v] ??= []).push(line);
      }
    } finally {
      task.dispose();
      fs.rmSync(outDir, { recursive: true, force: true });
    }
  }
  console.log("\nvariant (encoderKeep:memory)  steps");
  for (const [v, r] of Object.entries(rows)) console.log(`${v.padEnd(28)} ${r.join("; ")}`);
  net.dispose();
  enc.dispose();
  protos.dispose();
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
