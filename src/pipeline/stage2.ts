/**
 * Stage 2 of a run: a segmentation network trained on PBIP's train-split
 * pseudo-masks, then its predictions for the test split. Used by notebook 05 and
 * `pbip demo --headless`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { PbipRun } from "./run";
import { stableStringify } from "../util/json";
import { readJson, writeJsonAtomic } from "../util/fs";
import { ProgressBar } from "../util/progress";
import { stage2Config, trainSegmentation, openSegData, buildSegModel, loadSegModel, predictSegmentation, type SegArch } from "../seg";
import type { PbipConfig } from "../config/profiles";
import { upgradeStoredConfig } from "../config/profiles";
import type { TrainEvent } from "../train/loop";
import { latestCheckpoint, plannedSteps } from "../train/loop";
import { readMetadata } from "../io/checkpoint";

export interface Stage2Handle {
  config: PbipConfig;
  arch: SegArch;
  dir: string;
  complete: boolean;
  /** Whether only the decoder trains. */
  freezeBackbone: boolean;
  /** Training events (a complete run yields start and done only). */
  events(): AsyncGenerator<TrainEvent>;
  /** Test-split predictions of the best checkpoint (resumable); returns the folder. */
  predictTest(onProgress?: (done: number, total: number) => void): Promise<string>;
}

/** The stage-2 architecture for a run's backbone: DeepLab on MobileNetV2, SegFormer's decoder on MiT. */
export function stage2Arch(run: PbipRun): SegArch {
  const b = run.config.model.backbone;
  return b === "mobilenetv2" ? "deeplab-mobilenetv2" : (`segformer-${b}` as SegArch);
}

export interface Stage2Options {
  /**
   * Train the decoder only, on the pretrained backbone's features (several times
   * faster on CPU). Default: true for the `notebook` profile (two CPU cores), false
   * otherwise (the paper fine-tunes the whole network).
   */
  freezeBackbone?: boolean;
}

/** Prepare stage 2 of a run (trained on `pseudoTrain`, the PBIP train-split pseudo-masks). */
export async function stage2(run: PbipRun, pseudoTrain: string, o: Stage2Options = {}): Promise<Stage2Handle> {
  const config = stage2Config(run.config);
  const arch = stage2Arch(run);
  const dir = run.paths.stage2;
  const freezeBackbone = o.freezeBackbone ?? run.config.profile === "notebook";
  const stamp = { arch, config, pseudoTrain: path.resolve(pseudoTrain), backboneWeights: run.config.model.backboneWeights ?? null, freezeBackbone };
  const stampFile = path.join(dir, "stage2.json");
  // A stamp written before cam.merge existed compares as the softmax merge it used.
  const stored = fs.existsSync(stampFile) ? readJson<typeof stamp>(stampFile) : undefined;
  if (stored && stableStringify({ ...stored, config: upgradeStoredConfig(stored.config) }) !== stableStringify(stamp)) {
    const aside = `${dir}.old-${Date.now()}`;
    fs.renameSync(dir, aside);
    console.error(`stage 2: ${dir} was made with other settings; moved it to ${aside}`);
  }
  fs.mkdirSync(dir, { recursive: true });
  writeJsonAtomic(stampFile, stamp);
  const data = () => openSegData({ data: run.dataset.root, dataset: run.dataset.spec, pseudo: pseudoTrain, config });
  const last = latestCheckpoint(dir);
  let complete = false;
  if (last) complete = readMetadata<{ step: number }>(last).step >= plannedSteps(config, data().train.batchesPerEpoch);
  return {
    config,
    arch,
    dir,
    complete,
    freezeBackbone,
    async *events() {
      const d = data();
      const model = await buildSegModel({
        arch,
        classes: run.dataset.spec.codes,
        backgroundId: run.dataset.spec.backgroundId,
        inputSize: config.data.inputSize,
        seed: config.train.seed,
        backboneWeights: run.config.model.backboneWeights,
      });
      try {
        yield* trainSegmentation({ config, model, train: d.train, val: d.val, outDir: dir, maskSource: pseudoTrain, freezeBackbone, metadata: { pseudo: path.resolve(pseudoTrain) } });
      } finally {
        model.dispose();
      }
    },
    async predictTest(onProgress) {
      const best = path.join(dir, "best.safetensors");
      const file = fs.existsSync(best) ? best : latestCheckpoint(dir);
      if (!file) throw new Error(`stage 2 has no checkpoint in ${dir}`);
      const model = await loadSegModel(file);
      const out = path.join(dir, "predictions", "test");
      try {
        await predictSegmentation(model, run.dataset.split("test"), { outDir: out, source: `${file}@${fs.statSync(file).mtimeMs}`, overwrite: false, onProgress });
      } catch (e) {
        // Predictions made by an earlier checkpoint: redo them.
        if (!/written by|other weights|source/i.test((e as Error).message)) throw e;
        await predictSegmentation(model, run.dataset.split("test"), { outDir: out, source: `${file}@${fs.statSync(file).mtimeMs}`, overwrite: true, onProgress });
      } finally {
        model.dispose();
      }
      return out;
    },
  };
}

/** Stage 2 for the headless demo: train with a progress bar, predict the test split. */
export async function stage2Runner(run: PbipRun, pseudoTrain: string, log: (line: string) => void): Promise<string> {
  const h = await stage2(run, pseudoTrain);
  log(`stage 2 (${h.arch}): ${h.complete ? "finished run reused" : "training"} in ${h.dir}`);
  let bar: ProgressBar | undefined;
  for await (const ev of h.events()) {
    if (ev.type === "start") {
      bar = new ProgressBar("stage 2", ev.totalSteps);
      bar.update(ev.step);
    } else if (ev.type === "step") bar?.update(ev.step, `loss ${ev.losses.total.toFixed(3)}`);
    else if (ev.type === "validation") log(`stage 2: epoch ${ev.epoch + 1} val mIoU ${(100 * ev.score.miou).toFixed(2)}%`);
  }
  const n = run.dataset.split("test").samples.length;
  const pbar = new ProgressBar("stage 2 predict test", n);
  return h.predictTest((d) => pbar.update(d));
}
