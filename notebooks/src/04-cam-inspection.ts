// %% [markdown]
// # 04 · CAMs, pseudo-masks and what they get wrong
//
// A trained ClassNet (notebook 03) becomes useful through its class activation maps. For each used
// stage $i$ and class $n$ (METHOD.md section 5):
//
// 1. merge the class's $K$ subclass maps with the inference rule $\sum_k \mathrm{softmax}(m)_k\, m_k$;
// 2. ReLU, then min–max normalise each class map over the image;
// 3. multiply by the image-level label (a class not in the label gets a zero map);
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
  matchingMap, adaptiveThreshold, selectPairs, foregroundBackground, readMask, readImage, createClassNet, mergeSubclasses,
  show, table, maskOverlay, camHeatmaps, regionImages, compareModels, errorView, imageGrid, paletteOf, newDisplayHandle,
  fetchRealSamples, readVisiumSpots, visiumSpotAgreement, glassCheck, glassAdvice, GlassStats, whiteRuleMask, RealSamplesError,
  type EvalReport, type RgbImage,
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
    const progress = newDisplayHandle();
    const t0 = Date.now();
    const r = await ensurePseudoMasks(run, variant, split, net, config, file, (d) => {
      if (d % 10 === 0 || d === n) progress.update({ "text/plain": `${variant} / ${split}: ${d}/${n} patches, ${((Date.now() - t0) / 1000).toFixed(0)} s` });
    });
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
const summary = models.flatMap((v) => (["count-bg", "ignore-bg"] as const).map((c) => evalSummaryRecord(reports[v]![c]!, `${v === "pbip" ? "PBIP" : "L_CLS only"} (${c})`)));
await show(table(summary, { caption: "pseudo-masks of the test split (stage 1), %", percent: Object.keys(summary[0]!).filter((k) => !["run", "convention", "images"].includes(k)) }));
const t = comparePerImage(reports.pbip!["count-bg"]!, reports["cls-only"]!["count-bg"]!, "miou");
console.log(`paired t-test over ${t.n} test patches, per-image mIoU: PBIP - L_CLS only = ${(100 * t.meanDiff).toFixed(2)} points, t = ${t.t.toFixed(2)}, p = ${t.p.toExponential(2)}`);
run.saveResult("stage1Test", Object.fromEntries(models.map((v) => [v, Object.fromEntries((["count-bg", "ignore-bg"] as const).map((c) => [c, evalSummaryRecord(reports[v]![c]!)]))])));

// %% [markdown]
// ## What the white rule marks as background
//
// ClassNet predicts no background: in these pseudo-masks it comes only from the white rule (grey
// level above `cam.background.whiteGrey`, white blobs under `minBlob` pixels ignored). The
// confusion matrix's background column is therefore the rule's output, set against the ground
// truth below. Pixels of tissue it marks are lost to their class however good the CAMs are:
// check this table on your data before keeping the rule or choosing its grey level.

// %%
if (run.config.cam.background.mode === "white") {
  const r = reports.pbip!["count-bg"]!;
  const label = (i: number) => (i < r.classes.length ? r.classes[i]! : i === r.backgroundId ? "background (glass)" : `id ${i}`);
  const marked = r.confusion.map((row) => row[r.backgroundId] ?? 0);
  const totalMarked = marked.reduce((a, b) => a + b, 0);
  await show(table(r.confusion.map((row, i) => ({
    "ground truth": label(i),
    "pixels marked background": marked[i]!,
    "share of the marked pixels (%)": (100 * marked[i]!) / Math.max(1, totalMarked),
    "share of this class's pixels (%)": (100 * marked[i]!) / Math.max(1, row.reduce((a, b) => a + b, 0)),
  })), { caption: `the white rule (grey > ${run.config.cam.background.whiteGrey}) on the test split, against the ground truth`, digits: 3 }));
  const glass = marked[r.backgroundId] ?? 0;
  console.log(`${((100 * glass) / Math.max(1, totalMarked)).toFixed(1)}% of the pixels the rule marks are glass in the ground truth; the rest is tissue taken from its class.`);
} else {
  console.log(`cam.background.mode is "${run.config.cam.background.mode}": the background column is not the white rule alone here`);
}

// %% [markdown]
// ## The same rule on a real H&E scan
//
// The level 200 suits LUAD-HistoSeg, whose glass is near white. Glass is only as bright as the
// scanner's white balance makes it. Here the rule runs on a real H&E section: a 10x Visium
// low-res scan of a mouse brain from Seurat's test data, fetched by `npx pbip data samples`.
// Its glass is grey, around level 187. Space Ranger, 10x Genomics' pipeline, has called each of
// the 4,992 capture spots tissue or glass with its own tissue detection. That is a second
// algorithm to compare the rule with, not ground truth, but it was not tuned to this rule.
//
// The second column uses the level that `glassCheck` suggests, because the bright, colourless
// pixels (the glass candidates) lie below 200. Otsu's threshold of the grey levels finds the
// bright pixels; the suggested level is the one that best separates the candidates from the
// coloured tissue pixels. `pbip data verify` runs the same check on a whole dataset and prints
// the setting to use. Spots are drawn green where
// the rule agrees with Space Ranger and red where it does not; the pixels the rule calls glass
// are tinted blue. No pixel labels exist for this scan, so it measures the glass rule only, not
// segmentation.

// %%
try {
  const samples = await fetchRealSamples();
  const { spots, radius } = readVisiumSpots(samples);
  const he = await readImage(samples.paths["visium-he"]);
  const check = glassCheck(new GlassStats().add(he.data), 200);
  const levels = [200, check.suggestedWhiteGrey ?? check.otsu];
  const cells: RgbImage[] = [];
  const rows: Record<string, string | number>[] = [];
  for (const level of levels) {
    const glass = whiteRuleMask(he, level, run.config.cam.background.minBlob);
    const a = visiumSpotAgreement(glass, he.width, he.height, spots, radius);
    const out = Uint8Array.from(he.data);
    for (let p = 0; p < glass.length; p++) if (glass[p]) out.set([out[3 * p]! >> 1, out[3 * p + 1]! >> 1, 128 + (out[3 * p + 2]! >> 1)], 3 * p);
    spots.forEach((s, i) => {
      const x = Math.round(s.x);
      const y = Math.round(s.y);
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) out.set(a.agrees[i] ? [0, 200, 0] : [230, 0, 0], 3 * ((y + dy) * he.width + x + dx));
    });
    cells.push({ data: out, width: he.width, height: he.height });
    rows.push({ "white level": level, "spots agreeing (%)": 100 * a.agreement, "tissue spots called glass": a.tissueAsGlass, "glass spots called tissue": a.glassAsTissue });
  }
  await show(await imageGrid([cells], { colLabels: levels.map((l, i) => `grey > ${l}${i === 1 ? " (suggested)" : " (default)"}`), title: "white rule vs Space Ranger's tissue calls (green: agree, red: disagree)" }));
  await show(table(rows, { caption: `real H&E (Visium, mouse brain): the white rule, blobs under ${run.config.cam.background.minBlob} px kept as tissue`, digits: 3 }));
  console.log(glassAdvice(check, 200) ?? "the white level 200 finds this scan's glass");
} catch (e) {
  if (!(e instanceof RealSamplesError)) throw e;
  console.log(`real samples not available (${e.message.split("\n")[0]}); \`npx pbip data samples\` fetches them`);
}

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
// foreground and background images of eq. 5. In the method's `image` region mode these are the
// images the encoder sees during training. In this project's `feature` mode (the `notebook`
// profile's) the encoder never sees them: only their weights $b\cdot M$ and $(1-b)(1-M)$ are used,
// averaged over the cells of the encoder's dense map of the whole patch (3×3 for the stand-in at
// 112 px). They are drawn here in both cases, to show what each pair's foreground and background
// are.

// %%
const { net, config } = await loadStage1(run, "pbip", bank);
let patch!: { img: tf.Tensor4D; lab: tf.Tensor2D; id: string };
const loader = createLoader(testSplit, { batchSize: 4, shuffle: false, inputSize: config.data.inputSize, withMasks: true });
for await (const b of loader.epoch(0)) {
  const i = (await b.labels.array()).findIndex((l) => l.reduce((a, v) => a + v, 0) >= 2);
  const j = Math.max(0, i);
  const img = tf.keep(b.images.slice([j, 0, 0, 0], [1, -1, -1, -1]) as tf.Tensor4D);
  const lab = tf.keep(b.labels.slice([j, 0], [1, -1]) as tf.Tensor2D);
  patch = { img, lab, id: b.ids[j]! };
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
  console.log(`region mode of this run: ${config.match.regionMode}${config.match.regionMode === "feature" ? " (the encoder pools its dense map with these weights; it does not see the images)" : " (these images go through the encoder)"}`);
  tf.dispose([cams, gate, probs, img3, cam3, ...out.features, ...out.maps, ...out.logits, m, bmask, regions.fg, regions.bg, regions.fgWeight, regions.bgWeight, b.images, b.labels, b.masks]);
  break;
}

// %% [markdown]
// ## Before and after training
//
// The same patch's class maps (deepest stage, subclasses merged by the inference rule) from a
// freshly built ClassNet (the backbone's pretrained weights, random projection heads: the network
// notebook 02 took apart) and from the trained one. Training on the image-level labels, with the
// matching losses, is what turns them into the CAMs above.

// %%
const untrained = await createClassNet(config, bank, spec);
const beforeAfter = [];
for (const [name, n] of [["untrained", untrained], ["trained (notebook 03, PBIP)", net]] as const) {
  const o = n.forward(patch.img, false);
  const cm = tf.tidy(() => mergeSubclasses(o.maps[o.maps.length - 1]!, n.k, "softmax").squeeze([0]) as tf.Tensor3D);
  const im = patch.img.squeeze([0]) as tf.Tensor3D;
  beforeAfter.push([await camHeatmaps(im, cm, { classes: spec.codes, range: "per-class", labels: Array.from(await patch.lab.data()), scale: 2, title: name })]);
  tf.dispose([cm, im, ...o.features, ...o.maps, ...o.logits]);
}
await show(await imageGrid(beforeAfter, { title: `${patch.id}: class maps of the deepest stage, before and after training` }));
untrained.dispose();
net.dispose();
tf.dispose([patch.img, patch.lab]);

// %% [markdown]
// ## PBIP vs the classification-only model on the same patches
//
// Both ends of the per-patch difference: the patches where PBIP's pseudo-mask beats the
// classification-only model's most, and those where it loses most. Per-image mIoU averages only
// the classes present in the patch or its prediction, so a small wrong speck of a class the patch
// does not have adds a class at IoU 0 and can move a patch's score by tens of points.
//
// Such specks of a class outside the label are ties, not predictions: where the labelled classes'
// fused CAM is exactly 0 (its minimum after the min-max step, one cell of the coarse map), every
// class scores 0 and the argmax takes the first class (TE), as PyTorch's argmax does in the
// release. Averaging over test-time augmentation (off in the `notebook` profile) would need that
// minimum at the same pixel in every variant. The cell below counts them.

// %%
const byId = (r: EvalReport) => new Map(r.perImage.map((s) => [s.id, s]));
const pA = byId(reports.pbip!["count-bg"]!), pB = byId(reports["cls-only"]!["count-bg"]!);
const gainOf = (id: string) => pA.get(id)!.miou - pB.get(id)!.miou;
const ranked = testSplit.samples.map((s) => s.id).filter((id) => Number.isFinite(gainOf(id))).sort((a, b) => gainOf(b) - gainOf(a));
const better = ranked.filter((id) => gainOf(id) > 0).length, worse = ranked.filter((id) => gainOf(id) < 0).length;
console.log(`PBIP's pseudo-mask scores higher on ${better} of ${ranked.length} test patches and lower on ${worse}; on average PBIP - L_CLS only = ${(100 * t.meanDiff).toFixed(2)} points per patch (p = ${t.p.toExponential(1)}, the t-test above).`);
for (const variant of models) {
  // Pixels of a foreground class the patch's label does not have: argmax ties at a zero CAM.
  let pixels = 0;
  let patches = 0;
  for (const s of testSplit.samples) {
    const gt = readMask(s.maskPath!, spec), pr = readMask(path.join(pseudo[variant]!.test!, s.id), spec);
    const present = new Set(Array.from(gt.ids).filter((x) => x < spec.codes.length));
    const n = Array.from(pr.ids).filter((x) => x < spec.codes.length && !present.has(x)).length;
    pixels += n;
    if (n) patches++;
  }
  console.log(`${variant}: ${pixels} pixels of a class outside the patch's label (ties at a zero CAM), in ${patches} of ${testSplit.samples.length} patches`);
}
for (const [ids, title] of [[ranked.slice(0, 4), "where PBIP gains most over the classification-only model"], [ranked.slice(-4).reverse(), "where PBIP loses most against the classification-only model"]] as const) {
  const items = [];
  for (const id of ids) {
    const s = testSplit.samples.find((x) => x.id === id)!;
    items.push({ id, image: await readImage(s.imagePath), gt: readMask(s.maskPath!, spec), a: readMask(path.join(pseudo.pbip!.test!, id), spec), b: readMask(path.join(pseudo["cls-only"]!.test!, id), spec), scores: [pA.get(id)!.miou, pB.get(id)!.miou] as [number, number] });
  }
  await show(await compareModels(items, pal, { names: ["PBIP", "L_CLS only"], scoreName: "mIoU", title }));
}

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
