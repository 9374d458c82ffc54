// %% [markdown]
// # 02 · Similarity masks: how ClassNet looks at a patch through the prototypes
//
// Notebook 01 built the **image bank**: for each class $n$ and subclass $k$ a prototype
// $P(n,k)\in\mathbb{R}^d$ in the frozen encoder's feature space. ClassNet turns a patch into one
// map per subclass that says *where the patch looks like that prototype*. This notebook takes the
// network apart on one patch.
//
// For each used stage $i$ of the backbone with features $F_i\in\mathbb{R}^{h_i\times w_i\times C_i}$:
//
// 1. **Prototype projection.** A small MLP per stage maps the bank into the stage's feature space:
//    $P_i(n,k) = W_2\,\mathrm{ReLU}(W_1 P(n,k) + b_1) + b_2 \in \mathbb{R}^{C_i}$.
// 2. **Similarity maps (eq. 2).** One channel per subclass:
//
//    $$M_i(n,k)[x,y] = s_i \cdot \frac{F_i[x,y]}{\lVert F_i[x,y]\rVert}\cdot P_i(n,k)$$
//
//    with a learnable scale $s_i$ (initialised to $1/0.07$). This is the authors' release. The
//    paper's eq. 2 is a true cosine (the prototype normalised too) averaged over the class's $K$
//    subclasses, one map per class: $M_i(n) = \frac1K\sum_k \cos(F_i[x,y], P_i(n,k))$.
//    `model.similarity = "paper"` computes the cosine and keeps one channel per subclass, whose
//    mean over $k$ is that map; the pooled class logit is the same either way (pooling is linear,
//    and training merges subclass logits by their mean).
// 3. **Image-level logits.** Global average pooling of each map gives a subclass logit; the $K$
//    subclass logits of a class are merged (mean while training, $\sum \mathrm{softmax}(s)\,s$ at
//    inference) into one class logit, trained with the image-level label.
// 4. **The map used for matching (eq. 3).** The paper sums the stage maps upsampled to the input
//    size, $M = \sum_i \mathrm{up}(M_i)$; the release uses the deepest stage only.
//
// The encoder here is the bundled **MobileNetV2 from nsfwjs: a stand-in, not MedCLIP** (see
// notebook 01), and the backbone is the same pretrained MobileNetV2, trainable, cut into four
// stages at strides 4, 8, 16, 16.

// %%
import {
  tf, initBackend, formatBackendReport, openRun, createEncoderFor, ensureBank, createClassNet, createLoader,
  similarityMaps, mergeSubclasses, matchingMap, describeEncoder,
  show, camHeatmaps, maskOverlay, paletteOf, table, heatmapChart, subclassLabels,
} from "pbip";

const report = await initBackend();
console.log(formatBackendReport(report).split("\n").slice(0, 2).join("\n"));
const run = await openRun();
const cfg = run.config;
const spec = run.dataset.spec;
console.log(`run folder: ${run.root}\ndataset: ${spec.name} (${run.dataset.root})${run.quick ? "  [PBIP_QUICK: reduced size]" : ""}`);

// %% [markdown]
// ## The bank and an untrained ClassNet
//
// The bank comes from notebook 01 (it is rebuilt here if it is missing or was built with another
// configuration). ClassNet is built from the profile: backbone, which stages get a head, and the
// similarity form.

// %%
const encoder = await createEncoderFor(cfg);
console.log(describeEncoder(encoder));
const { bank, reused } = await ensureBank(run, encoder);
console.log(`bank: ${bank.meta.k.reduce((a, b) => a + b, 0)} prototypes of dimension ${bank.meta.dim} (K per class [${bank.meta.k}], rule ${bank.meta.rule})${reused ? ", reused from notebook 01" : ", built now"}`);
const net = await createClassNet(cfg, bank, spec);
console.log(net.summaryText(cfg.data.inputSize));

// %% [markdown]
// ## One patch
//
// A validation patch with at least two classes, at the profile's input size
// (`data.inputSize` = the side the network sees), with its ground-truth mask.

// %%
const valLoader = createLoader(run.dataset.split("val"), { batchSize: 32, shuffle: false, inputSize: cfg.data.inputSize, withMasks: true });
let image!: tf.Tensor4D, label!: tf.Tensor2D, mask!: tf.Tensor3D, patchId = "";
for await (const b of valLoader.epoch(0)) {
  const labels = await b.labels.array();
  const i = Math.max(0, labels.findIndex((l) => l.reduce((a, v) => a + v, 0) >= 2));
  image = tf.keep(b.images.slice([i, 0, 0, 0], [1, -1, -1, -1]));
  label = tf.keep(b.labels.slice([i, 0], [1, -1]));
  mask = tf.keep(b.masks!.slice([i, 0, 0], [1, -1, -1]));
  patchId = b.ids[i]!;
  tf.dispose([b.images, b.labels, b.masks]);
  break;
}
const labelVec = Array.from(await label.data());
console.log(`${patchId}: label [${labelVec}] = ${spec.codes.filter((_, c) => labelVec[c]).join(" + ")}`);
await show(await maskOverlay(image, mask, paletteOf(spec), { title: `${patchId}: ground truth`, scale: Math.max(1, Math.round(224 / cfg.data.inputSize)) }));

// %% [markdown]
// ## Stage features and projected prototypes
//
// `forward` returns, per used stage, the features $F_i$, the maps $M_i$ and the pooled subclass
// logits. The projected prototypes $P_i$ have one row per subclass and $C_i$ columns.

// %%
const out = net.forward(image, false);
const rows = out.stages.map((s, i) => {
  const p = net.projectedPrototypes(s);
  const r = { stage: s, "F_i": `[${out.features[i]!.shape}]`, "P_i": `[${p.shape}]`, "M_i": `[${out.maps[i]!.shape}]`, "s_i": net.scale(s)?.dataSync()[0]?.toFixed(3) ?? "-" };
  p.dispose();
  return r;
});
await show(table(rows, { caption: "shapes for one patch" }));

// %% [markdown]
// ## Eq. 2 by hand on a 2×2 feature map
//
// A feature map with 2×2 pixels and 3 channels, and two projected prototypes. Each map value is
// the pixel feature divided by its length, dotted with the prototype, times the scale. Computed
// here with plain arithmetic, then by the library's `similarityMaps`.

// %%
const F = [[[1, 0, 0], [0, 2, 0]], [[1, 1, 0], [3, 0, 4]]];      // [2][2][3]
const P = [[1, 2, 3], [0, -1, 1]];                                 // [S=2][C=3]
const s = 2;
const byHand: number[] = [];
for (const row of F) for (const f of row) {
  const norm = Math.hypot(...f);
  for (const p of P) byHand.push(s * (f[0]! * p[0]! + f[1]! * p[1]! + f[2]! * p[2]!) / norm);
}
const lib = tf.tidy(() => similarityMaps(tf.tensor4d(F.flat(2), [1, 2, 2, 3]), tf.tensor2d(P), s, "release"));
const libVals = Array.from(await lib.data());
console.log("by hand: ", byHand.map((v) => v.toFixed(4)).join("  "));
console.log("library: ", libVals.map((v) => v.toFixed(4)).join("  "));
console.log(`max |difference| = ${Math.max(...byHand.map((v, i) => Math.abs(v - libVals[i]!))).toExponential(2)}`);
lib.dispose();

// %% [markdown]
// ## The similarity maps of every stage and subclass
//
// One row per stage, one column per subclass ($N\times K$ channels), over the patch. Maps are
// stretched per panel (`range: "per-class"`): an untrained network's maps are weak and noisy; the
// panel captions give their maxima.

// %%
const names = subclassLabels(bank);
const image3 = image.squeeze([0]) as tf.Tensor3D;
for (let i = 0; i < out.stages.length; i++) {
  const m = out.maps[i]!.squeeze([0]);
  await show(await camHeatmaps(image3, m, { classes: names, range: "per-class", title: `stage ${out.stages[i]} (stride ${net.backbone.stageStrides[out.stages[i]! - 1]}): M_${out.stages[i]} per subclass, untrained` }));
  m.dispose();
}

// %% [markdown]
// ## Merged class maps and the eq. 3 sum
//
// The $K$ subclass maps of a class merged with the inference rule (softmax-weighted), for the
// deepest stage; then $M=\sum_i \mathrm{up}(M_i)$, the map the paper thresholds in eq. 4 (the
// release uses the deepest stage alone: `match.mapSource`).

// %%
const lastMaps = out.maps[out.maps.length - 1]!;
const merged = tf.tidy(() => mergeSubclasses(lastMaps, net.k, "softmax").squeeze([0]));
await show(await camHeatmaps(image3, merged, { classes: spec.codes, range: "per-class", labels: labelVec, title: `stage ${out.stages[out.stages.length - 1]}: class maps (softmax merge of K subclasses), untrained` }));
const size: [number, number] = [cfg.data.inputSize, cfg.data.inputSize];
const eq3 = tf.tidy(() => mergeSubclasses(matchingMap(out.maps, size, "sum"), net.k, "softmax").squeeze([0]));
await show(await camHeatmaps(image3, eq3, { classes: spec.codes, range: "per-class", labels: labelVec, title: "eq. 3: sum of all stages' maps, upsampled, per class, untrained" }));

// %% [markdown]
// ## How similar are the subclass channels to each other?
//
// The correlation between the deepest stage's subclass maps over the pixels of this patch (the
// colour scale spans the values found). Before training the maps are nearly one map: the
// projection heads are random, so every channel follows the same few directions of the pixel
// features, whatever its prototype. Training on the labels is what pulls them apart; notebook 04
// draws the class maps before and after training on the same kind of patch.

// %%
const flat2d = lastMaps.reshape([-1, lastMaps.shape[3]]);
const flat = (await flat2d.array()) as number[][];
flat2d.dispose();
const S = lastMaps.shape[3];
const corr: number[][] = [];
for (let a = 0; a < S; a++) {
  corr.push([]);
  for (let b = 0; b < S; b++) {
    const xa = flat.map((r) => r[a]!), xb = flat.map((r) => r[b]!);
    const ma = xa.reduce((x, y) => x + y, 0) / xa.length, mb = xb.reduce((x, y) => x + y, 0) / xb.length;
    let num = 0, da = 0, db = 0;
    for (let j = 0; j < xa.length; j++) { num += (xa[j]! - ma) * (xb[j]! - mb); da += (xa[j]! - ma) ** 2; db += (xb[j]! - mb) ** 2; }
    corr[a]!.push(num / Math.sqrt(da * db + 1e-12));
  }
}
await show(heatmapChart(corr, { title: "correlation of subclass maps (deepest stage, this patch, untrained)", rowLabels: names, colLabels: names, colormap: "viridis", colorbarLabel: "correlation" }));
const offDiag = corr.flatMap((r, a) => r.filter((_, b) => a !== b));
console.log(`correlation between different subclass maps: ${Math.min(...offDiag).toFixed(2)} to ${Math.max(...offDiag).toFixed(2)}`);
tf.dispose([...out.features, ...out.maps, ...out.logits, image, image3, label, mask, merged, eq3]);
net.dispose();
encoder.dispose();
console.log(`tensors alive at the end: ${tf.memory().numTensors}`);
