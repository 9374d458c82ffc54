import { ConfusionMatrix } from "./confusion";
import { segmentationScores, foregroundIds, describeConvention, type BackgroundConvention, type LabelSpace, type SegmentationScores } from "./metrics";
import { boundaryCounts, boundaryIoUFromCounts, bandWidthFromRatio } from "./boundary";
import { meanStd, pairedTTest, type MeanStd, type PairedTTest } from "./stats";

/** Options of a {@link SegmentationEvaluator}. */
export interface EvalOptions extends LabelSpace {
  /** Background convention (see {@link BackgroundConvention}); required so every report names it. */
  convention: BackgroundConvention;
  /** Boundary band width d in pixels; default: Cheng et al.'s 2% of the image diagonal, per image (6 px at 224 x 224). */
  band?: number;
  /** Band as a fraction of the image diagonal when `band` is not given (default 0.02). */
  bandRatio?: number;
  /** Dataset name recorded in the report. */
  dataset?: string;
}

/** Scores of one image (same fields as the dataset level, from that image's pixels alone). */
export interface ImageScores {
  id: string;
  height: number;
  width: number;
  /** Counted pixels. */
  pixels: number;
  /** Band width used for bIoU, pixels. */
  band: number;
  iou: number[];
  miou: number;
  dice: number[];
  mdice: number;
  fwiou: number;
  pixelAccuracy: number;
  /** Boundary IoU per foreground class (NaN where neither mask has a boundary pixel counted). */
  biou: number[];
  mbiou: number;
}

/** Dataset-level scores: {@link SegmentationScores} plus boundary IoU. */
export interface DatasetScores extends SegmentationScores {
  /** Boundary IoU per foreground class, from intersections and unions summed over images. */
  biou: number[];
  /** Mean boundary IoU over the foreground classes (NaN skipped). */
  mbiou: number;
}

/** What `pbip eval` writes: everything needed to reproduce the numbers, convention named. */
export interface EvalReport {
  kind: "pbip-eval-report";
  version: 1;
  dataset?: string;
  convention: BackgroundConvention;
  /** Human-readable statement of the convention. */
  conventionNote: string;
  classes: string[];
  backgroundId: number;
  ignoreId: number;
  /** Band width in pixels when fixed, else the diagonal ratio used per image. */
  band: { pixels: number | null; ratio: number | null };
  images: number;
  scores: DatasetScores;
  /**
   * The image-wise reduction: each scalar metric averaged over images (NaN
   * skipped), next to `scores`, which pools every pixel of the dataset into one
   * confusion matrix (the papers' numbers).
   */
  imageMean: Record<ScalarMetric, number>;
  /** Raw confusion matrix over all non-ignored pixels (rows ground truth, columns prediction), before the convention. */
  confusion: number[][];
  perImage: ImageScores[];
}

function meanSkipNaN(xs: number[]): number {
  const v = xs.filter((x) => !Number.isNaN(x));
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
}

/**
 * Accumulates mask pairs into dataset-level and per-image scores (METHOD.md
 * section 5): a confusion matrix over classes plus background, the metrics
 * derived from it under one background convention, and boundary IoU.
 *
 * ```ts
 * const ev = new SegmentationEvaluator({ classes: ["TE","NEC","LYM","TAS"], backgroundId: 4, convention: "count-bg" });
 * ev.add("a.png", gtIds, predIds, 224, 224);
 * const report = ev.report();
 * console.log(formatEvalTable(report));
 * ```
 */
export class SegmentationEvaluator {
  private readonly cm: ConfusionMatrix;
  private readonly size: number;
  private readonly inter: Float64Array;
  private readonly union: Float64Array;
  private readonly images: ImageScores[] = [];
  private readonly fg: number[];
  private readonly ignoreId: number;

  constructor(readonly options: EvalOptions) {
    this.fg = foregroundIds(options);
    this.size = options.classes.length + 1;
    this.cm = new ConfusionMatrix(this.size);
    this.inter = new Float64Array(this.size);
    this.union = new Float64Array(this.size);
    this.ignoreId = options.ignoreId ?? 255;
    if (options.band !== undefined && (!Number.isInteger(options.band) || options.band < 1)) {
      throw new Error(`boundary band must be an integer >= 1 pixel, got ${options.band}`);
    }
  }

  /** Band width used for an image of this size. */
  bandFor(height: number, width: number): number {
    return this.options.band ?? bandWidthFromRatio(height, width, this.options.bandRatio ?? 0.02);
  }

  /**
   * Add one image: ground-truth and predicted mask ids, row-major `height x width`.
   * Ground truth may contain `ignoreId` (default 255). Returns that image's scores.
   */
  add(id: string, gt: ArrayLike<number>, pred: ArrayLike<number>, height: number, width: number): ImageScores {
    const { convention, backgroundId: bg } = this.options;
    const cm = new ConfusionMatrix(this.size).add(gt, pred, this.ignoreId, id);
    const band = this.bandFor(height, width);
    const bc = boundaryCounts(gt, pred, height, width, this.size, band, {
      ignoreId: this.ignoreId,
      dropGt: convention === "ignore-bg" ? [bg] : [],
      where: id,
    });
    this.cm.merge(cm);
    for (let i = 0; i < this.size; i++) {
      this.inter[i]! += bc.intersection[i]!;
      this.union[i]! += bc.union[i]!;
    }
    const s = segmentationScores(cm, this.options, convention);
    const biouAll = boundaryIoUFromCounts(bc);
    const biou = this.fg.map((i) => biouAll[i]!);
    const img: ImageScores = {
      id,
      height,
      width,
      pixels: s.pixels,
      band,
      iou: s.iou,
      miou: s.miou,
      dice: s.dice,
      mdice: s.mdice,
      fwiou: s.fwiou,
      pixelAccuracy: s.pixelAccuracy,
      biou,
      mbiou: meanSkipNaN(biou),
    };
    this.images.push(img);
    return img;
  }

  /** The accumulated raw confusion matrix (all non-ignored pixels, before the convention). */
  confusion(): ConfusionMatrix {
    return this.cm.clone();
  }

  /** Dataset-level scores and the per-image list. */
  report(): EvalReport {
    const o = this.options;
    const s = segmentationScores(this.cm, o, o.convention);
    const biouAll = boundaryIoUFromCounts({ intersection: this.inter, union: this.union });
    const biou = this.fg.map((i) => biouAll[i]!);
    return {
      kind: "pbip-eval-report",
      version: 1,
      ...(o.dataset !== undefined ? { dataset: o.dataset } : {}),
      convention: o.convention,
      conventionNote: describeConvention(o.convention),
      classes: [...o.classes],
      backgroundId: o.backgroundId,
      ignoreId: this.ignoreId,
      band: o.band !== undefined ? { pixels: o.band, ratio: null } : { pixels: null, ratio: o.bandRatio ?? 0.02 },
      images: this.images.length,
      scores: { ...s, biou, mbiou: meanSkipNaN(biou) },
      imageMean: Object.fromEntries(SCALARS.map((m) => [m, meanSkipNaN(this.images.map((im) => im[m]))])) as Record<ScalarMetric, number>,
      confusion: this.cm.toRows(),
      perImage: this.images.map((im) => ({ ...im })),
    };
  }
}

/** One mask pair for {@link evaluateMasks}. */
export interface MaskPair {
  id: string;
  gt: ArrayLike<number>;
  pred: ArrayLike<number>;
  height: number;
  width: number;
}

/** Evaluate a list of mask pairs in one call (a {@link SegmentationEvaluator} over them). */
export function evaluateMasks(pairs: Iterable<MaskPair>, options: EvalOptions): EvalReport {
  const ev = new SegmentationEvaluator(options);
  for (const p of pairs) ev.add(p.id, p.gt, p.pred, p.height, p.width);
  return ev.report();
}

function pct(v: number, digits = 2): string {
  return Number.isNaN(v) || v === null ? "-" : (v * 100).toFixed(digits);
}

/**
 * The report as a plain-text table: per-class IoU, Dice, bIoU and ground-truth
 * share, then mIoU, FwIoU, mDice, mean bIoU, pixel accuracy, and the convention.
 * Values are percentages.
 */
export function formatEvalTable(r: EvalReport): string {
  const s = r.scores;
  const gtTotal = s.gtPixels.reduce((a, b) => a + b, 0);
  const nameW = Math.max(5, ...r.classes.map((c) => c.length));
  const head = `${"class".padEnd(nameW)}  ${"IoU".padStart(6)}  ${"Dice".padStart(6)}  ${"bIoU".padStart(6)}  ${"GT px".padStart(6)}`;
  const rows = r.classes.map(
    (c, i) =>
      `${c.padEnd(nameW)}  ${pct(s.iou[i]!).padStart(6)}  ${pct(s.dice[i]!).padStart(6)}  ${pct(s.biou[i]!).padStart(6)}  ${(s.pixels > 0 ? pct(s.gtPixels[i]! / s.pixels, 1) + "%" : "-").padStart(6)}`,
  );
  const rule = "-".repeat(head.length);
  const bandText = r.band.pixels !== null ? `${r.band.pixels} px` : `${(r.band.ratio! * 100).toFixed(1)}% of the diagonal`;
  const lines = [
    `${r.dataset ? `${r.dataset}: ` : ""}${r.images} images, convention ${r.convention}`,
    head,
    rule,
    ...rows,
    rule,
    `${"mean".padEnd(nameW)}  ${pct(s.miou).padStart(6)}  ${pct(s.mdice).padStart(6)}  ${pct(s.mbiou).padStart(6)}  ${(s.pixels > 0 ? pct(gtTotal / s.pixels, 1) + "%" : "-").padStart(6)}`,
    `mIoU ${pct(s.miou)}   FwIoU ${pct(s.fwiou)}   mDice ${pct(s.mdice)}   mbIoU ${pct(s.mbiou)}   pixel accuracy ${pct(s.pixelAccuracy)}`,
    `bIoU band ${bandText}; "mean" row: means over the foreground classes (its GT px: the foreground classes together); GT px: share of counted pixels`,
    `mean over images: mIoU ${pct(r.imageMean.miou)}, mDice ${pct(r.imageMean.mdice)}, mbIoU ${pct(r.imageMean.mbiou)}`,
  ];
  if (r.convention === "count-bg") lines.push(`background: IoU ${pct(s.background.iou)}, Dice ${pct(s.background.dice)}`);
  lines.push(`convention ${r.conventionNote}`);
  return lines.join("\n");
}

/** Dataset-level metric names that {@link aggregateSeeds} and {@link comparePerImage} accept. */
export type ScalarMetric = "miou" | "mdice" | "fwiou" | "mbiou" | "pixelAccuracy";

/** Mean and standard deviation over seeds of every scalar metric and per-class IoU. */
export interface SeedSummary {
  convention: BackgroundConvention;
  classes: string[];
  runs: number;
  metrics: Record<ScalarMetric, MeanStd>;
  iou: MeanStd[];
}

const SCALARS: ScalarMetric[] = ["miou", "mdice", "fwiou", "mbiou", "pixelAccuracy"];

/**
 * Mean ± standard deviation (sample, n - 1) over runs with different seeds, as the
 * paper reports. All reports must share classes and convention.
 */
export function aggregateSeeds(reports: EvalReport[]): SeedSummary {
  if (reports.length === 0) throw new Error("aggregateSeeds: no reports");
  const first = reports[0]!;
  for (const r of reports) {
    if (r.convention !== first.convention) throw new Error(`aggregateSeeds: conventions differ (${first.convention} vs ${r.convention})`);
    if (r.classes.join(",") !== first.classes.join(",")) throw new Error(`aggregateSeeds: classes differ (${first.classes.join(",")} vs ${r.classes.join(",")})`);
  }
  const metrics = {} as Record<ScalarMetric, MeanStd>;
  for (const m of SCALARS) metrics[m] = meanStd(reports.map((r) => nullToNaN(r.scores[m])).filter((v) => !Number.isNaN(v)));
  const iou = first.classes.map((_, i) => meanStd(reports.map((r) => nullToNaN(r.scores.iou[i]!)).filter((v) => !Number.isNaN(v))));
  return { convention: first.convention, classes: [...first.classes], runs: reports.length, metrics, iou };
}

function nullToNaN(v: number | null | undefined): number {
  return v === null || v === undefined ? NaN : v;
}

/**
 * Paired t-test of method A against method B on a per-image metric (default
 * mIoU), matching images by id. Images present in only one report are an error;
 * images where either score is NaN are dropped (counted in `dropped`).
 */
export function comparePerImage(a: EvalReport, b: EvalReport, metric: ScalarMetric = "miou"): PairedTTest & { metric: ScalarMetric; convention: BackgroundConvention } {
  if (a.convention !== b.convention) throw new Error(`comparePerImage: conventions differ (${a.convention} vs ${b.convention})`);
  const byId = new Map(b.perImage.map((im) => [im.id, im]));
  const xs: number[] = [];
  const ys: number[] = [];
  for (const im of a.perImage) {
    const other = byId.get(im.id);
    if (!other) throw new Error(`comparePerImage: image ${im.id} is in the first report but not the second`);
    xs.push(nullToNaN(im[metric]));
    ys.push(nullToNaN(other[metric]));
  }
  if (b.perImage.length !== a.perImage.length) throw new Error(`comparePerImage: ${a.perImage.length} images against ${b.perImage.length}`);
  return { ...pairedTTest(xs, ys), metric, convention: a.convention };
}

/** Per-image records sorted by a metric, worst first (for "images with the largest errors"). */
export function worstImages(r: EvalReport, metric: ScalarMetric = "miou", count = 8): ImageScores[] {
  return [...r.perImage]
    .filter((im) => !Number.isNaN(nullToNaN(im[metric])))
    .sort((x, y) => nullToNaN(x[metric]) - nullToNaN(y[metric]))
    .slice(0, count);
}

/**
 * One flat record per report (a row of a results or ablation table): the
 * convention, the dataset-level scalar metrics and per-class IoU, keyed by class.
 */
export function evalSummaryRecord(r: EvalReport, name?: string): Record<string, string | number> {
  const rec: Record<string, string | number> = {};
  if (name !== undefined) rec.run = name;
  rec.convention = r.convention;
  rec.images = r.images;
  for (const m of SCALARS) rec[m] = r.scores[m];
  r.classes.forEach((c, i) => (rec[`IoU ${c}`] = r.scores.iou[i]!));
  return rec;
}

/** A seed summary as text: `metric  mean ± std` in percent, per scalar metric and per-class IoU. */
export function formatSeedSummary(s: SeedSummary): string {
  const names: Record<ScalarMetric, string> = { miou: "mIoU", mdice: "mDice", fwiou: "FwIoU", mbiou: "mbIoU", pixelAccuracy: "pixel acc" };
  const w = Math.max(9, ...s.classes.map((c) => c.length + 4));
  const f = (m: MeanStd) => (Number.isNaN(m.mean) ? "-" : `${(m.mean * 100).toFixed(2)} ± ${(m.std * 100).toFixed(2)}`);
  return [
    `${s.runs} runs, convention ${s.convention} (mean ± sample std, %)`,
    ...SCALARS.map((m) => `${names[m].padEnd(w)}  ${f(s.metrics[m])}`),
    ...s.classes.map((c, i) => `${`IoU ${c}`.padEnd(w)}  ${f(s.iou[i]!)}`),
  ].join("\n");
}
