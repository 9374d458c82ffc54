/**
 * `pbip data verify`: check a dataset folder against its manifest and list every
 * problem rather than stopping at the first: missing folders, empty splits,
 * counts that differ from the published ones, unreadable / truncated / corrupt
 * files, patches of the wrong size, missing or malformed label suffixes, masks
 * without images and images without masks, and mask values outside the palette.
 */
import * as fs from "node:fs";
import sharp from "sharp";
import { FileError } from "../util/errors";
import { readJson } from "../util/fs";
import { decodePng, isPng } from "./png";
import { maskIdsFromPng, idHistogram } from "./image";
import { detectLayout, resolveSpec, scanSplit, SPLIT_NAMES, type DataProblem, type LayoutChoice } from "./dataset";
import type { DataManifest } from "./manifest";
import { BASELINE_WHITE_LEVEL } from "./colour";
import { GlassStats, glassAdvice, glassCheck, type GlassCheck } from "./glass";
import type { DatasetSpec, LabelFormat, SplitName } from "./types";

/** One row of the verify table. */
export interface VerifyRow {
  split: SplitName;
  folder: string;
  images: number;
  masks: number;
  /** Published count (or the generated count for a synthetic set), when known. */
  expected: number | null;
  /** Other accepted counts (known discrepancies). */
  alsoAccepted: number[];
  /** Files with at least one problem. */
  badFiles: number;
}

/** The result of {@link verifyDataset}: a row per split and every problem found. */
export interface VerifyReport {
  dataset: string;
  root: string;
  layout: LabelFormat;
  rows: VerifyRow[];
  problems: DataProblem[];
  ok: boolean;
  /** Whether the white level finds the glass of these images (a sample of about every 7th pixel of every image). */
  glass: GlassCheck & { whiteGrey: number };
}

/** Options of {@link verifyDataset}. */
export interface VerifyOptions {
  dataset: string | DataManifest | DatasetSpec;
  layout?: LayoutChoice;
  /** Splits to check (default all three). */
  splits?: SplitName[];
  /** Check counts against the published ones (default true). */
  checkCounts?: boolean;
  /** Parallel image decodes (default 4). */
  concurrency?: number;
  /** The white level the glass check tests (default 200, the TPRO / MLPS rule and pbip's profiles). */
  whiteGrey?: number;
  /** Progress callback: files checked so far and total. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Pixels sampled for the glass statistics: every n-th, with n the first of these
 * that does not divide the image's width, so the sample moves along the columns
 * from row to row instead of staying in a few of them (224 = 32 x 7: n is 5 there).
 */
function glassSampleStep(width: number): number {
  return [7, 5, 11, 13, 17].find((n) => width % n !== 0) ?? 3;
}

async function checkImage(file: string, spec: DatasetSpec, glass: GlassStats): Promise<DataProblem[]> {
  const out: DataProblem[] = [];
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(file);
  } catch (e) {
    return [{ file, kind: "unreadable", problem: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }];
  }
  let width: number;
  let height: number;
  let channels: number;
  let hasAlpha = false;
  let cmyk = false;
  try {
    // libpng (through sharp, off the main thread) checks CRCs, the zlib stream and truncation.
    const r = await sharp(buf, { failOn: "truncated" }).raw().toBuffer({ resolveWithObject: true });
    width = r.info.width;
    height = r.info.height;
    if (r.info.channels >= 3) glass.add(r.data, r.info.channels, glassSampleStep(width));
    // As stored (the decoded buffer is converted to sRGB already).
    const meta = await sharp(buf).metadata();
    channels = meta.channels ?? r.info.channels;
    hasAlpha = meta.hasAlpha === true;
    cmyk = meta.space === "cmyk";
  } catch (e) {
    let msg = (e as Error).message;
    if (isPng(buf)) {
      // The exact decoder says precisely what is wrong (which chunk, truncated where).
      try {
        decodePng(buf, file);
      } catch (e2) {
        if (e2 instanceof FileError) msg = e2.problem;
      }
    }
    return [{ file, kind: /truncated|CRC|corrupt|decompress|IEND|read error/i.test(msg) ? "corrupt" : "unreadable", problem: msg }];
  }
  if (width !== spec.patchSize || height !== spec.patchSize) out.push({ file, kind: "size", problem: `patch is ${width}x${height}, expected ${spec.patchSize}x${spec.patchSize}` });
  // Read fine, but not what an H&E patch usually is: said, so a wrong export is noticed.
  const stored = [!isPng(buf) ? "not a PNG (JPEG or another format: decoded, but lossy formats change colours)" : "", channels <= 2 ? "greyscale (read as RGB with equal channels)" : "", cmyk ? "CMYK (converted to RGB when read)" : "", hasAlpha ? "with an alpha channel (dropped when read)" : ""].filter(Boolean);
  if (stored.length) out.push({ file, kind: "image-format", problem: `patch is ${stored.join(", ")}` });
  return out;
}

/** Problem kinds that are notes: the files still read correctly, and `ok` stays true. */
const NOTE_KINDS: string[] = ["mask-format", "mask-palette", "image-format", "glass-level"];

const hexOf = (c: readonly number[]) => `#${c.map((v) => v.toString(16).padStart(2, "0")).join("")}`;

/**
 * A palette mask whose file palette gives the ids it uses other colours than the
 * dataset's, and not a reordering of them either: its ids are read as class ids
 * (the PIL convention), which is right unless it was written for another palette.
 */
function paletteNote(data: ArrayLike<number>, pal: readonly (readonly number[])[], spec: DatasetSpec): string | undefined {
  const used = new Set<number>();
  for (let i = 0; i < data.length; i++) used.add(data[i]!);
  const same = (a: readonly number[], b: readonly number[]) => a[0] === b[0] && a[1] === b[1] && a[2] === b[2];
  const off = [...used].filter((k) => k < spec.palette.length && (k >= pal.length || !same(pal[k]!, spec.palette[k]!))).sort((a, b) => a - b);
  if (!off.length) return undefined;
  if ([...used].every((k) => k < pal.length && spec.palette.some((c) => same(c, pal[k]!)))) return undefined; // a reordered palette: read by colour
  const names = [...spec.codes, "background"];
  const k = off[0]!;
  return `the file's palette colours ids ${off.join(", ")} differently from the ${spec.name} palette (id ${k}: ${k < pal.length ? hexOf(pal[k]!) : "no entry"} in the file, ${names[k] ?? `id ${k}`} is ${hexOf(spec.palette[k]!)}); its ids are read as class ids, which is wrong if the mask was written with another class order`;
}

function checkMask(file: string, spec: DatasetSpec, imageFile: string | undefined): DataProblem[] {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    return [{ file, kind: "unreadable", problem: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }];
  }
  try {
    if (!isPng(buf)) return [{ file, kind: "unreadable", problem: "mask is not a PNG file" }];
    const d = decodePng(buf, file);
    const out: DataProblem[] = [];
    if (d.colorType !== 3) out.push({ file, kind: "mask-format", problem: `mask is colour type ${d.colorType}, not palette mode (read anyway)` });
    else if (d.palette) {
      const note = paletteNote(d.data, d.palette, spec);
      if (note) out.push({ file, kind: "mask-palette", problem: note });
    }
    const ids = maskIdsFromPng(d, file, spec);
    const h = idHistogram(ids);
    const bad: string[] = [];
    for (let v = spec.palette.length; v < 256; v++) if (h[v]) bad.push(`${v} (${h[v]} px)`);
    if (bad.length) out.push({ file, kind: "mask-value", problem: `value${bad.length > 1 ? "s" : ""} ${bad.join(", ")} outside the ${spec.name} palette (ids 0..${spec.palette.length - 1})` });
    if (d.width !== spec.patchSize || d.height !== spec.patchSize) out.push({ file, kind: "size", problem: `mask is ${d.width}x${d.height}, expected ${spec.patchSize}x${spec.patchSize}` });
    void imageFile;
    return out;
  } catch (e) {
    const msg = e instanceof FileError ? e.problem : (e as Error).message;
    return [{ file, kind: /not in the .* palette/.test(msg) ? "mask-value" : /truncated|CRC|corrupt|decompress|IEND/i.test(msg) ? "corrupt" : "unreadable", problem: msg }];
  }
}

/** Expected split sizes: the synthetic set's card, else the manifest's published counts. */
function expectedCounts(root: string, manifest: DataManifest | undefined): Partial<Record<SplitName, { count: number | null; also: number[] }>> {
  const card = `${root}/card.json`;
  if (fs.existsSync(card)) {
    const c = readJson<{ counts?: Partial<Record<SplitName, number>> }>(card);
    if (c.counts) {
      const out: Partial<Record<SplitName, { count: number | null; also: number[] }>> = {};
      for (const s of SPLIT_NAMES) if (typeof c.counts[s] === "number") out[s] = { count: c.counts[s]!, also: [] };
      return out;
    }
  }
  const out: Partial<Record<SplitName, { count: number | null; also: number[] }>> = {};
  for (const s of SPLIT_NAMES) {
    const sc = manifest?.splits?.[s];
    if (sc) out[s] = { count: sc.count, also: sc.alsoReported ?? [] };
  }
  return out;
}

/**
 * Verify a dataset folder. Every file is decoded: images fully (truncation and
 * CRC errors show), masks through the exact PNG codec (values checked against
 * the palette). Returns a report; `ok` is false when any problem was found.
 */
export async function verifyDataset(root: string, opts: VerifyOptions): Promise<VerifyReport> {
  const whiteGrey = opts.whiteGrey ?? BASELINE_WHITE_LEVEL;
  if (!Number.isFinite(whiteGrey) || whiteGrey < 0 || whiteGrey > 255) throw new Error(`verifyDataset: whiteGrey must be a grey level in [0, 255], got ${whiteGrey}`);
  const { spec, manifest } = resolveSpec(root, opts.dataset);
  const layout = detectLayout(root, spec, opts.layout);
  const splits = opts.splits ?? [...SPLIT_NAMES];
  const expected = opts.checkCounts === false ? {} : expectedCounts(root, manifest);
  const problems: DataProblem[] = [];
  const rows: VerifyRow[] = [];
  const scans = splits.map((s) => scanSplit(root, spec, layout, s, { labelsFromMasks: false }));
  const total = scans.reduce((a, s) => a + s.samples.length, 0);
  let done = 0;
  const conc = Math.max(1, opts.concurrency ?? 4);
  const glass = new GlassStats();
  for (const scan of scans) {
    const splitProblems = [...scan.problems];
    const jobs = scan.samples.map((s) => async (): Promise<DataProblem[]> => {
      const p = await checkImage(s.imagePath, spec, glass);
      if (s.maskPath) p.push(...checkMask(s.maskPath, spec, s.imagePath));
      return p;
    });
    const results: DataProblem[][] = new Array(jobs.length);
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(conc, jobs.length) }, async () => {
        while (next < jobs.length) {
          const j = next++;
          results[j] = await jobs[j]!();
          done++;
          opts.onProgress?.(done, total);
        }
      }),
    );
    for (const r of results) splitProblems.push(...r);
    const exp = expected[scan.split];
    const images = scan.samples.length + splitProblems.filter((p) => p.kind === "label" || (p.kind === "mask-missing" && scan.split !== "train")).length;
    if (exp && exp.count !== null && images !== exp.count && !exp.also.includes(images) && images > 0) {
      splitProblems.push({ file: scan.root, kind: "count", problem: `${images} images, expected ${exp.count}${exp.also.length ? ` (or ${exp.also.join(", ")})` : ""}` });
    }
    const badFiles = new Set(splitProblems.filter((p) => !["count", "empty-split", "missing-folder", ...NOTE_KINDS].includes(p.kind)).map((p) => p.file)).size;
    rows.push({
      split: scan.split,
      folder: scan.root,
      images,
      masks: scan.samples.filter((s) => s.maskPath).length + scan.orphanMasks.length,
      expected: exp?.count ?? null,
      alsoAccepted: exp?.also ?? [],
      badFiles,
    });
    problems.push(...splitProblems);
  }
  const glassResult = glassCheck(glass, whiteGrey);
  const advice = glassAdvice(glassResult, whiteGrey);
  if (advice) problems.push({ file: root, kind: "glass-level", problem: advice });
  // Notes (a grey or RGB mask that still reads; a palette mask coloured otherwise; grey glass) are not failures.
  const ok = problems.every((p) => NOTE_KINDS.includes(p.kind));
  return { dataset: spec.name, root, layout, rows, problems, ok, glass: { ...glassResult, whiteGrey } };
}

/** The report as a plain-text table plus the list of problems, for the terminal. */
export function formatVerifyReport(r: VerifyReport): string {
  const head = ["split", "folder", "images", "expected", "masks", "bad files"];
  const body = r.rows.map((row) => [
    row.split,
    row.folder,
    String(row.images),
    row.expected === null ? "-" : `${row.expected}${row.alsoAccepted.length ? ` (or ${row.alsoAccepted.join("/")})` : ""}`,
    String(row.masks),
    String(row.badFiles),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  const out = [`dataset ${r.dataset} at ${r.root} (layout ${r.layout})`, "", line(head), line(widths.map((w) => "-".repeat(w))), ...body.map(line), ""];
  const real = r.problems.filter((p) => !NOTE_KINDS.includes(p.kind));
  const notes = r.problems.filter((p) => NOTE_KINDS.includes(p.kind));
  if (real.length === 0) out.push(`OK: no problems found${notes.length ? ` (${notes.length} note${notes.length > 1 ? "s" : ""} below)` : ""}`);
  else {
    const byKind = new Map<string, number>();
    for (const p of real) byKind.set(p.kind, (byKind.get(p.kind) ?? 0) + 1);
    out.push(`FAILED: ${real.length} problem${real.length > 1 ? "s" : ""} (${[...byKind].map(([k, n]) => `${k} ${n}`).join(", ")})`);
    for (const p of real) out.push(`  [${p.kind}] ${p.file}: ${p.problem}`);
    if (byKind.has("count")) out.push("  (split sizes are compared with the published ones; for a subset, a re-split or your own data in this layout, add --no-counts)");
  }
  for (const kind of NOTE_KINDS) {
    const ofKind = notes.filter((p) => p.kind === kind);
    for (const p of ofKind.slice(0, 5)) out.push(`  [note] ${p.file}: ${p.problem}`);
    if (ofKind.length > 5) out.push(`  [note] ... and ${ofKind.length - 5} more files like these (${kind})`);
  }
  return out.join("\n");
}
