/**
 * The training loop shared by stage 1 (ClassNet, PBIP losses) and stage 2
 * (segmentation on pseudo-masks): an async iterator of typed events, so a notebook
 * plots them live, the CLI prints a progress bar, and tests read them, all from
 * one loop.
 *
 * Checkpoints (weights, optimiser state, position, config, extra identity such as
 * the bank, package version) are single safetensors files written atomically; a
 * run resumes from the newest one and reproduces an uninterrupted run exactly
 * (data order and augmentation are functions of seed and epoch; anything random in
 * a step must be seeded by the step number).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { diffValues, upgradeStoredConfig, type PbipConfig } from "../config/profiles";
import type { Batch } from "../data/types";
import { AdamW, type ParamGroup } from "./optim";
import { learningRate, type LrSchedule } from "./schedule";
import { saveVariables, loadVariables, readMetadata } from "../io/checkpoint";
import { readSafetensors } from "../io/safetensors";
import { assertCleanLoad } from "../io/tensors";
import type { BatchSource } from "./validate";
import { stableStringify } from "../util/json";
import { writeJsonAtomic } from "../util/fs";

/** Logged loss terms of a step: always `total`, plus the task's own terms. */
export type LossRecord = { total: number } & Record<string, number>;

/** A validation result: `miou` drives best-checkpoint selection. */
export interface ValidationScore {
  miou: number;
  [k: string]: unknown;
}

/** A validation score's numbers and number lists (what `train-log.jsonl` keeps; a confusion matrix or other objects are left out). */
export function loggableScore(score: ValidationScore): ValidationScore {
  const out: ValidationScore = { miou: score.miou };
  for (const [k, v] of Object.entries(score)) {
    if (typeof v === "number" || typeof v === "string" || (Array.isArray(v) && v.every((x) => typeof x === "number"))) out[k] = v;
  }
  return out;
}

export type TrainEvent =
  | { type: "start"; task: string; step: number; totalSteps: number; stepsPerEpoch: number; epochs: number; resumedFrom?: string; config: PbipConfig }
  | {
      type: "step";
      step: number;
      epoch: number;
      /** Index of this batch within its epoch. */
      batch: number;
      losses: LossRecord;
      lr: number;
      /** Task-specific counters (e.g. `pairs` used for L_FGS/L_BGS). */
      counts: Record<string, number>;
      /** Seconds: the whole step, preparation outside the tape, forward+backward, the optimiser; plus task parts. */
      seconds: { step: number; prepare: number; forwardBackward: number; optimizer: number } & Record<string, number>;
      tensors: number;
      rssBytes: number;
      ids: string[];
    }
  | { type: "validation"; epoch: number; step: number; score: ValidationScore; best: boolean }
  | { type: "checkpoint"; epoch: number; step: number; file: string; best: boolean }
  | { type: "done"; step: number; lastCheckpoint?: string; bestCheckpoint?: string; bestMiou?: number; seconds: number }
  /** `signal` aborted: the run stopped after a whole step and saved it; running again resumes from `checkpoint`. The last event. */
  | { type: "interrupted"; step: number; checkpoint?: string };

/** A loss that is not finite: the run stops, naming the step, the batch and the last good checkpoint. */
export class TrainingDivergedError extends Error {
  constructor(
    /** The step that diverged, numbered as `step` events are (the first step is 1). */
    readonly step: number,
    readonly ids: string[],
    readonly lastCheckpoint: string | undefined,
    readonly losses: LossRecord,
  ) {
    super(
      `training diverged at step ${step}: losses ${JSON.stringify(losses)} on batch [${ids.join(", ")}]; ` +
        (lastCheckpoint ? `last good checkpoint: ${lastCheckpoint}` : "no checkpoint was written yet"),
    );
    this.name = "TrainingDivergedError";
  }
}

/** What a task computes inside the gradient tape for one batch. */
export interface StepResult {
  /** The scalar to minimise. */
  total: tf.Scalar;
  /** Scalars to log (kept by the loop, read once after the step). */
  terms: Record<string, tf.Scalar>;
}

/** A trainable task: its variables and its loss. */
export interface TrainTask<Ctx = unknown> {
  /** `classnet` or `seg`; stored in checkpoints. */
  readonly name: string;
  /** Variables the optimiser updates, by stable name. */
  variables(): Map<string, tf.Variable>;
  /** Parameter groups (e.g. a head learning-rate multiplier). */
  paramGroups?(): ParamGroup[];
  /** Work outside the tape before the step (e.g. dense encoder features); its seconds are logged as `prepare`. */
  prepare?(batch: Batch, step: number): Promise<Ctx>;
  /** The loss, called inside `tf.variableGrads`. `counts` collects task counters for the step event. */
  loss(batch: Batch, ctx: Ctx, step: number, counts: Record<string, number>, seconds: Record<string, number>): StepResult;
  /** Release what `prepare` returned. */
  release?(ctx: Ctx): void;
  /** Score on the validation source (mIoU drives best-checkpoint selection). */
  validate?(source: BatchSource, epoch: number): Promise<ValidationScore>;
}

export interface LoopOptions {
  config: PbipConfig;
  train: BatchSource;
  val?: BatchSource;
  /** Folder for checkpoints and `train-log.jsonl`. */
  outDir: string;
  /** Resume from the newest checkpoint in outDir (default true). */
  resume?: boolean;
  /** Stop (without a checkpoint) after this many steps of this call: for resume tests. */
  stopAfter?: number;
  /**
   * Stop when aborted (e.g. on Ctrl-C): the step in progress finishes, the steps since the last
   * checkpoint are saved, and the run ends with an `interrupted` event instead of `done`.
   */
  signal?: AbortSignal;
  /** Stored in checkpoint metadata (e.g. the bank's identity). */
  metadata?: Record<string, unknown>;
  /**
   * What a checkpoint must have been trained with, besides the config, to be resumed
   * (e.g. the hash of the bank's prototypes and the encoder's identity). Stored in its
   * metadata; resuming one whose recorded identity differs is an error, as for the
   * config (a checkpoint that recorded none is resumed).
   */
  identity?: Record<string, unknown>;
  /**
   * Written with the config to `outDir/config.json` (the run's record of what it used)
   * once the run is known to start or resume: a resume refused for another config
   * leaves the folder's record as it was.
   */
  runRecord?: Record<string, unknown>;
}

const CKPT_RE = /^step-(\d+)\.safetensors$/;

interface CheckpointMeta {
  kind: string;
  task: string;
  step: number;
  epoch: number;
  config: PbipConfig;
  optimizer: { step: number; paramSteps: Record<string, number> };
  bestMiou?: number;
  val?: ValidationScore;
  identity?: Record<string, unknown>;
  /** Written when the epoch's validation failed (e.g. a bad file): a resume validates that epoch first. */
  pendingValidation?: boolean;
  [k: string]: unknown;
}

/**
 * Why a checkpoint cannot be resumed with this config and identity (undefined
 * when it can): the differing config keys, or the identity keys that differ.
 */
export function resumeMismatch(meta: { config: PbipConfig; identity?: Record<string, unknown> }, config: PbipConfig, identity?: Record<string, unknown>): string | undefined {
  const stored = upgradeStoredConfig(meta.config);
  if (stableStringify(stored) !== stableStringify(config)) {
    const keys = diffValues(stored, config).map((d) => d.path);
    return `was trained with another config (${keys.slice(0, 6).join(", ")}${keys.length > 6 ? ", ..." : ""})`;
  }
  if (meta.identity && identity && stableStringify(meta.identity) !== stableStringify(identity)) {
    const keys = diffValues(meta.identity, identity).map((d) => d.path);
    // Say what the keys mean where they are known (a bank's prototype hash, the frozen encoder).
    const words = (k: string) => (k === "prototypesSha256" ? "prototypesSha256 (another bank, or the bank rebuilt)" : k.startsWith("encoder.") ? `${k} (another frozen encoder or its weights)` : k);
    return `was trained with another ${keys.map(words).join(", ")}`;
  }
  return undefined;
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
  const warmup = s.warmupSteps > 0 ? { steps: Math.min(s.warmupSteps, Math.max(1, totalSteps - 1)) } : undefined;
  if (s.kind === "poly") return { kind: "poly", maxSteps: totalSteps, power: s.power, warmup };
  if (s.kind === "cosine") return { kind: "cosine", maxSteps: totalSteps, warmup };
  return { kind: "constant", warmup, maxSteps: totalSteps };
}

/** Total optimiser steps of a run: epochs x batches, capped by `train.maxSteps`. */
export function plannedSteps(cfg: PbipConfig, stepsPerEpoch: number): number {
  const all = stepsPerEpoch * cfg.train.epochs;
  return cfg.train.maxSteps > 0 ? Math.min(all, cfg.train.maxSteps) : all;
}

function disposeBatch(b: Batch): void {
  tf.dispose([b.images, b.labels, b.masks]);
}

/**
 * Run a task's training loop. Yields `start`, then `step` events, `validation` and
 * `checkpoint` events at epoch ends, and finally `done`.
 */
export async function* runTraining<Ctx>(task: TrainTask<Ctx>, o: LoopOptions): AsyncGenerator<TrainEvent> {
  const cfg = o.config;
  const t0 = Date.now();
  fs.mkdirSync(o.outDir, { recursive: true });
  const stepsPerEpoch = o.train.batchesPerEpoch;
  if (stepsPerEpoch <= 0) throw new Error("runTraining: the training source has no batches");
  const totalSteps = plannedSteps(cfg, stepsPerEpoch);
  const epochs = Math.ceil(totalSteps / stepsPerEpoch);
  const schedule = scheduleFromConfig(cfg, totalSteps);
  const vars = task.variables();
  const opt = new AdamW(vars, {
    lr: cfg.optim.lr,
    betas: cfg.optim.betas,
    eps: cfg.optim.eps,
    weightDecay: cfg.optim.weightDecay,
    clipGradNorm: cfg.optim.clipGradNorm,
    groups: task.paramGroups?.(),
  });
  const varList = [...vars.values()];
  const nameOf = new Map([...vars].map(([n, v]) => [v.name, n]));

  let step = 0;
  /** The step of the newest checkpoint (written or resumed from). */
  let savedStep = 0;
  /** Resumed from a checkpoint written when its epoch's validation failed: validate that epoch first. */
  let pendingValidation = false;
  /** The epoch of that validation (the checkpoint's; a run capped by maxSteps validates mid-epoch). */
  let pendingEpoch = 0;
  let bestMiou = -Infinity;
  let lastCkpt: string | undefined;
  let bestCkpt: string | undefined;
  const bestFile = path.join(o.outDir, "best.safetensors");
  const logFile = path.join(o.outDir, "train-log.jsonl");
  let resumedFrom: string | undefined;

  const resumeFile = o.resume === false ? undefined : latestCheckpoint(o.outDir);
  if (resumeFile) {
    const meta = readMetadata<CheckpointMeta>(resumeFile);
    if (meta.task !== task.name) throw new Error(`${resumeFile}: is a ${meta.task} checkpoint, not ${task.name}`);
    const mismatch = resumeMismatch(meta, cfg, o.identity);
    if (mismatch) throw new Error(`${resumeFile}: ${mismatch}; use a new output folder or delete it to start over`);
    assertCleanLoad(resumeFile, loadVariables(resumeFile, vars, ["optim/"]));
    const all = readSafetensors(resumeFile, { filter: (n) => n.startsWith("optim/") });
    opt.setState(
      { step: meta.optimizer.step, paramSteps: meta.optimizer.paramSteps, tensors: new Map([...all].map(([n, t]) => [n.slice(6), t])) },
      resumeFile,
    );
    step = meta.step;
    savedStep = step;
    pendingValidation = meta.pendingValidation === true && o.val !== undefined && task.validate !== undefined;
    pendingEpoch = meta.epoch;
    bestMiou = meta.bestMiou ?? -Infinity;
    lastCkpt = resumeFile;
    if (fs.existsSync(bestFile)) bestCkpt = bestFile;
    resumedFrom = resumeFile;
    // Drop log lines of steps after the checkpoint (a killed run's tail is redone).
    if (fs.existsSync(logFile)) {
      const keep = fs
        .readFileSync(logFile, "utf8")
        .split("\n")
        .filter((l) => l && (JSON.parse(l) as { step: number }).step <= step);
      fs.writeFileSync(logFile, keep.map((l) => l + "\n").join(""));
    }
  } else {
    fs.rmSync(logFile, { force: true });
  }
  if (o.runRecord) writeJsonAtomic(path.join(o.outDir, "config.json"), { ...o.runRecord, config: cfg });

  const writeCheckpoint = async (epoch: number, val?: ValidationScore, validationPending = false): Promise<string> => {
    const st = await opt.getState();
    const extra = new Map([...st.tensors].map(([n, t]) => [`optim/${n}`, t]));
    const file = path.join(o.outDir, `step-${String(step).padStart(6, "0")}.safetensors`);
    const meta: CheckpointMeta = {
      ...(o.metadata ?? {}),
      kind: "pbip-checkpoint",
      task: task.name,
      step,
      epoch,
      config: cfg,
      ...(o.identity ? { identity: o.identity } : {}),
      optimizer: { step: st.step, paramSteps: st.paramSteps },
      bestMiou: Number.isFinite(bestMiou) ? bestMiou : undefined,
      val,
      ...(validationPending ? { pendingValidation: true } : {}),
    };
    await saveVariables(file, vars, meta, extra);
    savedStep = step;
    // Keep the newest step checkpoint only (best.safetensors is separate).
    for (const f of fs.readdirSync(o.outDir)) {
      if (CKPT_RE.test(f) && path.join(o.outDir, f) !== file) fs.rmSync(path.join(o.outDir, f), { force: true });
    }
    return file;
  };

  /** The last epoch whose end (validation, checkpoint) ran in this call. */
  let endedEpoch = -1;
  const validationDue = (epoch: number) => o.val !== undefined && task.validate !== undefined && ((epoch + 1) % cfg.train.valEvery === 0 || step >= totalSteps);

  /** An epoch's end: its validation score (if any) logged, then its checkpoint (and best.safetensors) when due. */
  async function* endOfEpoch(epoch: number, valScore: ValidationScore | undefined): AsyncGenerator<TrainEvent> {
    endedEpoch = epoch;
    let isBest = false;
    if (valScore) {
      isBest = valScore.miou > bestMiou;
      if (isBest) bestMiou = valScore.miou;
      // Logged beside the steps so that a plot of a resumed or finished run can show every epoch.
      fs.appendFileSync(logFile, JSON.stringify({ type: "validation", epoch, step, score: loggableScore(valScore), best: isBest }) + "\n");
      yield { type: "validation", epoch, step, score: valScore, best: isBest };
    }
    if ((epoch + 1) % cfg.train.checkpointEvery === 0 || step >= totalSteps || pendingValidation) {
      lastCkpt = await writeCheckpoint(epoch, valScore);
      const noVal = !o.val || !task.validate;
      if (isBest || (noVal && step >= totalSteps)) {
        fs.copyFileSync(lastCkpt, bestFile + ".tmp");
        fs.renameSync(bestFile + ".tmp", bestFile);
        bestCkpt = bestFile;
      }
      yield { type: "checkpoint", epoch, step, file: lastCkpt, best: isBest };
    }
  }

  yield { type: "start", task: task.name, step, totalSteps, stepsPerEpoch, epochs, resumedFrom, config: cfg };

  let stepsThisCall = 0;
  const aborted = () => o.signal?.aborted === true;
  const stopNow = () => (o.stopAfter !== undefined && stepsThisCall >= o.stopAfter) || aborted();
  try {
    if (pendingValidation) {
      // The run stopped in the validation of the epoch it had just trained: validate it now.
      yield* endOfEpoch(pendingEpoch, await task.validate!(o.val!, pendingEpoch));
      pendingValidation = false;
    }
    for (let epoch = Math.floor(step / stepsPerEpoch); epoch < epochs && step < totalSteps && !stopNow(); epoch++) {
      const skip = step - epoch * stepsPerEpoch;
      let bi = -1;
      let inStep = false;
      let validating = false;
      let valScore: ValidationScore | undefined;
      try {
        for await (const batch of o.train.epoch(epoch)) {
          bi++;
          if (bi < skip || step >= totalSteps || stopNow()) {
            disposeBatch(batch);
            if (bi < skip) continue;
            break;
          }
          inStep = true;
          const ev = await trainStep(batch, epoch, bi);
          inStep = false;
          yield ev;
          stepsThisCall++;
          // Stop here rather than pull a batch that will not be trained on (a bad file in it would stop a finished run).
          if (step >= totalSteps || stopNow()) break;
        }
        if (stopNow()) break;
        if (validationDue(epoch)) {
          validating = true;
          valScore = await task.validate!(o.val!, epoch);
          validating = false;
        }
      } catch (e) {
        // A bad file in the data (or anything else outside a step) stops the run; the steps
        // trained since the last checkpoint are kept, so fixing the file and resuming loses
        // nothing. A failed validation is redone when the run resumes.
        if (!inStep && (step > savedStep || validating) && e instanceof Error) {
          const trained = step - savedStep;
          try {
            lastCkpt = await writeCheckpoint(epoch, undefined, validating);
            e.message += `\n(${trained > 0 ? `the ${trained} step(s) trained since the last checkpoint were saved in ${lastCkpt}` : `the run is at ${lastCkpt}`}: fix the problem and run again to resume from step ${step}${validating ? `, starting with epoch ${epoch + 1}'s validation` : ""})`;
          } catch (saveError) {
            e.message += `\n(the ${trained} step(s) since the last checkpoint could not be saved: ${(saveError as Error).message})`;
          }
        }
        throw e;
      }
      yield* endOfEpoch(epoch, valScore);
    }
    if (aborted() && stepsThisCall > 0) {
      const ep = Math.floor((step - 1) / stepsPerEpoch);
      if ((step % stepsPerEpoch === 0 || step >= totalSteps) && endedEpoch < ep) {
        // Stopped after an epoch's last step, before its end. With no validation due, the end
        // (its checkpoint, and best.safetensors at the run's end) is done now; with one, it is
        // left pending and the resume does it first.
        if (!validationDue(ep)) yield* endOfEpoch(ep, undefined);
        else lastCkpt = await writeCheckpoint(ep, undefined, true);
      }
      // Saved mid-epoch if need be, as after a bad file: a resume skips the batches already trained.
      if (step > savedStep) lastCkpt = await writeCheckpoint(ep, undefined);
    }
    // A run whose steps and last epoch's end are all done is finished, Ctrl-C or not.
    const finished = step >= totalSteps && (stepsThisCall === 0 || endedEpoch === Math.floor((step - 1) / stepsPerEpoch));
    if (aborted() && !finished) {
      yield { type: "interrupted", step, ...(lastCkpt ? { checkpoint: lastCkpt } : {}) };
      return;
    }
  } finally {
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
    const counts: Record<string, number> = {};
    const parts: Record<string, number> = {};
    let ctx: Ctx | undefined;
    try {
      const tp = Date.now();
      ctx = task.prepare ? await task.prepare(batch, step) : (undefined as Ctx);
      const prepSeconds = (Date.now() - tp) / 1000;
      let names: string[] = [];
      let packed: tf.Tensor | undefined;
      const tfb = Date.now();
      const { value, grads } = tf.variableGrads(() => {
        const r = task.loss(batch, ctx as Ctx, step, counts, parts);
        names = ["total", ...Object.keys(r.terms)];
        packed = tf.keep(tf.stack([r.total, ...Object.values(r.terms)]));
        return r.total;
      }, varList);
      const fbSeconds = (Date.now() - tfb) / 1000;
      const vals = await packed!.data();
      packed!.dispose();
      value.dispose();
      const losses = Object.fromEntries(names.map((n, i) => [n, vals[i]!])) as LossRecord;
      if (!Object.values(losses).every(Number.isFinite)) {
        tf.dispose(grads);
        // Numbered as step events are (1-based): this batch would have been step `step + 1`.
        throw new TrainingDivergedError(step + 1, batch.ids, lastCkpt, losses);
      }
      const lr = learningRate(cfg.optim.lr, schedule, step);
      const to = Date.now();
      const named = new Map<string, tf.Tensor>();
      for (const [vn, g] of Object.entries(grads)) named.set(nameOf.get(vn) ?? vn, g);
      opt.step(named, lr);
      tf.dispose(grads);
      const optSeconds = (Date.now() - to) / 1000;
      step++;
      const ev = {
        type: "step" as const,
        step,
        epoch,
        batch: bi,
        losses,
        lr,
        counts,
        seconds: { step: (Date.now() - ts) / 1000, prepare: prepSeconds, forwardBackward: fbSeconds, optimizer: optSeconds, ...parts },
        tensors: tf.memory().numTensors,
        rssBytes: process.memoryUsage().rss,
        ids: batch.ids,
      };
      fs.appendFileSync(logFile, JSON.stringify({ ...ev, ids: undefined }) + "\n");
      return ev;
    } finally {
      if (ctx !== undefined) task.release?.(ctx);
      disposeBatch(batch);
    }
  }
}
