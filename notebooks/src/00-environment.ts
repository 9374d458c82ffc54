// %% [markdown]
// # 00 · Environment
//
// Checks that this notebook's kernel (tslab, TypeScript) can use the **pbip** package, which compute
// backend it runs on, and that text, HTML tables and images display. Run it first after `npm run setup`.
//
// - The package is imported by its name, `pbip`: the setup links `node_modules/pbip` to the checkout, so
//   this resolves to the compiled `dist/`. After editing `src/`, rebuild (`npx tsc -p . --watch` in a
//   terminal keeps it current) and restart the kernel.
// - The working directory is this folder (`notebooks/`). Outputs of a run go under `PBIP_RUN_DIR`
//   (set by `npm run notebooks`).
// - `PBIP_BACKEND` picks the backend (`auto`, `webgpu`, `tensorflow`, `wasm`, `cpu`); `auto` prefers a real GPU.

// %%
import * as tslab from "tslab";
import sharp from "sharp";
import { initBackend, formatBackendReport, memorySnapshot, formatBytes, packageVersion, Rng } from "pbip";

// %% [markdown]
// ## Compute backend
//
// `initBackend()` picks the backend (`auto`: WebGPU on a real GPU, then native TensorFlow, WASM, pure-JS CPU)
// and says why each candidate was or was not used.

// %%
const report = await initBackend();
console.log(formatBackendReport(report));

// %% [markdown]
// ## Versions

// %%
const versions: [string, string][] = [
  ["pbip", packageVersion("pbip") ?? "?"],
  ["Node.js", process.versions.node],
  ...Object.entries(report.versions).filter(([k]) => k !== "node"),
  ["onnxruntime-node", packageVersion("onnxruntime-node") ?? "not installed"],
  ["sharp / libvips", `${sharp.versions.sharp ?? packageVersion("sharp")} / ${sharp.versions.vips}`],
  ["tslab / its TypeScript", `${tslab.versions.tslab} / ${tslab.versions.typescript}`],
  ["run folder (PBIP_RUN_DIR)", process.env.PBIP_RUN_DIR ?? "(interactive: not set)"],
  ["PBIP_QUICK", process.env.PBIP_QUICK ?? "(not set)"],
];
const mem = memorySnapshot();
versions.push(["tensors alive / process memory", `${mem.tensors} / ${formatBytes(mem.rssBytes)}`]);
const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
tslab.display.html(
  `<table><thead><tr><th style="text-align:left">component</th><th style="text-align:left">version</th></tr></thead><tbody>` +
    versions.map(([k, v]) => `<tr><td style="text-align:left">${esc(k)}</td><td style="text-align:left"><code>${esc(v)}</code></td></tr>`).join("") +
    `</tbody></table>`,
);

// %% [markdown]
// ## An image
//
// A **synthetic** H&E-like swatch (not real tissue): eosin-pink stroma with hematoxylin-purple nuclei,
// drawn from a seeded `Rng` and encoded as PNG with sharp. It checks that images reach the notebook
// and its HTML export.

// %%
function synthSwatch(width: number, height: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const rgb = new Uint8Array(width * height * 3);
  // Stroma: pink with faint fibres running diagonally.
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const fibre = 0.5 + 0.5 * Math.sin((x + 0.6 * y) / 5 + 2 * Math.sin(y / 17));
      const n = rng.normal(0, 4);
      const i = 3 * (y * width + x);
      rgb[i] = 236 - 14 * fibre + n;
      rgb[i + 1] = 178 - 30 * fibre + n;
      rgb[i + 2] = 206 - 12 * fibre + n;
    }
  }
  // Nuclei: dark purple ellipses.
  for (let k = 0; k < 70; k++) {
    const cx = rng.uniform(0, width), cy = rng.uniform(0, height);
    const a = rng.uniform(3, 7), b = rng.uniform(2, 5), t = rng.uniform(0, Math.PI);
    const shade = rng.uniform(0.75, 1);
    for (let y = Math.floor(cy - 8); y <= cy + 8; y++) {
      for (let x = Math.floor(cx - 8); x <= cx + 8; x++) {
        if (x < 0 || y < 0 || x >= width || y >= height) continue;
        const dx = x - cx, dy = y - cy;
        const u = (dx * Math.cos(t) + dy * Math.sin(t)) / a, v = (-dx * Math.sin(t) + dy * Math.cos(t)) / b;
        if (u * u + v * v > 1) continue;
        const i = 3 * (y * width + x);
        rgb[i] = 95 * shade; rgb[i + 1] = 60 * shade; rgb[i + 2] = 140 * shade;
      }
    }
  }
  return rgb;
}
const W = 256, H = 160;
const png = await sharp(synthSwatch(W, H, 7), { raw: { width: W, height: H, channels: 3 } }).png().toBuffer();
tslab.display.png(png);
console.log(`synthetic swatch: ${W}x${H} PNG, ${png.length} bytes`);

// %% [markdown]
// ## Stains: optical density and stain vectors (Macenko)
//
// An H&E slide is coloured by two dyes: **hematoxylin** (blue-purple, binds the DNA of nuclei) and
// **eosin** (pink, cytoplasm and stroma). A dye layer absorbs light exponentially in its amount
// (the **Beer-Lambert law**): with light $I_{0,c}$ through the glass in colour channel $c$ and stain
// amounts $c_H, c_E$ at a pixel,
// $$I_c = I_{0,c}\,10^{-(c_H h_c + c_E e_c)}, \qquad \mathrm{OD}_c = -\log_{10}\frac{I_c}{I_{0,c}} = c_H h_c + c_E e_c .$$
// The **optical density** (OD) turns the product of absorptions into a sum: every pixel's OD vector
// is a non-negative mix of two fixed **stain vectors** $h$ and $e$ (each stain's OD per unit
// amount), so the OD vectors of a whole image lie in the plane those two span, inside the wedge
// between them.
//
// **Macenko et al. (2009)** read the two vectors off a single image: drop almost transparent pixels
// (OD below $\beta = 0.15$ in some channel), find the plane holding most of the OD variation (the two
// largest eigenvectors of the 3×3 covariance of the pixels' OD), measure each pixel's angle in that
// plane, and take the robust extremes (the 1st and 99th percentile angles) as the two stain
// directions. The vector that absorbs more red comes first: hematoxylin absorbs red, eosin hardly
// any. Stain normalisation and colour augmentation in histopathology are built on these vectors.
//
// Below, `estimateStainVectors` runs on three images, and each vector is drawn as the colour it
// gives at one unit of stain, $255 \cdot 10^{-v}$; the table compares them with the reference
// vectors Ruifrok and Johnston (2001) measured for hematoxylin, eosin and DAB (cosine 1 = same
// direction):
//
// - **real H&E**: a mouse brain section, the low-resolution scan of 10x Genomics' Visium demo
//   (Seurat's test data). Its glass is grey, not white, so OD is measured against the glass
//   (`estimateBackground`), and its staining is faint at this resolution, so $\beta = 0.05$.
// - **real IHC**: colon glands stained with DAB (brown, an antibody's signal) and a hematoxylin
//   counterstain (scikit-image's `ihc` sample). **This is not H&E**: PBIP, its datasets and any
//   H&E stain normalisation assume H&E. It is here because the method finds whichever two stains
//   a slide has: the second vector should be DAB, not eosin.
// - **synthetic**: a patch of pbip's embedded dataset, a **stand-in, not real tissue**, painted with
//   Macenko's reference H&E vectors (`HE_REFERENCE`), which the estimate should give back.
//   (Reference vectors differ between labs: Macenko's eosin is nearer Ruifrok's DAB than Ruifrok's
//   eosin, which is why the synthetic row's eosin cosine is modest.)
//
// The real images are fetched once (Debian's archive, else upstream, each checked against its
// SHA-256) into `.cache/real-samples`; `npx pbip data samples` does the same from a terminal.

// %%
import {
  fetchRealSamples, readImage, paintPatch, estimateStainVectors, estimateBackground, stainRgb, referenceCosines,
  REFERENCE_STAINS, HE_REFERENCE, cosine, imageGrid, show, table,
  type RgbImage, type RealSamples, type StainEstimate, type StainEstimateOptions,
} from "pbip";

interface StainPanel { name: string; shown: RgbImage; estimate: StainEstimate; reference: [readonly number[], readonly number[]]; settings: string }
const stainPanels: StainPanel[] = [];
const cropRgb = async (file: string, left: number, top: number, side: number): Promise<RgbImage> => {
  const { data, info } = await sharp(file).removeAlpha().extract({ left, top, width: side, height: side }).raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
};
const resizedRgb = async (img: RgbImage, side: number): Promise<RgbImage> => {
  const { data, info } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).resize(side, side).raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
};

let realSamples: RealSamples | undefined;
try {
  realSamples = await fetchRealSamples({ log: (line) => console.log(line) });
} catch (e) {
  console.log(`Real H&E and IHC samples not available (${(e as Error).message.split("\n")[0]}); get them with \`npx pbip data samples\` and re-run this cell. Showing the synthetic patch only.`);
}
if (realSamples) {
  const he = await readImage(realSamples.paths["visium-he"]);
  const glass = estimateBackground(he.data);
  const heOpts: StainEstimateOptions = { background: glass, odThreshold: 0.05 };
  stainPanels.push({
    name: "real H&E (Visium, mouse brain)",
    shown: await cropRgb(realSamples.paths["visium-he"], 30, 290, 224),
    estimate: estimateStainVectors(he.data, heOpts),
    reference: [REFERENCE_STAINS.hematoxylin, REFERENCE_STAINS.eosin],
    settings: `whole ${he.width}x${he.height} scan (224 px crop shown), glass I0 = (${glass.join(", ")}), beta 0.05`,
  });
  const ihc = await readImage(realSamples.paths["ihc-dab"]);
  stainPanels.push({
    name: "real IHC (DAB + hematoxylin)",
    shown: await resizedRgb(ihc, 224),
    estimate: estimateStainVectors(ihc.data),
    reference: [REFERENCE_STAINS.hematoxylin, REFERENCE_STAINS.dab],
    settings: `whole ${ihc.width}x${ihc.height} image (shown at 224 px), white light, beta 0.15`,
  });
}
const synthPatch = paintPatch(3);
stainPanels.push({
  name: "synthetic stand-in (not tissue)",
  shown: { data: synthPatch.rgb, width: synthPatch.size, height: synthPatch.size },
  estimate: estimateStainVectors(synthPatch.rgb),
  reference: [HE_REFERENCE.hematoxylin, HE_REFERENCE.eosin],
  settings: `one ${synthPatch.size} px patch (seed 3), white light, beta 0.15`,
});

// Colour chips: the left half is the first vector, the right half the second, at one unit of stain.
const chips = (a: readonly number[], b: readonly number[]): RgbImage => {
  const w = 224, h = 40, data = new Uint8Array(w * h * 3);
  const ca = stainRgb(a, 1), cb = stainRgb(b, 1);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set(x < w / 2 - 2 ? ca : x >= w / 2 + 2 ? cb : [255, 255, 255], 3 * (y * w + x));
  return { data, width: w, height: h };
};
await show(await imageGrid(
  [stainPanels.map((p) => p.shown), stainPanels.map((p) => chips(...p.estimate.vectors)), stainPanels.map((p) => chips(...p.reference))],
  {
    colLabels: stainPanels.map((p) => p.name),
    rowLabels: ["image", "estimated\n1st | 2nd", "reference"],
    cellLabels: [[], [], stainPanels.map((p) => (p.name.startsWith("real IHC") ? "Ruifrok H | DAB" : p.name.startsWith("real") ? "Ruifrok H | E" : "Macenko H | E (painted with)"))],
    title: "Stain vectors by Macenko's method, drawn as colour chips",
  },
));
const stainRows = stainPanels.flatMap((p) =>
  referenceCosines(p.estimate.vectors).map((c, i) => ({
    image: p.name, vector: i === 0 ? "1st" : "2nd", "OD (R, G, B)": p.estimate.vectors[i]!.map((x) => x.toFixed(3)).join(", "),
    "cos H": c.hematoxylin, "cos E": c.eosin, "cos DAB": c.dab,
  })),
);
await show(table(stainRows, { digits: 3, caption: "cosine of each estimated vector to the Ruifrok-Johnston references" }));
for (const p of stainPanels) console.log(`${p.name}: ${p.estimate.pixelsUsed} of ${p.estimate.pixelsTotal} pixels used; ${p.settings}`);
const synthPanel = stainPanels[stainPanels.length - 1]!;
console.log(`synthetic: cosine to the vectors it was painted with: hematoxylin ${cosine(synthPanel.estimate.vectors[0], HE_REFERENCE.hematoxylin).toFixed(4)}, eosin ${cosine(synthPanel.estimate.vectors[1], HE_REFERENCE.eosin).toFixed(4)}`);
