/**
 * Resumable stages of a run (see run.ts): each reuses its output when it exists and
 * was made with the same config, and otherwise (re)makes it. Used by notebooks
 * 01-05 and `pbip demo`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { PbipConfig, ConfigOverride } from "../config/profiles";
import { resolveConfig, upgradeStoredCam } from "../config/profiles";
import type { ImageEncoder } from "../encoders/types";
import { buildBankEvents, saveBank, loadBank, prototypesTensor, type ImageBank, type BankBuildEvent } from "../bank";
import { encoderMismatch } from "../bank/bank";
import { stableStringify, type PbipRun } from "./run";
import { createClassNet, stage1Loaders, loadClassNet, writePseudoMasks, type PseudoMaskResult } from "./core";
import { trainClassNet, classNetIdentity, type PbipHooks } from "../train/trainer";
import { latestCheckpoint, plannedSteps, resumeMismatch, type TrainEvent } from "../train/loop";
import { readMetadata } from "../io/checkpoint";
import type { ClassNet } from "../model/classnet";
import type { SplitName } from "../data/types";
import { readJson, writeJsonAtomic } from "../util/fs";
import { FileError } from "../util/errors";

/**
 * The run's image bank: loaded when `bank/bank.json` was built with the same bank
 * config and encoder, else built (events go to `onEvent`) and saved.
 */
export async function ensureBank(run: PbipRun, encoder: ImageEncoder, onEvent?: (ev: BankBuildEvent) => void): Promise<{ bank: ImageBank; reused: boolean }> {
  const file = path.join(run.paths.bank, "bank.json");
  if (fs.existsSync(file)) {
    try {
      const bank = loadBank(run.paths.bank);
      const same = stableStringify(bank.meta.config) === stableStringify(run.config.bank) && encoderMismatch(bank.meta.encoder, encoder.identity).length === 0;
      if (same) return { bank, reused: true };
    } catch {
      /* rebuild below */
    }
  }
  let built: ImageBank | undefined;
  for await (const ev of buildBankEvents({ split: run.dataset.split("train"), encoder, config: run.config.bank, cache: true })) {
    onEvent?.(ev);
    if (ev.type === "done") built = ev.bank;
  }
  await saveBank(run.paths.bank, built!);
  return { bank: loadBank(run.paths.bank), reused: false };
}

/** A stage-1 variant: a name and config changes over the run's config (e.g. `cls-only`: L_FGS and L_BGS off). */
export interface Stage1Variant {
  name: string;
  overrides?: ConfigOverride;
  /** Code-level changes to the objective (a threshold, a loss, extra terms); see {@link PbipHooks}. */
  hooks?: PbipHooks;
}

/** Standard variants of notebook 03 and the results table. */
export const STAGE1_VARIANTS = {
  pbip: { name: "pbip" },
  clsOnly: { name: "cls-only", overrides: { loss: { useFg: false, useBg: false } as PbipConfig["loss"] } },
} satisfies Record<string, Stage1Variant>;

export interface Stage1Handle {
  variant: string;
  config: PbipConfig;
  dir: string;
  /** True when a finished run with this config was found (no training needed). */
  complete: boolean;
  /** Training events (start, steps, validation, checkpoints, done); a complete run yields start and done only. */
  events(): AsyncGenerator<TrainEvent>;
}

/** The config of a stage-1 variant of this run. */
export function variantConfig(run: PbipRun, v: Stage1Variant): PbipConfig {
  return resolveConfig(run.config, v.overrides);
}

/**
 * Prepare a stage-1 training run of a variant. A folder left by another config is
 * set aside (renamed with a timestamp) so the run starts over; a folder with the
 * same config resumes from its newest checkpoint.
 */
export async function stage1(run: PbipRun, v: Stage1Variant, encoder: ImageEncoder, bank: ImageBank): Promise<Stage1Handle> {
  const cfg = variantConfig(run, v);
  const dir = run.paths.stage1(v.name);
  const last = latestCheckpoint(dir);
  let complete = false;
  if (last) {
    const meta = readMetadata<{ config: PbipConfig; step: number; identity?: Record<string, unknown>; pendingValidation?: boolean }>(last);
    const protos = prototypesTensor(bank);
    const mismatch = resumeMismatch(meta, cfg, classNetIdentity(encoder, protos, v.hooks));
    protos.dispose();
    if (mismatch) {
      const aside = `${dir}.old-${Date.now()}`;
      fs.renameSync(dir, aside);
      console.error(`stage 1 (${v.name}): ${dir} ${mismatch}; moved it to ${aside}`);
    } else {
      const { train } = stage1Loaders(run.dataset, cfg);
      complete = meta.step >= plannedSteps(cfg, train.batchesPerEpoch) && meta.pendingValidation !== true;
    }
  }
  return {
    variant: v.name,
    config: cfg,
    dir,
    complete,
    async *events() {
      const net = await createClassNet(cfg, bank, run.dataset.spec);
      const { train, val } = stage1Loaders(run.dataset, cfg);
      const protos = prototypesTensor(bank);
      try {
        yield* trainClassNet({
          hooks: v.hooks,
          config: cfg,
          net,
          encoder,
          bankPrototypes: protos,
          backgroundId: run.dataset.spec.backgroundId,
          train,
          val,
          outDir: dir,
          bankIdentity: { dir: run.paths.bank, encoder: bank.meta.encoder, k: bank.meta.k, rule: bank.meta.rule, seed: bank.meta.seed },
        });
      } finally {
        protos.dispose();
        net.dispose();
      }
    },
  };
}

/**
 * Step and validation records of a stage-1 or stage-2 run folder (train-log.jsonl),
 * for plots of finished or resumed runs: push both into a `LivePlot` to redraw
 * the loss curves and the per-epoch validation mIoU. A line that is not JSON is an
 * error naming the file and line.
 */
export function readTrainLog(dir: string): { steps: Extract<TrainEvent, { type: "step" }>[]; validations: Extract<TrainEvent, { type: "validation" }>[] } {
  const file = path.join(dir, "train-log.jsonl");
  const steps: Extract<TrainEvent, { type: "step" }>[] = [];
  const validations: Extract<TrainEvent, { type: "validation" }>[] = [];
  if (!fs.existsSync(file)) return { steps, validations };
  fs.readFileSync(file, "utf8")
    .split("\n")
    .forEach((l, i) => {
      if (!l) return;
      let ev: { type?: string };
      try {
        ev = JSON.parse(l) as { type?: string };
      } catch (e) {
        throw new FileError(file, `line ${i + 1} is not JSON (${(e as Error).message})`);
      }
      if (ev.type === "validation") validations.push(ev as Extract<TrainEvent, { type: "validation" }>);
      else if (ev.type === "step") steps.push(ev as Extract<TrainEvent, { type: "step" }>);
    });
  return { steps, validations };
}

/** The best (else last) checkpoint of a finished stage-1 variant, with its validation score. */
export function stage1Checkpoint(run: PbipRun, variant: string): { file: string; valMiou?: number } {
  const dir = run.paths.stage1(variant);
  const best = path.join(dir, "best.safetensors");
  const file = fs.existsSync(best) ? best : latestCheckpoint(dir);
  if (!file) throw new Error(`stage 1 (${variant}) has no checkpoint in ${dir}: run notebook 03 (or \`pbip train\`) first`);
  const meta = readMetadata<{ bestMiou?: number; val?: { miou: number } }>(file);
  return { file, valMiou: meta.val?.miou ?? meta.bestMiou };
}

/** Load a finished stage-1 variant's ClassNet. */
export async function loadStage1(run: PbipRun, variant: string, bank: ImageBank): Promise<{ net: ClassNet; config: PbipConfig; file: string }> {
  const { file } = stage1Checkpoint(run, variant);
  const { net, config } = await loadClassNet(file, bank, run.dataset.spec);
  return { net, config, file };
}

/**
 * Pseudo-masks of a split from a stage-1 model, written once: the folder records the
 * checkpoint and CAM config it was made with; a change redoes it, an interrupted
 * run continues where it stopped.
 */
export async function ensurePseudoMasks(
  run: PbipRun,
  variant: string,
  split: SplitName,
  net: ClassNet,
  config: PbipConfig,
  checkpoint: string,
  onProgress?: (done: number, total: number) => void,
): Promise<PseudoMaskResult> {
  const dir = run.paths.pseudo(variant, split);
  const stamp = path.join(dir, "..", `${split}.source.json`);
  const source = { checkpoint: path.resolve(checkpoint), checkpointMtime: fs.statSync(checkpoint).mtimeMs, cam: config.cam, inputSize: config.data.inputSize };
  // A stamp written before cam.merge existed compares as the softmax merge it used.
  const stored = fs.existsSync(stamp) ? readJson<typeof source>(stamp) : undefined;
  if (stored && stableStringify({ ...stored, cam: upgradeStoredCam(stored.cam) }) !== stableStringify(source)) fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  writeJsonAtomic(stamp, source);
  // The stamp beside the folder decides whether its masks are this checkpoint's (the folder is
  // emptied otherwise); a folder from before pseudo-masks.json existed is adopted.
  return writePseudoMasks({ net, split: run.dataset.split(split), cam: config.cam, inputSize: config.data.inputSize, outDir: dir, batchSize: config.train.batchSize, source: `${source.checkpoint}@${source.checkpointMtime}`, adoptUnrecorded: true, onProgress });
}

