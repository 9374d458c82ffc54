// Shared fixtures of the stage-2 tests: a tiny synthetic dataset (64 px patches,
// a handful of images) whose ground-truth training masks stand in for stage-1
// pseudo-masks, and tiny models.
import * as fs from "node:fs";
import * as path from "node:path";
import { generateSynthetic } from "../../src/data/synthetic/generate";
import type { DatasetSpec } from "../../src/data/types";
import { readJson } from "../../src/util/fs";
import { buildSegModel, type SegModel } from "../../src/seg";
import type { MiTConfig } from "../../src/model/backbones";
import { tmpDir } from "../tmp";

export interface TinyData {
  root: string;
  spec: DatasetSpec;
  /** A copy of `train-mask/`: ground truth standing in for stage-1 pseudo-masks. */
  pseudo: string;
}

/** Generate (once per process) 4 train, 2 val and 3 test patches of 64 px in a temporary folder. */
export async function tinyDataset(): Promise<TinyData> {
  const base = tmpDir("pbip-seg-");
  const root = path.join(base, "data");
  await generateSynthetic({ out: root, size: 64, train: 4, val: 2, test: 3, workers: 0, seed: 3 });
  const pseudo = path.join(base, "pseudo");
  fs.cpSync(path.join(root, "train-mask"), pseudo, { recursive: true });
  const spec = readJson<{ spec: DatasetSpec }>(path.join(root, "card.json")).spec;
  return { root, spec, pseudo };
}

/** A Mix Transformer small enough for unit tests (same shape as test/model's TINY). */
export const TINY_MIT: Partial<MiTConfig> = { embedDims: [8, 16, 24, 32], numHeads: [1, 2, 3, 4], depths: [1, 1, 1, 1], srRatios: [8, 4, 2, 1], mlpRatios: [4, 2, 2, 2] };

/** A SegFormer decoder (width 16) on the tiny MiT, for 64 px inputs (stochastic depth 0.1 unless `dropPathRate` says otherwise). */
export function tinySegFormer(spec: DatasetSpec, seed = 0, dropPathRate?: number): Promise<SegModel> {
  const mit = dropPathRate === undefined ? TINY_MIT : { ...TINY_MIT, dropPathRate };
  return buildSegModel({ arch: "segformer-mit-b0", classes: spec.codes, backgroundId: spec.backgroundId, inputSize: 64, seed, segformer: { embedDim: 16, mit } });
}

/** DeepLab-v3+ on the bundled MobileNetV2 with a narrow decoder, for 64 px inputs. */
export function smallDeepLab(spec: DatasetSpec, seed = 0): Promise<SegModel> {
  return buildSegModel({
    arch: "deeplab-mobilenetv2",
    classes: spec.codes,
    backgroundId: spec.backgroundId,
    inputSize: 64,
    seed,
    deeplab: { asppChannels: 32, lowLevelChannels: 16, decoderChannels: 32 },
  });
}
