/**
 * Stage-2 data: the training split paired with the stage-1 pseudo-masks (one
 * palette PNG per training patch, same file stem, in the dataset's palette),
 * loaded by the ordinary data loader, so the release's augmentations (h-flip,
 * v-flip, rot90) apply to image and pseudo-mask identically.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { PbipConfig } from "../config/profiles";
import type { DatasetSpec, RGB, Split } from "../data/types";
import { createLoader, type Loader } from "../data/loader";
import { openDataset } from "../data/dataset";
import { FileError, UsageError } from "../util/errors";

/** The id of pixels the stage-2 loss skips (PyTorch's `ignore_index` convention). */
export const IGNORE_ID = 255;

/** A sample id without its image extension: the stem pseudo-masks are named by. */
export function sampleStem(id: string): string {
  const ext = path.extname(id);
  return ext ? id.slice(0, -ext.length) : id;
}

/**
 * The training split with each sample's `maskPath` pointing into `pseudoDir`
 * (`<stem>.png`; the image's own file name is accepted too). Every training
 * patch needs a pseudo-mask: a missing one is a {@link FileError} naming the
 * folder, how many are missing and the first few.
 *
 * The split's spec gets a palette padded to 256 entries so that the loader
 * accepts the ignore id 255 in pseudo-masks; ids between N+1 and 254 are caught
 * by the stage-2 task before each step ({@link checkMaskIds}).
 */
export function pseudoMaskSplit(train: Split, pseudoDir: string): Split {
  const dir = path.resolve(pseudoDir);
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new FileError(dir, "pseudo-mask folder not found");
  const files = new Set(fs.readdirSync(dir));
  const missing: string[] = [];
  const samples = train.samples.map((s) => {
    const stem = sampleStem(s.id);
    const name = files.has(`${stem}.png`) ? `${stem}.png` : files.has(s.id) ? s.id : undefined;
    if (!name) missing.push(`${stem}.png`);
    return { ...s, maskPath: name ? path.join(dir, name) : undefined };
  });
  if (missing.length) {
    throw new FileError(dir, `no pseudo-mask for ${missing.length} of ${train.samples.length} training patches (first: ${missing.slice(0, 3).join(", ")}); produce them with stage 1 (pbip cam) first`);
  }
  const palette: RGB[] = [...train.dataset.palette];
  while (palette.length < 256) palette.push([0, 0, 0]);
  const dataset: DatasetSpec = { ...train.dataset, palette };
  return { ...train, dataset, samples, hasMasks: true };
}

/**
 * Check a batch's mask ids on the host: each must be a class, background
 * (0..N) or the ignore id 255. Throws a {@link FileError} naming the sample.
 */
export function checkMaskIds(ids: ArrayLike<number>, sampleIds: string[], numIds: number, where: string): void {
  const per = ids.length / sampleIds.length;
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i]!;
    if ((v < 0 || v >= numIds) && v !== IGNORE_ID) {
      const s = sampleIds[Math.floor(i / per)]!;
      throw new FileError(path.join(where, `${sampleStem(s)}.png`), `mask id ${v} is neither a class nor background (0..${numIds - 1}) nor the ignore id ${IGNORE_ID}`);
    }
  }
}

/** Options of {@link openSegData}. */
export interface SegDataOptions {
  /** Dataset folder (published layout). */
  data: string;
  /** Dataset name (manifest), manifest or spec. */
  dataset: Parameters<typeof openDataset>[1]["dataset"];
  /** Folder of stage-1 pseudo-masks for the training patches. */
  pseudo: string;
  /** Stage-2 config: `data.inputSize`, `data.augment`, `train.batchSize`, `train.seed`. */
  config: PbipConfig;
  /** Resize patches of another size on load. */
  resize?: number;
}

/** The loaders and splits stage 2 trains and evaluates with. */
export interface SegData {
  spec: DatasetSpec;
  /** Training patches with pseudo-masks, augmented, shuffled by seed and epoch. */
  train: Loader;
  /** Validation patches with ground-truth masks (when the folder has a val split with masks). */
  val?: Loader;
  /** The test split (when present). */
  test?: Split;
  /** The pseudo-mask folder, resolved. */
  pseudoDir: string;
}

/** Open a dataset folder for stage 2: training patches + pseudo-masks, and the val split's ground truth. */
export function openSegData(o: SegDataOptions): SegData {
  const ds = openDataset(o.data, { dataset: o.dataset, resize: o.resize });
  if (!ds.splits.includes("train")) throw new FileError(ds.root, "has no train split");
  const cfg = o.config;
  const train = createLoader(pseudoMaskSplit(ds.split("train"), o.pseudo), {
    batchSize: cfg.train.batchSize,
    seed: cfg.train.seed,
    shuffle: true,
    augment: cfg.data.augment,
    inputSize: cfg.data.inputSize,
    withMasks: true,
  });
  let val: Loader | undefined;
  if (ds.splits.includes("val")) {
    const vs = ds.split("val");
    if (vs.hasMasks) val = createLoader(vs, { batchSize: cfg.train.batchSize, shuffle: false, inputSize: cfg.data.inputSize, withMasks: true });
  }
  const test = ds.splits.includes("test") ? ds.split("test") : undefined;
  if (cfg.train.batchSize < 1) throw new UsageError("train.batchSize must be at least 1");
  return { spec: ds.spec, train, val, test, pseudoDir: path.resolve(o.pseudo) };
}
