/**
 * Stage 1: the PBIP task for the training loop (see loop.ts). One step: ClassNet
 * forward; L_CLS over the used stages (eq. 7-8); pair selection on the matching
 * stage's logits; the matching map, the adaptive threshold (eq. 4) and the
 * foreground/background regions (eq. 5); region features through the frozen
 * encoder (`image` mode) or from its dense map (`feature` mode); L_FGS and L_BGS
 * against the bank's prototypes (eq. 9-13); the total loss (eq. 6).
 */
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { PbipConfig } from "../config/profiles";
import type { ClassNet } from "../model/classnet";
import type { ImageEncoder } from "../encoders/types";
import type { Batch } from "../data/types";
import { classificationLoss } from "../losses/classification";
import { foregroundContrastiveLoss, backgroundContrastiveLoss } from "../losses/contrastive";
import { pbipLoss } from "../losses/total";
import { matchingMap, adaptiveThreshold, selectPairs, foregroundBackground, encodeRegionsImage, encodeRegionsFeature, type MatchPairs } from "../match";
import { canReadSync } from "../runtime/memory";
import { writeJsonAtomic } from "../util/fs";
import { scorePseudoMasks, type BatchSource } from "./validate";
import { runTraining, type TrainTask, type StepResult, type TrainEvent, type ValidationScore } from "./loop";
import type { ParamGroup } from "./optim";

export interface PbipTaskOptions {
  config: PbipConfig;
  net: ClassNet;
  /** The frozen encoder phi used for region features (the one that built the bank). */
  encoder: ImageEncoder;
  /** Bank prototypes in encoder space, [S, d]. */
  bankPrototypes: tf.Tensor2D;
  /** Mask id of background in ground-truth masks (for validation). */
  backgroundId: number;
}

interface PbipCtx {
  dense?: tf.Tensor4D;
  /** Labels read on the host. */
  labels: Float32Array;
  /** Pairs chosen before the tape (backends without synchronous reads). */
  pairs?: MatchPairs;
}

/** The PBIP stage-1 objective as a {@link TrainTask}. Dispose it after training (it holds a copy of the prototypes). */
export class PbipTask implements TrainTask<PbipCtx> {
  readonly name = "classnet";
  private readonly protos: tf.Tensor2D;
  private readonly stageWeights: number[];
  private readonly useSim: boolean;

  constructor(private readonly o: PbipTaskOptions) {
    this.protos = tf.keep(o.bankPrototypes.clone());
    this.stageWeights = o.net.stages.map((s) => o.config.loss.stageWeights[s - 1] ?? 0);
    this.useSim = o.config.loss.useFg || o.config.loss.useBg;
    if (this.useSim && o.config.match.regionMode === "image" && !o.encoder.differentiable) {
      throw new Error(`encoder ${o.encoder.identity.name} is not differentiable: the "image" region mode needs one; use match.regionMode "feature"`);
    }
  }

  variables(): Map<string, tf.Variable> {
    return this.o.net.trainableVariables();
  }

  paramGroups(): ParamGroup[] {
    const m = this.o.config.optim.headLrMultiplier;
    return m !== 1 ? [{ name: "heads", match: /^head\//, lrScale: m }] : [];
  }

  async prepare(batch: Batch, step: number): Promise<PbipCtx> {
    const ctx: PbipCtx = { labels: Float32Array.from(await batch.labels.data()) };
    if (!this.useSim) return ctx;
    if (!canReadSync()) {
      // The pairs depend on this step's logits. Where the backend cannot read them
      // synchronously inside the tape (WebGPU in Node), run the forward pass once
      // before it, with the same stochastic-depth seed, and select from that.
      this.seedStep(step);
      const logits = tf.tidy(() => {
        const out = this.o.net.forward(batch.images, true);
        return out.logits[out.logits.length - 1]!;
      });
      ctx.pairs = selectPairs(await logits.data(), ctx.labels, batch.ids.length, this.o.net.k);
      logits.dispose();
    }
    if (this.o.config.match.regionMode === "feature") {
      const out = await this.o.encoder.encode(batch.images, { dense: true });
      out.pooled.dispose();
      if (!out.dense) throw new Error(`encoder ${this.o.encoder.identity.name} gives no dense map: use the "image" region mode`);
      ctx.dense = out.dense;
    }
    return ctx;
  }

  /** Seed stochastic depth by the step, so a resumed run repeats an uninterrupted one. */
  private seedStep(step: number): void {
    this.o.net.backbone.setStepSeed?.(this.o.config.train.seed * 1_000_003 + step);
  }

  release(ctx: PbipCtx): void {
    ctx.dense?.dispose();
  }

  loss(batch: Batch, ctx: PbipCtx, step: number, counts: Record<string, number>, seconds: Record<string, number>): StepResult {
    const { config: cfg, net, encoder } = this.o;
    this.seedStep(step);
    const out = net.forward(batch.images, true);
    const cls = classificationLoss(out.logits, batch.labels, { k: net.k, stageWeights: this.stageWeights, merge: "mean" });
    let fg: tf.Scalar | undefined;
    let bg: tf.Scalar | undefined;
    counts.pairs = 0;
    if (this.useSim) {
      const sel = ctx.pairs ?? selectPairs(out.logits[out.logits.length - 1]!.dataSync(), ctx.labels, batch.ids.length, net.k);
      counts.pairs = sel.image.length;
      if (sel.image.length > 0) {
        const m = matchingMap(out.maps, [batch.images.shape[1], batch.images.shape[2]], cfg.match.mapSource);
        const b = adaptiveThreshold(m, cfg.match.delta, cfg.match.maxOver);
        const regions = foregroundBackground(batch.images, m, b, sel, cfg.match);
        const tr = Date.now();
        const feats = cfg.match.regionMode === "image" ? encodeRegionsImage(encoder, regions) : encodeRegionsFeature(ctx.dense!, regions, sel);
        seconds.regions = (Date.now() - tr) / 1000;
        const opts = { temperature: cfg.loss.temperature, reduction: cfg.loss.reduction };
        if (cfg.loss.useFg) fg = foregroundContrastiveLoss(feats.fg, sel.subclass, this.protos, opts);
        if (cfg.loss.useBg) bg = backgroundContrastiveLoss(feats.bg, sel.subclass, this.protos, opts);
      }
    }
    const camReg = this.useSim ? out.maps[out.maps.length - 1] : undefined;
    const t = pbipLoss({ cls: cls.total, fg, bg, camReg }, cfg.loss);
    const terms: Record<string, tf.Scalar> = { cls: t.cls, fg: t.fg, bg: t.bg, camReg: t.camReg };
    out.stages.forEach((s, i) => (terms[`cls_stage${s}`] = cls.perStage[i]!));
    return { total: t.total, terms };
  }

  async validate(source: BatchSource): Promise<ValidationScore> {
    const s = await scorePseudoMasks(this.o.net, source.epoch(0), this.o.config.cam, this.o.backgroundId, this.o.config.train.valLimit);
    const { matrix: _m, ...rest } = s;
    return rest;
  }

  dispose(): void {
    this.protos.dispose();
  }
}

export interface TrainClassNetOptions extends PbipTaskOptions {
  train: BatchSource;
  val?: BatchSource;
  outDir: string;
  resume?: boolean;
  stopAfter?: number;
  /** Identity of the bank (stored in checkpoints). */
  bankIdentity?: Record<string, unknown>;
}

/**
 * Train ClassNet with PBIP. Yields the loop's events; the last is `done`.
 *
 * @example
 * for await (const ev of trainClassNet(opts)) if (ev.type === "step") console.log(ev.step, ev.losses.total);
 */
export async function* trainClassNet(o: TrainClassNetOptions): AsyncGenerator<TrainEvent> {
  const task = new PbipTask(o);
  try {
    writeRunConfig(o.outDir, o.config, { task: "classnet", bank: o.bankIdentity, encoder: o.encoder.identity });
    yield* runTraining(task, {
      config: o.config,
      train: o.train,
      val: o.val,
      outDir: o.outDir,
      resume: o.resume,
      stopAfter: o.stopAfter,
      metadata: { bank: o.bankIdentity, encoder: o.encoder.identity, backbone: o.net.backbone.name },
    });
  } finally {
    task.dispose();
  }
}

/** Write the resolved config a run used (every run records it). */
export function writeRunConfig(dir: string, cfg: PbipConfig, extra: Record<string, unknown> = {}): void {
  writeJsonAtomic(path.join(dir, "config.json"), { ...extra, config: cfg });
}
