/**
 * Dataset readers: LUAD-HistoSeg and BCSS-WSSS in their published layouts, the
 * synthetic benchmark (same layout as LUAD-HistoSeg), and a generic layout
 * (a folder of images plus a CSV of labels, with optional masks).
 *
 * Published layout (WSSS-Tissue, Han et al. 2022; the PBIP release names the
 * validation folder `valid`, the WSSS-Tissue README `val`; both are accepted):
 * ```
 * <root>/train/<name>-[1 0 0 1].png        (LUAD-HistoSeg; BCSS-WSSS: <name>+0[1101].png)
 * <root>/{val|valid}/img/<name>.png
 * <root>/{val|valid}/mask/<name>.png       (palette PNG, ids 0..N-1 classes, N background)
 * <root>/test/img/<name>.png, <root>/test/mask/<name>.png
 * ```
 * The synthetic benchmark also writes `<root>/train-mask/<train name>.png`
 * (ground truth for the training patches, which real WSSS datasets lack); when
 * present, train samples get a `maskPath`.
 *
 * Generic layout: `<root>/labels.csv` (or `<root>/<split>/labels.csv`) with a
 * column naming the image (`image`, `file`, `filename`, `path` or `id`), an
 * optional `split` column (train, val/valid, test), an optional `mask` column,
 * and the label either as one `label` column (`1 0 0 1`, `1101`, `[1 0 0 1]`) or
 * as one 0/1 column per class, named by class code or class name. Paths are
 * relative to the CSV's folder; bare names are also looked up in `images/` and
 * `masks/` beside it.
 *
 * Images are read as RGB (the authors' release feeds BGR; see `image.ts`).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FileError, UsageError } from "../util/errors";
import { readJson } from "../util/fs";
import { readMask, labelFromMask } from "./image";
import { parseLabelText, tryParseLabelFromName } from "./labels";
import { loadManifest, specProblems, type DataManifest } from "./manifest";
import type { DatasetSpec, LabelFormat, Sample, Split, SplitName } from "./types";

/** Image file extensions the readers pick up. */
export const IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"];

/** The splits, in order. */
export const SPLIT_NAMES: readonly SplitName[] = ["train", "val", "test"];

/** Folder names accepted for each split in the published layouts. */
export const SPLIT_FOLDERS: Record<SplitName, string[]> = {
  train: ["train"],
  val: ["val", "valid", "validation"],
  test: ["test"],
};

const IMG_DIRS = ["img", "images", "image"];
const MASK_DIRS = ["mask", "masks"];
const TRAIN_MASK_DIR = "train-mask";

/** A folder layout, or `auto` to detect it (a labels.csv means `csv`, else the dataset's published layout). */
export type LayoutChoice = LabelFormat | "auto";

/** Options of {@link openDataset}. */
export interface OpenOptions {
  /** Dataset name (a manifest in data-manifests/), a manifest, or a spec. */
  dataset: string | DataManifest | DatasetSpec;
  /** Resize patches of another size to this side on load; without it they are an error. */
  resize?: number;
  /** Folder layout; default `auto` (a labels.csv means `csv`, else the dataset's published layout). */
  layout?: LayoutChoice;
}

/** Options of {@link openSplit}: {@link OpenOptions} plus the split (`valid` is accepted for `val`). */
export interface OpenSplitOptions extends OpenOptions {
  split: SplitName | "valid";
}

/** One thing wrong with a dataset folder, as {@link scanSplit} and `verify` report it. */
export interface DataProblem {
  /** The file or folder concerned. */
  file: string;
  /** Short category, e.g. `label`, `mask-missing`, `empty-split`. */
  kind: string;
  problem: string;
}

/** A dataset folder opened against its spec. */
export interface Dataset {
  root: string;
  spec: DatasetSpec;
  manifest?: DataManifest;
  layout: LabelFormat;
  /** Splits found in the folder. */
  splits: SplitName[];
  /** Open one split (throws a FileError naming the first bad file, with a count of the rest). */
  split(name: SplitName | "valid"): Split;
  resize?: number;
}

function isImage(f: string): boolean {
  return !f.startsWith(".") && IMAGE_EXTENSIONS.includes(path.extname(f).toLowerCase());
}

function listImages(dir: string): string[] {
  return fs.readdirSync(dir).filter(isImage).sort();
}

function firstExisting(base: string, names: string[]): string | undefined {
  for (const n of names) {
    const p = path.join(base, n);
    if (fs.existsSync(p) && fs.statSync(p).isDirectory()) return p;
  }
  return undefined;
}

/** Normalise a split name (`valid`/`validation` -> `val`). */
export function normalizeSplitName(name: string): SplitName {
  const n = name.toLowerCase();
  if (n === "train") return "train";
  if (n === "val" || n === "valid" || n === "validation") return "val";
  if (n === "test") return "test";
  throw new UsageError(`unknown split "${name}"; use train, val (or valid) or test`);
}

/**
 * The spec and manifest for `dataset`. For a folder written by the synthetic
 * generator, the folder's `card.json` supplies the patch size and the
 * normalisation statistics of that particular set.
 */
export function resolveSpec(root: string, dataset: OpenOptions["dataset"]): { spec: DatasetSpec; manifest?: DataManifest } {
  let manifest: DataManifest | undefined;
  let spec: DatasetSpec;
  if (typeof dataset === "string") {
    manifest = loadManifest(dataset);
    spec = manifest.spec;
  } else if ("spec" in dataset) {
    manifest = dataset;
    spec = dataset.spec;
  } else spec = dataset;
  const card = path.join(root, "card.json");
  if (fs.existsSync(card)) {
    const c = readJson<{ spec?: DatasetSpec }>(card);
    if (c.spec && c.spec.name === spec.name) {
      const p = specProblems(c.spec);
      if (p.length) throw new FileError(card, `invalid spec: ${p.join("; ")}`);
      spec = c.spec;
    }
  }
  return { spec, manifest };
}

/** Which layout a folder uses. */
export function detectLayout(root: string, spec: DatasetSpec, choice: LayoutChoice = "auto"): LabelFormat {
  if (choice !== "auto") return choice;
  if (fs.existsSync(path.join(root, "labels.csv"))) return "csv";
  for (const s of SPLIT_NAMES) for (const f of SPLIT_FOLDERS[s]) if (fs.existsSync(path.join(root, f, "labels.csv"))) return "csv";
  return spec.labelFormat;
}

/** Which splits a folder holds. */
export function findSplits(root: string, layout: LabelFormat): SplitName[] {
  if (layout === "csv") {
    const csv = path.join(root, "labels.csv");
    if (fs.existsSync(csv)) {
      const { rows, header } = readCsv(csv);
      const si = header.indexOf("split");
      if (si < 0) return ["train"];
      const found = new Set(rows.map((r) => normalizeSplitSafe(r[si] ?? "")));
      return SPLIT_NAMES.filter((s) => found.has(s));
    }
  }
  return SPLIT_NAMES.filter((s) => SPLIT_FOLDERS[s].some((f) => fs.existsSync(path.join(root, f))));
}

function normalizeSplitSafe(s: string): SplitName | undefined {
  try {
    return normalizeSplitName(s.trim());
  } catch {
    return undefined;
  }
}

// ---- CSV --------------------------------------------------------------------

/** Parse CSV text (RFC 4180 quoting; comma or semicolon separated; first row is the header, lower-cased). */
export function parseCsv(text: string): { header: string[]; rows: string[][] } {
  const firstLine = text.split(/\r?\n/, 1)[0] ?? "";
  const sep = (firstLine.match(/;/g)?.length ?? 0) > (firstLine.match(/,/g)?.length ?? 0) ? ";" : ",";
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = "";
  let q = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (q) {
      if (ch === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (ch === '"') q = false;
      else cell += ch;
    } else if (ch === '"') q = true;
    else if (ch === sep) {
      row.push(cell);
      cell = "";
    } else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      row.push(cell);
      cell = "";
      if (row.some((c) => c.trim() !== "")) rows.push(row);
      row = [];
    } else cell += ch;
  }
  row.push(cell);
  if (row.some((c) => c.trim() !== "")) rows.push(row);
  const header = (rows.shift() ?? []).map((h) => h.trim().toLowerCase());
  return { header, rows: rows.map((r) => r.map((c) => c.trim())) };
}

function readCsv(file: string): { header: string[]; rows: string[][] } {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new FileError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseCsv(text);
}

// ---- scanning ------------------------------------------------------------------

/** The result of scanning one split folder: the samples that could be read and every problem found. */
export interface SplitScan {
  split: SplitName;
  /** The split's folder (or the CSV's folder). */
  root: string;
  samples: Sample[];
  problems: DataProblem[];
  /** Mask files without an image (published layouts). */
  orphanMasks: string[];
}

/** Options of {@link scanSplit}. */
export interface ScanOptions {
  /** Derive val/test labels from the masks when names carry none (default true). Without it, such samples get an all-zero label. */
  labelsFromMasks?: boolean;
}

/**
 * Scan one split of a dataset folder without decoding images: list the samples,
 * parse their labels, pair images with masks, and collect every problem (missing
 * folder, empty split, missing or bad label, missing mask, unreadable mask,
 * mask value outside the palette). Used by {@link openSplit} (which throws on
 * the first problem) and by `verify` (which lists them all).
 */
export function scanSplit(root: string, spec: DatasetSpec, layout: LabelFormat, split: SplitName, opts: ScanOptions = {}): SplitScan {
  if (layout === "csv") return scanCsv(root, spec, split, opts);
  const problems: DataProblem[] = [];
  const n = spec.classes.length;
  const folder = firstExisting(root, SPLIT_FOLDERS[split]);
  const where = path.join(root, SPLIT_FOLDERS[split].join("|"));
  if (!folder) return { split, root: where, samples: [], problems: [{ file: where, kind: "missing-folder", problem: `no ${split} folder (looked for ${SPLIT_FOLDERS[split].join(", ")})` }], orphanMasks: [] };
  const samples: Sample[] = [];
  const orphanMasks: string[] = [];
  if (split === "train") {
    const files = listImages(folder);
    const maskDir = path.join(root, TRAIN_MASK_DIR);
    const hasMaskDir = fs.existsSync(maskDir);
    for (const f of files) {
      const file = path.join(folder, f);
      const r = tryParseLabelFromName(f, layout, n);
      if ("problem" in r) {
        problems.push({ file, kind: "label", problem: r.problem });
        continue;
      }
      const s: Sample = { id: f, imagePath: file, label: r.label };
      if (hasMaskDir) {
        const m = path.join(maskDir, `${path.parse(f).name}.png`);
        if (fs.existsSync(m)) s.maskPath = m;
        else problems.push({ file, kind: "mask-missing", problem: `no mask ${m}` });
      }
      samples.push(s);
    }
    if (files.length === 0) problems.unshift({ file: folder, kind: "empty-split", problem: "no images in the train folder" });
  } else {
    const imgDir = firstExisting(folder, IMG_DIRS);
    const maskDir = firstExisting(folder, MASK_DIRS);
    if (!imgDir) problems.push({ file: path.join(folder, "img"), kind: "missing-folder", problem: `no image folder (looked for ${IMG_DIRS.join(", ")})` });
    if (!maskDir) problems.push({ file: path.join(folder, "mask"), kind: "missing-folder", problem: `no mask folder (looked for ${MASK_DIRS.join(", ")})` });
    if (imgDir) {
      const files = listImages(imgDir);
      const masks = new Map<string, string>();
      if (maskDir) for (const m of listImages(maskDir)) masks.set(path.parse(m).name, path.join(maskDir, m));
      for (const f of files) {
        const file = path.join(imgDir, f);
        const stem = path.parse(f).name;
        const maskPath = masks.get(stem);
        masks.delete(stem);
        if (maskDir && !maskPath) {
          problems.push({ file, kind: "mask-missing", problem: `no mask named ${stem}.png in ${maskDir}` });
          continue;
        }
        const fromName = tryParseLabelFromName(f, layout, n);
        let label: number[] | undefined = "label" in fromName ? fromName.label : undefined;
        if (!label && maskPath && opts.labelsFromMasks !== false) {
          try {
            label = labelFromMask(readMask(maskPath, spec).ids, n);
          } catch (e) {
            problems.push({ file: maskPath, kind: maskProblemKind(e), problem: (e as FileError).problem ?? (e as Error).message });
            continue;
          }
        }
        samples.push({ id: f, imagePath: file, label: label ?? new Array<number>(n).fill(0), maskPath });
      }
      if (files.length === 0) problems.unshift({ file: imgDir, kind: "empty-split", problem: `no images in the ${split} image folder` });
      for (const m of masks.values()) orphanMasks.push(m);
      for (const m of orphanMasks) problems.push({ file: m, kind: "image-missing", problem: "mask without an image" });
    }
  }
  return { split, root: folder, samples, problems, orphanMasks };
}

/** Classify a readMask error for reports. */
export function maskProblemKind(e: unknown): string {
  const msg = (e as Error).message ?? "";
  if (/outside the .* palette|not in the .* palette/.test(msg)) return "mask-value";
  if (/truncated|corrupt|CRC|decompress|signature/i.test(msg)) return "corrupt";
  return "unreadable";
}

function scanCsv(root: string, spec: DatasetSpec, split: SplitName, opts: ScanOptions): SplitScan {
  const n = spec.classes.length;
  const problems: DataProblem[] = [];
  let csv = path.join(root, "labels.csv");
  let perSplit = false;
  if (!fs.existsSync(csv)) {
    const folder = firstExisting(root, SPLIT_FOLDERS[split]);
    csv = folder ? path.join(folder, "labels.csv") : path.join(root, split, "labels.csv");
    perSplit = true;
  }
  const base = path.dirname(csv);
  if (!fs.existsSync(csv)) return { split, root: base, samples: [], problems: [{ file: csv, kind: "missing-folder", problem: `no labels.csv for the ${split} split` }], orphanMasks: [] };
  const { header, rows } = readCsv(csv);
  const col = (names: string[]): number => header.findIndex((h) => names.includes(h));
  const ci = col(["image", "file", "filename", "path", "id", "name"]);
  const si = col(["split"]);
  const mi = col(["mask", "mask_path", "maskpath"]);
  const li = col(["label", "labels"]);
  const classCols = spec.codes.map((code, k) => header.findIndex((h) => h === code.toLowerCase() || h === spec.classes[k]!.toLowerCase()));
  if (ci < 0) return { split, root: base, samples: [], problems: [{ file: csv, kind: "csv", problem: `no image column (one of image, file, filename, path, id); header is ${header.join(",")}` }], orphanMasks: [] };
  if (li < 0 && classCols.some((c) => c < 0)) {
    return {
      split,
      root: base,
      samples: [],
      problems: [{ file: csv, kind: "csv", problem: `no label column: need "label" or one column per class (${spec.codes.join(", ")})` }],
      orphanMasks: [],
    };
  }
  const samples: Sample[] = [];
  const seen = new Set<string>();
  const locate = (name: string, dirs: string[]): string | undefined => {
    for (const p of [path.resolve(base, name), ...dirs.map((d) => path.join(base, d, name))]) if (fs.existsSync(p)) return p;
    return undefined;
  };
  rows.forEach((r, k) => {
    const line = `${csv}:${k + 2}`;
    if (si >= 0 && !perSplit) {
      const s = normalizeSplitSafe(r[si] ?? "");
      if (!s) {
        problems.push({ file: line, kind: "csv", problem: `unknown split "${r[si]}"` });
        return;
      }
      if (s !== split) return;
    } else if (!perSplit && split !== "train") return;
    const name = r[ci] ?? "";
    const imagePath = locate(name, IMG_DIRS);
    if (!imagePath) {
      problems.push({ file: path.resolve(base, name), kind: "unreadable", problem: `image listed at ${line} not found` });
      return;
    }
    const id = path.basename(name);
    if (seen.has(id)) {
      problems.push({ file: imagePath, kind: "csv", problem: `listed twice (again at ${line})` });
      return;
    }
    seen.add(id);
    let label: number[] | undefined;
    if (li >= 0) label = parseLabelText(r[li] ?? "", n);
    else {
      const vals = classCols.map((c) => (r[c] ?? "").trim());
      if (vals.every((v) => v === "0" || v === "1")) label = vals.map(Number);
    }
    let maskPath: string | undefined;
    if (mi >= 0 && (r[mi] ?? "") !== "") {
      maskPath = locate(r[mi]!, MASK_DIRS);
      if (!maskPath) problems.push({ file: path.resolve(base, r[mi]!), kind: "mask-missing", problem: `mask listed at ${line} not found` });
    } else if (mi < 0) {
      maskPath = MASK_DIRS.map((d) => path.join(base, d, `${path.parse(id).name}.png`)).find((p) => fs.existsSync(p));
    }
    if (!label && maskPath && opts.labelsFromMasks !== false) {
      try {
        label = labelFromMask(readMask(maskPath, spec).ids, n);
      } catch (e) {
        problems.push({ file: maskPath, kind: maskProblemKind(e), problem: (e as FileError).problem ?? (e as Error).message });
        return;
      }
    }
    if (!label || !label.some((v) => v === 1)) {
      problems.push({ file: imagePath, kind: "label", problem: `no valid label at ${line} (need ${n} values of 0/1 with at least one 1)` });
      return;
    }
    samples.push({ id, imagePath, label, maskPath });
  });
  if (samples.length === 0 && !problems.some((p) => p.kind === "csv")) problems.push({ file: csv, kind: "empty-split", problem: `no ${split} samples` });
  return { split, root: base, samples: samples.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)), problems, orphanMasks: [] };
}

/** Width and height from a PNG header (first 24 bytes), or undefined for other formats. */
export function pngSize(file: string): { width: number; height: number } | undefined {
  const fd = fs.openSync(file, "r");
  try {
    const b = Buffer.alloc(24);
    const n = fs.readSync(fd, b, 0, 24, 0);
    if (n < 24 || b.readUInt32BE(0) !== 0x89504e47 || b.toString("latin1", 12, 16) !== "IHDR") return undefined;
    return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
  } finally {
    fs.closeSync(fd);
  }
}

function buildSplit(root: string, spec: DatasetSpec, layout: LabelFormat, name: SplitName, resize: number | undefined): Split {
  if (resize !== undefined && (!Number.isInteger(resize) || resize <= 0)) throw new UsageError(`resize must be a positive integer, got ${resize}`);
  const scan = scanSplit(root, spec, layout, name);
  if (scan.problems.length) {
    const p = scan.problems[0]!;
    const more = scan.problems.length > 1 ? ` (and ${scan.problems.length - 1} more problem${scan.problems.length > 2 ? "s" : ""}; run \`pbip data verify ${root} --dataset ${spec.name}\` to list them)` : "";
    throw new FileError(p.file, `${p.problem}${more}`);
  }
  // Fail fast on a patch of the wrong size (each image is checked again when loaded).
  const first = scan.samples[0];
  if (first && resize === undefined) {
    const sz = pngSize(first.imagePath);
    if (sz && (sz.width !== spec.patchSize || sz.height !== spec.patchSize)) {
      throw new FileError(first.imagePath, `patch is ${sz.width}x${sz.height}, ${spec.name} patches are ${spec.patchSize}x${spec.patchSize}; ask for resizing (resize: ${spec.patchSize}, --resize ${spec.patchSize}) to use it`);
    }
  }
  const hasMasks = scan.samples.length > 0 && scan.samples.every((s) => s.maskPath !== undefined);
  return { dataset: spec, name, root: scan.root, samples: scan.samples, layout, resize, hasMasks };
}

/**
 * Open a dataset folder against its spec: detects the layout and the splits
 * present. `split(name)` reads one split (labels parsed, masks paired; val/test
 * labels come from the masks when names carry none).
 */
export function openDataset(root: string, opts: OpenOptions): Dataset {
  const abs = path.resolve(root);
  if (!fs.existsSync(abs) || !fs.statSync(abs).isDirectory()) throw new FileError(abs, "dataset folder not found");
  const { spec, manifest } = resolveSpec(abs, opts.dataset);
  const layout = detectLayout(abs, spec, opts.layout);
  const splits = findSplits(abs, layout);
  return {
    root: abs,
    spec,
    manifest,
    layout,
    splits,
    resize: opts.resize,
    split: (name) => buildSplit(abs, spec, layout, normalizeSplitName(name), opts.resize),
  };
}

/** Open one split of a dataset folder (see {@link openDataset}). */
export function openSplit(root: string, opts: OpenSplitOptions): Split {
  return openDataset(root, opts).split(opts.split);
}
