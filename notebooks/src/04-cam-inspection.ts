// %% [markdown]
// # 04 · CAMs, pseudo-masks and what they get wrong
//
// A trained ClassNet (notebook 03) becomes useful through its class activation maps. For each used
// stage $i$ and class $n$ (METHOD.md section 5):
//
// 1. merge the class's $K$ subclass maps with the inference rule $\sum_k \mathrm{softmax}(m)_k\, m_k$;
// 2. ReLU, then min–max normalise each class map over the image;
// 3. multiply by the image-level label (a class not in the label gets no pixels);
// 4. upsample to the patch.
//
// The stage CAMs are fused, $\mathrm{CAM} = 0.3\,\mathrm{CAM}_2 + 0.3\,\mathrm{CAM}_3 + 0.4\,\mathrm{CAM}_4$,
// optionally averaged over test-time augmentation (horizontal flip × intensity 0.9/1.0/1.1), and
// the pseudo-mask is the argmax. The release predicts no background; on LUAD-HistoSeg the peers
// (TPRO) mark white glass as background (grey > 200, blobs under 80 px ignored), which the
// `notebook` profile does here too (`cam.background.mode = "white"`).
//
// This notebook writes the pseudo-masks of the **test** split (to measure them) and of the **train**
// split (stage 2 in notebook 05 trains on them), prints the metrics, and looks at the results.

// %%
import * as fs from "node:fs";
import * as path from "node:path";
import {
  tf, initBackend, formatBackendReport, openRun, createEncoderFor, ensureBank, loadStage1, ensurePseudoMasks, createLoader,
  evaluateDirs, formatEvalTable, evalSummaryRecord, worstImages, comparePerImage, computeCams,
  matchingMap, adaptiveThreshold, selectPairs, foregroundBackground, readMask, readImage,
  show, table, maskOverlay, camHeatmaps, regionImages, compareModels, errorView, imageGrid, paletteOf, ProgressBar,
  type EvalReport,
} from "pbip";

const report = await initBackend();
console.log(formatBackendReport(report).split("\n").slice(0, 2).join("\n"));
console.log(report.backend === "webgpu" ? `running on the GPU: ${report.device}` : `no GPU backend here: running on ${report.backend}`);
const run = await openRun();
const spec = run.dataset.spec;
const pal = paletteOf(spec);
const encoder = await createEncoderFor(run.config);
const { bank } = await ensureBank(run, encoder);
encoder.dispose();

// %% [markdown]
// ## Pseudo-masks for the test and train splits
//
// From the best checkpoint of each model of notebook 03 (PBIP, and the classification-only
// baseline). Masks are palette PNGs in the dataset's own palette, one per patch; a folder already
// written with the same checkpoint and CAM settings is reused, an interrupted one continues.

// %%
const models = ["pbip", "cls-only"] as const;
const pseudo: Record<string, Record<string, string>> = {};
for (const variant of models) {
  const { net, config, file } = await loadStage1(run, variant, bank);
  pseudo[variant] = {};
  for (const split of variant === "pbip" ? (["test", "train"] as const) : (["test"] as const)) {
    const n = run.dataset.split(split).samples.length;
    const bar = new ProgressBar(`${variant} ${split}`, n);
    const t0 = Date.now();
    const r = await ensurePseudoMasks(run, variant, split, net, config, file, (d) => bar.update(d));
    pseudo[variant]![split] = r.outDir;
    console.log(`${variant} / ${split}: ${r.written} written, ${r.skipped} reused (${((Date.now() - t0) / Math.max(1, r.written)).toFixed(0)} ms per new mask) -> ${r.outDir}`);
  }
  net.dispose();
}

// %% [markdown]
// ## Metrics on the test split
//
// From a confusion matrix over the four classes and background: per-class IoU and Dice, mIoU over
// the foreground classes, frequency-weighted IoU, boundary IoU (a band around mask edges) and pixel
// accuracy. Two conventions exist for ground-truth background pixels, and every report names its
// own: **count-bg** (the release and TPRO: predicting a class on background is a false positive)
// and **ignore-bg** (MLPS: background pixels are dropped).

// %%
const testGt = path.join(run.dataset.root, "test", "mask");
const reports: Record<string, Record<string, EvalReport>> = {};
for (const variant of models) {
  reports[variant] = {};
  for (const convention of ["count-bg", "ignore-bg"] as const) {
    reports[variant]![convention] = evaluateDirs({ pred: pseudo[variant]!.test!, gt: testGt, dataset: spec, convention, progress: false });
  }
}
console.log(formatEvalTable(reports.pbip!["count-bg"]!));
await show(table(models.flatMap((v) => (["count-bg", "ignore-bg"] as const).map((c) => evalSummaryRecord(reports[v]![c]!, `${v === "pbip" ? "PBIP" : "L_CLS only"} (${c})`))), { caption: "pseudo-masks of the test split (stage 1)" }));
const t = comparePerImage(reports.pbip!["count-bg"]!, reports["cls-only"]!["count-bg"]!, "miou");
console.log(`paired t-test over ${t.n} test patches, per-image mIoU: PBIP - L_CLS only = ${(100 * t.meanDiff).toFixed(2)} points, t = ${t.t.toFixed(2)}, p = ${t.p.toExponential(2)}`);
run.saveResult("stage1Test", Object.fromEntries(models.map((v) => [v, Object.fromEntries((["count-bg", "ignore-bg"] as const).map((c) => [c, evalSummaryRecord(reports[v]![c]!)]))])));

// %% [markdown]
// ## Overlays (the paper's Figure 5a)
//
// Ground truth and PBIP's pseudo-mask over the same test patches, in the dataset palette.

// %%
const testSplit = run.dataset.split("test");
const sampleIds = testSplit.samples.slice(0, 4);
const cells = [];
for (const s of sampleIds) {
  const img = await readImage(s.imagePath);
  const gt = readMask(s.maskPath!, spec);
  const pr = readMask(path.join(pseudo.pbip!.test!, s.id), spec);
  cells.push([await maskOverlay(img, gt, pal, { legend: "none" }), await maskOverlay(img, pr, pal, { legend: "none" })]);
}
await show(await imageGrid(cells, { colLabels: ["ground truth", "PBIP pseudo-mask"], rowLabels: sampleIds.map((s) => s.id), legend: pal.names.map((n, i) => ({ label: n, color: pal.colors[i]! })), title: "test patches" }));

// %% [markdown]
// ## CAM heatmaps and the foreground images $X_{FG}$ (Figure 5b)
//
// For one test patch: the fused CAM per class, then for each (patch, subclass) pair the
// foreground and background images of eq. 5 that the encoder sees during training.

// %%
const { net, config } = await loadStage1(run, "pbip", bank);
const loader = createLoader(testSplit, { batchSize: 4, shuffle: false, inputSize: config.data.inputSize, withMasks: true });
for await (const b of loader.epoch(0)) {
  const i = (await b.labels.array()).findIndex((l) => l.reduce((a, v) => a + v, 0) >= 2);
  const j = Math.max(0, i);
  const img = b.images.slice([j, 0, 0, 0], [1, -1, -1, -1]) as tf.Tensor4D;
  const lab = b.labels.slice([j, 0], [1, -1]) as tf.Tensor2D;
  const { cams, gate, probs } = computeCams(net, img, lab, config.cam);
  const labels = Array.from(await lab.data());
  const img3 = img.squeeze([0]);
  const cam3 = cams.squeeze([0]);
  await show(await camHeatmaps(img3, cam3, { classes: spec.codes, labels, scale: 2, title: `${b.ids[j]}: fused CAM per class` }));
  const out = net.forward(img, false);
  const pairs = selectPairs(await out.logits[out.logits.length - 1]!.data(), labels, 1, net.k);
  const size: [number, number] = [img.shape[1], img.shape[2]];
  const m = matchingMap(out.maps, size, config.match.mapSource);
  const bmask = adaptiveThreshold(m, config.match.delta, config.match.maxOver);
  const regions = foregroundBackground(img, m, bmask, pairs, config.match);
  await show(await regionImages(regions.fg, regions.bg, { captions: pairs.subclass.map((s, k) => `${spec.codes[pairs.cls[k]!]}.${s - net.k.slice(0, pairs.cls[k]!).reduce((a, v) => a + v, 0)}`), scale: 2, title: "X_FG and X_BG of each matched (patch, subclass) pair (eq. 5)" }));
  tf.dispose([img, lab, cams, gate, probs, img3, cam3, ...out.features, ...out.maps, ...out.logits, m, bmask, regions.fg, regions.bg, regions.fgWeight, regions.bgWeight, b.images, b.labels, b.masks]);
  break;
}
net.dispose();

// %% [markdown]
// ## PBIP vs the classification-only model on the same patches

// %%
const byId = (r: EvalReport) => new Map(r.perImage.map((s) => [s.id, s]));
const pA = byId(reports.pbip!["count-bg"]!), pB = byId(reports["cls-only"]!["count-bg"]!);
const diffIds = testSplit.samples.map((s) => s.id).sort((a, b) => (pA.get(b)!.miou - pB.get(b)!.miou) - (pA.get(a)!.miou - pB.get(a)!.miou)).slice(0, 4);
const items = [];
for (const id of diffIds) {
  const s = testSplit.samples.find((x) => x.id === id)!;
  items.push({ id, image: await readImage(s.imagePath), gt: readMask(s.maskPath!, spec), a: readMask(path.join(pseudo.pbip!.test!, id), spec), b: readMask(path.join(pseudo["cls-only"]!.test!, id), spec), scores: [pA.get(id)!.miou, pB.get(id)!.miou] as [number, number] });
}
await show(await compareModels(items, pal, { names: ["PBIP", "L_CLS only"], scoreName: "mIoU", title: "where PBIP gains most over the classification-only model" }));

// %% [markdown]
// ## The patches PBIP gets most wrong
//
// Per-image mIoU, worst first; in the error view, correct pixels are dimmed and wrong ones take the
// colour of the class that was wrongly predicted.

// %%
const worst = worstImages(reports.pbip!["count-bg"]!, "miou", 4);
await show(table(worst.map((w) => ({ patch: w.id, "mIoU (%)": +(100 * w.miou).toFixed(1), "pixel accuracy (%)": +(100 * w.pixelAccuracy).toFixed(1) })), { caption: "lowest per-image mIoU (count-bg)" }));
for (const w of worst.slice(0, 3)) {
  const s = testSplit.samples.find((x) => x.id === w.id)!;
  await show(await errorView(await readImage(s.imagePath), readMask(s.maskPath!, spec), readMask(path.join(pseudo.pbip!.test!, w.id), spec), pal, { title: `${w.id}: mIoU ${(100 * w.miou).toFixed(1)}%`, panels: true }));
}
console.log(`pseudo-mask folders: ${JSON.stringify(pseudo, null, 1)}`);
console.log(`files: ${fs.readdirSync(pseudo.pbip!.test!).length} test masks; tensors alive: ${tf.memory().numTensors}`);
