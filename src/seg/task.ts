/**
 * Stage 2 as a {@link TrainTask}: a segmentation network trained on the stage-1
 * pseudo-masks with pixel-wise cross-entropy, through the same loop, events,
 * atomic checkpoints and resume as stage 1 (src/train/loop.ts). Each epoch it is
 * validated by mIoU against the val split's ground-truth masks (count-bg
 * convention: ground-truth background pixels are counted, as the release and
 * TPRO evaluate).
 */
import * as fs from "node:fs";
import * as tf from "@tensorflow/tfjs";
import { resolveConfig, type ConfigOverride, type PbipConfig } from "../config/profiles";
import type { Batch } from "../data/types";
import { ConfusionMatrix } from "../eval/confusion";
import { segmentationScores } from "../eval/metrics";
import { readMetadata } from "../io/checkpoint";
import { runTraining, latestCheckpoint, type StepResult, type TrainEvent, type TrainTask, type ValidationScore } from "../train/loop";
import type { ParamGroup } from "../train/optim";
import type { BatchSource } from "../train/validate";
import { pixelCrossEntropy } from "./loss";
import { checkMaskIds, IGNORE_ID } from "./data";
import type { SegModel, SegModelConfig } from "./models";

/** How the loss treats the pseudo-masks (see src/seg/loss.ts). */
export interface SegLossConfig {
  /** `class`: background pixels train the background output (default); `ignore`: they are skipped. */
  background: "class" | "ignore";
  /** Weight per mask id (N+1), or none. */
  classWeights?: number[];
}

/**
 * Stage-2 optimisation on top of a profile: AdamW (the project's only optimiser;
 * the paper's DeepLab-v2 used SGD) with a poly schedule of power 0.9 (DeepLab's),
 * lr 1e-4 for the pretrained backbone and 10x for the fresh decoder, weight decay
 * 1e-4. Data, batch and seed come from the base profile, epochs too except where
 * {@link STAGE2_EPOCHS} names the profile. Overrides merge last.
 */
export const STAGE2_OVERRIDE: ConfigOverride = {
  optim: { lr: 1e-4, weightDecay: 1e-4, headLrMultiplier: 10, schedule: { kind: "poly", power: 0.9, warmupSteps: 0 } },
};

/**
 * Stage-2 epochs by base profile where they differ from its stage-1 epochs. The
 * `notebook` profile trains stage 1 for one epoch, but a freshly initialised decoder
 * on a frozen backbone is far from trained after 125 steps: on the embedded data
 * (PBIP seed-0 pseudo-masks, 112 px, batch 8) its validation mIoU was 41.2, 57.8 and
 * 63.5 after epochs 1, 2 and 3 of one 3-epoch run, and its test mIoU 35.0 after a
 * 1-epoch run against 62.9 after the 3-epoch one (`pbip seg train --freeze-backbone
 * [--epochs 3]`, then `pbip seg predict`).
 */
export const STAGE2_EPOCHS: Readonly<Record<string, number>> = { notebook: 3 };

/** A stage-2 config: `base` (a profile name or config) + {@link STAGE2_OVERRIDE} (+ {@link STAGE2_EPOCHS}) + `overrides` in order; its profile name gets `+stage2`. */
export function stage2Config(base: string | PbipConfig = "notebook", ...overrides: (ConfigOverride | undefined)[]): PbipConfig {
  const profile = (typeof base === "string" ? base : base.profile).replace(/\+stage2$/, "");
  const epochs = STAGE2_EPOCHS[profile];
  const cfg = resolveConfig(base, STAGE2_OVERRIDE, epochs !== undefined ? { train: { epochs } as PbipConfig["train"] } : undefined, ...overrides);
  if (!cfg.profile.endsWith("+stage2")) cfg.profile = `${cfg.profile}+stage2`;
  return cfg;
}

/** Validation score of stage 2 (what `validation` events carry). */
export interface SegValidationScore extends ValidationScore {
  /** mIoU over the foreground classes, GT background counted. */
  miou: number;
  fwiou: number;
  /** IoU per foreground class (class order; NaN where absent). */
  iou: number[];
  patches: number;
  convention: "count-bg";
}

/**
 * mIoU of a model on batches with ground-truth masks, at the batches' resolution
 * (the loader's input size), count-bg convention; used for per-epoch validation.
 * The final numbers come from {@link evaluateSegmentation} at full resolution.
 *
 * @param limit stop after this many patches (0 = all)
 */
export async function scoreSegmentation(model: SegModel, source: AsyncIterable<Batch>, limit = 0): Promise<SegValidationScore> {
  const c = model.config;
  const cm = new ConfusionMatrix(c.numOutputs);
  let n = 0;
  for await (const batch of source) {
    try {
      if (!batch.masks) throw new Error(`scoreSegmentation: batch ${batch.ids[0]} has no masks`);
      const pred = model.predictIds(batch.images);
      const p = await pred.data();
      pred.dispose();
      const g = await batch.masks.data();
      const take = limit > 0 ? Math.min(batch.ids.length, limit - n) : batch.ids.length;
      const px = batch.masks.shape[1] * batch.masks.shape[2];
      cm.add(g.subarray(0, take * px), p.subarray(0, take * px), IGNORE_ID, batch.ids.slice(0, take).join(","));
      n += take;
    } finally {
      tf.dispose([batch.images, batch.labels, batch.masks]);
    }
    if (limit > 0 && n >= limit) break;
  }
  const s = segmentationScores(cm, { classes: c.classes, backgroundId: c.backgroundId }, "count-bg");
  return { miou: s.miou, fwiou: s.fwiou, iou: s.iou, patches: n, convention: "count-bg" };
}

/** Options of a {@link SegTask}. */
export interface SegTaskOptions {
  /** The stage-2 config ({@link stage2Config}). */
  config: PbipConfig;
  model: SegModel;
  loss?: Partial<SegLossConfig>;
  /**
   * Train the decoder only (default false): the backbone's features are computed
   * before the tape (logged as `prepare`) and its weights stay as built. Several
   * times faster on CPU, since the backbone's backward pass dominates a step:
   * DeepLab-MobileNetV2 at batch 8 x 112 px on WASM took 2.4 s of CPU per step
   * frozen against 7.6 s fully fine-tuned (measured on a shared 2-core machine).
   */
  freezeBackbone?: boolean;
  /** Where the training masks come from, for error messages (the pseudo-mask folder). */
  maskSource?: string;
}

/** Resolved loss settings. */
function lossConfig(l: Partial<SegLossConfig> | undefined, numOutputs: number): SegLossConfig {
  const out: SegLossConfig = { background: l?.background ?? "class" };
  if (l?.classWeights) {
    if (l.classWeights.length !== numOutputs) throw new Error(`stage 2: ${l.classWeights.length} class weights for ${numOutputs} mask ids`);
    out.classWeights = [...l.classWeights];
  }
  return out;
}

interface SegCtx {
  /** Backbone stage maps computed before the tape (frozen backbone). */
  features?: tf.Tensor4D[];
}

/** Stage 2 (pseudo-mask supervision) as a task for {@link runTraining}. */
export class SegTask implements TrainTask<SegCtx> {
  readonly name = "seg";
  readonly lossSettings: SegLossConfig;
  constructor(private readonly o: SegTaskOptions) {
    this.lossSettings = lossConfig(o.loss, o.model.config.numOutputs);
  }

  variables(): Map<string, tf.Variable> {
    return this.o.model.trainableVariables();
  }

  /** The fresh decoder learns `optim.headLrMultiplier` times faster than the pretrained backbone. */
  paramGroups(): ParamGroup[] {
    const m = this.o.config.optim.headLrMultiplier;
    return m !== 1 ? [{ name: "decoder", match: /^decoder\//, lrScale: m }] : [];
  }

  /** Check the batch's mask ids on the host before the tape (a bad pseudo-mask names its file); a frozen backbone runs here. */
  async prepare(batch: Batch): Promise<SegCtx> {
    if (!batch.masks) throw new Error(`stage 2: batch [${batch.ids.join(", ")}] has no masks (open the training split with its pseudo-masks)`);
    checkMaskIds(await batch.masks.data(), batch.ids, this.o.model.config.numOutputs, this.o.maskSource ?? "<masks>");
    return this.o.freezeBackbone ? { features: this.o.model.backboneFeatures(batch.images, false) } : {};
  }

  release(ctx: SegCtx): void {
    tf.dispose(ctx.features);
  }

  loss(batch: Batch, ctx: SegCtx, step: number, counts: Record<string, number>): StepResult {
    const m = this.o.model;
    m.backbone.setStepSeed?.(this.o.config.train.seed * 1_000_003 + step);
    const logits = ctx.features ? m.decode(ctx.features, [batch.images.shape[1], batch.images.shape[2]]) : m.forward(batch.images, true);
    const ce = pixelCrossEntropy(logits, batch.masks!, {
      classWeights: this.lossSettings.classWeights,
      ignoreIds: this.lossSettings.background === "ignore" ? [m.config.backgroundId] : [],
    });
    counts.images = batch.ids.length;
    return { total: ce, terms: { ce } };
  }

  async validate(source: BatchSource): Promise<ValidationScore> {
    return scoreSegmentation(this.o.model, source.epoch(0), this.o.config.train.valLimit);
  }
}

/** Options of {@link trainSegmentation}. */
export interface TrainSegmentationOptions extends SegTaskOptions {
  /** Training batches with pseudo-masks ({@link openSegData}`.train`). */
  train: BatchSource;
  /** Validation batches with ground-truth masks. */
  val?: BatchSource;
  /** Folder for checkpoints, `train-log.jsonl` and `config.json`. */
  outDir: string;
  /** Resume from the newest checkpoint in outDir (default true). */
  resume?: boolean;
  /** Stop (without a checkpoint) after this many steps of this call: for resume tests. */
  stopAfter?: number;
  /** Stop cleanly when aborted (Ctrl-C): the steps since the last checkpoint are saved; the last event is `interrupted`. */
  signal?: AbortSignal;
  /** Stored in checkpoints (e.g. the pseudo-mask folder and the stage-1 run it came from). */
  metadata?: Record<string, unknown>;
}

/**
 * Train stage 2. Yields the loop's events (`start`, `step`, `validation`,
 * `checkpoint`, `done`), exactly as stage 1's {@link trainClassNet}; checkpoints
 * carry the model config, so {@link loadSegModel} restores `best.safetensors`.
 * Resuming with another model or loss than the checkpoint's is an error.
 *
 * @example
 * for await (const ev of trainSegmentation({ config, model, train: data.train, val: data.val, outDir }))
 *   if (ev.type === "step") console.log(ev.step, ev.losses.total);
 */
export async function* trainSegmentation(o: TrainSegmentationOptions): AsyncGenerator<TrainEvent> {
  const model = o.model;
  if (model.config.inputSize !== o.config.data.inputSize) {
    throw new Error(`stage 2: the model was built for ${model.config.inputSize}px inputs but the config trains at data.inputSize ${o.config.data.inputSize}px; build it with inputSize ${o.config.data.inputSize}`);
  }
  const task = new SegTask(o);
  const identity = { segModel: model.config, segLoss: task.lossSettings, freezeBackbone: o.freezeBackbone ?? false };
  if (o.resume !== false) {
    const prev = latestCheckpoint(o.outDir);
    if (prev) {
      const meta = readMetadata<{ segModel?: SegModelConfig; segLoss?: SegLossConfig }>(prev);
      for (const [k, v] of Object.entries(identity)) {
        const was = (meta as Record<string, unknown>)[k];
        if (JSON.stringify(was) !== JSON.stringify(v)) {
          throw new Error(`${prev}: was written with another ${k === "segModel" ? "model" : k === "segLoss" ? "loss" : "freezeBackbone setting"} (${JSON.stringify(was)}); use a new output folder or delete it to start over`);
        }
      }
    }
  }
  fs.mkdirSync(o.outDir, { recursive: true });
  try {
    yield* runTraining(task, {
      runRecord: { task: "seg", ...identity, ...(o.metadata ?? {}) },
      config: o.config,
      train: o.train,
      val: o.val,
      outDir: o.outDir,
      resume: o.resume,
      stopAfter: o.stopAfter,
      signal: o.signal,
      metadata: { ...(o.metadata ?? {}), ...identity, backbone: model.backbone.name },
    });
  } catch (e) {
    throw explainOutOfMemory(e, o);
  }
}

/**
 * The WASM backend's heap is at most 4 GiB; a step that needs more fails deep in a
 * kernel with "memory access out of bounds". Say what happened and what to change.
 * (Full fine-tuning of DeepLab-MobileNetV2 at 224 px needs about 3.4 GiB at batch 4.)
 */
function explainOutOfMemory(e: unknown, o: TrainSegmentationOptions): unknown {
  if (!(e instanceof Error) || !/memory access out of bounds|Out of memory|Cannot allocate Wasm memory/i.test(e.message)) return e;
  const c = o.config;
  const err = new Error(
    `stage 2: the ${tf.getBackend()} backend ran out of memory in a training step (batch ${c.train.batchSize} x ${c.data.inputSize}px, ${o.model.config.arch}${o.freezeBackbone ? ", frozen backbone" : ""}): ` +
      `the WASM heap holds at most 4 GiB. Use a smaller batch (train.batchSize, --batch), a smaller input (data.inputSize, --size) or freezeBackbone (--freeze-backbone), ` +
      `and restart the process (or notebook kernel): the backend is unusable after this error. The last checkpoint in ${o.outDir} resumes the run.`,
  );
  (err as Error & { cause?: unknown }).cause = e;
  return err;
}
