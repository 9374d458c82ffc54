// The release's image-mode training step (MiT-b1 ClassNet, Swin-T encoder with random
// weights, batch 10, 224 px) under different two-pass settings, interleaved in one
// process so that they share the machine's conditions; not a test.
//
//   npx tsx bench/two-pass.ts [0:fast,auto:fast,auto:lean,auto:lean:8]
//
// Each variant is `<match.encoderKeep>:<Swin memory mode>[:<match.encoderChunk>]`. After one warm-up step the
// variants run in the given order and then in reverse, one training step each; the
// table gives each variant's step times, how many region images kept their encoder
// activations, how many were run forward again, and the WASM heap afterwards.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../src/runtime/backend";
import { resolveConfig, type ConfigOverride } from "../src/config/profiles";
import type { SwinEncoder, SwinMemoryMode } from "../src/encoders/swin";
import { PbipTask } from "../src/train/trainer";
import { runTraining } from "../src/train/loop";
import { buildModels, randomSource, sizesFor } from "../src/cli/commands/bench";

async function main(): Promise<void> {
  console.log((await initBackend({ backend: "wasm" })).device);
  // The benchmark's release models at full size (MiT-b1, Swin-T, batch 10, 224 px).
  const sizes = sizesFor({ smoke: false, full: true, cases: [], labelsPerImage: 2, requireGpu: false }, false);
  const m = await buildModels("release", "image", sizes);
  const enc = m.encoder as SwinEncoder;
  const variants = (process.argv[2] ?? "0:fast,auto:fast,auto:lean").split(",");
  const order = ["0:fast", ...variants, ...variants.slice().reverse()];
  const rows: Record<string, string[]> = {};
  try {
    for (const [i, v] of order.entries()) {
      const [keep, mem, chunk] = v.split(":") as [string, SwinMemoryMode, string | undefined];
      enc.memory = mem;
      const match = { encoderKeep: keep === "auto" ? "auto" : Number(keep), ...(chunk ? { encoderChunk: Number(chunk) } : {}) };
      const cfg = resolveConfig(m.cfg, { match } as ConfigOverride);
      const task = new PbipTask({ config: cfg, net: m.net, encoder: enc, bankPrototypes: m.protos, backgroundId: 4 });
      // The same batch for every variant.
      const source = randomSource(1, sizes.release.batch, sizes.release.size, 4, 2, 5);
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
  } finally {
    m.dispose();
  }
  console.log("\nvariant (encoderKeep:memory)  steps");
  for (const [v, r] of Object.entries(rows)) console.log(`${v.padEnd(28)} ${r.join("; ")}`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
