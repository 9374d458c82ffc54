/**
 * One unit of synthetic-set generation: paint a patch, encode it (RGB PNG and
 * palette-mode mask PNG, both with pbip's deterministic encoder), write the
 * files, and return the statistics the dataset card needs. Runs in a worker
 * thread or in the main thread; the result does not depend on which.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { sha256 } from "../../util/fs";
import { tissueSums } from "../colour";
import { encodePalettePng, encodeRgbPng } from "../png";
import type { RGB, SplitName } from "../types";
import { paintPatch, type PaintParams } from "./paint";

/** One patch to paint and write (sent to a worker thread as a message). */
export interface PatchTask {
  split: SplitName;
  index: number;
  seed: number;
  params: PaintParams;
  /** Folder the split's files go in (`train/` or `<split>/img/`). */
  imageDir: string;
  /** Mask folder (`train-mask/` or `<split>/mask/`), or undefined to write no mask. */
  maskDir?: string;
  /** Image file name; the mask gets the same name. `{label}` is replaced by the LUAD-HistoSeg label suffix. */
  name: string;
  palette: RGB[];
  /** Return the raw pixels and mask (for baselines and the card). */
  keepPixels: boolean;
}

/** What a painted patch reports back: its label, statistics for the card, file hashes, and optionally its pixels. */
export interface PatchResult {
  split: SplitName;
  index: number;
  fileName: string;
  label: number[];
  variants: (string | null)[];
  /** Pixel count per mask id (5). */
  classPixels: number[];
  /** Per channel sum and sum of squares of RGB in [0,1] over all pixels. */
  sum: number[];
  sumSq: number[];
  /** Sums over non-white pixels (for the nearest-class-mean baseline): RGB (0..255), optical density, count. */
  tissueRgb: number[];
  tissueOd: number[];
  tissueCount: number;
  /** sha256 of the files written, by path relative to the dataset root. */
  hashes: [string, string][];
  rgb?: Uint8Array;
  mask?: Uint8Array;
}

/** Run one task: paint, encode, write, summarise. */
export function runPatchTask(t: PatchTask, root: string): PatchResult {
  const p = paintPatch(t.seed, t.params);
  const S = p.size;
  const fileName = t.name.replace("{label}", `[${p.label.join(" ")}]`);
  const png = encodeRgbPng(p.rgb, S, S);
  const imgPath = path.join(t.imageDir, fileName);
  fs.writeFileSync(path.join(root, imgPath), png);
  const hashes: [string, string][] = [[imgPath, sha256(png)]];
  if (t.maskDir) {
    const m = encodePalettePng(p.mask, S, S, t.palette);
    const mPath = path.join(t.maskDir, fileName);
    fs.writeFileSync(path.join(root, mPath), m);
    hashes.push([mPath, sha256(m)]);
  }
  const classPixels = [0, 0, 0, 0, 0];
  for (let i = 0; i < p.mask.length; i++) classPixels[p.mask[i]!]!++;
  const sum = [0, 0, 0];
  const sumSq = [0, 0, 0];
  for (let i = 0; i < p.rgb.length; i += 3) {
    for (let c = 0; c < 3; c++) {
      const v = p.rgb[i + c]! / 255;
      sum[c]! += v;
      sumSq[c]! += v * v;
    }
  }
  const [tissueRgb, tissueCount] = tissueSums(p.rgb, "rgb");
  const [tissueOd] = tissueSums(p.rgb, "od");
  return {
    split: t.split,
    index: t.index,
    fileName,
    label: p.label,
    variants: Array.from({ length: 5 }, (_, c) => p.variants[c] ?? null),
    classPixels,
    sum,
    sumSq,
    tissueRgb,
    tissueOd,
    tissueCount,
    hashes,
    rgb: t.keepPixels ? p.rgb : undefined,
    mask: t.keepPixels ? p.mask : undefined,
  };
}
