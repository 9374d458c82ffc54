/**
 * `pbip seg train | predict`: stage 2 of METHOD.md section 5 from the command
 * line (the library side is `src/seg`): train a segmentation network on stage-1
 * pseudo-masks, then predict palette-PNG masks for a split and score them.
 */
import * as path from "node:path";
import { parse, str, flag, intArg, startBackend, datasetArg, interruptOnCtrlC, interruptedLine, type Command } from "../command";
import { UsageError } from "../../util/errors";
import { ProgressBar, formatDuration } from "../../util/progress";
import { assertRecordedOutputFolder, sha256File, writeJsonAtomic } from "../../util/fs";
import { PROFILES, parseSetOverrides, type ConfigOverride, type PbipConfig } from "../../config/profiles";
import { openDataset } from "../../data/dataset";
import type { SplitName } from "../../data/types";
import { formatEvalTable, parseConvention } from "../../eval";
import { SEG_ARCHS, STAGE2_EPOCHS, buildSegModel, loadSegModel, openSegData, stage2Config, trainSegmentation, predictSegmentation, evaluateSegmentation, type SegArch } from "../../seg";

const DATA_USAGE = `  --data DIR          dataset folder (LUAD-HistoSeg / BCSS-WSSS layout, or labels.csv)
  --dataset NAME      dataset manifest (luad-histoseg, bcss-wsss, synthetic, ...); default: the folder's card.json (synthetic sets)
  --resize N          resize patches of another size to N on load (default: they are an error)
  --backend NAME      auto | webgpu | tensorflow | wasm | cpu (default: PBIP_BACKEND, else auto)`;

const TRAIN_USAGE = `${DATA_USAGE}
  --pseudo DIR        stage-1 pseudo-masks of the training patches (palette PNGs, <stem>.png; from pbip cam --split train)
  --model NAME        ${SEG_ARCHS.join(" | ")} (default deeplab-mobilenetv2)
  --out DIR           run folder: checkpoints (step-N, best), train-log.jsonl, config.json; an existing one is resumed
  --profile NAME      base profile: ${Object.keys(PROFILES).join(", ")} (default notebook: 112 px, batch 8, ${STAGE2_EPOCHS.notebook} epochs),
                      plus stage 2's optimiser (AdamW lr 1e-4, decoder x10, poly 0.9, wd 1e-4)
  --epochs N --batch N --size N --max-steps N --seed S --lr X   shortcuts for train.* , data.inputSize and optim.lr
  --set key=value     override any config value (repeatable), e.g. --set data.augment.rot90=false
  --weights FILE      backbone start: a MiT .safetensors, or a stage-1 ClassNet checkpoint with the same backbone
  --background MODE   class (default: background pixels of the pseudo-masks train the background output) | ignore
  --freeze-backbone   train the decoder only (several times faster on CPU; the backbone keeps its start weights)
  --no-resume         start over even if --out has checkpoints
  --json              print one JSON event per line instead of a progress bar`;

const PREDICT_USAGE = `  --checkpoint FILE   stage-2 checkpoint (best.safetensors or step-N.safetensors of pbip seg train)
${DATA_USAGE}
  --split S           train | val | test (default test)
  --out DIR           where the masks go (palette PNGs, <stem>.png); existing valid masks are kept
  --batch N           patches per forward pass (default 8)
  --overwrite         predict every patch again
  --convention C      count-bg (default: GT background counted, as the PBIP release and TPRO) | ignore-bg (as MLPS)
  --band W            boundary IoU band in pixels (default 2% of the image diagonal)
  --json FILE         where to write the metrics (default <out>/eval-<convention>.json)`;


/** The stage-2 config from `--profile`, the shortcuts and `--set`, in that order over {@link stage2Config}'s defaults. */
export function segConfigFromArgs(values: Record<string, unknown>): PbipConfig {
  const profile = (values.profile as string | undefined) ?? "notebook";
  if (!PROFILES[profile]) throw new UsageError(`--profile: unknown profile "${profile}"; use one of ${Object.keys(PROFILES).join(", ")}`);
  const n = (k: string, min = 1) => intArg("seg train", k, values[k] as string | undefined, min);
  const lrText = values.lr as string | undefined;
  const lr = lrText === undefined ? undefined : Number(lrText);
  if (lr !== undefined && !(lr > 0)) throw new UsageError(`pbip seg train: --lr must be a positive number, got "${lrText}"`);
  const shortcut: ConfigOverride = {
    train: { epochs: n("epochs"), batchSize: n("batch"), seed: n("seed", 0), maxSteps: n("max-steps", 0) } as PbipConfig["train"],
    data: { inputSize: n("size") } as PbipConfig["data"],
    optim: { lr } as PbipConfig["optim"],
  };
  let sets: ConfigOverride;
  try {
    sets = parseSetOverrides((values.set as string[] | undefined) ?? [], PROFILES[profile]);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  try {
    return stage2Config(profile, shortcut, sets);
  } catch (e) {
    throw new UsageError((e as Error).message); // a value a key does not take (e.g. --size 8)
  }
}

const train: Command = {
  name: ["seg", "train"],
  summary: "train the stage-2 segmentation network on stage-1 pseudo-masks (progress bar, per-epoch val mIoU, resumable)",
  usage: TRAIN_USAGE,
  async run(argv) {
    const p = parse("seg train", argv, {
      data: { type: "string" },
      dataset: { type: "string" },
      resize: { type: "string" },
      backend: { type: "string" },
      pseudo: { type: "string" },
      model: { type: "string" },
      out: { type: "string" },
      profile: { type: "string" },
      set: { type: "string", multiple: true },
      epochs: { type: "string" },
      batch: { type: "string" },
      size: { type: "string" },
      "max-steps": { type: "string" },
      seed: { type: "string" },
      lr: { type: "string" },
      weights: { type: "string" },
      background: { type: "string" },
      "freeze-backbone": { type: "boolean" },
      "no-resume": { type: "boolean" },
      json: { type: "boolean" },
    });
    const data = str(p, "data");
    const pseudo = str(p, "pseudo");
    const out = str(p, "out");
    if (!data || !pseudo || !out) throw new UsageError(`pbip seg train: --data, --pseudo and --out are required\n\n${TRAIN_USAGE}`);
    const arch = (str(p, "model") ?? "deeplab-mobilenetv2") as SegArch;
    if (!SEG_ARCHS.includes(arch)) throw new UsageError(`pbip seg train: --model must be one of ${SEG_ARCHS.join(", ")}, got "${arch}"`);
    const background = str(p, "background") ?? "class";
    if (background !== "class" && background !== "ignore") throw new UsageError(`pbip seg train: --background must be class or ignore, got "${background}"`);
    const config = segConfigFromArgs(p.values);
    const json = flag(p, "json");
    await startBackend(str(p, "backend"), json);
    const segData = openSegData({ data, dataset: datasetArg("seg train", data, str(p, "dataset")), pseudo, config, resize: intArg("seg train", "resize", str(p, "resize")) });
    const spec = segData.spec;
    const model = await buildSegModel({ arch, classes: spec.codes, backgroundId: spec.backgroundId, inputSize: config.data.inputSize, seed: config.train.seed, backboneWeights: str(p, "weights") });
    let bar: ProgressBar | undefined;
    let first = 0;
    const ctrlC = interruptOnCtrlC();
    let interrupted = false;
    try {
      if (!json) console.error(model.summaryText());
      const events = trainSegmentation({
        signal: ctrlC.signal,
        config,
        model,
        train: segData.train,
        val: segData.val,
        outDir: out,
        resume: !flag(p, "no-resume"),
        loss: { background },
        freezeBackbone: flag(p, "freeze-backbone"),
        maskSource: segData.pseudoDir,
        metadata: { pseudoMasks: segData.pseudoDir, data: path.resolve(data), dataset: spec.name },
      });
      for await (const ev of events) {
        if (ev.type === "interrupted") interrupted = true;
        if (json) {
          console.log(JSON.stringify(ev.type === "start" ? { ...ev, config: undefined } : ev));
          continue;
        }
        if (ev.type === "start") {
          first = ev.step;
          bar = new ProgressBar(ev.resumedFrom ? `stage 2 (resumed at step ${ev.step})` : "stage 2", Math.max(0, ev.totalSteps - ev.step));
          console.error(`${arch}: ${ev.totalSteps} steps (${ev.epochs} epochs x ${ev.stepsPerEpoch} batches of ${config.train.batchSize}, ${config.data.inputSize}px)${ev.resumedFrom ? `, resuming ${ev.resumedFrom}` : ""}`);
        } else if (ev.type === "step") {
          bar?.update(ev.step - first, `loss ${ev.losses.total.toFixed(4)} lr ${ev.lr.toExponential(2)} ${ev.seconds.step.toFixed(2)}s/step`);
        } else if (ev.type === "validation") {
          console.error(`${process.stderr.isTTY ? "\n" : ""}epoch ${ev.epoch + 1}: val mIoU ${(ev.score.miou * 100).toFixed(2)} (count-bg)${ev.best ? " (best)" : ""}`);
        } else if (ev.type === "interrupted") {
          console.error(interruptedLine(ev));
        } else if (ev.type === "done") {
          console.error(
            `done in ${formatDuration(ev.seconds)}: step ${ev.step}; last checkpoint ${ev.lastCheckpoint ?? "-"}; best ${ev.bestCheckpoint ?? "-"}${ev.bestMiou !== undefined ? ` (val mIoU ${(ev.bestMiou * 100).toFixed(2)})` : ""}`,
          );
        }
      }
    } finally {
      ctrlC.dispose();
      model.dispose();
    }
    return interrupted ? 130 : 0;
  },
};

const predict: Command = {
  name: ["seg", "predict"],
  summary: "predict palette-PNG masks for a split with a stage-2 checkpoint and score them (mIoU, FwIoU, bIoU, Dice); resumable",
  usage: PREDICT_USAGE,
  async run(argv) {
    const p = parse("seg predict", argv, {
      checkpoint: { type: "string" },
      data: { type: "string" },
      dataset: { type: "string" },
      resize: { type: "string" },
      backend: { type: "string" },
      split: { type: "string" },
      out: { type: "string" },
      batch: { type: "string" },
      overwrite: { type: "boolean" },
      convention: { type: "string" },
      band: { type: "string" },
      json: { type: "string" },
    });
    const ckpt = str(p, "checkpoint");
    const data = str(p, "data");
    const out = str(p, "out");
    if (!ckpt || !data || !out) throw new UsageError(`pbip seg predict: --checkpoint, --data and --out are required\n\n${PREDICT_USAGE}`);
    const convention = parseConvention(str(p, "convention") ?? "count-bg", "pbip seg predict: --convention");
    const band = intArg("seg predict", "band", str(p, "band"));
    assertRecordedOutputFolder(path.resolve(out), "predictions.json", "predictions"); // before any work
    await startBackend(str(p, "backend"));
    const ds = openDataset(data, { dataset: datasetArg("seg predict", data, str(p, "dataset")), resize: intArg("seg predict", "resize", str(p, "resize")) });
    const split = ds.split((str(p, "split") ?? "test") as SplitName);
    const model = await loadSegModel(ckpt);
    try {
      const bar = new ProgressBar(`predict ${split.name}`, split.samples.length);
      const r = await predictSegmentation(model, split, {
        outDir: out,
        batchSize: intArg("seg predict", "batch", str(p, "batch")),
        // The weights' hash, not the path: a checkpoint retrained in place is another source.
        source: `sha256:${sha256File(ckpt).slice(0, 16)}`,
        overwrite: flag(p, "overwrite"),
        onProgress: (done) => bar.update(done),
      });
      console.error(`${r.written} masks written, ${r.skipped} already there, in ${r.outDir} (${formatDuration(r.seconds)})`);
    } finally {
      model.dispose();
    }
    if (!split.samples.every((s) => s.maskPath)) {
      console.log(`the ${split.name} split has no ground-truth masks: nothing to score`);
      return 0;
    }
    const report = evaluateSegmentation(split, out, { convention, band });
    const file = str(p, "json") ?? path.join(out, `eval-${convention}.json`);
    writeJsonAtomic(file, { ...report, checkpoint: path.resolve(ckpt) });
    console.log(formatEvalTable(report));
    console.log(`report: ${file}`);
    return 0;
  },
};

export const commands: Command[] = [train, predict];
