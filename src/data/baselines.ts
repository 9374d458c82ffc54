/**
 * Two trivial segmentation baselines that measure how hard a dataset is, as
 * reported on the synthetic set's card:
 *
 * (a) "most frequent label class": every pixel of a patch gets the class of its
 *     image-level label that is most frequent among training labels (no
 *     background is ever predicted);
 * (b) "nearest class-mean colour": a per-pixel colour classifier. Pixels whose
 *     grey level (ITU-R 601 luma) exceeds 200 are background (the white-glass
 *     rule of the PBIP peers TPRO/MLPS); every other pixel gets the class whose
 *     mean colour, fitted on the non-white pixels of single-label training
 *     patches only (the same patches PBIP's image bank uses, eq. 1), is nearest,
 *     in RGB or in optical density (stain) space.
 *
 * mIoU follows the release convention: ground-truth background pixels stay in
 * the confusion matrix (a foreground prediction there is a false positive), and
 * IoU is averaged over the N foreground classes only.
 */
import { ConfusionMatrix, iouPerClass, meanIoU } from "../eval/confusion";
import { readImage, readMask } from "./image";
import type { Split } from "./types";
import { BASELINE_WHITE_LEVEL, colourFeature, tissueSums, type ColourSpace } from "./colour";

export { BASELINE_WHITE_LEVEL, colourFeature, tissueSums, type ColourSpace };

/** Accumulates per-class colour sums over the non-white pixels of single-label patches. */
export class ClassMeanFitter {
  readonly sums: number[][];
  readonly counts: number[];
  constructor(
    readonly numClasses: number,
    readonly space: ColourSpace,
  ) {
    this.sums = Array.from({ length: numClasses }, () => [0, 0, 0]);
    this.counts = new Array<number>(numClasses).fill(0);
  }
  /** Add one patch (interleaved RGB bytes) with its image-level label; ignored unless the label has exactly one class. */
  addPatch(rgb: Uint8Array, label: readonly number[]): void {
    const on = label.flatMap((v, c) => (v ? [c] : []));
    if (on.length !== 1) return;
    this.addSums(on[0]!, ...tissueSums(rgb, this.space));
  }
  /** Add precomputed sums (3 values) and a pixel count for class `c`. */
  addSums(c: number, sum: readonly number[], count: number): void {
    for (let k = 0; k < 3; k++) this.sums[c]![k]! += sum[k]!;
    this.counts[c]! += count;
  }
  /** The class means (NaN for a class with no single-label pixels). */
  means(): number[][] {
    return this.sums.map((s, c) => s.map((v) => (this.counts[c]! > 0 ? v / this.counts[c]! : NaN)));
  }
}

/** Baseline (b): per-pixel prediction (class ids, background = `backgroundId`). */
export function predictNearestMean(rgb: Uint8Array, means: number[][], space: ColourSpace, backgroundId: number): Uint8Array {
  const n = rgb.length / 3;
  const out = new Uint8Array(n);
  const f = [0, 0, 0];
  for (let i = 0; i < n; i++) {
    const r = rgb[3 * i]!;
    const g = rgb[3 * i + 1]!;
    const b = rgb[3 * i + 2]!;
    if (0.299 * r + 0.587 * g + 0.114 * b > BASELINE_WHITE_LEVEL) {
      out[i] = backgroundId;
      continue;
    }
    colourFeature(r, g, b, space, f);
    let best = Infinity;
    let bc = backgroundId;
    for (let c = 0; c < means.length; c++) {
      const m = means[c]!;
      if (Number.isNaN(m[0]!)) continue;
      const d = (f[0]! - m[0]!) ** 2 + (f[1]! - m[1]!) ** 2 + (f[2]! - m[2]!) ** 2;
      if (d < best) {
        best = d;
        bc = c;
      }
    }
    out[i] = bc;
  }
  return out;
}

/** Baseline (a): the class of `label` that is most frequent among training labels (ties: lower id). */
export function mostFrequentLabelClass(label: readonly number[], trainClassFrequency: readonly number[]): number {
  let best = -1;
  let bc = 0;
  label.forEach((v, c) => {
    if (v && trainClassFrequency[c]! > best) {
      best = trainClassFrequency[c]!;
      bc = c;
    }
  });
  return bc;
}

/** One baseline's score. */
export interface BaselineScore {
  name: string;
  description: string;
  /** mIoU over the foreground classes, release convention (GT background pixels counted). */
  mIoU: number;
  /** IoU per mask id (classes then background). */
  iou: number[];
}

/** Both baselines on one test split, with what they were fitted on. */
export interface BaselineReport {
  convention: string;
  mostFrequent: BaselineScore;
  nearestMeanRgb: BaselineScore;
  nearestMeanOd: BaselineScore;
  /** Class means fitted for (b), per space. */
  means: { rgb: number[][]; od: number[][] };
  /** Number of single-label training patches per class used to fit (b). */
  fitPatches: number[];
  /** Training label frequency per class used by (a). */
  trainClassFrequency: number[];
}

/** The convention statement printed with every baseline figure. */
export const BASELINE_CONVENTION =
  "mIoU = mean of IoU over the foreground classes; ground-truth background pixels are kept in the confusion matrix (release convention), so foreground predicted on background counts as a false positive.";

function score(name: string, description: string, cm: ConfusionMatrix, numClasses: number): BaselineScore {
  const ids = Array.from({ length: numClasses }, (_, c) => c);
  return { name, description, mIoU: meanIoU(cm, ids), iou: iouPerClass(cm) };
}

/** Evaluate both baselines from in-memory patches. */
export function evaluateBaselines(
  numClasses: number,
  fit: { rgb: ClassMeanFitter; od: ClassMeanFitter; trainClassFrequency: number[]; fitPatches: number[] },
  test: Iterable<{ rgb: Uint8Array; mask: Uint8Array; label: readonly number[] }>,
): BaselineReport {
  const bg = numClasses;
  const k = numClasses + 1;
  const cmA = new ConfusionMatrix(k);
  const cmRgb = new ConfusionMatrix(k);
  const cmOd = new ConfusionMatrix(k);
  const mRgb = fit.rgb.means();
  const mOd = fit.od.means();
  for (const t of test) {
    const c = mostFrequentLabelClass(t.label, fit.trainClassFrequency);
    cmA.add(t.mask, new Uint8Array(t.mask.length).fill(c));
    cmRgb.add(t.mask, predictNearestMean(t.rgb, mRgb, "rgb", bg));
    cmOd.add(t.mask, predictNearestMean(t.rgb, mOd, "od", bg));
  }
  return {
    convention: BASELINE_CONVENTION,
    mostFrequent: score("(a) most frequent label class", "every pixel gets the patch's image-level class that is most frequent in the training labels", cmA, numClasses),
    nearestMeanRgb: score(
      "(b) nearest class-mean colour, RGB",
      "white (grey > 200) is background; other pixels get the class whose mean RGB over single-label training patches is nearest",
      cmRgb,
      numClasses,
    ),
    nearestMeanOd: score(
      "(b) nearest class-mean colour, optical density",
      "as (b) RGB, but colours compared as optical densities -log10(I/255) (stain space)",
      cmOd,
      numClasses,
    ),
    means: { rgb: mRgb, od: mOd },
    fitPatches: fit.fitPatches,
    trainClassFrequency: fit.trainClassFrequency,
  };
}

/**
 * Both baselines on a dataset on disk: (b) is fitted on the single-label patches
 * of `train` and both are scored on `test` (which needs masks). Works on the
 * real datasets as well as on the synthetic one.
 */
export async function computeBaselines(train: Split, test: Split, onProgress?: (done: number, total: number) => void): Promise<BaselineReport> {
  const n = train.dataset.classes.length;
  const rgbFit = new ClassMeanFitter(n, "rgb");
  const odFit = new ClassMeanFitter(n, "od");
  const freq = new Array<number>(n).fill(0);
  const fitPatches = new Array<number>(n).fill(0);
  const total = train.samples.length + test.samples.length;
  let done = 0;
  for (const s of train.samples) {
    s.label.forEach((v, c) => (freq[c]! += v));
    const on = s.label.flatMap((v, c) => (v ? [c] : []));
    if (on.length === 1) {
      const img = await readImage(s.imagePath, { expectSize: train.dataset.patchSize, resize: train.resize });
      rgbFit.addPatch(img.data, s.label);
      odFit.addPatch(img.data, s.label);
      fitPatches[on[0]!]!++;
    }
    onProgress?.(++done, total);
  }
  const items: { rgb: Uint8Array; mask: Uint8Array; label: number[] }[] = [];
  for (const s of test.samples) {
    if (!s.maskPath) throw new Error(`computeBaselines: test sample ${s.id} has no mask`);
    const img = await readImage(s.imagePath, { expectSize: test.dataset.patchSize, resize: test.resize });
    const m = readMask(s.maskPath, test.dataset, { expectSize: test.dataset.patchSize, resize: test.resize });
    items.push({ rgb: img.data, mask: m.ids, label: s.label });
    onProgress?.(++done, total);
  }
  return evaluateBaselines(n, { rgb: rgbFit, od: odFit, trainClassFrequency: freq, fitPatches }, items);
}
