/**
 * Constants of the synthetic benchmark: its classes (LUAD-HistoSeg's, in label
 * order), palette, spec, and the per-patch seed derivation.
 */
import * as path from "node:path";
import { sha256 } from "../../util/fs";
import type { DatasetSpec, RGB, SplitName } from "../types";

/** Class names, in label order. */
export const SYNTH_CLASSES = ["Tumor epithelium", "Necrosis", "Lymphocyte", "Tumor-associated stroma"];
/** Class codes, in label order. */
export const SYNTH_CODES = ["TE", "NEC", "LYM", "TAS"];
/** Mask palette by id (LUAD-HistoSeg's): TE, NEC, LYM, TAS, background. */
export const SYNTH_PALETTE: RGB[] = [
  [205, 51, 51],
  [0, 255, 0],
  [65, 105, 225],
  [255, 165, 0],
  [255, 255, 255],
];

function mix(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  }
  return (h ^ (h >>> 16)) >>> 0;
}

/** The seed of one patch: a hash of the set's seed, the split and the index. */
export function patchSeed(seed: number, split: SplitName, index: number): number {
  return mix(seed, split === "train" ? 1 : split === "val" ? 2 : 3, index);
}

/** The spec of a synthetic set with the given patch size and normalisation statistics. */
export function syntheticSpec(patchSize: number, normalization: DatasetSpec["normalization"]): DatasetSpec {
  return {
    name: "synthetic",
    classes: [...SYNTH_CLASSES],
    codes: [...SYNTH_CODES],
    palette: SYNTH_PALETTE.map((c) => [...c] as RGB),
    backgroundId: 4,
    labelFormat: "luad",
    patchSize,
    normalization,
  };
}

/** Hash of a set of (relative path, sha256) pairs, independent of order. */
export function contentHash(hashes: [string, string][]): string {
  const sorted = [...hashes].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return sha256(sorted.map(([p, h]) => `${h}  ${p.split(path.sep).join("/")}`).join("\n"));
}
