/**
 * Stage-2 inference and evaluation: predicted masks for a split, written as
 * palette PNGs in the dataset's own palette (one per patch, `<stem>.png`), and
 * the metrics of METHOD.md section 5 (mIoU, FwIoU, bIoU, Dice, per-class IoU)
 * against the split's ground-truth masks under a named background convention.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { Sample, Split } from "../data/types";
import { readSample } from "../data/loader";
import { readMask, writeMask } from "../data/image";
import { decodePng } from "../data/png";
import { SegmentationEvaluator, type EvalReport } from "../eval/evaluate";
import type { BackgroundConvention } from "../eval/metrics";
import { FileError } from "../util/errors";
import { openRecordedFolder } from "../io/records";
import { sampleStem } from "./data";
import type { SegModel } from "./models";

/** Options of {@link predictSegmentation}. */
export interface PredictOptions {
  /** Folder for the masks (created); `predictions.json` there records what wrote them. */
  outDir: string;
  /** Patches per forward pass (default 8). */
  batchSize?: number;
  /** Side the network sees (default the model's `inputSize`); masks are written at the patch size. */
  inputSize?: number;
  /** Identity of the weights (e.g. the checkpoint path), recorded in `predictions.json`; a folder written by other weights is an error unless `overwrite`. */
  source?: string;
  /** Re-predict every patch even when its mask exists (default false). */
  overwrite?: boolean;
  /** Called after each batch: patches done (skipped ones included) and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link predictSegmentation} did. */
export interface PredictResult {
  outDir: string;
  total: number;
  written: number;
  /** Masks already present and valid (a resumed run). */
  skipped: number;
  seconds: number;
}

interface PredictionsRecord {
  kind: "pbip-seg-predictions";
  dataset: string;
  split: string;
  arch: string;
  source?: string;
  inputSize: number;
}

/**
 * Whether `file` is a finished prediction: a palette PNG of `size` x `size` whose
 * palette starts with the dataset's and whose ids are all mask ids (0..N).
 */
export function isValidPredictionFile(file: string, palette: readonly (readonly number[])[], size: number): boolean {
  try {
    const d = decodePng(fs.readFileSync(file), file);
    if (d.colorType !== 3 || d.width !== size || d.height !== size || !d.palette) return false;
    if (palette.some((c, k) => !d.palette![k] || d.palette![k]!.some((v, j) => v !== c[j]))) return false;
    for (let i = 0; i < d.data.length; i++) if (d.data[i]! >= palette.length) return false;
    return true;
  } catch {
    return false;
  }
}

/** The prediction file of a sample in `outDir`. */
export function predictionPath(outDir: string, sample: Sample): string {
  return path.join(outDir, `${sampleStem(sample.id)}.png`);
}

/**
 * Predict masks for every patch of a split and write them as palette PNGs in the
 * dataset palette (atomic writes). Resumable: a mask already present and valid
 * ({@link isValidPredictionFile}) is skipped, so a rerun after an interruption
 * only does the rest. Logits are upsampled to the patch size before the argmax.
 */
export async function predictSegmentation(model: SegModel, split: Split, o: PredictOptions): Promise<PredictResult> {
  const t0 = Date.now();
  const spec = split.dataset;
  const outDir = path.resolve(o.outDir);
  const inputSize = o.inputSize ?? model.config.inputSize;
  const outSize = split.resize ?? spec.patchSize;
  const batchSize = o.batchSize ?? 8;
  if (model.config.numOutputs !== spec.classes.length + 1) {
    throw new Error(`predictSegmentation: the model has ${model.config.numOutputs} outputs, ${spec.name} has ${spec.classes.length} classes + background`);
  }
  if (model.config.classes.join(",") !== spec.codes.join(",")) {
    throw new Error(`predictSegmentation: the model was trained for classes ${model.config.classes.join(", ")}, ${spec.name} has ${spec.codes.join(", ")}; predict with a model of this dataset`);
  }
  const rec: PredictionsRecord = { kind: "pbip-seg-predictions", dataset: spec.name, split: split.name, arch: model.config.arch, source: o.source, inputSize };
  openRecordedFolder({ dir: outDir, recordName: "predictions.json", record: rec, what: "predictions", madeBy: "other weights", outputs: split.samples.map((s) => predictionPath(outDir, s)), overwrite: o.overwrite });
  const palette = spec.palette.slice(0, spec.classes.length + 1);
  const todo: Sample[] = [];
  let skipped = 0;
  for (const s of split.samples) {
    if (isValidPredictionFile(predictionPath(outDir, s), palette, outSize)) skipped++;
    else todo.push(s);
  }
  const total = split.samples.length;
  o.onProgress?.(skipped, total);
  let done = skipped;
  for (let i = 0; i < todo.length; i += batchSize) {
    const chunk = todo.slice(i, i + batchSize);
    const host = await Promise.all(chunk.map((s) => readSample(split, s, { inputSize })));
    const px = inputSize * inputSize * 3;
    const buf = new Float32Array(chunk.length * px);
    host.forEach((h, j) => {
      for (let k = 0; k < px; k++) buf[j * px + k] = h.rgb[k]! / 255;
    });
    const ids = tf.tidy(() => model.predictIds(tf.tensor4d(buf, [chunk.length, inputSize, inputSize, 3]), [outSize, outSize]));
    const data = await ids.data();
    ids.dispose();
    const plane = outSize * outSize;
    chunk.forEach((s, j) => writeMask(predictionPath(outDir, s), Uint8Array.from(data.subarray(j * plane, (j + 1) * plane)), outSize, outSize, palette));
    done += chunk.length;
    o.onProgress?.(done, total);
  }
  return { outDir, total, written: todo.length, skipped, seconds: (Date.now() - t0) / 1000 };
}

/** Options of {@link evaluateSegmentation}. */
export interface EvaluateSegOptions {
  /** Default `count-bg` (ground-truth background counted, as the release and TPRO). */
  convention?: BackgroundConvention;
  /** Boundary-IoU band in pixels (default 2% of the diagonal). */
  band?: number;
  onProgress?: (done: number, total: number) => void;
}

/**
 * Score predicted masks (`<stem>.png` in `predDir`, as {@link predictSegmentation}
 * writes them) against a split's ground-truth masks with src/eval: mIoU, FwIoU,
 * mean boundary IoU, Dice and per-class IoU, the convention named in the report.
 * A patch without a prediction, or sizes that disagree, is a {@link FileError}.
 */
export function evaluateSegmentation(split: Split, predDir: string, o: EvaluateSegOptions = {}): EvalReport & { predDir: string } {
  const spec = split.dataset;
  if (!split.samples.every((s) => s.maskPath)) throw new FileError(split.root, `the ${split.name} split has patches without ground-truth masks; it cannot be evaluated`);
  const missing = split.samples.filter((s) => !fs.existsSync(predictionPath(predDir, s)));
  if (missing.length) throw new FileError(predDir, `no prediction for ${missing.length} of ${split.samples.length} patches (first: ${sampleStem(missing[0]!.id)}.png)`);
  const ev = new SegmentationEvaluator({ classes: spec.codes, backgroundId: spec.backgroundId, convention: o.convention ?? "count-bg", band: o.band, dataset: spec.name });
  split.samples.forEach((s, i) => {
    // Ground truth may carry the ignore id 255: the evaluator skips it.
    const g = readMask(s.maskPath!, spec, { validate: false, resize: split.resize });
    const file = predictionPath(predDir, s);
    const p = readMask(file, spec);
    if (g.width !== p.width || g.height !== p.height) throw new FileError(file, `prediction is ${p.width}x${p.height}, ground truth ${s.maskPath} is ${g.width}x${g.height}`);
    ev.add(s.id, g.ids, p.ids, g.height, g.width);
    o.onProgress?.(i + 1, split.samples.length);
  });
  return { ...ev.report(), predDir: path.resolve(predDir) };
}
