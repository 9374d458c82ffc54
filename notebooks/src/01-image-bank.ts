// %% [markdown]
// # 01 · The image bank: prototypes of every tissue class
//
// PBIP prompts its segmentation network with **images**, not text. Before any training, it builds
// an **image bank**: for each of the $N$ tissue classes, $K$ prototype feature vectors that together
// describe what the class looks like, including its different appearances (intra-class
// heterogeneity). Every later step (notebooks 02–05) compares patches with these prototypes.
//
// The recipe (paper, section 3; METHOD.md section 2):
//
// 1. **Select** training patches whose image-level label has exactly one class, and drop the mostly
//    white ones (glass).
// 2. **Encode** every kept patch $x$ with a frozen image encoder $\phi$ (the paper: MedCLIP, 512-d).
// 3. **Cluster** each class's features into $K$ subclasses with the cosine distance of **eq. 1**:
//    $$D(x_1, x_2) = 1 - \cos\big(\phi(x_1), \phi(x_2)\big) = 1 - \frac{\phi(x_1)\cdot\phi(x_2)}{\lVert\phi(x_1)\rVert\,\lVert\phi(x_2)\rVert}$$
// 4. **One prototype per subclass**: the paper averages the $N_K = 100$ patches nearest the cluster
//    centre; the authors' release takes the L2-normalised centroid of all members.
//
// The result is $P \in \mathbb{R}^{N \times K \times d}$, stored as a `[N·K, d]` float32 file plus a JSON
// record of everything that made it.
//
// **The encoder here is a stand-in.** pbip bundles no medical encoder: the default is the Keras
// MobileNetV2 shipped in the `nsfwjs` npm package (ImageNet weights, fine-tuned on a non-medical
// task), **not MedCLIP**. The method only needs *a* strong frozen encoder (the release's own
// "MedCLIP" is an ImageNet Swin-T under a random projection), so the notebook runs end to end, but its
// numbers are not the paper's. The cell marked **CHANGE THIS CELL** below switches to a real dataset
// and an encoder you exported to ONNX (`kernel-setup/ENCODERS.md`).

// %%
import * as tslab from "tslab";
import {
  tf, initBackend, formatBackendReport, openRun, createEncoder, createEncoderFor, describeEncoder,
  buildBankEvents, saveBank, prototypesTensor, withinAcrossCosine, spreadByK, pca, l2NormalizeRows,
  nearestToCentres, assignSubclasses, zeroShotEvents, subclassLabels, readImage, newDisplayHandle,
  show, table, imageGrid, plotlyFigure, plotlyHeatmap, scatterChart, lineChart, SERIES_COLORS,
  type BankFeatures, type ImageBank, type ImageEncoder, type ZeroShotReport, type ScatterSeries,
} from "pbip";

const report = await initBackend();
console.log(formatBackendReport(report).split("\n").slice(0, 2).join("\n"));
console.log(`tslab ${tslab.versions.tslab}`);

// %% [markdown]
// ## Data and encoder
//
// `openRun()` opens the run folder shared by notebooks 01–05 (`PBIP_RUN_DIR`, else
// `runs/notebooks-dev`), its configuration (the `notebook` profile: the release's bank settings, $K = 3$,
// `centroid` rule, seed 42) and its dataset. By default that is the embedded **synthetic** tissue
// set (generated on first use; `PBIP_QUICK=1` uses a smaller one). The bank is written to
// `<run>/bank`, where notebooks 02–05 find it.
//
// To run on real data, edit the cell marked **CHANGE THIS CELL**: a dataset folder in its published
// layout (LUAD-HistoSeg: `train/*-[1 0 0 1].png`, `val|test/{img,mask}/`) and, optionally, an encoder
// exported to ONNX. Notebooks 02–05 read the same choice from the environment: set `PBIP_DATASET`,
// `PBIP_DATA` and `PBIP_ENCODER` before starting Jupyter (or `npm run notebooks`).

// %%
// ======================== CHANGE THIS CELL to use your own data and encoder ========================
// Embedded run (default): leave both undefined -> the synthetic set and the bundled MobileNetV2 (a stand-in).
// Real run: a dataset folder in its published layout, and an encoder exported to ONNX with its sidecar
// JSON (see kernel-setup/ENCODERS.md). For example:
//   const REAL_DATA = { dataset: "luad-histoseg", data: "/datasets/LUAD-HistoSeg" };
//   const ENCODER = "onnx:/weights/medclip-release.onnx";
const REAL_DATA: { dataset: string; data: string } | undefined = undefined;
const ENCODER: string | undefined = undefined;
// ====================================================================================================
const run = await openRun(REAL_DATA ?? {});
const cfg = run.config;
const spec = run.dataset.spec;
let encoder: ImageEncoder;
if (ENCODER) encoder = await createEncoder(ENCODER);
else encoder = await createEncoderFor(cfg);
console.log(`run folder: ${run.root}`);
console.log(`dataset: ${spec.name} at ${run.dataset.root}${run.synthetic ? " (synthetic stand-in for histopathology)" : ""}${run.quick ? "  [PBIP_QUICK: reduced size]" : ""}`);
console.log(`classes: ${spec.codes.map((c, i) => `${c} = ${spec.classes[i]}`).join(", ")}`);
console.log(describeEncoder(encoder));

// %% [markdown]
// ## Steps 1 and 2: select and encode
//
// **Single-label patches.** Training patches only carry image-level labels (e.g. `[1 0 0 1]`: tumour
// epithelium and stroma somewhere in the patch). Only patches with exactly one class are certain to
// show that class, so only they enter the bank.
//
// **White filter.** Patches that are mostly glass say nothing about tissue. The paper drops them
// "automatically" without saying how (the release does not drop them); pbip uses the test of the
// peer methods TPRO and MLPS: a pixel is white when its grey level
// $0.299R + 0.587G + 0.114B$ (ITU-R BT.601, 0–255) exceeds 200, and a patch is dropped when more than
// half its pixels are white (`bank.whiteGrey`, `bank.whiteMaxFraction`).
//
// **Encoding.** Each kept patch goes through $\phi$ in batches; its pooled feature vector (here
// $d = 1280$) is kept. Encoded features are cached on disk, so a rerun skips this step.

// %%
const progress = newDisplayHandle();
let bank!: ImageBank;
let features!: BankFeatures;
for await (const ev of buildBankEvents({ split: run.dataset.split("train"), encoder: encoder, config: cfg.bank, cache: true })) {
  if (ev.type === "selected") progress.update({ "text/plain": `${ev.candidates} single-label training patches to read` });
  else if (ev.type === "cache" && ev.hit) progress.update({ "text/plain": "encoded features found in the cache" });
  else if (ev.type === "encode") progress.update({ "text/plain": `encoded ${ev.done}/${ev.total} patches (${ev.white} dropped as white) in ${ev.seconds.toFixed(0)} s` });
  else if (ev.type === "cluster") console.log(`${ev.className}: K = ${ev.k}, subclass sizes ${ev.sizes.join(", ")}${ev.iterations !== undefined ? ` (${ev.iterations} k-means iterations)` : ""}`);
  else if (ev.type === "done") {
    bank = ev.bank;
    features = ev.features;
  }
}
await saveBank(run.paths.bank, bank);
console.log(`bank saved to ${run.paths.bank}`);

const selectionRows = bank.meta.selection.steps.map((s) => ({
  step: s.step,
  ...Object.fromEntries(spec.codes.map((c, i) => [c, s.perClass[i]])),
  total: s.total,
  "what the step keeps": s.description,
}));
await show(table(selectionRows, { caption: "patches kept by each selection step, per class" }));

// %% [markdown]
// ## Steps 3 and 4: cluster each class, one prototype per subclass
//
// Within each class, the features are **L2-normalised** and clustered into $K$ groups with the cosine
// distance of eq. 1 (**spherical k-means**): each patch joins the centre it is most similar to, each
// centre moves to the mean direction of its members, until nothing changes. Seeded k-means++ picks
// the starting centres, so the same seed gives the same bank, byte for byte.
//
// The prototype of a subclass depends on `bank.rule`:
//
// | rule | prototype | used by |
// |---|---|---|
// | `centroid` | L2-normalised mean of all members | the authors' release (this run) |
// | `nearest` | mean of the $N_K$ members nearest the centre | the paper ($N_K = 100$) |
// | `random` | $K$ random sub-banks of $N_K$ patches, no clustering | the paper's Figure 4 ablation |
//
// Each row below is one prototype: its size, how tightly its members sit around it (mean cosine
// distance to the centre), and its norm.

// %%
const labels = subclassLabels(bank);
await show(table(bank.meta.subclasses.map((s, r) => ({
  prototype: labels[r],
  class: spec.classes[s.classIndex],
  patches: s.size,
  "averaged": s.used,
  "mean distance to centre": s.meanDistance,
  "norm": s.prototypeNorm,
})), { caption: `bank: rule ${bank.meta.rule}, K per class [${bank.meta.k}], seed ${bank.meta.seed}` }));
const P = prototypesTensor(bank);
console.log(`P as stored: [${P.shape}] = [N·K, d]; per class and subclass it is N x K x d = ${bank.meta.classes.length} x [${bank.meta.k}] x ${bank.meta.dim}`);
P.dispose();

// %% [markdown]
// ## What each subclass looks like
//
// The patches nearest each subclass centre, one row per subclass. The clustering splits a class
// by whatever its encoder features vary with most. That may be the tissue's appearance (the
// synthetic set paints each class in two styles, e.g. solid and acinar tumour), but it may also be
// something else: with the stand-in encoder, some subclasses gather the patches that show much
// glass. Rows of different classes may look alike: that is the inter-class homogeneity the paper
// fights with its matching losses.

// %%
const near = nearestToCentres(bank, features, 6);
const cells = await Promise.all(near.map((s) => Promise.all(s.imagePaths.map((p) => readImage(p)))));
const grid = await imageGrid(cells, {
  rowLabels: near.map((s) => `${s.label}\n${s.size} patch${s.size === 1 ? "" : "es"}`),
  cellSize: { width: 88, height: 88 },
  title: "patches nearest each subclass centre (one row per subclass)",
});
await show(grid);

// %% [markdown]
// ## All features in two dimensions
//
// A principal component analysis (PCA) of the L2-normalised features, the geometry the clustering
// works in, projected onto its two main directions. Colour = class, marker = subclass; the stars
// are the prototypes. Hover a point for its patch name. Two dimensions keep only part of the
// variance (see the axis titles), so classes that overlap here may still be separable. Where the
// notebook is not trusted (or on GitHub) a static picture stands in: classes, and the prototypes
// as black dots, without the subclass markers and hover.

// %%
const unitFeatures = l2NormalizeRows(features.features);
const proj = pca(unitFeatures, 2, { seed: 0 });
const sub = assignSubclasses(bank, features);
const symbols = ["circle", "square", "diamond", "triangle-up", "cross", "x"];
const traces: Record<string, unknown>[] = [];
spec.codes.forEach((code, c) => {
  for (let s = 0; s < bank.meta.k[c]!; s++) {
    const idx = [...features.classIndex.keys()].filter((i) => features.classIndex[i] === c && sub[i] === s);
    traces.push({
      type: "scatter", mode: "markers", name: `${code}.${s}`, legendgroup: code,
      x: idx.map((i) => proj.projected[i]![0]), y: idx.map((i) => proj.projected[i]![1]), text: idx.map((i) => features.ids[i]),
      marker: { color: SERIES_COLORS[c % SERIES_COLORS.length], symbol: symbols[s % symbols.length], size: 7, opacity: 0.7 },
    });
  }
});
const d = bank.meta.dim;
const protoXY = labels.map((_, r) => proj.components.map((comp) => {
  let v = 0;
  for (let j = 0; j < d; j++) v += (bank.prototypes[r * d + j]! - proj.mean[j]!) * comp[j]!;
  return v;
}));
traces.push({
  type: "scatter", mode: "markers+text", name: "prototypes", x: protoXY.map((p) => p[0]), y: protoXY.map((p) => p[1]),
  text: labels, textposition: "top center", marker: { symbol: "star", size: 16, color: "#111", line: { color: "#fff", width: 1 } },
});
const pctX = (proj.explained[0]! * 100).toFixed(1);
const pctY = (proj.explained[1]! * 100).toFixed(1);
const preview = scatterChart(spec.codes.map((code, c): ScatterSeries => {
  const idx = [...features.classIndex.keys()].filter((i) => features.classIndex[i] === c);
  return { name: code, x: idx.map((i) => proj.projected[i]![0]!), y: idx.map((i) => proj.projected[i]![1]!) };
}).concat([{ name: "prototypes", x: protoXY.map((p) => p[0]!), y: protoXY.map((p) => p[1]!), color: "#111", size: 7 }]), { title: "PCA of the bank features by class, with the prototypes", xLabel: `PC1 (${pctX}%)`, yLabel: `PC2 (${pctY}%)`, width: 640, height: 460 });
await show(plotlyFigure(traces, {
  title: { text: "PCA of the bank features (colour: class, marker: subclass, star: prototype)" },
  xaxis: { title: { text: `PC1 (${pctX}% of variance)` } }, yaxis: { title: { text: `PC2 (${pctY}% of variance)` } },
  width: 760, height: 540,
}, {}, preview));

// %% [markdown]
// ## How similar are the prototypes?
//
// Cosine similarity between every pair of prototypes. Good prototypes are more alike within a class
// (the blocks on the diagonal) than across classes. A subclass that gathers patches by something
// other than tissue (the glass-heavy ones above) can sit closer to another class's subclass than to
// its siblings; check [1] at the end compares the averages. For reference, the release's own bank (MedCLIP
// stand-in on BCSS-WSSS) has within-class cosines of 0.80–0.91 and across-class cosines of 0.44–0.90:
// the classes overlap, which is why PBIP needs its contrastive matching losses.

// %%
const wa = withinAcrossCosine(bank);
await show(plotlyHeatmap(wa.matrix, { rowLabels: wa.labels, colLabels: wa.labels, title: "prototype cosine similarity", colorbarLabel: "cosine", digits: 2 }));
console.log(`mean cosine between prototypes: within a class ${wa.within.toFixed(3)} (${wa.withinPairs} pairs), across classes ${wa.across.toFixed(3)} (${wa.acrossPairs} pairs)`);

// %% [markdown]
// ## How many subclasses? The effect of K
//
// For $K = 1 \dots 5$, each class is clustered again (from the same features: nothing is re-encoded)
// and the **within-class spread** is measured: the mean cosine distance of a patch to its own
// subclass centre. More subclasses always fit tighter; the question is where the gain flattens. The
// paper's Table 4 finds $K$ between 2 and 4 best for segmentation; too large a $K$ splits classes into
// subclasses that look like other classes.

// %%
const ks = [1, 2, 3, 4, 5];
const spread = spreadByK(features, ks, { seed: cfg.bank.seed });
await show(lineChart([
  { name: "all classes", x: ks, y: spread.map((s) => s.spread), markers: true },
  ...spec.codes.map((code, c) => ({ name: code, x: ks, y: spread.map((s) => s.perClass[c]!), dashed: true, markers: true })),
], { title: "within-class spread vs K", xLabel: "K (subclasses per class)", yLabel: "mean cosine distance to centre", yMin: 0, width: 640, height: 380 }));
await show(table(spread.map((s) => ({ K: s.k, "all classes": s.spread, ...Object.fromEntries(spec.codes.map((c, i) => [c, s.perClass[i]])) })), { caption: "within-class spread (mean cosine distance to the subclass centre)" }));

// %% [markdown]
// ## Image-prompt zero-shot classification (the paper's Table 6)
//
// Without any training, a patch can be classified by its **most similar prototype** (cosine of encoder
// features). The paper uses this to compare encoders with text prompts ("a photo of {class}") and
// image prompts; image prompts win by far in histopathology.
//
// Protocol (the paper does not give one): validation and test patches whose ground-truth mask is
// dominated by one class (foreground at least 50% of the patch, one class at least 90% of the
// foreground) are classified; the bank never saw them. Scores are per-class precision, recall and
// F1, against chance: guessing uniformly ($1/N$) or always answering the most frequent class.

// %%
const splits = (["val", "test"] as const).filter((s) => run.dataset.splits.includes(s)).map((s) => run.dataset.split(s));
const zsProgress = newDisplayHandle();
let zs!: ZeroShotReport;
for await (const ev of zeroShotEvents(bank, splits, encoder)) {
  if (ev.type === "selected") console.log(`${ev.patches} single-class patches (${spec.codes.map((c, i) => `${c} ${ev.perClass[i]}`).join(", ")}); ${ev.skipped} mixed patches skipped`);
  else if (ev.type === "encode") zsProgress.update({ "text/plain": `encoded ${ev.done}/${ev.total}` });
  else if (ev.type === "done") {
    zs = ev.report;
    zsProgress.update({ "text/plain": `${ev.report.n} patches of ${ev.splits.join(" + ")} classified` });
  }
}
await show(table(zs.table, { caption: `zero-shot classification by the nearest prototype (${zs.n} patches)` }));
await show(plotlyHeatmap(zs.confusion, { rowLabels: spec.codes, colLabels: spec.codes, title: "zero-shot confusion", yLabel: "true class", xLabel: "predicted class", colorbarLabel: "patches", digits: 0 }));

// %% [markdown]
// ## The two checked figures
//
// 1. Prototypes of the same class are more similar to each other than to prototypes of other
//    classes, on average.
// 2. Image-prompt zero-shot classification beats chance by a clear margin.
//
// Both are recorded in the run's `results.json` (section `bank`).

// %%
const check1 = wa.within > wa.across;
const chance = Math.max(zs.chanceAccuracy, zs.majorityAccuracy);
console.log(`[1] prototype cosine: within-class ${wa.within.toFixed(3)} vs across-class ${wa.across.toFixed(3)}: ${check1 ? "within > across" : "within is NOT above across"}`);
console.log(`[2] zero-shot (${zs.n} patches): accuracy ${zs.accuracy.toFixed(3)} vs chance ${zs.chanceAccuracy.toFixed(3)} (most frequent class ${zs.majorityAccuracy.toFixed(3)}); macro F1 ${zs.macroF1.toFixed(3)} vs chance ${zs.chanceMacroF1.toFixed(3)}: ${zs.accuracy > chance ? `+${((zs.accuracy - chance) * 100).toFixed(1)} points above the better chance level` : "NOT above chance"}`);
console.log(`encoder: ${encoder.identity.name}${encoder.isStandIn && !/stand-in/.test(encoder.identity.name) ? " (a stand-in)" : ""}`);
run.saveResult("bank", {
  encoder: encoder.identity.name,
  standIn: encoder.isStandIn,
  rule: bank.meta.rule,
  k: bank.meta.k,
  prototypeCosine: { within: wa.within, across: wa.across },
  zeroShot: { n: zs.n, accuracy: zs.accuracy, macroF1: zs.macroF1, chanceAccuracy: zs.chanceAccuracy, majorityAccuracy: zs.majorityAccuracy, chanceMacroF1: zs.chanceMacroF1 },
});
encoder.dispose();
console.log(`tensors alive: ${tf.memory().numTensors}`);
