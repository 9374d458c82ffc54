import { ConfusionMatrix } from "./confusion";
import { UsageError } from "../util/errors";

/**
 * How ground-truth background pixels enter the metrics (METHOD.md section 5).
 *
 * - `count-bg`: GT background pixels stay in the confusion matrix, so predicting
 *   a class there is a false positive of that class. The PBIP release and TPRO
 *   evaluate this way.
 * - `ignore-bg`: GT background pixels are dropped before counting (MLPS does this);
 *   a class predicted on background costs nothing.
 *
 * Every report object and printed table names the convention it used.
 */
export type BackgroundConvention = "count-bg" | "ignore-bg";

/** Both conventions, `count-bg` (the release's) first. */
export const BACKGROUND_CONVENTIONS: readonly BackgroundConvention[] = ["count-bg", "ignore-bg"];

/** One-line description of a convention, for reports and table footers. */
export function describeConvention(c: BackgroundConvention): string {
  return c === "count-bg"
    ? "count-bg: ground-truth background pixels are counted (a class predicted there is a false positive), as the PBIP release and TPRO evaluate"
    : "ignore-bg: ground-truth background pixels are dropped before counting, as MLPS evaluates";
}

/** Parse a convention name; errors name where the value came from (e.g. `--convention`). */
export function parseConvention(value: string, where = "convention"): BackgroundConvention {
  if (value === "count-bg" || value === "ignore-bg") return value;
  throw new UsageError(`${where}: expected "count-bg" or "ignore-bg", got "${value}"`);
}

/**
 * The label space of a mask: foreground classes plus one background id. Mask ids
 * run over [0, classes.length]; `backgroundId` is one of them (N for
 * LUAD-HistoSeg and BCSS-WSSS) and the others map, in increasing order, to
 * `classes`.
 */
export interface LabelSpace {
  /** Foreground class names (codes) in label order, N of them. */
  classes: string[];
  /** Mask id of background, in [0, N]. */
  backgroundId: number;
  /** Ground-truth id skipped everywhere (never counted), default 255. */
  ignoreId?: number;
}

/** Mask ids of the foreground classes, in class order (every id in [0, N] except background). */
export function foregroundIds(space: LabelSpace): number[] {
  const n = space.classes.length;
  if (!Number.isInteger(space.backgroundId) || space.backgroundId < 0 || space.backgroundId > n) {
    throw new UsageError(`background id ${space.backgroundId} is outside [0, ${n}] for ${n} classes`);
  }
  const ids: number[] = [];
  for (let i = 0; i <= n; i++) if (i !== space.backgroundId) ids.push(i);
  return ids;
}

/** The matrix a convention scores: unchanged for `count-bg`; GT background rows removed for `ignore-bg`. */
export function applyConvention(cm: ConfusionMatrix, backgroundId: number, convention: BackgroundConvention): ConfusionMatrix {
  return convention === "count-bg" ? cm : cm.withoutGtRows([backgroundId]);
}

/**
 * Scores derived from one confusion matrix under one background convention.
 * Per-class arrays follow `classes`; a class that occurs in neither the counted
 * ground truth nor the prediction has NaN there (written as null in JSON) and is
 * left out of every mean.
 */
export interface SegmentationScores {
  convention: BackgroundConvention;
  classes: string[];
  backgroundId: number;
  /** Pixels counted under the convention. */
  pixels: number;
  /** IoU_c = TP / (TP + FP + FN) per foreground class. */
  iou: number[];
  /** mIoU: mean of `iou` over the foreground classes (NaN skipped). */
  miou: number;
  /** Dice_c = 2TP / (2TP + FP + FN) per foreground class. */
  dice: number[];
  /** Mean Dice over the foreground classes (NaN skipped). */
  mdice: number;
  /**
   * Frequency-weighted IoU: sum_c freq_c * IoU_c, freq_c = GT pixels of c / counted
   * pixels, over every id with ground-truth pixels under the convention
   * (background included under `count-bg`; it has none under `ignore-bg`). When the
   * method never predicts background (the release), IoU_bg = 0 and this equals
   * the sum over the foreground classes alone.
   */
  fwiou: number;
  /** Correct pixels / counted pixels. */
  pixelAccuracy: number;
  /** Background IoU and Dice (NaN under `ignore-bg`, where no GT background is counted). */
  background: { iou: number; dice: number };
  /** Counted ground-truth pixels per foreground class. */
  gtPixels: number[];
  /** Counted predicted pixels per foreground class. */
  predPixels: number[];
}

function meanSkipNaN(xs: number[]): number {
  const v = xs.filter((x) => !Number.isNaN(x));
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
}

/** Dice per id = 2TP / (2TP + FP + FN); NaN where the id occurs in neither mask. */
export function dicePerClass(cm: ConfusionMatrix): number[] {
  const { tp, fp, fn } = cm.stats();
  return tp.map((t, i) => {
    const d = 2 * t + fp[i]! + fn[i]!;
    return d > 0 ? (2 * t) / d : NaN;
  });
}

/**
 * Every confusion-matrix metric of METHOD.md section 5 (IoU, mIoU over the
 * foreground classes, Dice, FwIoU, pixel accuracy) from a matrix over classes
 * plus background (rows ground truth, columns prediction; size N + 1), under a
 * background convention.
 */
export function segmentationScores(cmRaw: ConfusionMatrix, space: LabelSpace, convention: BackgroundConvention): SegmentationScores {
  const fg = foregroundIds(space);
  if (cmRaw.size !== space.classes.length + 1) {
    throw new UsageError(`confusion matrix has ${cmRaw.size} ids but the label space has ${space.classes.length} classes plus background`);
  }
  const cm = applyConvention(cmRaw, space.backgroundId, convention);
  const { tp, fp, fn } = cm.stats();
  const iouAll = tp.map((t, i) => {
    const d = t + fp[i]! + fn[i]!;
    return d > 0 ? t / d : NaN;
  });
  const diceAll = dicePerClass(cm);
  const gt = cm.gtTotals();
  const pred = cm.predTotals();
  const total = cm.total();
  let fw = 0;
  let correct = 0;
  for (let i = 0; i < cm.size; i++) {
    correct += tp[i]!;
    if (gt[i]! > 0) fw += (gt[i]! / total) * iouAll[i]!;
  }
  const iou = fg.map((i) => iouAll[i]!);
  const dice = fg.map((i) => diceAll[i]!);
  const bg = space.backgroundId;
  return {
    convention,
    classes: [...space.classes],
    backgroundId: bg,
    pixels: total,
    iou,
    miou: meanSkipNaN(iou),
    dice,
    mdice: meanSkipNaN(dice),
    fwiou: total > 0 ? fw : NaN,
    pixelAccuracy: total > 0 ? correct / total : NaN,
    background: convention === "count-bg" ? { iou: iouAll[bg]!, dice: diceAll[bg]! } : { iou: NaN, dice: NaN },
    gtPixels: fg.map((i) => gt[i]!),
    predPixels: fg.map((i) => pred[i]!),
  };
}
