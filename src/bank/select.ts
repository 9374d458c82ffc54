/**
 * Which training patches may enter the image bank (METHOD.md section 2, step 1):
 * patches whose image-level label has exactly one class, minus the mostly white
 * ones (glass). The paper excludes "images with excessive white regions
 * automatically" without saying how; the release leaves the step out. pbip uses
 * the test of the peers TPRO and MLPS: a pixel is white when its grey level
 * (ITU-R BT.601 luma, `0.299 R + 0.587 G + 0.114 B` on 0-255) exceeds
 * `whiteGrey` (default 200), and a patch is dropped when more than
 * `whiteMaxFraction` (default 0.5) of its pixels are white. Both are config
 * values (`bank.whiteGrey`, `bank.whiteMaxFraction`); `whiteMaxFraction >= 1`
 * switches the filter off (the release).
 */
import * as tf from "@tensorflow/tfjs";
import { boolToFloat } from "../runtime/ops";
import type { Sample } from "../data/types";
import { Rng } from "../util/rng";
import { isWhite } from "../data/glass";

/** Options of the white filter. */
export interface WhiteFilterOptions {
  /** A pixel is white when its grey level (0-255) is above this. */
  whiteGrey: number;
  /** A patch is dropped when its white share is above this (>= 1: never). */
  whiteMaxFraction: number;
}

/**
 * Share of white pixels of an interleaved 8-bit RGB image (`width * height * 3`
 * bytes): grey = 0.299 R + 0.587 G + 0.114 B, white when grey > `whiteGrey`.
 * Computed in integers (`isWhite`: `299 R + 587 G + 114 B > 1000 * whiteGrey`), so a
 * grey of exactly the threshold is not white, as in the pseudo-masks' `whiteRuleMask`.
 */
export function whiteFraction(rgb: Uint8Array, whiteGrey = 200): number {
  const n = rgb.length / 3;
  if (!Number.isInteger(n) || n === 0) throw new Error(`whiteFraction: expected interleaved RGB bytes, got ${rgb.length} values`);
  let white = 0;
  for (let i = 0; i < rgb.length; i += 3) if (isWhite(rgb[i]!, rgb[i + 1]!, rgb[i + 2]!, whiteGrey)) white++;
  return white / n;
}

/**
 * The same test on a batch of RGB images in [0, 1], NHWC: white share per image,
 * `[B]`. (Float arithmetic: a grey within ~1e-4 of the threshold may fall either way.)
 */
export function whiteFractionTensor(images: tf.Tensor4D, whiteGrey = 200): tf.Tensor1D {
  return tf.tidy(() => {
    const grey = tf.sum(tf.mul(images, tf.tensor1d([0.299 * 255, 0.587 * 255, 0.114 * 255])), -1);
    return tf.mean(boolToFloat(tf.greater(grey, whiteGrey)), [1, 2]) as tf.Tensor1D;
  });
}

/** Whether a patch with white share `fraction` is dropped. */
export function isMostlyWhite(fraction: number, opts: WhiteFilterOptions): boolean {
  return opts.whiteMaxFraction < 1 && fraction > opts.whiteMaxFraction;
}

/** One row of the selection table: how many patches of each class a step kept. */
export interface SelectionStep {
  /** Short name: `train`, `single-label`, `sampled`, `not white`. */
  step: string;
  /** What the step does, for a student. */
  description: string;
  /** Patches per class after the step (for `train`: patches whose label includes the class). */
  perClass: number[];
  /** Patches after the step (for `train`: all training patches). */
  total: number;
}

/** What the selection did, step by step, per class (stored in bank.json). */
export interface SelectionStats {
  classes: string[];
  steps: SelectionStep[];
  /** The white-filter settings used. */
  whiteFilter: WhiteFilterOptions;
}

/** Candidates of the bank: the single-label patches, grouped by class. */
export interface BankCandidates {
  /** Samples with exactly one class in their label, in a stable order (by class, then id). */
  samples: Sample[];
  /** Class index of each candidate. */
  classIndex: number[];
  stats: SelectionStats;
}

/** Options of {@link selectCandidates}. */
export interface SelectCandidatesOptions extends WhiteFilterOptions {
  /** Keep at most this many candidates per class, drawn with `seed` (quick runs); default all. */
  maxPerClass?: number;
  seed?: number;
}

/**
 * Step 1 without the pixels: single-label patches, per class, in a stable order
 * (by class, then by id), optionally subsampled per class. The white filter runs
 * while the patches are read for encoding ({@link recordWhiteStep}).
 */
export function selectCandidates(samples: readonly Sample[], classes: readonly string[], opts: SelectCandidatesOptions): BankCandidates {
  const n = classes.length;
  const anyLabel = new Array<number>(n).fill(0);
  const byClass: Sample[][] = classes.map(() => []);
  for (const s of samples) {
    if (s.label.length !== n) throw new Error(`selectCandidates: sample ${s.id} has a label of ${s.label.length} classes, the dataset has ${n}`);
    const on = s.label.flatMap((v, c) => (v > 0 ? [c] : []));
    for (const c of on) anyLabel[c]!++;
    if (on.length === 1) byClass[on[0]!]!.push(s);
  }
  for (const list of byClass) list.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const steps: SelectionStep[] = [
    { step: "train", description: "training patches whose image-level label includes the class", perClass: anyLabel, total: samples.length },
    { step: "single-label", description: "patches labelled with this class only", perClass: byClass.map((l) => l.length), total: byClass.reduce((a, l) => a + l.length, 0) },
  ];
  let chosen = byClass;
  if (opts.maxPerClass !== undefined && byClass.some((l) => l.length > opts.maxPerClass!)) {
    const rng = new Rng(opts.seed ?? 0);
    chosen = byClass.map((l, c) => {
      if (l.length <= opts.maxPerClass!) return l;
      const idx = rng.fork(c).shuffle([...l.keys()]).slice(0, opts.maxPerClass).sort((a, b) => a - b);
      return idx.map((i) => l[i]!);
    });
    steps.push({ step: "sampled", description: `at most ${opts.maxPerClass} per class, drawn at random (seeded) to keep the run short`, perClass: chosen.map((l) => l.length), total: chosen.reduce((a, l) => a + l.length, 0) });
  }
  return {
    samples: chosen.flat(),
    classIndex: chosen.flatMap((l, c) => l.map(() => c)),
    stats: { classes: [...classes], steps, whiteFilter: { whiteGrey: opts.whiteGrey, whiteMaxFraction: opts.whiteMaxFraction } },
  };
}

/** Append the white-filter step (patches kept per class) to the selection statistics. */
export function recordWhiteStep(stats: SelectionStats, keptPerClass: number[]): SelectionStats {
  const w = stats.whiteFilter;
  const description =
    w.whiteMaxFraction >= 1
      ? "white filter off (as in the release)"
      : `not mostly white: at most ${Math.round(w.whiteMaxFraction * 100)}% of pixels with grey level > ${w.whiteGrey}`;
  return { ...stats, steps: [...stats.steps, { step: "not white", description, perClass: keptPerClass, total: keptPerClass.reduce((a, b) => a + b, 0) }] };
}
