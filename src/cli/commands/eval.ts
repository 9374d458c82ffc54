import * as path from "node:path";
import { parse, str, type Command } from "../command";
import { UsageError, writeJsonAtomic } from "../../util";
import { formatEvalTable, parseConvention } from "../../eval";
import { evaluateDirs } from "../../eval/dirs";

const USAGE = `  --pred DIR          predicted masks (palette PNGs, e.g. written by pbip cam)
  --gt DIR            ground-truth masks (palette PNGs); every mask here needs a prediction of the same name
  --dataset NAME      dataset manifest name (luad-histoseg, bcss-wsss, synthetic, ...) or path to a manifest JSON
  --convention C      count-bg (default: GT background counted, as the PBIP release and TPRO) or ignore-bg (as MLPS)
  --band W            boundary IoU band width in pixels (default: 2% of the image diagonal, Cheng et al.)
  --json OUT          where to write the report (default: <pred>/eval-<convention>.json)`;

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
