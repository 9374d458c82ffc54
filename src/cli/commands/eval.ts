import * as fs from "node:fs";
import * as path from "node:path";
import { parse, str, type Command } from "../command";
import { FileError, UsageError, ProgressBar, writeJsonAtomic } from "../../util";
import { datasetSpec } from "../../data/manifest";
import { readMask } from "../../data/image";
import { SegmentationEvaluator, formatEvalTable, parseConvention, type EvalReport } from "../../eval";

const USAGE = `  --pred DIR          predicted masks (palette PNGs, e.g. written by pbip cam)
  --gt DIR            ground-truth masks (palette PNGs); every mask here needs a prediction of the same name
  --dataset NAME      dataset manifest name (luad-histoseg, bcss-wsss, synthetic, ...) or path to a manifest JSON
  --convention C      count-bg (default: GT background counted, as the PBIP release and TPRO) or ignore-bg (as MLPS)
  --band W            boundary IoU band width in pixels (default: 2% of the image diagonal, Cheng et al.)
  --json OUT          where to write the report (default: <pred>/eval-<convention>.json)`;

/** Options of {@link evaluateDirs}. */
export interface EvalDirsOptions {
  pred: string;
  gt: string;
  dataset: string;
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
  const spec = datasetSpec(o.dataset);
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

export const commands: Command[] = [
  {
    name: ["eval"],
    summary: "score pseudo-masks against ground truth (mIoU, FwIoU, Dice, boundary IoU)",
    usage: USAGE,
    async run(argv: string[]): Promise<number> {
      const p = parse("eval", argv, {
        pred: { type: "string" },
        gt: { type: "string" },
        dataset: { type: "string" },
        convention: { type: "string" },
        band: { type: "string" },
        json: { type: "string" },
      });
      const pred = str(p, "pred");
      const gt = str(p, "gt");
      const dataset = str(p, "dataset");
      if (!pred || !gt || !dataset) throw new UsageError(`pbip eval: --pred, --gt and --dataset are required\n\n${USAGE}`);
      const bandText = str(p, "band");
      let band: number | undefined;
      if (bandText !== undefined) {
        band = Number(bandText);
        if (!Number.isInteger(band) || band < 1) throw new UsageError(`pbip eval: --band must be an integer >= 1 (pixels), got "${bandText}"`);
      }
      const convention = parseConvention(str(p, "convention") ?? "count-bg", "pbip eval: --convention");
      const report = evaluateDirs({ pred, gt, dataset, convention, band });
      const out = str(p, "json") ?? path.join(pred, `eval-${convention}.json`);
      writeJsonAtomic(out, report);
      console.log(formatEvalTable(report));
      if (report.extraPredictions) console.log(`note: ${report.extraPredictions} prediction(s) without ground truth were not scored`);
      console.log(`report: ${out}`);
      return 0;
    },
  },
];
