/**
 * Data manifests: one JSON file per dataset in `data-manifests/` describing its
 * layout, classes and their order, palette, label format, split sizes as
 * published (with known discrepancies), normalisation statistics, where to
 * download it, its licence and how to cite it.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FileError, UsageError } from "../util/errors";
import { projectRoot, readJson } from "../util/fs";
import type { DatasetSpec, LabelFormat, RGB, SplitName } from "./types";

/** Published size of one split. */
export interface SplitCount {
  /** The count found in the published files (null when no split was published). */
  count: number | null;
  /** Other counts reported for the same split (e.g. the paper's 306 vs the files' 300 for LUAD-HistoSeg val). */
  alsoReported?: number[];
  note?: string;
}

/** Where files live inside a dataset folder. */
export interface ManifestLayout {
  /** `luad`/`bcss`: published WSSS layouts (train/*.png with labels in names, {val,test}/{img,mask}); `csv`: generic. */
  kind: LabelFormat;
  /** Human description of the tree. */
  tree: string[];
  /** Accepted folder names per split, in order of preference (e.g. val: ["val", "valid"]). */
  folders?: Partial<Record<SplitName, string[]>>;
}

/** Where a dataset comes from: paper, download pages, licence, citation. */
export interface ManifestSource {
  paper: { title: string; authors: string; venue: string; year: number; doi?: string; url?: string };
  /** Download locations; `verified` says whether pbip's authors could check the address. */
  download: { url: string | null; what: string; verified: boolean; note?: string }[];
  licence: { name: string; url?: string; note?: string };
  /** BibTeX. */
  citation: string;
}

/** A dataset manifest (`data-manifests/<name>.json`). */
export interface DataManifest {
  name: string;
  title: string;
  description: string;
  spec: DatasetSpec;
  layout: ManifestLayout;
  splits: Partial<Record<SplitName, SplitCount>>;
  /** Where the normalisation statistics come from. */
  normalizationSource: string;
  magnification?: string;
  source?: ManifestSource;
  /** Anything pbip's authors could not verify. */
  uncertain?: string[];
  notes?: string[];
  /** Free-form extra sections (e.g. the synthetic generator's description). */
  [extra: string]: unknown;
}

/** The folder holding the manifests (`<project>/data-manifests`). */
export function manifestDir(): string {
  return path.join(projectRoot(), "data-manifests");
}

/** Names of the shipped manifests. */
export function listManifests(): string[] {
  const dir = manifestDir();
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .map((f) => f.slice(0, -5))
    .sort();
}

function isRgb(v: unknown): v is RGB {
  return Array.isArray(v) && v.length === 3 && v.every((x) => Number.isInteger(x) && x >= 0 && x <= 255);
}

function isTriple(v: unknown): boolean {
  return Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "number" && Number.isFinite(x));
}

/** Check a dataset spec; returns the problems (empty when valid). */
export function specProblems(spec: Partial<DatasetSpec> | undefined): string[] {
  if (!spec || typeof spec !== "object") return ["no spec"];
  const p: string[] = [];
  const n = Array.isArray(spec.classes) ? spec.classes.length : 0;
  if (!Array.isArray(spec.classes) || n === 0 || !spec.classes.every((c) => typeof c === "string")) p.push("spec.classes must be a non-empty list of names");
  if (!Array.isArray(spec.codes) || spec.codes.length !== n) p.push(`spec.codes must have ${n} entries`);
  if (!Array.isArray(spec.palette) || !spec.palette.every(isRgb)) p.push("spec.palette must be a list of [r,g,b] with 0..255 integers");
  else if (spec.palette.length !== n + 1) p.push(`spec.palette has ${spec.palette.length} colours, expected ${n + 1} (classes then background)`);
  if (spec.backgroundId !== n) p.push(`spec.backgroundId must be ${n} (classes are 0..${n - 1})`);
  if (!["luad", "bcss", "csv"].includes(spec.labelFormat as string)) p.push(`spec.labelFormat must be luad, bcss or csv`);
  if (!Number.isInteger(spec.patchSize) || (spec.patchSize as number) <= 0) p.push("spec.patchSize must be a positive integer");
  const nm = spec.normalization;
  if (!nm || !isTriple(nm.mean) || !isTriple(nm.std) || !nm.std.every((s) => s > 0)) p.push("spec.normalization needs mean and std, three numbers each, std > 0");
  return p;
}

/**
 * Load a manifest by name (`luad-histoseg`, `bcss-wsss`, `gcss`, `bcss`,
 * `synthetic`) or by path to a JSON file. Validates the spec; errors name the file.
 */
export function loadManifest(nameOrPath: string): DataManifest {
  const isPath = nameOrPath.endsWith(".json") || nameOrPath.includes("/") || nameOrPath.includes("\\");
  const file = isPath ? path.resolve(nameOrPath) : path.join(manifestDir(), `${nameOrPath.toLowerCase()}.json`);
  if (!fs.existsSync(file)) {
    if (isPath) throw new FileError(file, "manifest not found");
    throw new UsageError(`unknown dataset "${nameOrPath}"; known: ${listManifests().join(", ")}`);
  }
  const m = readJson<DataManifest>(file);
  const problems = specProblems(m.spec);
  if (typeof m.name !== "string") problems.unshift("no name");
  if (!m.layout || !["luad", "bcss", "csv"].includes(m.layout.kind)) problems.push("layout.kind must be luad, bcss or csv");
  if (problems.length) throw new FileError(file, `invalid manifest: ${problems.join("; ")}`);
  return m;
}

/** The dataset spec of a named dataset (shortcut for `loadManifest(name).spec`). */
export function datasetSpec(name: string): DatasetSpec {
  return loadManifest(name).spec;
}
