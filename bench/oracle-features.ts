// Can PBIP's matching losses help at all on the embedded data when the encoder's view
// is perfect? A diagnostic, not a method and not a test: it reads the TRAINING
// split's ground-truth masks (train-mask/, which real WSSS data does not have).
//
//   npx tsx bench/oracle-features.ts [--grid 0,3] [--seeds 0,1,2] [--out runs/oracle] [--compare runs/ablate-base-v3]
//   npx tsx bench/oracle-features.ts --grid 0 --set loss.useBg=false --name fg-only   (config overrides as `pbip ablate --set`)
//
// Each run is the notebook profile's PBIP run in `feature` mode with one change: the
// encoder's dense map D of each training patch is replaced by the one-hot of its
// ground-truth mask (TE, NEC, LYM, TAS, background), area-averaged to a grid x grid
// cell map (0: the full patch resolution), and the prototypes of the matching losses
// by the one-hot of each subclass's class (the K subclasses of a class share one).
// A region's feature is then its map-weighted class composition, so L_FGS pulls each
// class's foreground region onto pixels of that class and L_BGS pushes the
// background region off them. ClassNet itself (its bank-similarity head, the bank,
// the batches, the seeds, the schedule) is exactly the `pbip` variant's, so the
// runs compare pair by pair with `pbip ablate --variants pbip,cls-only --seeds ...`.
//
// If the oracle beats L_CLS only, the mechanics (pair selection, eq. 4 threshold,
// eq. 5 regions, the losses and their weights) can turn a good view into better
// CAMs, and the gap measured with the bundled stand-in is the stand-in's view.
// A grid of 3 is the stand-in's own dense map at 112 px (3x3 cells, output stride 32;
// cells cut pixels, counted by area): the oracle at the stand-in's resolution.
// What it measured (three seeds each, and the temperature runs): docs/results.md,
// "With a perfect encoder view the gain is still not there".
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { openRun } from "../src/pipeline/run";
import { initBackend, formatBackendReport } from "../src/runtime/backend";
import { createEncoderFor, createClassNet, stage1Loaders } from "../src/pipeline/core";
import { ensureBank } from "../src/pipeline/stages";
import { ablationTable, formatAblationTable, mergeOverrides, scoreStage1Run, type AblationRecord } from "../src/pipeline/ablation";
import { parseSetOverrides, NOTEBOOK } from "../src/config/profiles";
import { PbipTask } from "../src/train/trainer";
import { runTraining } from "../src/train/loop";
import { oracleDense, oraclePrototypes } from "../src/bank/diagnostics";
import { readJson } from "../src/util/fs";
import { meanStd } from "../src/eval/stats";
import type { Batch } from "../src/data/types";

/** The notebook profile's PBIP task with the encoder's dense map replaced by the ground truth's. */
class OracleTask extends PbipTask {
  constructor(o: ConstructorParameters<typeof PbipTask>[0], private readonly ids: number, private readonly grid: number) {
    super(o);
  }
  override async prepare(batch: Batch, step: number) {
    const ctx = await super.prepare(batch, step);
    if (!batch.masks) throw new Error("oracle: the training batches carry no masks");
    ctx.dense?.dispose();
    ctx.dense = oracleDense(batch.masks, this.ids, this.grid);
    return ctx;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      grid: { type: "string", default: "0,3" },
      seeds: { type: "string", default: "0,1,2" },
      out: { type: "string", default: "runs/oracle" },
      compare: { type: "string", default: "runs/ablate-base-v3" },
      set: { type: "string", multiple: true },
      name: { type: "string", default: "" },
    },
  });
  console.error(formatBackendReport(await initBackend({})));
  const grids = values.grid!.split(",").map(Number);
  const seeds = values.seeds!.split(",").map(Number);
  const records: AblationRecord[] = [];
  for (const grid of grids) {
    const variant = (grid > 0 ? `oracle-${grid}x${grid}` : "oracle-full") + (values.name ? `-${values.name}` : "");
    for (const seed of seeds) {
      const root = path.resolve(values.out!, variant, `seed${seed}`);
      const recFile = path.join(root, "ablation-record.json");
      if (fs.existsSync(recFile)) {
        records.push(readJson<AblationRecord>(recFile));
        console.error(`${variant} seed ${seed}: done earlier`);
        continue;
      }
      const over = <T>(x: T) => x as never;
      const overrides = mergeOverrides(parseSetOverrides(values.set ?? [], NOTEBOOK), { train: over({ seed }), bank: over({ seed }), match: over({ regionMode: "feature" }) });
      const run = await openRun({ root, overrides, verbose: false });
      const cfg = run.config;
      const spec = run.dataset.spec;
      const encoder = await createEncoderFor(cfg);
      try {
        const { bank } = await ensureBank(run, encoder);
        const net = await createClassNet(cfg, bank, spec);
        // The pbip variant's loaders (same batches and augmentations), with the train masks.
        const { train, val } = stage1Loaders(run.dataset, cfg, { trainMasks: true });
        const ids = spec.classes.length + 1;
        const protos = oraclePrototypes(bank.meta.k, ids);
        const dir = run.paths.stage1(variant);
        const task = new OracleTask({ config: cfg, net, encoder, bankPrototypes: protos, backgroundId: spec.backgroundId }, ids, grid);
        let valMiou: number | undefined;
        const t0 = Date.now();
        try {
          for await (const ev of runTraining(task, { runRecord: { task: "classnet-oracle-diagnostic", grid }, config: cfg, train, val, outDir: dir, metadata: { oracle: { grid }, backbone: net.backbone.name } })) {
            if (ev.type === "step" && ev.step % 25 === 0) console.error(`${variant} seed ${seed}: step ${ev.step}, loss ${ev.losses.total.toFixed(4)} (fg ${ev.losses.fg?.toFixed(4)}, bg ${ev.losses.bg?.toFixed(4)})`);
            if (ev.type === "validation") valMiou = ev.score.miou;
            if (ev.type === "done") valMiou = valMiou ?? ev.bestMiou;
          }
        } finally {
          task.dispose();
          protos.dispose();
          net.dispose();
        }
        const rec = await scoreStage1Run(run, variant, bank, { variant, seed, valMiou, config: cfg, encoder: encoder.identity }, recFile);
        records.push(rec);
        console.error(`${variant} seed ${seed}: val ${valMiou !== undefined ? (100 * valMiou).toFixed(2) : "?"}%, test ${(100 * rec.test.miou).toFixed(2)}% (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
      } finally {
        encoder.dispose();
      }
    }
  }
  const compare: AblationRecord[] = [];
  for (const v of ["pbip", "cls-only"]) {
    for (const seed of seeds) {
      const f = path.resolve(values.compare!, v, `seed${seed}`, "ablation-record.json");
      if (fs.existsSync(f)) compare.push(readJson<AblationRecord>(f));
    }
  }
  const all = [...compare, ...records];
  const reference = compare.some((r) => r.variant === "cls-only") ? "cls-only" : records[0]!.variant;
  const text = formatAblationTable(ablationTable(all, reference), reference);
  const vals = [...new Set(all.map((r) => r.variant))].map((v) => {
    const xs = all.filter((r) => r.variant === v && r.valMiou !== undefined).map((r) => 100 * r.valMiou!);
    const { mean, std } = meanStd(xs);
    return `${v}: val ${mean.toFixed(2)} ± ${std.toFixed(2)} (${xs.map((x) => x.toFixed(2)).join(", ")})`;
  });
  const out = `${text}\n\nvalidation pseudo-mask mIoU by seed:\n${vals.join("\n")}\n`;
  fs.mkdirSync(values.out!, { recursive: true });
  fs.writeFileSync(path.join(values.out!, "oracle.txt"), out);
  console.log(out);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
