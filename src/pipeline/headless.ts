/**
 * The whole method on a run folder without Jupyter: the same stages the notebooks
 * run (bank, stage 1 PBIP and L_CLS-only, pseudo-masks, stage 2, the results
 * table), for `pbip demo --headless` and the GPU bundle. Each stage reuses its
 * output when it exists and matches the config.
 */
import * as path from "node:path";
import type { PbipRun } from "./run";
import { createEncoderFor } from "./core";
import { ensureBank, stage1, STAGE1_VARIANTS, loadStage1, ensurePseudoMasks } from "./stages";
import { writeBaselineMasks, resultRow, type ResultRow } from "./results";
import { ProgressBar } from "../util/progress";
import type { TrainEvent } from "../train/loop";

export interface HeadlessOptions {
  /** Stage 2 runner (from src/seg), injected to keep this module free of the stage-2 code's size. */
  stage2?: (run: PbipRun, pseudoTrain: string, log: (line: string) => void) => Promise<string | undefined>;
  log?: (line: string) => void;
}

async function drain(events: AsyncGenerator<TrainEvent>, label: string, log: (l: string) => void): Promise<void> {
  let bar: ProgressBar | undefined;
  for await (const ev of events) {
    if (ev.type === "start") {
      bar = new ProgressBar(label, ev.totalSteps);
      bar.update(ev.step);
    } else if (ev.type === "step") bar?.update(ev.step, `loss ${ev.losses.total.toFixed(3)}`);
    else if (ev.type === "validation") log(`${label}: epoch ${ev.epoch + 1} val pseudo-mask mIoU ${(100 * ev.score.miou).toFixed(2)}%`);
  }
}

/** Run every stage; returns the results rows (also saved in results.json). */
export async function runHeadless(run: PbipRun, o: HeadlessOptions = {}): Promise<ResultRow[]> {
  const log = o.log ?? ((l: string) => console.error(l));
  const encoder = await createEncoderFor(run.config);
  try {
    log(`bank: ${run.paths.bank}`);
    const { bank, reused } = await ensureBank(run, encoder);
    log(`bank ${reused ? "reused" : "built"}: K [${bank.meta.k}], d ${bank.meta.dim}`);
    for (const v of [STAGE1_VARIANTS.pbip, STAGE1_VARIANTS.clsOnly]) {
      const h = await stage1(run, v, encoder, bank);
      log(`stage 1 (${v.name}): ${h.complete ? "finished run reused" : "training"} in ${h.dir}`);
      await drain(h.events(), `stage 1 ${v.name}`, log);
    }
    const pseudo: Record<string, string> = {};
    for (const variant of ["pbip", "cls-only"]) {
      const { net, config, file } = await loadStage1(run, variant, bank);
      for (const split of variant === "pbip" ? (["test", "train"] as const) : (["test"] as const)) {
        const bar = new ProgressBar(`pseudo-masks ${variant} ${split}`, run.dataset.split(split).samples.length);
        const r = await ensurePseudoMasks(run, variant, split, net, config, file, (d) => bar.update(d));
        pseudo[`${variant}/${split}`] = r.outDir;
      }
      net.dispose();
    }
    const rows: ResultRow[] = [];
    if (run.synthetic) {
      const b = await writeBaselineMasks(run);
      rows.push(resultRow(run, "(a) most frequent label class", b.mostFrequent), resultRow(run, "(b) nearest class-mean colour", b.nearestColour));
    }
    rows.push(resultRow(run, "ClassNet, L_CLS only (stage 1)", pseudo["cls-only/test"]!), resultRow(run, "PBIP stage 1 (pseudo-masks)", pseudo["pbip/test"]!));
    if (o.stage2) {
      const dir = await o.stage2(run, pseudo["pbip/train"]!, log);
      if (dir) rows.push(resultRow(run, "PBIP stage 2 (segmentation net)", dir));
    }
    run.saveResult(
      "table",
      rows.map(({ report: _r, ...row }: ResultRow & { report?: unknown }) => ({ ...row, masks: path.relative(run.root, row.masks) })),
    );
    return rows;
  } finally {
    encoder.dispose();
  }
}
