/**
 * The PBIP trainer (stage 1): an async iterator of typed events, so a notebook plots
 * them live, the CLI prints a progress bar, and tests read them, all from one loop.
 *
 * One step: ClassNet forward; L_CLS over the used stages; pair selection on the
 * matching stage's logits; the matching map, the adaptive threshold (eq. 4) and the
 * foreground/background regions (eq. 5); region features through the frozen encoder
 * (`image` mode) or from its dense map (`feature` mode); L_FGS and L_BGS against the
 * bank's prototypes (eq. 9-13); the total loss; AdamW with the schedule.
 *
 * Checkpoints (weights, optimiser state, position, config, bank identity, package
 * version) are single safetensors files written atomically; a run resumes from the
 * newest one and reproduces an uninterrupted run exactly (data order and
 * augmentation are functions of seed and epoch; stochastic depth is seeded per step).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { PbipConfig } from "../config/profiles";
import type { ClassNet } from "../model/classnet";
import type { ImageEncoder } from "../encoders/types";
import type { Batch } from "../data/types";
import { classificationLoss } from "../losses/classification";
import { foregroundContrastiveLoss, backgroundContrastiveLoss } from "../losses/contrastive";
import { pbipLoss } from "../losses/total";
import { matchingMap, adaptiveThreshold, selectPairs, foregroundBackground, encodeRegionsImage, encodeRegionsFeature } from "../match";
import { AdamW } from "./optim";
import { learningRate, type LrSchedule } from "./schedule";
import { saveVariables, loadVariables, readMetadata } from "../io/checkpoint";
import { readSafetensors } from "../io/safetensors";
import { writeJsonAtomic } from "../util/fs";
import { assertCleanLoad } from "../io/tensors";
import { scorePseudoMasks, type BatchSource, type PseudoMaskScore } from "./validate";

/** Loss terms of one step (unweighted, as logged). */
export interface LossTerms {
  total: number;
  cls: number;
  fg: number;
  bg: number;
  camReg: number;
  /** L_CLS per used stage. */
  clsPerStage: number[];
}

export type TrainEvent =
  | {
      type: "start";
      step: number;
      totalSteps: number;
      stepsPerEpoch: number;
      epochs: number;
      resumedFrom?: string;
      config: PbipConfig;
    }
  | {
      type: "step";
      step: number;
      epoch: number;
      /** Index of this batch within its epoch. */
      batch: number;
      losses: LossTerms;
      lr: number;
      /** (image, subclass) pairs used for L_FGS/L_BGS. */
      pairs: number;
      /** Seconds: the whole step, the forward+backward pass, the part spent encoding regions (forward only), the optimiser. */
      seconds: { step: number; forwardBackward: number; regions: number; optimizer: number };
      tensors: number;
      rssBytes: number;
      ids: string[];
    }
  | { type: "validation"; epoch: number; step: number; score: Omit<PseudoMaskScore, "matrix">; best: boolean }
  | { type: "checkpoint"; epoch: number; step: number; file: string; best: boolean }
  | { type: "done"; step: number; lastCheckpoint?: string; bestCheckpoint?: string; bestMiou?: number; seconds: number };

/** A loss that is not finite: the run stops, naming the step, the batch and the last good checkpoint. */
export class TrainingDivergedError extends Error {
  constructor(
    readonly step: number,
    readonly ids: string[],
    readonly lastCheckpoint: string | undefined,
    readonly losses: LossTerms,
  ) {
    super(
      `training diverged at step ${step}: loss ${JSON.stringify(losses)} on batch [${ids.join(", ")}]; ` +
        (lastCheckpoint ? `last good checkpoint: ${lastCheckpoint}` : "no checkpoint was written yet"),
    );
    this.name = "TrainingDivergedError";
  }
}

export interface TrainerOptions {
  config: PbipConfig;
  net: ClassNet;
  /** The frozen encoder phi used for region features (and that built the bank). */
  encoder: ImageEncoder;
  /** Bank prototypes in encoder space, [S, d]. */
  bankPrototypes: tf.Tensor2D;
  /** Identity of the bank (stored in checkpoints). */
  bankIdentity?: Record<string, unknown>;
  train: BatchSource;
  /** Batches with masks for per-epoch validation (pseudo-mask mIoU); omitted = no validation. */
  val?: BatchSource;
  backgroundId: number;
  /** Folder for checkpoints and `train-log.jsonl`. */
  outDir: string;
  /** Resume from the newest checkpoint in outDir (default true). */
  resume?: boolean;
  /** Stop (cleanly, without a checkpoint) after this many steps of this call: for tests of resume. */
  stopAfter?: number;
}

const CKPT_RE = /^step-(\d+)\.safetensors$/;

interface CheckpointMeta {
  kind: "pbip-classnet-checkpoint";
  step: number;
  epoch: number;
  config: PbipConfig;
  bank?: Record<string, unknown>;
  optimizer: { step: number; paramSteps: Record<string, number> };
  bestMiou?: number;
  val?: Omit<PseudoMaskScore, "matrix">;
}

/** The newest `step-N.safetensors` in a folder. */
export function latestCheckpoint(dir: string): string | undefined {
  if (!fs.existsSync(dir)) return undefined;
  const found = fs
    .readdirSync(dir)
    .map((f) => ({ f, m: CKPT_RE.exec(f) }))
    .filter((x) => x.m)
    .sort((a, b) => Number(b.m![1]) - Number(a.m![1]));
  return found.length ? path.join(dir, found[0]!.f) : undefined;
}

/** Learning-rate schedule from a profile. */
export function scheduleFromConfig(cfg: PbipConfig, totalSteps: number): LrSchedule {
  const s = cfg.optim.schedule;
  const warmup = s.warmupSteps > 0 ? { steps: s.warmupSteps } : undefined;
  if (s.kind === "poly") return { kind: "poly", maxSteps: totalSteps, power: s.power, warmup };
  if (s.kind === "cosine") return { kind: "cosine", maxSteps: totalSteps, warmup };
  return { kind: "constant", warmup, maxSteps: totalSteps };
}

function readTerms(vals: Float32Array | Int32Array | Uint8Array, nStages: number): LossTerms {
  return { total: vals[0]!, cls: vals[1]!, fg: vals[2]!, bg: vals[3]!, camReg: vals[4]!, clsPerStage: Array.from(vals.slice(5, 5 + nStages)) };
}

/**
 * Train ClassNet with PBIP. Yields events; the final event is `done`.
 *
 * @example
 * for await (const ev of trainClassNet(opts)) if (ev.type === "step") console.log(ev.step, ev.losses.total);
 */
export async function* trainClassNet(o: TrainerOptions): AsyncGenerator<TrainEvent> {
  const cfg = o.config;
  const net = o.net;
  const t0 = Date.now();
  fs.mkdirSync(o.outDir, { recursive: true });
  const stepsPerEpoch = o.train.batchesPerEpoch;
  let totalSteps = stepsPerEpoch * cfg.train.epochs;
  if (cfg.train.maxSteps > 0) totalSteps = Math.min(totalSteps, cfg.train.maxSteps);
  const epochs = Math.ceil(totalSteps / stepsPerEpoch);
  const schedule = scheduleFromConfig(cfg, totalSteps);
  const vars = net.trainableVariables();
  const headRe = /^head\//;
  const opt = new AdamW(vars, {
    lr: cfg.optim.lr,
    betas: cfg.optim.betas,
    eps: cfg.optim.eps,
    weightDecay: cfg.optim.weightDecay,
    clipGradNorm: cfg.optim.clipGradNorm,
    groups: cfg.optim.headLrMultiplier !== 1 ? [{ name: "heads", match: headRe, lrScale: cfg.optim.headLrMultiplier }] : undefined,
  });
  const varList = [...vars.values()];
  const nameOf = new Map([...vars].map(([n, v]) => [v.name, n]));
  const stageWeights = net.stages.map((s) => cfg.loss.stageWeights[s - 1] ?? 0);
  const useSim = cfg.loss.useFg || cfg.loss.useBg;
  const protos = tf.keep(o.bankPrototypes.clone());

  let step = 0;
  let bestMiou = -Infinity;
  let lastCkpt: string | undefined;
  let bestCkpt: string | undefined;
  const bestFile = path.join(o.outDir, "best.safetensors");
  const logFile = path.join(o.outDir, "train-log.jsonl");
  let resumedFrom: string | undefined;

  const resumeFile = o.resume === false ? undefined : latestCheckpoint(o.outDir);
  if (resumeFile) {
    const meta = readMetadata<CheckpointMeta>(resumeFile);
    if (meta.kind !== "pbip-classnet-checkpoint") throw new Error(`${resumeFile}: not a ClassNet checkpoint`);
    const sameCfg = JSON.stringify(meta.config) === JSON.stringify(cfg);
    if (!sameCfg) throw new Error(`${resumeFile}: was written with another config; use a new output folder or delete it to start over`);
    const report = loadVariables(resumeFile, vars, ["optim/"]);
    assertCleanLoad(resumeFile, report);
    const all = readSafetensors(resumeFile, { filter: (n) => n.startsWith("optim/") });
    const tensors = new Map([...all].map(([n, t]) => [n.slice("optim/".length), t]));
    opt.setState({ step: meta.optimizer.step, paramSteps: meta.optimizer.paramSteps, tensors }, resumeFile);
    step = meta.step;
    bestMiou = meta.bestMiou ?? -Infinity;
    lastCkpt = resumeFile;
    if (fs.existsSync(bestFile)) bestCkpt = bestFile;
    resumedFrom = resumeFile;
  }

  const writeCheckpoint = async (epoch: number, val?: Omit<PseudoMaskScore, "matrix">): Promise<string> => {
    const st = await opt.getState();
    const extra = new Map([...st.tensors].map(([n, t]) => [`optim/${n}`, t]));
    const file = path.join(o.outDir, `step-${String(step).padStart(6, "0")}.safetensors`);
    const meta: CheckpointMeta = {
      kind: "pbip-classnet-checkpoint",
      step,
      epoch,
      config: cfg,
      bank: o.bankIdentity,
      optimizer: { step: st.step, paramSteps: st.paramSteps },
      bestMiou: Number.isFinite(bestMiou) ? bestMiou : undefined,
      val,
    };
    saveVariables(file, vars, meta as unknown as Record<string, unknown>, extra);
    // Keep the newest two step checkpoints (plus best).
    const old = fs
      .readdirSync(o.outDir)
      .filter((f) => CKPT_RE.test(f) && path.join(o.outDir, f) !== file)
      .sort()
      .reverse()
      .slice(1);
    for (const f of old) fs.rmSync(path.join(o.outDir, f), { force: true });
    return file;
  };

  yield { type: "start", step, totalSteps, stepsPerEpoch, epochs, resumedFrom, config: cfg };

  let stepsThisCall = 0;
  try {
    for (let epoch = Math.floor(step / stepsPerEpoch); epoch < epochs && step < totalSteps; epoch++) {
      const skip = step - epoch * stepsPerEpoch;
      let bi = -1;
      for await (const batch of o.train.epoch(epoch)) {
        bi++;
        if (bi < skip) {
          tf.dispose([batch.images, batch.labels, batch.masks]);
          continue;
        }
        if (step >= totalSteps || (o.stopAfter !== undefined && stepsThisCall >= o.stopAfter)) {
          tf.dispose([batch.images, batch.labels, batch.masks]);
          break;
        }
        const ev = await trainStep(batch, epoch, bi);
        yield ev;
        stepsThisCall++;
      }
      if (o.stopAfter !== undefined && stepsThisCall >= o.stopAfter) break;
      const epochDone = step >= (epoch + 1) * stepsPerEpoch || step >= totalSteps;
      if (!epochDone) break;
      let valScore: Omit<PseudoMaskScore, "matrix"> | undefined;
      let isBest = false;
      if (o.val && ((epoch + 1) % cfg.train.valEvery === 0 || step >= totalSteps)) {
        const s = await scorePseudoMasks(net, o.val.epoch(0), cfg.cam, o.backgroundId, cfg.train.valLimit);
        const { matrix: _m, ...rest } = s;
        valScore = rest;
        isBest = s.miou > bestMiou;
        if (isBest) bestMiou = s.miou;
        yield { type: "validation", epoch, step, score: rest, best: isBest };
      }
      if ((epoch + 1) % cfg.train.checkpointEvery === 0 || step >= totalSteps) {
        lastCkpt = await writeCheckpoint(epoch, valScore);
        if (isBest || (!o.val && step >= totalSteps)) {
          fs.copyFileSync(lastCkpt, bestFile + ".tmp");
          fs.renameSync(bestFile + ".tmp", bestFile);
          bestCkpt = bestFile;
        }
        yield { type: "checkpoint", epoch, step, file: lastCkpt, best: isBest };
      }
    }
  } finally {
    protos.dispose();
    opt.dispose();
  }
  yield {
    type: "done",
    step,
    lastCheckpoint: lastCkpt,
    bestCheckpoint: bestCkpt,
    bestMiou: Number.isFinite(bestMiou) ? bestMiou : undefined,
    seconds: (Date.now() - t0) / 1000,
  };

  async function trainStep(batch: Batch, epoch: number, bi: number): Promise<Extract<TrainEvent, { type: "step" }>> {
    const ts = Date.now();
    let dense: tf.Tensor4D | undefined;
    let regionSeconds = 0;
    if (useSim && cfg.match.regionMode === "feature") {
      const tr = Date.now();
      const out = await o.encoder.encode(batch.images, { dense: true });
      out.pooled.dispose();
      if (!out.dense) throw new Error(`encoder ${o.encoder.identity.name} gives no dense map: use the "image" region mode`);
      dense = out.dense;
      regionSeconds += (Date.now() - tr) / 1000;
    }
    let pairs = 0;
    let packedTerms: tf.Tensor | undefined;
    const tfb = Date.now();
    const { value, grads } = tf.variableGrads(() => {
      const out = net.forward(batch.images, true);
      const cls = classificationLoss(out.logits, batch.labels, { k: net.k, stageWeights, merge: "mean" });
      let fg: tf.Scalar | undefined;
      let bg: tf.Scalar | undefined;
      if (useSim) {
        const last = out.logits[out.logits.length - 1]!;
        const sel = selectPairs(last.dataSync(), batch.labels.dataSync(), batch.ids.length, net.k);
        pairs = sel.image.length;
        if (pairs > 0) {
          const m = matchingMap(out.maps, [batch.images.shape[1], batch.images.shape[2]], cfg.match.mapSource);
          const b = adaptiveThreshold(m, cfg.match.delta, cfg.match.maxOver);
          const regions = foregroundBackground(batch.images, m, b, sel, cfg.match);
          const tr = Date.now();
          const feats = cfg.match.regionMode === "image" ? encodeRegionsImage(o.encoder, regions) : encodeRegionsFeature(dense!, regions, sel);
          regionSeconds += (Date.now() - tr) / 1000;
          const opts = { temperature: cfg.loss.temperature, reduction: cfg.loss.reduction };
          if (cfg.loss.useFg) fg = foregroundContrastiveLoss(feats.fg, sel.subclass, protos, opts);
          if (cfg.loss.useBg) bg = backgroundContrastiveLoss(feats.bg, sel.subclass, protos, opts);
        }
      }
      const camReg = useSim ? out.maps[out.maps.length - 1] : undefined;
      const total = pbipLoss({ cls: cls.total, fg, bg, camReg }, cfg.loss);
      // Pack the logged terms into one tensor read once after the step.
      const packed = tf.stack([total.total, total.cls, total.fg, total.bg, total.camReg, ...cls.perStage]);
      packedTerms = tf.keep(packed);
      return total.total;
    }, varList);
    const fbSeconds = (Date.now() - tfb) / 1000;
    dense?.dispose();
    const terms = readTerms(await packedTerms!.data(), net.stages.length);
    packedTerms!.dispose();
    value.dispose();
    if (![terms.total, terms.cls, terms.fg, terms.bg].every(Number.isFinite)) {
      tf.dispose(grads);
      tf.dispose([batch.images, batch.labels, batch.masks]);
      throw new TrainingDivergedError(step, batch.ids, lastCkpt, terms);
    }
    const lr = learningRate(cfg.optim.lr, schedule, step);
    const to = Date.now();
    const named = new Map<string, tf.Tensor>();
    for (const [vn, g] of Object.entries(grads)) named.set(nameOf.get(vn) ?? vn, g);
    opt.step(named, lr);
    tf.dispose(grads);
    const optSeconds = (Date.now() - to) / 1000;
    tf.dispose([batch.images, batch.labels, batch.masks]);
    step++;
    const ev = {
      type: "step" as const,
      step,
      epoch,
      batch: bi,
      losses: terms,
      lr,
      pairs,
      seconds: { step: (Date.now() - ts) / 1000, forwardBackward: fbSeconds, regions: regionSeconds, optimizer: optSeconds },
      tensors: tf.memory().numTensors,
      rssBytes: process.memoryUsage().rss,
      ids: batch.ids,
    };
    fs.appendFileSync(logFile, JSON.stringify({ ...ev, ids: undefined }) + "\n");
    return ev;
  }
}

/** Write the resolved config a run used (every run records it). */
export function writeRunConfig(dir: string, cfg: PbipConfig, extra: Record<string, unknown> = {}): void {
  writeJsonAtomic(path.join(dir, "config.json"), { ...extra, config: cfg });
}
