/**
 * Evaluate a folder of predicted masks against a folder of ground truth: the
 * library side of `pbip eval`, also used by the notebooks and the demo.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FileError } from "../util/errors";
import { ProgressBar } from "../util/progress";
import { datasetSpec } from "../data/manifest";
import { readMask } from "../data/image";
import type { DatasetSpec } from "../data/types";
import { SegmentationEvaluator, type EvalReport } from "./evaluate";
import { parseConvention } from "./metrics";

/** Options of {@link evaluateDirs}. */
export interface EvalDirsOptions {
  pred: string;
  gt: string;
  /** Dataset manifest name, manifest path, or a spec. */
  dataset: string | DatasetSpec;
  convention?: string;
  band?: number;
  /** Progress output (default: a progress bar on stderr for more than 20 masks). */
  progress?: boolean;
}

/**
 * Evaluate predicted palette-PNG masks against ground truth (the library side of
 * `pbip eval`). Masks are matched by file name; a ground-truth mask without a
 * prediction is an error naming it; sizes must agree.
 */
export function evaluateDirs(o: EvalDirsOptions): EvalReport & { sources: { pred: string; gt: string }; extraPredictions: number } {
  const spec = typeof o.dataset === "string" ? datasetSpec(o.dataset) : o.dataset;
  const convention = parseConvention(o.convention ?? "count-bg", "--convention");
  for (const [flag, dir] of [
    ["--pred", o.pred],
    ["--gt", o.gt],
  ] as const) {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new FileError(dir, `${flag}: not a directory`);
  }
  const gtFiles = fs
    .readdirSync(o.gt)
    .filter((f) => f.toLowerCase().endsWith(".png"))
    .sort();
  if (gtFiles.length === 0) throw new FileError(o.gt, "no .png masks in the ground-truth folder");
  const predFiles = new Set(fs.readdirSync(o.pred).filter((f) => f.toLowerCase().endsWith(".png")));
  const missing = gtFiles.filter((f) => !predFiles.has(f));
  if (missing.length) {
    throw new FileError(o.pred, `no prediction for ${missing.length} of ${gtFiles.length} ground-truth masks (first: ${missing.slice(0, 3).join(", ")})`);
  }
  const ev = new SegmentationEvaluator({
    classes: spec.codes,
    backgroundId: spec.backgroundId,
    convention,
    band: o.band,
    dataset: spec.name,
  });
  const bar = (o.progress ?? gtFiles.length > 20) ? new ProgressBar("eval", gtFiles.length) : undefined;
  for (const f of gtFiles) {
    const gtFile = path.join(o.gt, f);
    const predFile = path.join(o.pred, f);
    // Ground truth may carry the ignore value 255, so ids are checked by the evaluator (which names the file).
    const g = readMask(gtFile, spec, { validate: false });
    const p = readMask(predFile, spec);
    if (g.width !== p.width || g.height !== p.height) {
      throw new FileError(predFile, `prediction is ${p.width}x${p.height} but ground truth ${gtFile} is ${g.width}x${g.height}`);
    }
    ev.add(f, g.ids, p.ids, g.height, g.width);
    bar?.tick();
  }
  const extra = [...predFiles].filter((f) => !gtFiles.includes(f)).length;
  return { ...ev.report(), sources: { pred: path.resolve(o.pred), gt: path.resolve(o.gt) }, extraPredictions: extra };
}
