/**
 * The pipeline as plain functions, shared by the CLI, the notebooks and the demo:
 * each builds one stage's object from a config, so that a notebook cell and a
 * `pbip` command do exactly the same thing.
 */
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { PbipConfig } from "../config/profiles";
import { kPerClass, upgradeStoredConfig } from "../config/profiles";
import type { DatasetSpec, Split, SplitName } from "../data/types";
import type { Dataset } from "../data/dataset";
import { createLoader, type Loader } from "../data/loader";
import { readMask, writeMask } from "../data/image";
import type { ImageEncoder } from "../encoders/types";
import { MobileNetV2Encoder } from "../encoders/mobilenetv2";
import { createEncoder } from "../encoders/factory";
import { buildBackbone } from "../model/backbones";
import type { Backbone } from "../model/backbones/types";
import { ClassNet } from "../model/classnet";
import { loadBank, prototypesTensor, type ImageBank } from "../bank";
import { prototypesSha256 } from "../bank/bank";
import { loadVariables, readMetadata } from "../io/checkpoint";
import { assertCleanLoad } from "../io/tensors";
import { computeCams, camsToMasks } from "../cam";
import { ConfusionMatrix } from "../eval/confusion";
import { FileError } from "../util/errors";
import { openRecordedFolder } from "../io/records";

/** The frozen encoder a config names (with its input-size override). */
export async function createEncoderFor(cfg: PbipConfig): Promise<ImageEncoder> {
  const e = cfg.encoder;
  if (e.name === "mobilenetv2" || e.name === "mobilenetv2-nsfwjs") {
    return MobileNetV2Encoder.create({ ...(e.inputSize ? { preprocessing: { inputSize: e.inputSize } } : {}), ...(e.featureLayer ? { featureLayer: e.featureLayer } : {}) });
  }
  if (e.inputSize) throw new Error(`encoder ${e.name}: encoder.inputSize can only be overridden for the bundled mobilenetv2`);
  if (e.featureLayer) throw new Error(`encoder ${e.name}: encoder.featureLayer can only be chosen for the bundled mobilenetv2`);
  return createEncoder(e.name, { weights: e.weights });
}

/** The ClassNet input normalisation a config asks for. */
export function resolveNormalization(cfg: PbipConfig, spec: DatasetSpec, backbone: Backbone): { mean: number[]; std: number[] } {
  const n = cfg.data.normalization;
  if (n === "backbone") return { mean: [...backbone.defaultNormalization.mean], std: [...backbone.defaultNormalization.std] };
  if (n === "dataset") return { mean: [...spec.normalization.mean], std: [...spec.normalization.std] };
  return { mean: [...n.mean], std: [...n.std] };
}

/** Build ClassNet for a config and a bank (K per class and prototypes come from the bank). */
export async function createClassNet(cfg: PbipConfig, bank: ImageBank, spec: DatasetSpec, seed = cfg.train.seed): Promise<ClassNet> {
  if (bank.meta.codes.join(",") !== spec.codes.join(",")) {
    const where = bank.dir ? ` (${bank.dir})` : "";
    throw new Error(`the bank${where} has classes ${bank.meta.codes.join(", ")} but the dataset ${spec.name} has ${spec.codes.join(", ")}: give a bank built from this dataset (pbip bank build --dataset ${spec.name})`);
  }
  const backbone = await buildBackbone(cfg.model.backbone, {
    weights: cfg.model.backboneWeights,
    strides: cfg.model.strides,
    dropPathRate: cfg.model.dropPathRate,
    seed,
  });
  const protos = prototypesTensor(bank);
  try {
    return new ClassNet({
      backbone,
      prototypes: protos,
      k: bank.meta.k,
      model: cfg.model,
      normalization: resolveNormalization(cfg, spec, backbone),
      seed,
    });
  } finally {
    protos.dispose();
  }
}

/** K per class as a config states it (before a bank exists). */
export function configuredK(cfg: PbipConfig, spec: DatasetSpec): number[] {
  return kPerClass(cfg, spec.classes.length);
}

/** Stage-1 loaders: the train split (shuffled, augmented, no masks) and the val split (masks). */
export function stage1Loaders(ds: Dataset, cfg: PbipConfig, opts: { trainLimit?: number; valSplit?: SplitName; trainMasks?: boolean } = {}): { train: Loader; val?: Loader } {
  let trainSplit = ds.split("train");
  if (opts.trainLimit && opts.trainLimit < trainSplit.samples.length) trainSplit = { ...trainSplit, samples: trainSplit.samples.slice(0, opts.trainLimit) };
  const train = createLoader(trainSplit, {
    batchSize: cfg.train.batchSize,
    shuffle: true,
    seed: cfg.train.seed,
    augment: cfg.data.augment,
    inputSize: cfg.data.inputSize,
    dropLast: true,
    // Training batches carry no masks (real weakly supervised data has none); diagnostics that read the synthetic set's train masks ask for them.
    withMasks: opts.trainMasks ?? false,
  });
  const valName = opts.valSplit ?? "val";
  const val = ds.splits.includes(valName)
    ? createLoader(ds.split(valName), { batchSize: cfg.train.batchSize, shuffle: false, inputSize: cfg.data.inputSize, withMasks: true })
    : undefined;
  return { train, val };
}

/** Metadata pbip writes into a ClassNet checkpoint. */
export interface ClassNetCheckpointMeta {
  task: string;
  step: number;
  config: PbipConfig;
  bank?: { dir?: string; encoder?: unknown };
  /** What it was trained with besides the config (see `classNetIdentity`). */
  identity?: { prototypesSha256?: string; encoder?: unknown };
  [k: string]: unknown;
}

/**
 * Rebuild ClassNet from a checkpoint written by the trainer: the config comes from
 * the checkpoint, the prototypes from the bank (which must be the one it was
 * trained with: same K and dimension).
 */
export async function loadClassNet(file: string, bank: ImageBank, spec: DatasetSpec): Promise<{ net: ClassNet; config: PbipConfig; meta: ClassNetCheckpointMeta }> {
  const meta = readMetadata<ClassNetCheckpointMeta>(file);
  if (meta.task !== "classnet") throw new FileError(file, `is a ${meta.task} checkpoint, not a ClassNet one`);
  const where = bank.dir ? ` (${bank.dir})` : "";
  if (bank.meta.codes.join(",") !== spec.codes.join(",")) {
    throw new FileError(file, `the bank${where} has classes ${bank.meta.codes.join(", ")} but the dataset ${spec.name} has ${spec.codes.join(", ")}: give the dataset the bank was built from`);
  }
  const trainedWith = meta.identity?.prototypesSha256;
  const bankHash = trainedWith !== undefined ? prototypesSha256(bank.prototypes) : undefined;
  if (trainedWith !== bankHash) {
    throw new FileError(file, `was trained with other prototypes than the bank${where} holds (prototype hash ${trainedWith}, the bank's ${bankHash}): give the bank it was trained with`);
  }
  const config = upgradeStoredConfig(meta.config);
  const net = await createClassNet(config, bank, spec);
  assertCleanLoad(file, loadVariables(file, net.namedVariables(), ["optim/"]));
  return { net, config, meta };
}

/** Load the bank a run used (checks it against the encoder when one is given). */
export function openBank(dir: string, encoder?: ImageEncoder): ImageBank {
  return loadBank(dir, encoder ? { encoder } : {});
}

export interface PseudoMaskOptions {
  net: ClassNet;
  split: Split;
  cam: PbipConfig["cam"];
  inputSize: number;
  outDir: string;
  batchSize?: number;
  /**
   * What made the masks (e.g. the checkpoint and its hash), recorded with the CAM settings in
   * `pseudo-masks.json`; masks in a folder recorded with another source or settings are an error
   * (they are not this checkpoint's) unless `overwrite`.
   */
  source?: string;
  /** Make every mask again, even where a valid one exists (a folder recorded with other settings included). */
  overwrite?: boolean;
  /**
   * Accept a non-empty folder without a record (one the caller manages itself, e.g. a run's
   * pseudo-mask folder written before records existed). Default false: such a folder is refused.
   */
  adoptUnrecorded?: boolean;
  /** Called after each batch with patches done and total. */
  onProgress?: (done: number, total: number) => void;
}

/** What `pseudo-masks.json` records about the masks of a folder. */
interface PseudoMaskRecord {
  kind: "pbip-pseudo-masks";
  dataset: string;
  split: string;
  source?: string;
  cam: PbipConfig["cam"];
  inputSize: number;
}

export const PSEUDO_MASK_RECORD = "pseudo-masks.json";

export interface PseudoMaskResult {
  written: number;
  skipped: number;
  outDir: string;
  /** Against the split's masks, when it has them (count-bg convention). */
  matrix?: ConfusionMatrix;
}

function validMask(file: string, spec: DatasetSpec, side: number): boolean {
  try {
    const m = readMask(file, spec);
    return m.width === side && m.height === side;
  } catch {
    return false;
  }
}

/**
 * Write one pseudo-mask per patch of a split as a palette PNG in the dataset's
 * palette (same file stem as the patch), at the patch's own resolution.
 * Resumable: masks already written and readable are skipped (and still scored).
 */
export async function writePseudoMasks(o: PseudoMaskOptions): Promise<PseudoMaskResult> {
  const spec = o.split.dataset;
  const rec: PseudoMaskRecord = { kind: "pbip-pseudo-masks", dataset: spec.name, split: o.split.name, ...(o.source !== undefined ? { source: o.source } : {}), cam: o.cam, inputSize: o.inputSize };
  const side = spec.patchSize;
  const outFile = (id: string) => path.join(o.outDir, id.replace(/\.[^.]+$/, "") + ".png");
  openRecordedFolder({ dir: o.outDir, recordName: PSEUDO_MASK_RECORD, record: rec, what: "pseudo-masks", madeBy: "another checkpoint", outputs: o.split.samples.map((s) => outFile(s.id)), overwrite: o.overwrite, adoptUnrecorded: o.adoptUnrecorded });
  const todo = o.split.samples.filter((s) => !validMask(outFile(s.id), spec, side));
  const hasMasks = o.split.samples.every((s) => s.maskPath);
  const cm = hasMasks ? new ConfusionMatrix(Math.max(spec.classes.length + 1, spec.backgroundId + 1)) : undefined;
  let done = o.split.samples.length - todo.length;
  o.onProgress?.(done, o.split.samples.length);
  // Score the masks that already exist.
  if (cm) {
    const todoIds = new Set(todo.map((s) => s.id));
    for (const s of o.split.samples) {
      if (todoIds.has(s.id)) continue;
      const gt = readMask(s.maskPath!, spec);
      const pr = readMask(outFile(s.id), spec);
      cm.add(gt.ids, pr.ids, 255, s.id);
    }
  }
  if (todo.length) {
    const loader = createLoader({ ...o.split, samples: todo }, { batchSize: o.batchSize ?? 8, shuffle: false, inputSize: o.inputSize, withMasks: false });
    let i = 0;
    for await (const batch of loader.epoch(0)) {
      try {
        const { cams, gate, probs } = computeCams(o.net, batch.images, batch.labels, o.cam, [side, side]);
        const imgs =
          o.cam.background.mode === "white" || o.cam.background.mode === "power-white"
            ? tf.image.resizeBilinear(batch.images, [side, side], false, true)
            : undefined;
        const pred = await camsToMasks(cams, spec.backgroundId, o.cam.background, imgs);
        const ids = await pred.data();
        tf.dispose([cams, gate, probs, pred, imgs]);
        for (let b = 0; b < batch.ids.length; b++) {
          const sample = todo[i + b]!;
          const m = Uint8Array.from(ids.subarray(b * side * side, (b + 1) * side * side));
          writeMask(outFile(sample.id), m, side, side, spec.palette);
          if (cm) cm.add(readMask(sample.maskPath!, spec).ids, m, 255, sample.id);
        }
        i += batch.ids.length;
        done += batch.ids.length;
        o.onProgress?.(done, o.split.samples.length);
      } finally {
        tf.dispose([batch.images, batch.labels, batch.masks]);
      }
    }
  }
  return { written: todo.length, skipped: o.split.samples.length - todo.length, outDir: o.outDir, matrix: cm };
}

