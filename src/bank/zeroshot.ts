/**
 * Image-prompt zero-shot classification (the paper's Table 6): a patch gets the
 * class of its most similar prototype, by cosine similarity of encoder features.
 * No training; it measures how well the bank (and the encoder behind it)
 * separates the tissue classes.
 *
 * Protocol (the paper does not state one): the patches classified are val and/or
 * test patches whose ground-truth mask is dominated by one class, so the bank
 * (built from training patches) never sees them. A patch qualifies when foreground
 * (non-background) pixels cover at least `minForeground` of it (default 0.5) and
 * one class holds at least `minShare` of the foreground (default 0.9); its true
 * class is that class. Scores: per-class precision, recall and F1, accuracy and
 * macro F1, against two chance levels (uniform guessing, and always answering the
 * most frequent class).
 */
import * as aq from "arquero";
import type { ColumnTable } from "arquero";
import type { Sample, Split } from "../data/types";
import { readMask, idHistogram } from "../data/image";
import type { ImageEncoder } from "../encoders/types";
import { type FeatureMatrix, row, dot, l2NormalizeRows } from "./matrix";
import { type ImageBank, assertBankEncoder, subclassClassIndex } from "./bank";
import { encodeSamples } from "./build";

/** Result of {@link classifyByPrototypes}. */
export interface PrototypeClassification {
  /** Predicted class per row. */
  predicted: Int32Array;
  /** Most similar prototype row per row. */
  prototype: Int32Array;
  /** Its cosine similarity. */
  similarity: Float32Array;
}

/** Classify feature rows by their most similar prototype (cosine; ties: the lower row). */
export function classifyByPrototypes(bank: ImageBank, features: FeatureMatrix): PrototypeClassification {
  if (features.dim !== bank.meta.dim) throw new Error(`classifyByPrototypes: features have d = ${features.dim}, the bank d = ${bank.meta.dim}`);
  const d = bank.meta.dim;
  const protos = l2NormalizeRows({ rows: bank.prototypes.length / d, dim: d, data: bank.prototypes });
  const x = l2NormalizeRows(features);
  const cls = subclassClassIndex(bank);
  const predicted = new Int32Array(x.rows);
  const prototype = new Int32Array(x.rows);
  const similarity = new Float32Array(x.rows);
  for (let i = 0; i < x.rows; i++) {
    let best = 0;
    let bestSim = -Infinity;
    for (let r = 0; r < protos.rows; r++) {
      const s = dot(row(x, i), row(protos, r));
      if (s > bestSim) {
        bestSim = s;
        best = r;
      }
    }
    predicted[i] = cls[best]!;
    prototype[i] = best;
    similarity[i] = bestSim;
  }
  return { predicted, prototype, similarity };
}

/** Scores of a zero-shot classification. */
export interface ZeroShotReport {
  /** One row per class: class, code, support, predicted, precision, recall, f1 (an arquero table). */
  table: ColumnTable;
  accuracy: number;
  /** Mean F1 over classes with support. */
  macroF1: number;
  /** Accuracy of uniform random guessing: 1 / N. */
  chanceAccuracy: number;
  /** Accuracy of always answering the most frequent true class. */
  majorityAccuracy: number;
  /** Expected macro F1 of uniform random guessing: mean over classes of 2 p_c (1/N) / (p_c + 1/N). */
  chanceMacroF1: number;
  /** Patches scored. */
  n: number;
  /** confusion[true][predicted]. */
  confusion: number[][];
}

/** Per-class precision/recall/F1, accuracy, macro F1 and chance levels from true and predicted class indices. */
export function zeroShotReport(truth: ArrayLike<number>, predicted: ArrayLike<number>, classes: readonly string[], codes: readonly string[] = classes): ZeroShotReport {
  const n = classes.length;
  if (truth.length !== predicted.length) throw new Error(`zeroShotReport: ${truth.length} true labels, ${predicted.length} predictions`);
  const conf = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  for (let i = 0; i < truth.length; i++) conf[truth[i]!]![predicted[i]!]!++;
  const support = conf.map((r) => r.reduce((a, b) => a + b, 0));
  const predCount = classes.map((_, c) => conf.reduce((a, r) => a + r[c]!, 0));
  const tp = classes.map((_, c) => conf[c]![c]!);
  const precision = tp.map((t, c) => (predCount[c]! ? t / predCount[c]! : 0));
  const recall = tp.map((t, c) => (support[c]! ? t / support[c]! : NaN));
  const f1 = precision.map((p, c) => {
    const r = recall[c]!;
    if (!support[c]) return NaN;
    return p + r > 0 ? (2 * p * r) / (p + r) : 0;
  });
  const total = truth.length;
  const withSupport = f1.filter((v) => !Number.isNaN(v));
  const chanceF1 = support.filter((s) => s > 0).map((s) => {
    const p = s / total;
    return (2 * p * (1 / n)) / (p + 1 / n);
  });
  return {
    table: aq.table({ class: [...classes], code: [...codes], support, predicted: predCount, precision, recall, f1 }),
    accuracy: total ? tp.reduce((a, b) => a + b, 0) / total : NaN,
    macroF1: withSupport.length ? withSupport.reduce((a, b) => a + b, 0) / withSupport.length : NaN,
    chanceAccuracy: 1 / n,
    majorityAccuracy: total ? Math.max(...support) / total : NaN,
    chanceMacroF1: chanceF1.length ? chanceF1.reduce((a, b) => a + b, 0) / chanceF1.length : NaN,
    n: total,
    confusion: conf,
  };
}

/** Options of {@link dominantClassSamples}. */
export interface DominantClassOptions {
  /** Minimum share of non-background pixels in the patch. Default 0.5. */
  minForeground?: number;
  /** Minimum share of the foreground held by the dominant class. Default 0.9. */
  minShare?: number;
}

/** Patches of a masked split with one dominant class (see the module comment), and that class. */
export function dominantClassSamples(split: Split, opts: DominantClassOptions = {}): { samples: Sample[]; classIndex: number[]; skipped: number } {
  const minFg = opts.minForeground ?? 0.5;
  const minShare = opts.minShare ?? 0.9;
  const spec = split.dataset;
  const n = spec.classes.length;
  const samples: Sample[] = [];
  const classIndex: number[] = [];
  let skipped = 0;
  for (const s of split.samples) {
    if (!s.maskPath) throw new Error(`dominantClassSamples: split ${split.name} sample ${s.id} has no mask; zero-shot scoring needs masked val/test patches`);
    const m = readMask(s.maskPath, spec, { expectSize: spec.patchSize, resize: split.resize }); // as the loader reads it: a mask of another size is an error
    const h = idHistogram(m.ids);
    let fg = 0;
    let best = 0;
    for (let c = 0; c < n; c++) {
      fg += h[c]!;
      if (h[c]! > h[best]!) best = c;
    }
    if (fg >= minFg * m.ids.length && fg > 0 && h[best]! >= minShare * fg) {
      samples.push(s);
      classIndex.push(best);
    } else skipped++;
  }
  return { samples, classIndex, skipped };
}

/** Progress and result of {@link zeroShotEvents}. */
export type ZeroShotEvent =
  | { type: "selected"; patches: number; skipped: number; perClass: number[] }
  | { type: "encode"; done: number; total: number; seconds: number }
  | { type: "done"; report: ZeroShotReport; classification: PrototypeClassification; samples: Sample[]; truth: number[]; features: FeatureMatrix; splits: string[] };

/** Options of {@link zeroShotEvents}. */
export interface ZeroShotOptions extends DominantClassOptions {
  batchSize?: number;
  /** Score at most this many patches per class (the first ones by id), for quick runs. */
  maxPerClass?: number;
}

/**
 * Image-prompt zero-shot classification of masked splits with a bank (Table 6):
 * pick single-class patches of each split ({@link dominantClassSamples}), encode
 * them with the bank's encoder (checked against the bank), classify by the most
 * similar prototype, and score them together.
 */
export async function* zeroShotEvents(bank: ImageBank, splits: Split | readonly Split[], encoder: ImageEncoder, opts: ZeroShotOptions = {}): AsyncGenerator<ZeroShotEvent> {
  assertBankEncoder(bank, encoder);
  const list = Array.isArray(splits) ? (splits as readonly Split[]) : [splits as Split];
  const parts = list.map((split) => {
    const sel = dominantClassSamples(split, opts);
    let samples = sel.samples;
    let truth = sel.classIndex;
    if (opts.maxPerClass !== undefined) {
      const count = new Map<number, number>();
      const keep = truth.map((c) => {
        const k = (count.get(c) ?? 0) + 1;
        count.set(c, k);
        return k <= opts.maxPerClass!;
      });
      samples = samples.filter((_, i) => keep[i]);
      truth = truth.filter((_, i) => keep[i]);
    }
    return { split, samples, truth, skipped: sel.skipped };
  });
  const samples = parts.flatMap((p) => p.samples);
  const truth = parts.flatMap((p) => p.truth);
  const perClass = bank.meta.classes.map((_, c) => truth.filter((t) => t === c).length);
  const names = list.map((s) => s.name);
  yield { type: "selected", patches: samples.length, skipped: parts.reduce((a, p) => a + p.skipped, 0), perClass };
  if (!samples.length) throw new Error(`zero-shot: no patch of ${names.join(" + ")} has a dominant class (min foreground ${opts.minForeground ?? 0.5}, min share ${opts.minShare ?? 0.9})`);
  const rows: Float32Array[] = [];
  let done = 0;
  const t0 = Date.now();
  for (const p of parts) {
    if (!p.samples.length) continue;
    for await (const ev of encodeSamples(p.split, p.samples, encoder, { batchSize: opts.batchSize })) {
      if (ev.type === "encode") yield { type: "encode", done: done + ev.done, total: samples.length, seconds: (Date.now() - t0) / 1000 };
      else rows.push(ev.features.data);
    }
    done += p.samples.length;
  }
  const d = encoder.identity.dim;
  const data = new Float32Array(samples.length * d);
  let o = 0;
  for (const r of rows) {
    data.set(r, o);
    o += r.length;
  }
  const features: FeatureMatrix = { rows: samples.length, dim: d, data };
  const classification = classifyByPrototypes(bank, features);
  const report = zeroShotReport(truth, classification.predicted, bank.meta.classes, bank.meta.codes);
  yield { type: "done", report, classification, samples, truth, features, splits: names };
}

/** {@link zeroShotEvents} without the progress: the report and what it was computed from. */
export async function zeroShotClassification(bank: ImageBank, splits: Split | readonly Split[], encoder: ImageEncoder, opts: ZeroShotOptions = {}): Promise<Extract<ZeroShotEvent, { type: "done" }>> {
  for await (const ev of zeroShotEvents(bank, splits, encoder, opts)) if (ev.type === "done") return ev;
  throw new Error("zero-shot: ended without a result");
}
