// %% [markdown]
// # 05 · Stage 2 and the results table
//
// PBIP's stage 1 ends with pseudo-masks. The paper's final numbers come from an ordinary, fully
// supervised segmentation network trained on those pseudo-masks (stage 2): it sees every training
// patch with a dense (if imperfect) target, and at test time it needs no image-level label. Whether
// it ends above its own pseudo-masks depends on how much it is trained and on how wrong the
// pseudo-masks are; the table below says how it went in this run.
//
// Here stage 2 is a DeepLab-style network (atrous spatial pyramid pooling with a low-level skip,
// DeepLab-v3+; the paper used DeepLab-v2) on the bundled pretrained MobileNetV2, trained with pixel-wise cross-entropy on the
// PBIP pseudo-masks of the training split written by notebook 04. (With a MiT backbone the project
// uses SegFormer's all-MLP decoder instead.) Then every method is scored on the **test** split by
// the same evaluator, and the table takes the paper's form: method × mIoU, FwIoU, boundary IoU,
// Dice and per-class IoU.

// %%
import * as fs from "node:fs";
import * as path from "node:path";
import {
  tf, initBackend, formatBackendReport, openRun, stage2, writeBaselineMasks, resultRow, resultRecords,
  resultsMarkdown, resultsCsv, formatEvalTable, readTrainLog, LivePlot, show, table, barChart, paletteOf,
  maskOverlay, imageGrid, readImage, readMask, writeFileAtomic, type ResultRow,
} from "pbip";

const report = await initBackend();
console.log(formatBackendReport(report).split("\n").slice(0, 2).join("\n"));
const run = await openRun();
const spec = run.dataset.spec;
const pseudoTrain = run.paths.pseudo("pbip", "train");
if (!fs.existsSync(pseudoTrain)) throw new Error(`no PBIP pseudo-masks of the train split in ${pseudoTrain}: run notebook 04 first`);
console.log(`training stage 2 on ${fs.readdirSync(pseudoTrain).filter((f) => f.endsWith(".png")).length} pseudo-masks from ${pseudoTrain}`);

// %% [markdown]
// ## Train stage 2, live
//
// Same trainer, events, checkpoints and resume as stage 1; the validation mIoU here is measured
// against the validation split's ground truth (which stage 2 never trains on).

// %%
const h = await stage2(run, pseudoTrain);
console.log(`${h.arch}, ${h.config.train.epochs} epoch(s) at ${h.config.data.inputSize} px, ${h.freezeBackbone ? "decoder only (backbone frozen: the notebook profile's budget for two CPU cores)" : "whole network"}${h.complete ? " (a finished run with this configuration was found: reused)" : ""}`);
const live = new LivePlot({ title: `stage 2 (${h.arch})`, series: ["total"], epochSeries: ["val mIoU"], smoothing: 0.6 });
for await (const ev of h.events()) {
  if (ev.type === "start" && ev.resumedFrom) {
    // Replay the logged steps and validations of the run being resumed (or reused) so the plot is complete.
    const past = readTrainLog(h.dir);
    for (const s of past.steps) await live.push(s);
    for (const e of past.validations) {
      console.log(`epoch ${e.epoch + 1}: val mIoU ${(100 * e.score.miou).toFixed(2)}% (logged)`);
      await live.push(e);
    }
  }
  if (ev.type === "validation") console.log(`epoch ${ev.epoch + 1}: val mIoU ${(100 * ev.score.miou).toFixed(2)}%`);
  await live.push(ev);
}
await live.close();
const predDir = await h.predictTest();
console.log(`test predictions: ${predDir}`);

// %% [markdown]
// ## Every method on the test split
//
// Rows: the two data baselines of the synthetic dataset card ((a) every pixel gets the patch's most
// frequent image-level class; (b) the nearest class-mean colour), ClassNet trained with the
// classification loss only, PBIP's stage-1 pseudo-masks, and PBIP's stage 2. All scored with
// ground-truth background counted (the release's convention).

// %%
const rows: (ResultRow & { report: unknown })[] = [];
if (run.synthetic) {
  const b = await writeBaselineMasks(run);
  rows.push(resultRow(run, "(a) most frequent label class", b.mostFrequent));
  rows.push(resultRow(run, "(b) nearest class-mean colour", b.nearestColour));
}
rows.push(resultRow(run, "ClassNet, L_CLS only (stage 1)", run.paths.pseudo("cls-only", "test")));
rows.push(resultRow(run, "PBIP stage 1 (pseudo-masks)", run.paths.pseudo("pbip", "test")));
rows.push(resultRow(run, "PBIP stage 2 (segmentation net)", predDir));
await show(table(resultRecords(rows), { caption: `test split (${run.dataset.split("test").samples.length} patches), %, ground-truth background counted` }));
console.log(formatEvalTable(rows[rows.length - 1]!.report as never));
await show(barChart(["mIoU", "FwIoU", "bIoU", "Dice"], rows.map((r) => ({ name: r.method, values: [r.miou, r.fwiou, r.mbiou, r.mdice].map((v) => 100 * v) })), { title: "test split", yLabel: "%", showValues: false }));

// %%
// (tslab note: destructuring with a rest element in a parameter trips its cell transform; copy and delete instead.)
const plain = rows.map((r) => {
  const o: Record<string, unknown> = { ...r, masks: path.relative(run.root, r.masks) };
  delete o.report;
  return o as unknown as ResultRow;
});
run.saveResult("table", plain);
const note = `Test split of ${spec.name}${run.synthetic ? " (pbip's synthetic benchmark, not real tissue)" : ""}; encoder: ${run.config.encoder.name}${run.config.encoder.name.startsWith("mobilenetv2") ? " (stand-in, not MedCLIP)" : ""}; backbone ${run.config.model.backbone}; profile ${run.config.profile}${run.quick ? " (PBIP_QUICK: reduced data and steps)" : ""}. Ground-truth background counted (release convention).`;
writeFileAtomic(path.join(run.root, "results.md"), resultsMarkdown(plain, note) + "\n");
writeFileAtomic(path.join(run.root, "results.csv"), resultsCsv(plain));
console.log(`results: ${run.paths.results}, results.md, results.csv`);

// %% [markdown]
// ### Reading the table
//
// The rows do not all see the same inputs at test time. Stage 1's pseudo-masks (L_CLS only and
// PBIP) and baseline (a) use each test patch's **ground-truth image-level label**: a CAM is kept
// only for the classes in the label (`cam.gate = "gt"`), as pseudo-masks of training patches are
// made in weakly supervised segmentation. Stage 2 sees the image alone. Boundary IoU is measured in
// a band around mask edges, where a mask touching the image border has a band along the border
// too (as in Cheng et al.'s code), so even one class over the whole patch, baseline (a), scores on
// it.

// %%
{
  const get = (m: string) => rows.find((r) => r.method === m)!;
  const s1 = get("PBIP stage 1 (pseudo-masks)"), s2 = get("PBIP stage 2 (segmentation net)"), cls = get("ClassNet, L_CLS only (stage 1)");
  const pts = (a: number, b: number) => `${(100 * (a - b)).toFixed(2)} points`;
  console.log(`stage 2 - stage 1 (PBIP): mIoU ${pts(s2.miou, s1.miou)}, boundary IoU ${pts(s2.mbiou, s1.mbiou)}`);
  console.log(`PBIP stage 1 - L_CLS only: mIoU ${pts(s1.miou, cls.miou)}`);
  console.log(s2.miou < s1.miou
    ? `Here stage 2 did not improve on its pseudo-masks: it trained ${h.freezeBackbone ? "its decoder only (backbone frozen)" : "the whole network"} for ${h.config.train.epochs} epoch(s), and predicts without the label's help.`
    : "Here stage 2 improved on its pseudo-masks without using the label at test time.");
}

// %% [markdown]
// ## Stage 1 vs stage 2 on the same test patches

// %%
const pal = paletteOf(spec);
const samples = run.dataset.split("test").samples.slice(4, 8);
const cells = [];
for (const s of samples) {
  const img = await readImage(s.imagePath);
  const name = s.id.replace(/\.[^.]+$/, "") + ".png";
  cells.push([
    await maskOverlay(img, readMask(s.maskPath!, spec), pal, { legend: "none" }),
    await maskOverlay(img, readMask(path.join(run.paths.pseudo("pbip", "test"), name), spec), pal, { legend: "none" }),
    await maskOverlay(img, readMask(path.join(predDir, name), spec), pal, { legend: "none" }),
  ]);
}
await show(await imageGrid(cells, { colLabels: ["ground truth", "PBIP stage 1", "PBIP stage 2"], rowLabels: samples.map((s) => s.id), legend: pal.names.map((n, i) => ({ label: n, color: pal.colors[i]! })) }));
console.log(`tensors alive: ${tf.memory().numTensors}`);
