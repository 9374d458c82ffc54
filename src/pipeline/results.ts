/**
 * The results table in the paper's form (method x mIoU, FwIoU, bIoU, Dice,
 * per-class IoU on the test split), built from mask folders so that every row,
 * baselines included, is scored by the same evaluator under the same convention.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { PbipRun } from "./run";
import { readImage, writeMask } from "../data/image";
import { ClassMeanFitter, predictNearestMean, mostFrequentLabelClass } from "../data/baselines";
import { evaluateDirs } from "../eval/dirs";
import type { EvalReport } from "../eval/evaluate";
import type { BackgroundConvention } from "../eval/metrics";

/** One row of the results table (fractions, not percentages). */
export interface ResultRow {
  method: string;
  /** Where the masks came from. */
  masks: string;
  miou: number;
  fwiou: number;
  mbiou: number;
  mdice: number;
  /** IoU per foreground class, by class code. */
  iou: Record<string, number>;
  convention: BackgroundConvention;
}

/**
 * Write the masks of the two data baselines of the synthetic dataset card for the
 * test split: (a) every pixel gets the patch's image-level class most frequent in
 * the training labels; (b) white pixels are background and the rest get the class
 * with the nearest mean RGB over single-label training patches. Skipped when the
 * folders are complete.
 */
export async function writeBaselineMasks(run: PbipRun): Promise<{ mostFrequent: string; nearestColour: string }> {
  const spec = run.dataset.spec;
  const test = run.dataset.split("test");
  const dirA = run.paths.pseudo("baseline-most-frequent", "test");
  const dirB = run.paths.pseudo("baseline-nearest-colour", "test");
  const complete = (d: string) => fs.existsSync(d) && test.samples.every((s) => fs.existsSync(path.join(d, s.id.replace(/\.[^.]+$/, "") + ".png")));
  if (complete(dirA) && complete(dirB)) return { mostFrequent: dirA, nearestColour: dirB };
  const train = run.dataset.split("train");
  const n = spec.classes.length;
  const fit = new ClassMeanFitter(n, "rgb");
  const freq = new Array<number>(n).fill(0);
  for (const s of train.samples) {
    s.label.forEach((v, c) => (freq[c]! += v));
    if (s.label.reduce((a, v) => a + v, 0) === 1) fit.addPatch((await readImage(s.imagePath, { resize: train.resize })).data, s.label);
  }
  const means = fit.means();
  for (const s of test.samples) {
    const img = await readImage(s.imagePath, { resize: test.resize });
    const name = s.id.replace(/\.[^.]+$/, "") + ".png";
    const a = new Uint8Array(img.width * img.height).fill(mostFrequentLabelClass(s.label, freq));
    writeMask(path.join(dirA, name), a, img.width, img.height, spec.palette);
    writeMask(path.join(dirB, name), predictNearestMean(img.data, means, "rgb", spec.backgroundId), img.width, img.height, spec.palette);
  }
  return { mostFrequent: dirA, nearestColour: dirB };
}

/** Score a mask folder on the test split and turn it into a row. */
export function resultRow(run: PbipRun, method: string, maskDir: string, convention: BackgroundConvention = "count-bg"): ResultRow & { report: EvalReport } {
  const spec = run.dataset.spec;
  const report = evaluateDirs({ pred: maskDir, gt: path.join(run.dataset.root, "test", "mask"), dataset: spec, convention, progress: false });
  const s = report.scores;
  return {
    method,
    masks: maskDir,
    miou: s.miou,
    fwiou: s.fwiou,
    mbiou: s.mbiou,
    mdice: s.mdice,
    iou: Object.fromEntries(spec.codes.map((c, i) => [c, s.iou[i]!])),
    convention,
    report,
  };
}

/** Rows as records with percentages, for `table()` and CSV/Markdown export. */
export function resultRecords(rows: ResultRow[]): Record<string, string | number>[] {
  const pct = (v: number) => (Number.isFinite(v) ? +(100 * v).toFixed(2) : NaN);
  return rows.map((r) => ({
    method: r.method,
    "mIoU": pct(r.miou),
    "FwIoU": pct(r.fwiou),
    "bIoU": pct(r.mbiou),
    "Dice": pct(r.mdice),
    ...Object.fromEntries(Object.entries(r.iou).map(([c, v]) => [`IoU ${c}`, pct(v)])),
  }));
}

/** The table as aligned text (what `npm run demo` prints). */
export function formatResultsTable(rows: ResultRow[]): string {
  const recs = resultRecords(rows);
  if (!recs.length) return "(no results)";
  const cols = Object.keys(recs[0]!);
  const cell = (v: string | number) => (typeof v === "number" ? (Number.isNaN(v) ? "-" : v.toFixed(2)) : v);
  const w = cols.map((c) => Math.max(c.length, ...recs.map((r) => String(cell(r[c]!)).length)));
  const line = (vals: string[]) => vals.map((v, i) => (i === 0 ? v.padEnd(w[i]!) : v.padStart(w[i]!))).join("  ");
  return [line(cols), line(w.map((n) => "-".repeat(n))), ...recs.map((r) => line(cols.map((c) => String(cell(r[c]!)))))].join("\n");
}

/** The table as Markdown and CSV (supplementary material). */
export function resultsMarkdown(rows: ResultRow[], note = ""): string {
  const recs = resultRecords(rows);
  if (!recs.length) return "";
  const cols = Object.keys(recs[0]!);
  const f = (v: string | number) => (typeof v === "number" ? (Number.isNaN(v) ? "-" : v.toFixed(2)) : v);
  return [`| ${cols.join(" | ")} |`, `|${cols.map(() => "---").join("|")}|`, ...recs.map((r) => `| ${cols.map((c) => f(r[c]!)).join(" | ")} |`), note ? `\n${note}` : ""].join("\n");
}

export function resultsCsv(rows: ResultRow[]): string {
  const recs = resultRecords(rows);
  if (!recs.length) return "";
  const cols = Object.keys(recs[0]!);
  const q = (v: string | number) => (typeof v === "string" && /[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : String(v));
  return [cols.map(q).join(","), ...recs.map((r) => cols.map((c) => q(r[c]!)).join(","))].join("\n") + "\n";
}
