import sharp from "sharp";
import * as tf from "@tensorflow/tfjs";
import type { DatasetSpec } from "../data/types";
import { colormap, hex, type ColormapName } from "./colormap";
import type { RGB } from "../data/types";
import { svgDocument, svgText, textWidth } from "./svg";
import {
  decodeToRgb,
  isPngBuffer,
  resizeMapsBilinear,
  resizeIdsNearest,
  toIdMask,
  toMapStack,
  toRgbImage,
  upscale,
  type IdMask,
  type ImageInput,
  type MapsInput,
  type MaskInput,
  type RgbImage,
} from "./raster";
import { isSvg } from "./svg";

/**
 * Colours and names of a dataset's mask ids: what overlays and legends need.
 * Build it from a {@link DatasetSpec} with {@link paletteOf}.
 */
export interface PaletteInfo {
  /** RGB per mask id (classes and background, in id order). */
  colors: RGB[];
  /** Name per mask id (class codes, and "background"). */
  names: string[];
  /** Mask id of background (not tinted by default; the datasets' background colour is white). */
  backgroundId: number;
}

/** The {@link PaletteInfo} of a dataset: `palette` by id, `codes` for the foreground ids in order, "background" for `backgroundId`. */
export function paletteOf(spec: Pick<DatasetSpec, "palette" | "codes" | "backgroundId">): PaletteInfo {
  const n = spec.palette.length;
  if (spec.codes.length !== n - 1) throw new Error(`palette has ${n} entries but there are ${spec.codes.length} class codes; expected codes + 1 (background)`);
  const names: string[] = [];
  let k = 0;
  for (let id = 0; id < n; id++) names.push(id === spec.backgroundId ? "background" : spec.codes[k++]!);
  return { colors: spec.palette.map((c) => [c[0], c[1], c[2]] as RGB), names, backgroundId: spec.backgroundId };
}

/** One legend entry: a colour swatch and its label. */
export interface LegendEntry {
  color: RGB;
  label: string;
}

/** Legend as an SVG (swatches in a column), with its size. */
export function legendSvg(entries: LegendEntry[], opts: { title?: string; fontSize?: number } = {}): { svg: string; width: number; height: number } {
  const fs = opts.fontSize ?? 13;
  const row = fs + 8;
  const sw = fs;
  const titleH = opts.title ? row : 0;
  const width = Math.ceil(8 + sw + 8 + Math.max(...entries.map((e) => textWidth(e.label, fs)), opts.title ? textWidth(opts.title, fs) : 0, 10) + 8);
  const height = Math.ceil(titleH + entries.length * row + 8);
  let body = opts.title ? svgText(8, fs + 2, opts.title, { size: fs, weight: "bold" }) : "";
  entries.forEach((e, i) => {
    const y = titleH + 6 + i * row;
    body += `<rect x="8" y="${y}" width="${sw}" height="${sw}" fill="${hex(e.color)}" stroke="#444" stroke-width="1"/>`;
    body += svgText(8 + sw + 8, y + sw - 2, e.label, { size: fs });
  });
  return { svg: svgDocument(width, height, body), width, height };
}

/** Rasterise an SVG to RGB (on white). */
export async function svgToRgb(svg: string): Promise<RgbImage> {
  return decodeToRgb(await sharp(Buffer.from(svg)).png().toBuffer());
}

/** A grid cell: an image, a PNG buffer, an SVG string, or empty. */
export type GridCell = ImageInput | Buffer | string | null | undefined;

/** Options of {@link imageGrid}. */
export interface GridOptions {
  /** Caption left of each row (may contain "\n"). */
  rowLabels?: string[];
  /** Caption above each column. */
  colLabels?: string[];
  /** Per-cell captions under the image, same shape as the cells. */
  cellLabels?: (string | undefined)[][];
  title?: string;
  /** Resize every image cell to this size (nearest neighbour, keeps masks crisp); default: cells keep their size. */
  cellSize?: { width: number; height: number };
  /** Gap between cells, px (default 6). */
  gap?: number;
  fontSize?: number;
  /** A legend drawn right of the grid. */
  legend?: LegendEntry[];
  legendTitle?: string;
}

async function cellToRgb(c: GridCell): Promise<RgbImage | null> {
  if (c === null || c === undefined) return null;
  if (typeof c === "string") {
    if (!isSvg(c)) throw new Error("grid cell string is not an SVG document");
    return svgToRgb(c);
  }
  if (isPngBuffer(c)) return decodeToRgb(c);
  return toRgbImage(c as ImageInput);
}

async function resizeRgb(img: RgbImage, width: number, height: number): Promise<RgbImage> {
  if (img.width === width && img.height === height) return img;
  const { data, info } = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), { raw: { width: img.width, height: img.height, channels: 3 } })
    .resize(width, height, { kernel: "nearest", fit: "fill" })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

function rawInput(img: RgbImage, left: number, top: number): sharp.OverlayOptions {
  return { input: Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), raw: { width: img.width, height: img.height, channels: 3 }, left, top };
}

/**
 * A grid of images with row and column captions (e.g. the bank's nearest
 * patches per prototype, or a model comparison), returned as PNG. Cells may be
 * tensors, pixel arrays, PNG buffers or SVG strings; empty cells stay white.
 */
export async function imageGrid(cells: GridCell[][], opts: GridOptions = {}): Promise<Buffer> {
  const fs = opts.fontSize ?? 13;
  const gap = opts.gap ?? 6;
  const rows = await Promise.all(cells.map((r) => Promise.all(r.map(cellToRgb))));
  const nRows = rows.length;
  const nCols = Math.max(0, ...rows.map((r) => r.length));
  if (nRows === 0 || nCols === 0) throw new Error("imageGrid: no cells");
  if (opts.cellSize) {
    for (const r of rows) for (let j = 0; j < r.length; j++) if (r[j]) r[j] = await resizeRgb(r[j]!, opts.cellSize.width, opts.cellSize.height);
  }
  // Columns are wide enough for their images and captions (captions never overlap).
  const colW = Array.from({ length: nCols }, (_, j) =>
    Math.ceil(
      Math.max(
        1,
        ...rows.map((r) => r[j]?.width ?? 0),
        opts.colLabels?.[j] ? textWidth(opts.colLabels[j]!, fs) + 8 : 0,
        ...(opts.cellLabels ?? []).map((r) => (r?.[j] ? textWidth(r[j]!, fs - 1) + 8 : 0)),
      ),
    ),
  );
  const rowH = rows.map((r) => Math.max(1, ...r.map((c) => c?.height ?? 0)));
  const lineH = fs + 6;
  const hasCellLabels = !!opts.cellLabels?.some((r) => r?.some((s) => s));
  const cellLabelH = hasCellLabels ? lineH : 0;
  const rowLabelLines = (opts.rowLabels ?? []).map((s) => (s ?? "").split("\n"));
  const labelW = rowLabelLines.length ? Math.ceil(Math.max(0, ...rowLabelLines.flat().map((s) => textWidth(s, fs))) + 12) : 0;
  const titleH = opts.title ? lineH + 6 : 0;
  const colLabelH = opts.colLabels?.length ? lineH : 0;
  const legend = opts.legend?.length ? legendSvg(opts.legend, { title: opts.legendTitle, fontSize: fs }) : null;
  const gridW = labelW + colW.reduce((a, b) => a + b, 0) + gap * (nCols + 1);
  const gridH = titleH + colLabelH + rowH.reduce((a, b) => a + b + cellLabelH, 0) + gap * (nRows + 1);
  const width = Math.ceil(gridW + (legend ? legend.width + gap : 0));
  const height = Math.ceil(Math.max(gridH, legend ? titleH + colLabelH + legend.height + 2 * gap : 0));

  const layers: sharp.OverlayOptions[] = [];
  let text = "";
  if (opts.title) text += svgText(width / 2, fs + 8, opts.title, { size: fs + 2, anchor: "middle", weight: "bold" });
  const x0 = labelW + gap;
  const colX: number[] = [];
  let x = x0;
  for (let j = 0; j < nCols; j++) {
    colX.push(x);
    if (opts.colLabels?.[j]) text += svgText(x + colW[j]! / 2, titleH + fs + 2, opts.colLabels[j]!, { size: fs, anchor: "middle" });
    x += colW[j]! + gap;
  }
  let y = titleH + colLabelH + gap;
  for (let i = 0; i < nRows; i++) {
    const lines = rowLabelLines[i] ?? [];
    lines.forEach((ln, k) => {
      const cy = y + rowH[i]! / 2 + (k - (lines.length - 1) / 2) * lineH + fs / 3;
      text += svgText(labelW, cy, ln, { size: fs, anchor: "end" });
    });
    for (let j = 0; j < nCols; j++) {
      const c = rows[i]![j];
      if (c) layers.push(rawInput(c, colX[j]! + Math.floor((colW[j]! - c.width) / 2), y + Math.floor((rowH[i]! - c.height) / 2)));
      const cl = opts.cellLabels?.[i]?.[j];
      if (cl) text += svgText(colX[j]! + colW[j]! / 2, y + rowH[i]! + fs + 1, cl, { size: fs - 1, anchor: "middle" });
    }
    y += rowH[i]! + cellLabelH + gap;
  }
  if (legend) layers.push({ input: Buffer.from(legend.svg), left: Math.ceil(gridW), top: titleH + colLabelH + gap });
  if (text) layers.push({ input: Buffer.from(svgDocument(width, height, text, "none")), left: 0, top: 0 });
  return sharp({ create: { width, height, channels: 3, background: "#ffffff" } })
    .composite(layers)
    .png()
    .toBuffer();
}

/** Options of {@link overlayMask}. */
export interface OverlayOptions {
  /** Opacity of the class colour over the patch (default 0.5). */
  alpha?: number;
  /** Tint background pixels too (default false: the datasets' background colour is white). */
  showBackground?: boolean;
  /** Draw region contours in the full class colour (default true). */
  contours?: boolean;
  /** Ground-truth value never tinted (default 255). */
  ignoreId?: number;
}

/**
 * The patch with the mask's ids blended in the palette colours, as RGB: pixel =
 * (1 - alpha) * patch + alpha * palette[id] (contour pixels get the pure colour).
 * Masks of another size are resized (nearest neighbour) to the patch.
 */
export function overlayMaskRgb(image: ImageInput, mask: MaskInput, pal: PaletteInfo, opts: OverlayOptions = {}): RgbImage {
  const img = toRgbImage(image);
  const m = resizeIdsNearest(toIdMask(mask), img.height, img.width);
  const a = opts.alpha ?? 0.5;
  const contours = opts.contours ?? true;
  const ignore = opts.ignoreId ?? 255;
  const out = new Uint8Array(img.data);
  const { width: w, height: h } = img;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      const id = m.data[i]!;
      if (id === ignore || id < 0 || id >= pal.colors.length) continue;
      if (id === pal.backgroundId && !opts.showBackground) continue;
      const c = pal.colors[id]!;
      const edge =
        contours && ((x > 0 && m.data[i - 1] !== id) || (x < w - 1 && m.data[i + 1] !== id) || (y > 0 && m.data[i - w] !== id) || (y < h - 1 && m.data[i + w] !== id));
      const t = edge ? 1 : a;
      for (let k = 0; k < 3; k++) out[3 * i + k] = Math.round((1 - t) * img.data[3 * i + k]! + t * c[k]!);
    }
  }
  return { width: w, height: h, data: out };
}

function presentIds(m: IdMask, n: number): number[] {
  const seen = new Uint8Array(n);
  for (let i = 0; i < m.data.length; i++) {
    const v = m.data[i]!;
    if (v >= 0 && v < n) seen[v] = 1;
  }
  return [...seen.keys()].filter((i) => seen[i]);
}

function legendFor(pal: PaletteInfo, ids: number[]): LegendEntry[] {
  return ids.map((id) => ({ color: pal.colors[id]!, label: pal.names[id]! }));
}

/**
 * Mask overlay on the patch with the dataset palette and a legend (the paper's
 * Figure 5a), as PNG. The legend lists every class id present in the mask
 * (`legend: "all"` lists the whole palette).
 */
export async function maskOverlay(
  image: ImageInput,
  mask: MaskInput,
  pal: PaletteInfo,
  opts: OverlayOptions & { title?: string; scale?: number; legend?: "present" | "all" | "none" } = {},
): Promise<Buffer> {
  const over = upscale(overlayMaskRgb(image, mask, pal, opts), opts.scale ?? 1);
  const ids = opts.legend === "all" ? pal.names.map((_, i) => i) : opts.legend === "none" ? [] : presentIds(toIdMask(mask), pal.colors.length);
  return imageGrid([[over]], { title: opts.title, legend: legendFor(pal, ids) });
}

/** A mask drawn in its palette colours alone (no patch underneath), as RGB. */
export function maskToRgb(mask: MaskInput, pal: PaletteInfo, ignoreColor: RGB = [0, 0, 0]): RgbImage {
  const m = toIdMask(mask);
  const out = new Uint8Array(m.width * m.height * 3);
  for (let i = 0; i < m.data.length; i++) {
    const c = pal.colors[m.data[i]!] ?? ignoreColor;
    out[3 * i] = c[0];
    out[3 * i + 1] = c[1];
    out[3 * i + 2] = c[2];
  }
  return { width: m.width, height: m.height, data: out };
}

/** Options of {@link foregroundImages}. */
export interface ForegroundOptions {
  /** Class names, one per map channel. */
  classes: string[];
  /** Binary masks b `[H, W, C]` (eq. 4's thresholded maps); default: b = 1 everywhere, or M > `threshold` if given. */
  binary?: MapsInput;
  /** Threshold giving b = [M > threshold] when `binary` is not given. */
  threshold?: number;
  /** Also show the background images X_BG = (1 - b)(1 - M) X (default true). */
  background?: boolean;
  /** Integer upscaling of each panel (default 1). */
  scale?: number;
  title?: string;
}

/**
 * The foreground and background images of eq. 5 for every class, as RGB:
 * X_FG = b * M * X and X_BG = (1 - b)(1 - M) X, with b from `binary` (>= 0.5), or
 * [M > threshold], or 1. Maps are resized bilinearly to the patch.
 */
export function foregroundRegions(image: ImageInput, maps: MapsInput, opts: Omit<ForegroundOptions, "scale" | "title" | "background">): { fg: RgbImage[]; bg: RgbImage[] } {
  const img = toRgbImage(image);
  const M = resizeMapsBilinear(toMapStack(maps), img.height, img.width);
  if (opts.classes.length !== M.channels) throw new Error(`foregroundImages: ${opts.classes.length} class names for ${M.channels} map channels`);
  const B = opts.binary ? resizeMapsBilinear(toMapStack(opts.binary), img.height, img.width) : null;
  if (B && B.channels !== M.channels) throw new Error(`foregroundImages: binary masks have ${B.channels} channels, maps ${M.channels}`);
  const n = img.width * img.height;
  const C = M.channels;
  const fgOut: RgbImage[] = [];
  const bgOut: RgbImage[] = [];
  for (let c = 0; c < C; c++) {
    const fg = new Uint8Array(n * 3);
    const bg = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) {
      const m = Math.min(1, Math.max(0, M.data[i * C + c]!));
      const b = B ? (B.data[i * C + c]! >= 0.5 ? 1 : 0) : opts.threshold !== undefined ? (m > opts.threshold ? 1 : 0) : 1;
      for (let k = 0; k < 3; k++) {
        fg[3 * i + k] = Math.round(b * m * img.data[3 * i + k]!);
        bg[3 * i + k] = Math.round((1 - b) * (1 - m) * img.data[3 * i + k]!);
      }
    }
    fgOut.push({ width: img.width, height: img.height, data: fg });
    bgOut.push({ width: img.width, height: img.height, data: bg });
  }
  return { fg: fgOut, bg: bgOut };
}

/**
 * The foreground images X_FG = b * M * X of eq. 5 for every class (the paper's
 * Figure 5b), with the background images X_BG = (1 - b)(1 - M) X below, from a
 * patch X and its maps M `[H, W, C]` (values in [0, 1]; resized bilinearly to the
 * patch). PNG: columns are the patch and the classes.
 */
export async function foregroundImages(image: ImageInput, maps: MapsInput, opts: ForegroundOptions): Promise<Buffer> {
  const img = toRgbImage(image);
  const { fg: fgRow, bg: bgRow } = foregroundRegions(img, maps, opts);
  const s = opts.scale ?? 1;
  const showBg = opts.background ?? true;
  const cells: GridCell[][] = [[upscale(img, s), ...fgRow.map((r) => upscale(r, s))]];
  if (showBg) cells.push([null, ...bgRow.map((r) => upscale(r, s))]);
  return imageGrid(cells, {
    title: opts.title,
    colLabels: ["patch X", ...opts.classes],
    rowLabels: showBg ? ["X_FG = b·M·X", "X_BG = (1-b)(1-M)X"] : ["X_FG = b·M·X"],
  });
}

/** Split a `[P, H, W, C]` tensor (or pass through a list) into one image per entry. Reads the tensor once; does not dispose it. */
function imagesOf(x: tf.Tensor | ImageInput[]): RgbImage[] {
  if (Array.isArray(x)) return x.map(toRgbImage);
  if (x.rank !== 4) throw new Error(`expected a [P, H, W, C] tensor, got [${x.shape.join(", ")}]`);
  const [p, h, w, c] = x.shape as [number, number, number, number];
  const all = x.dataSync();
  const float = x.dtype === "float32";
  return Array.from({ length: p }, (_, i) => toRgbImage(float ? { width: w, height: h, channels: c, data: all.subarray(i * h * w * c, (i + 1) * h * w * c) as Float32Array } : { width: w, height: h, channels: c, data: Array.from(all.subarray(i * h * w * c, (i + 1) * h * w * c)) }));
}

/**
 * Region images as the matching stage built them (eq. 5; e.g. `Regions.fg` and
 * `Regions.bg` of src/match, `[P, H, W, 3]` in [0, 1], one per image-subclass
 * pair), as PNG: X_FG in the first row, X_BG in the second, one column per pair.
 */
export async function regionImages(
  fg: tf.Tensor | ImageInput[],
  bg?: tf.Tensor | ImageInput[],
  opts: { captions?: string[]; scale?: number; title?: string } = {},
): Promise<Buffer> {
  const s = opts.scale ?? 1;
  const f = imagesOf(fg).map((im) => upscale(im, s));
  const b = bg ? imagesOf(bg).map((im) => upscale(im, s)) : undefined;
  if (b && b.length !== f.length) throw new Error(`regionImages: ${f.length} foreground images but ${b.length} background images`);
  return imageGrid(b ? [f, b] : [f], { title: opts.title, colLabels: opts.captions, rowLabels: b ? ["X_FG", "X_BG"] : ["X_FG"] });
}

/** A vertical colour bar for a colormap, as SVG. */
export function colorbarSvg(cmap: ColormapName, opts: { height?: number; min?: number; max?: number; label?: string; fontSize?: number } = {}): string {
  const h = opts.height ?? 200;
  const fs = opts.fontSize ?? 12;
  const lo = opts.min ?? 0;
  const hi = opts.max ?? 1;
  const barW = 16;
  const top = opts.label ? fs + 10 : 8;
  const barH = h - top - 8;
  const stops = Array.from({ length: 17 }, (_, i) => `<stop offset="${(i / 16).toFixed(4)}" stop-color="${hex(colormap(cmap, 1 - i / 16))}"/>`).join("");
  const labels = [hi, (lo + hi) / 2, lo].map((v, i) => svgText(8 + barW + 6, top + (i * barH) / 2 + fs / 3, formatTick(v), { size: fs })).join("");
  const width = Math.ceil(8 + barW + 6 + Math.max(...[hi, (lo + hi) / 2, lo].map((v) => textWidth(formatTick(v), fs)), opts.label ? textWidth(opts.label, fs) - barW : 0) + 8);
  return svgDocument(
    width,
    h,
    `<defs><linearGradient id="cb" x1="0" y1="0" x2="0" y2="1">${stops}</linearGradient></defs>` +
      (opts.label ? svgText(8, fs + 2, opts.label, { size: fs }) : "") +
      `<rect x="8" y="${top}" width="${barW}" height="${barH}" fill="url(#cb)" stroke="#444" stroke-width="1"/>` +
      labels,
  );
}

function formatTick(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return Number(v.toPrecision(3)).toString();
}

/** A heatmap of one map blended over the patch, as RGB: pixel = (1 - alpha) * patch + alpha * cmap(value). */
export function heatmapOverlayRgb(img: RgbImage, values: ArrayLike<number>, cmap: ColormapName, alpha: number, lo = 0, hi = 1): RgbImage {
  const n = img.width * img.height;
  if (values.length !== n) throw new Error(`heatmap has ${values.length} values for a ${img.height} x ${img.width} patch`);
  const out = new Uint8Array(n * 3);
  const span = hi - lo || 1;
  for (let i = 0; i < n; i++) {
    const c = colormap(cmap, (values[i]! - lo) / span);
    for (let k = 0; k < 3; k++) out[3 * i + k] = Math.round((1 - alpha) * img.data[3 * i + k]! + alpha * c[k]!);
  }
  return { width: img.width, height: img.height, data: out };
}

/** Options of {@link camHeatmaps}. */
export interface CamHeatmapOptions {
  /** Class names, one per CAM channel. */
  classes: string[];
  /** Colormap (default `jet`, the usual CAM rendering; `viridis` is perceptually uniform). */
  colormap?: ColormapName;
  /** Heatmap opacity over the patch (default 0.5). */
  alpha?: number;
  /** Value range mapped to the colormap: `fixed` uses [0, 1] (CAMs are min-max normalised per class), `per-class` stretches each map (default `fixed`). */
  range?: "fixed" | "per-class";
  /** Image-level labels (multi-hot); classes absent from the label are captioned "(not in label)". */
  labels?: number[];
  scale?: number;
  title?: string;
}

/**
 * CAM heatmaps per class over the patch, with a colour bar, as PNG. `cams` is
 * `[H, W, C]` (e.g. the fused CAM of METHOD.md section 5), resized bilinearly to
 * the patch when smaller.
 */
export async function camHeatmaps(image: ImageInput, cams: MapsInput, opts: CamHeatmapOptions): Promise<Buffer> {
  const img = toRgbImage(image);
  const M = resizeMapsBilinear(toMapStack(cams), img.height, img.width);
  const C = M.channels;
  if (opts.classes.length !== C) throw new Error(`camHeatmaps: ${opts.classes.length} class names for ${C} CAM channels`);
  const cmap = opts.colormap ?? "jet";
  const s = opts.scale ?? 1;
  const n = img.width * img.height;
  const panels: RgbImage[] = [];
  const captions: string[] = [];
  for (let c = 0; c < C; c++) {
    const v = new Float32Array(n);
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < n; i++) {
      v[i] = M.data[i * C + c]!;
      lo = Math.min(lo, v[i]!);
      hi = Math.max(hi, v[i]!);
    }
    const [a, b] = opts.range === "per-class" ? [lo, hi] : [0, 1];
    panels.push(upscale(heatmapOverlayRgb(img, v, cmap, opts.alpha ?? 0.5, a, b), s));
    captions.push(`max ${hi.toFixed(2)}${opts.labels && !opts.labels[c] ? " (not in label)" : ""}`);
  }
  const bar = opts.range === "per-class" ? null : colorbarSvg(cmap, { height: img.height * s });
  return imageGrid([[upscale(img, s), ...panels, bar]], {
    title: opts.title,
    colLabels: ["patch", ...opts.classes, ""],
    cellLabels: [["", ...captions, ""]],
  });
}

/** One patch for {@link compareModels}. */
export interface CompareItem {
  /** Row caption, e.g. the file name. */
  id?: string;
  image: ImageInput;
  gt?: MaskInput;
  /** Prediction of the first model. */
  a: MaskInput;
  /** Prediction of the second model. */
  b: MaskInput;
  /** Per-image scores of the two models (e.g. mIoU), shown under their columns. */
  scores?: [number, number];
}

/**
 * Side-by-side comparison of two models on the same patches, as PNG: one row per
 * patch with the patch, the ground truth (when given) and both predictions
 * overlaid in the palette, and a legend.
 */
export async function compareModels(
  items: CompareItem[],
  pal: PaletteInfo,
  opts: OverlayOptions & { names?: [string, string]; title?: string; scale?: number; scoreName?: string } = {},
): Promise<Buffer> {
  if (items.length === 0) throw new Error("compareModels: no patches");
  const names = opts.names ?? ["model A", "model B"];
  const s = opts.scale ?? 1;
  const hasGt = items.some((it) => it.gt);
  const ids = new Set<number>();
  const rows: GridCell[][] = [];
  const cellLabels: string[][] = [];
  for (const it of items) {
    const img = toRgbImage(it.image);
    const row: GridCell[] = [upscale(img, s)];
    if (hasGt) row.push(it.gt ? upscale(overlayMaskRgb(img, it.gt, pal, opts), s) : null);
    row.push(upscale(overlayMaskRgb(img, it.a, pal, opts), s), upscale(overlayMaskRgb(img, it.b, pal, opts), s));
    for (const m of [it.gt, it.a, it.b]) if (m) for (const id of presentIds(toIdMask(m), pal.colors.length)) ids.add(id);
    rows.push(row);
    const sn = opts.scoreName ?? "mIoU";
    const sc = it.scores ? [`${sn} ${(it.scores[0] * 100).toFixed(1)}`, `${sn} ${(it.scores[1] * 100).toFixed(1)}`] : ["", ""];
    cellLabels.push(hasGt ? ["", "", ...sc] : ["", ...sc]);
  }
  if (opts.showBackground !== true) ids.delete(pal.backgroundId);
  return imageGrid(rows, {
    title: opts.title,
    colLabels: hasGt ? ["patch", "ground truth", ...names] : ["patch", ...names],
    rowLabels: items.map((it, i) => it.id ?? `#${i}`),
    cellLabels: items.some((it) => it.scores) ? cellLabels : undefined,
    legend: legendFor(pal, [...ids].sort((x, y) => x - y)),
  });
}

/**
 * Pixels where prediction and ground truth disagree (1) and agree or are not
 * counted (0). Ground truth `ignoreId` is never counted; under `ignore-bg`, GT
 * background isn't either (the metrics' conventions).
 */
export function errorPixels(
  gt: MaskInput,
  pred: MaskInput,
  opts: { backgroundId?: number; convention?: "count-bg" | "ignore-bg"; ignoreId?: number } = {},
): { mask: Uint8Array; errors: number; counted: number } {
  const g = toIdMask(gt);
  const p = toIdMask(pred);
  if (g.width !== p.width || g.height !== p.height) throw new Error(`errorPixels: ground truth is ${g.height} x ${g.width}, prediction ${p.height} x ${p.width}`);
  const ignore = opts.ignoreId ?? 255;
  const dropBg = opts.convention === "ignore-bg";
  if (dropBg && opts.backgroundId === undefined) throw new Error("errorPixels: the ignore-bg convention needs backgroundId");
  const mask = new Uint8Array(g.data.length);
  let errors = 0;
  let counted = 0;
  for (let i = 0; i < mask.length; i++) {
    const gv = g.data[i]!;
    if (gv === ignore || (dropBg && gv === opts.backgroundId)) continue;
    counted++;
    if (gv !== p.data[i]) {
      mask[i] = 1;
      errors++;
    }
  }
  return { mask, errors, counted };
}

/**
 * The error image of {@link errorView}, as RGB: the patch greyed and multiplied by
 * `dim` (default 0.5) where prediction and ground truth agree or the pixel is not
 * counted, and the wrongly predicted class's palette colour where they disagree.
 */
export function errorViewRgb(
  image: ImageInput,
  gt: MaskInput,
  pred: MaskInput,
  pal: PaletteInfo,
  opts: { convention?: "count-bg" | "ignore-bg"; ignoreId?: number; dim?: number } = {},
): { image: RgbImage; errors: number; counted: number; wrongIds: number[] } {
  const img = toRgbImage(image);
  const g = resizeIdsNearest(toIdMask(gt), img.height, img.width);
  const p = resizeIdsNearest(toIdMask(pred), img.height, img.width);
  const err = errorPixels(g, p, { backgroundId: pal.backgroundId, convention: opts.convention ?? "count-bg", ignoreId: opts.ignoreId });
  const dim = opts.dim ?? 0.5;
  const out = new Uint8Array(img.data.length);
  const wrong = new Set<number>();
  for (let i = 0; i < err.mask.length; i++) {
    if (err.mask[i]) {
      const id = p.data[i]!;
      wrong.add(id);
      const c = pal.colors[id] ?? [0, 0, 0];
      out[3 * i] = c[0];
      out[3 * i + 1] = c[1];
      out[3 * i + 2] = c[2];
    } else {
      const grey = Math.round(dim * (0.299 * img.data[3 * i]! + 0.587 * img.data[3 * i + 1]! + 0.114 * img.data[3 * i + 2]!));
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = grey;
    }
  }
  return { image: { width: img.width, height: img.height, data: out }, errors: err.errors, counted: err.counted, wrongIds: [...wrong].sort((a, b) => a - b) };
}

/**
 * Per-image error view, as PNG: the patch greyed and dimmed, and every pixel where
 * the prediction disagrees with the ground truth painted in the colour of the
 * wrongly predicted class; beside it the ground truth and prediction overlays,
 * and a legend of the wrong classes. The caption gives the error rate under the
 * chosen background convention.
 */
export async function errorView(
  image: ImageInput,
  gt: MaskInput,
  pred: MaskInput,
  pal: PaletteInfo,
  opts: { convention?: "count-bg" | "ignore-bg"; ignoreId?: number; scale?: number; title?: string; dim?: number; panels?: boolean } = {},
): Promise<Buffer> {
  const img = toRgbImage(image);
  const g = resizeIdsNearest(toIdMask(gt), img.height, img.width);
  const p = resizeIdsNearest(toIdMask(pred), img.height, img.width);
  const conv = opts.convention ?? "count-bg";
  const { image: errImg, errors, counted, wrongIds } = errorViewRgb(img, g, p, pal, opts);
  const err = { errors, counted };
  const wrong = new Set(wrongIds);
  const s = opts.scale ?? 1;
  const view = upscale(errImg, s);
  const rate = err.counted ? (100 * err.errors) / err.counted : 0;
  const caption = `errors ${rate.toFixed(1)}% of ${err.counted} px (${conv})`;
  const showPanels = opts.panels ?? true;
  const cells: GridCell[] = showPanels
    ? [upscale(img, s), upscale(overlayMaskRgb(img, g, pal, { ignoreId: opts.ignoreId }), s), upscale(overlayMaskRgb(img, p, pal), s), view]
    : [view];
  return imageGrid([cells], {
    title: opts.title,
    colLabels: showPanels ? ["patch", "ground truth", "prediction", "errors (wrong class)"] : ["errors (wrong class)"],
    cellLabels: [showPanels ? ["", "", "", caption] : [caption]],
    legend: legendFor(pal, [...wrong].sort((a, b) => a - b)),
    legendTitle: wrong.size ? "predicted" : undefined,
  });
}
