/**
 * The synthetic set's dataset card: `card.json` (machine-readable, also the
 * source of the set's spec for the readers), `card.md` (for people) and
 * `card.png` (sample patches beside their masks). Nothing time- or
 * machine-dependent goes in the card, so it is as reproducible as the patches.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { ClassMeanFitter, evaluateBaselines, type BaselineReport } from "../baselines";
import { colorizeMask } from "../image";
import { encodeRgbPng } from "../png";
import type { DatasetSpec, RGB, SplitName } from "../types";
import { paintPatch, SYNTH_VARIANTS, type PaintParams } from "./paint";
import type { PatchResult } from "./task";
import { contentHash, patchSeed, SYNTH_CODES, syntheticSpec } from "./spec";

/** Per-split statistics on the card. */
export interface SplitStats {
  patches: number;
  /** Fraction of all pixels per mask id (TE, NEC, LYM, TAS, background). */
  pixelFraction: number[];
  /** Patches whose label contains each class. */
  patchesWithClass: number[];
  /** Patches with 1, 2, 3, 4 classes. */
  labelCardinality: number[];
  /** Single-label patches per class. */
  singleLabel: number[];
  /** Patches with a background region. */
  withBackground: number;
  /** Patches drawn with each sub-appearance, per mask id. */
  variants: Record<string, number>[];
}

/** The dataset card of a synthetic set. */
export interface SynthCard {
  generator: { name: "pbip-synthetic"; version: string; seed: number; params: PaintParams; trainMasks: boolean };
  /** The spec the readers use for this folder (patch size and normalisation of this set). */
  spec: DatasetSpec;
  counts: Record<SplitName, number>;
  stats: Record<SplitName, SplitStats>;
  /** Normalisation statistics: per-channel mean and std of the train split, RGB in [0,1]. */
  normalization: { mean: RGB; std: RGB; from: string };
  baselines: BaselineReport | null;
  /** sha256 over every image and mask file (sorted paths), to compare two generations. */
  contentSha256: string;
  notes: string[];
}

function splitStats(rs: PatchResult[]): SplitStats {
  const px = [0, 0, 0, 0, 0];
  const withClass = [0, 0, 0, 0];
  const card = [0, 0, 0, 0];
  const single = [0, 0, 0, 0];
  let bg = 0;
  const variants: Record<string, number>[] = SYNTH_VARIANTS.map((vs) => Object.fromEntries(vs.map((v) => [v, 0])));
  for (const r of rs) {
    r.classPixels.forEach((v, c) => (px[c]! += v));
    const k = r.label.reduce((a, b) => a + b, 0);
    r.label.forEach((v, c) => (withClass[c]! += v));
    if (k >= 1) card[k - 1]!++;
    if (k === 1) single[r.label.indexOf(1)]!++;
    if (r.classPixels[4]! > 0) bg++;
    r.variants.forEach((v, c) => {
      if (v) variants[c]![v] = (variants[c]![v] ?? 0) + 1;
    });
  }
  const total = px.reduce((a, b) => a + b, 0) || 1;
  return {
    patches: rs.length,
    pixelFraction: px.map((v) => round(v / total, 4)),
    patchesWithClass: withClass,
    labelCardinality: card,
    singleLabel: single,
    withBackground: bg,
    variants,
  };
}

function round(v: number, d: number): number {
  const k = 10 ** d;
  return Math.round(v * k) / k;
}

/** Build the card from the per-patch results (pure: no I/O). */
export function buildCard(a: {
  results: Record<SplitName, PatchResult[]>;
  params: PaintParams;
  seed: number;
  counts: Record<SplitName, number>;
  trainMasks: boolean;
  version: string;
}): SynthCard {
  const { results } = a;
  // Normalisation statistics from the train split (all pixels), summed in index order.
  const src = results.train.length ? results.train : [...results.val, ...results.test];
  const sum = [0, 0, 0];
  const sq = [0, 0, 0];
  let n = 0;
  for (const r of src) {
    for (let c = 0; c < 3; c++) {
      sum[c]! += r.sum[c]!;
      sq[c]! += r.sumSq[c]!;
    }
    n += r.classPixels.reduce((x, y) => x + y, 0);
  }
  const mean = sum.map((s) => round(s / n, 4)) as RGB;
  const std = sq.map((s, c) => round(Math.sqrt(Math.max(0, s / n - (sum[c]! / n) ** 2)), 4)) as RGB;
  // Baselines: fitted on single-label train patches, scored on test.
  let baselines: BaselineReport | null = null;
  if (results.train.length && results.test.length) {
    const rgb = new ClassMeanFitter(4, "rgb");
    const od = new ClassMeanFitter(4, "od");
    const freq = [0, 0, 0, 0];
    const fitPatches = [0, 0, 0, 0];
    for (const r of results.train) {
      r.label.forEach((v, c) => (freq[c]! += v));
      if (r.label.reduce((x, y) => x + y, 0) === 1) {
        const c = r.label.indexOf(1);
        rgb.addSums(c, r.tissueRgb, r.tissueCount);
        od.addSums(c, r.tissueOd, r.tissueCount);
        fitPatches[c]!++;
      }
    }
    baselines = evaluateBaselines(
      4,
      { rgb, od, trainClassFrequency: freq, fitPatches },
      results.test.map((r) => ({ rgb: r.rgb!, mask: r.mask!, label: r.label })),
    );
    baselines.means = { rgb: baselines.means.rgb.map((m) => m.map((v) => round(v, 3))), od: baselines.means.od.map((m) => m.map((v) => round(v, 4))) };
    for (const s of [baselines.mostFrequent, baselines.nearestMeanRgb, baselines.nearestMeanOd]) {
      s.mIoU = round(s.mIoU, 4);
      s.iou = s.iou.map((v) => (Number.isNaN(v) ? v : round(v, 4)));
    }
  }
  const hashes = [...results.train, ...results.val, ...results.test].flatMap((r) => r.hashes);
  return {
    generator: { name: "pbip-synthetic", version: a.version, seed: a.seed, params: a.params, trainMasks: a.trainMasks },
    spec: syntheticSpec(a.params.size, { mean, std }),
    counts: a.counts,
    stats: { train: splitStats(results.train), val: splitStats(results.val), test: splitStats(results.test) },
    normalization: { mean, std, from: results.train.length ? "train split, all pixels" : "val and test splits (no train split), all pixels" },
    baselines,
    contentSha256: contentHash(hashes),
    notes: [
      "A stand-in for real H&E tissue: procedurally painted patches (stain densities combined by Beer-Lambert with the Macenko reference H&E stain vectors), not real histopathology.",
      "Layout and file names follow LUAD-HistoSeg: train/*-[TE NEC LYM TAS].png, {val,test}/{img,mask}/, palette-mode masks with background = 4. train-mask/ holds ground truth for the training patches (real WSSS datasets have none).",
      "Each class has two sub-appearances (intra-class heterogeneity) and classes share colour and structure (inter-class homogeneity): dense lymphocytes vs solid tumour, karyorrhectic necrosis vs lymphocytes, eosinophilic necrosis vs stroma.",
      "Images are RGB; the authors' release feeds BGR to its network.",
    ],
  };
}

const fmt = (v: number, d = 1): string => (Number.isNaN(v) ? "n/a" : (100 * v).toFixed(d));

/** The card as Markdown. */
export function cardMarkdown(c: SynthCard): string {
  const L: string[] = [];
  const codes = [...SYNTH_CODES, "background"];
  L.push(`# Synthetic H&E tissue benchmark (pbip)`, "");
  L.push(`A **stand-in** for real histopathology, painted by pbip's generator v${c.generator.version} with seed ${c.generator.seed}, in the exact layout of LUAD-HistoSeg.`);
  L.push(`Regenerate with \`pbip data synth --seed ${c.generator.seed} --train ${c.counts.train} --val ${c.counts.val} --test ${c.counts.test} --size ${c.spec.patchSize}\` (same bytes; content sha256 \`${c.contentSha256.slice(0, 16)}...\`).`, "");
  L.push(`![sample patches (left) and their masks (right)](card.png)`, "");
  L.push(`Rows 1-2 of the picture: one single-label training patch per sub-appearance (TE solid, TE acinar, NEC eosinophilic, NEC karyorrhectic; LYM dense, LYM scattered, TAS dense collagen, TAS loose). Row 3: multi-class test patches. Mask colours: ${codes.map((k, i) => `${k} rgb(${c.spec.palette[i]!.join(",")})`).join(", ")}.`, "");
  L.push(`## Splits`, "", `| split | patches | with background | 1 class | 2 | 3 | 4 |`, `|---|---|---|---|---|---|---|`);
  for (const s of ["train", "val", "test"] as const) {
    const st = c.stats[s];
    L.push(`| ${s} | ${st.patches} | ${st.withBackground} | ${st.labelCardinality.join(" | ")} |`);
  }
  L.push("", `## Classes`, "", `| class | mask id | train patches with it | single-label train | train pixel % | test pixel % | sub-appearances (train) |`, `|---|---|---|---|---|---|---|`);
  codes.forEach((k, i) => {
    const tr = c.stats.train;
    const v = Object.entries(tr.variants[i] ?? {})
      .map(([a, b]) => `${a} ${b}`)
      .join(", ");
    L.push(`| ${k} | ${i} | ${i < 4 ? tr.patchesWithClass[i] : tr.withBackground} | ${i < 4 ? tr.singleLabel[i] : "-"} | ${fmt(tr.pixelFraction[i]!)} | ${fmt(c.stats.test.pixelFraction[i]!)} | ${v} |`);
  });
  L.push("", `## Normalisation`, "", `mean ${JSON.stringify(c.normalization.mean)}, std ${JSON.stringify(c.normalization.std)} (RGB in [0,1], ${c.normalization.from}).`, "");
  if (c.baselines) {
    const b = c.baselines;
    L.push(`## Difficulty: baselines on the test split`, "", b.convention, "");
    L.push(`| baseline | mIoU % | ${codes.map((k) => `IoU ${k} %`).join(" | ")} |`, `|---|---|${codes.map(() => "---").join("|")}|`);
    for (const s of [b.mostFrequent, b.nearestMeanRgb, b.nearestMeanOd]) L.push(`| ${s.name} | ${fmt(s.mIoU)} | ${s.iou.map((v) => fmt(v)).join(" | ")} |`);
    L.push("", `(a): ${b.mostFrequent.description}. (b): ${b.nearestMeanRgb.description}; fitted on ${b.fitPatches.join("/")} single-label training patches (${SYNTH_CODES.join("/")}). Colour alone does not separate the classes; texture and context have to.`, "");
  }
  L.push(`## Notes`, "", ...c.notes.map((n) => `- ${n}`), "");
  L.push(`## Generator parameters`, "", "```json", JSON.stringify(c.generator.params, null, 2), "```", "");
  return L.join("\n");
}

/** Pick the card's sample patches: one single-label train patch per (class, sub-appearance), then multi-class test patches. */
function pickSamples(results: Record<SplitName, PatchResult[]>): { split: SplitName; index: number }[] {
  const picks: { split: SplitName; index: number }[] = [];
  for (let c = 0; c < 4; c++) {
    for (const v of SYNTH_VARIANTS[c]!) {
      const single = results.train.find((r) => r.label.reduce((a, b) => a + b, 0) === 1 && r.label[c] === 1 && r.variants[c] === v);
      const any = single ?? results.train.find((r) => r.variants[c] === v) ?? results.test.find((r) => r.variants[c] === v);
      if (any) picks.push({ split: any.split, index: any.index });
      else picks.push({ split: "train", index: -1 });
    }
  }
  const multi = results.test.filter((r) => r.label.reduce((a, b) => a + b, 0) >= 2).slice(0, 4);
  for (const r of multi) picks.push({ split: "test", index: r.index });
  return picks;
}

/** Compose card.png: rows of [patch | mask] pairs, 4 pairs per row, and a palette strip. */
export function cardPicture(c: SynthCard, results: Record<SplitName, PatchResult[]>): Buffer {
  const S = c.spec.patchSize;
  const gap = Math.max(2, Math.round(S / 32));
  const inner = Math.max(1, Math.floor(gap / 2));
  const picks = pickSamples(results);
  const perRow = 4;
  const rows = Math.ceil(picks.length / perRow);
  const W = perRow * (2 * S + inner) + (perRow + 1) * gap;
  const strip = Math.max(8, Math.round(S / 8));
  const H = rows * (S + gap) + gap + strip + gap;
  const img = new Uint8Array(W * H * 3).fill(255);
  const blit = (src: Uint8Array, x0: number, y0: number): void => {
    for (let y = 0; y < S; y++) img.set(src.subarray(y * S * 3, (y + 1) * S * 3), ((y0 + y) * W + x0) * 3);
  };
  picks.forEach((p, k) => {
    const row = Math.floor(k / perRow);
    const col = k % perRow;
    const x0 = gap + col * (2 * S + inner + gap);
    const y0 = gap + row * (S + gap);
    let rgb: Uint8Array;
    let mask: Uint8Array;
    if (p.index < 0) {
      rgb = new Uint8Array(S * S * 3).fill(220);
      mask = new Uint8Array(S * S).fill(4);
    } else {
      const kept = results[p.split][p.index]!;
      if (kept.rgb && kept.mask) {
        rgb = kept.rgb;
        mask = kept.mask;
      } else {
        const painted = paintPatch(patchSeed(c.generator.seed, p.split, p.index), c.generator.params);
        rgb = painted.rgb;
        mask = painted.mask;
      }
    }
    blit(rgb, x0, y0);
    blit(colorizeMask(mask, c.spec.palette), x0 + S + inner, y0);
  });
  // Palette strip: one swatch per mask id, outlined in grey so white shows.
  const y0 = rows * (S + gap) + gap;
  const sw = Math.floor((W - 2 * gap) / c.spec.palette.length);
  c.spec.palette.forEach((col, i) => {
    for (let y = 0; y < strip; y++) {
      for (let x = 0; x < sw - gap; x++) {
        const edge = y === 0 || y === strip - 1 || x === 0 || x === sw - gap - 1;
        const o = ((y0 + y) * W + gap + i * sw + x) * 3;
        img[o] = edge ? 128 : col[0];
        img[o + 1] = edge ? 128 : col[1];
        img[o + 2] = edge ? 128 : col[2];
      }
    }
  });
  return encodeRgbPng(img, W, H);
}

/** Write card.json, card.md and card.png into the dataset folder. */
export async function writeCard(dir: string, c: SynthCard, results: Record<SplitName, PatchResult[]>): Promise<void> {
  const json = JSON.stringify(c, (_k, v: unknown) => (typeof v === "number" && Number.isNaN(v) ? null : v), 2) + "\n";
  fs.writeFileSync(path.join(dir, "card.json"), json);
  fs.writeFileSync(path.join(dir, "card.md"), cardMarkdown(c));
  fs.writeFileSync(path.join(dir, "card.png"), cardPicture(c, results));
}
