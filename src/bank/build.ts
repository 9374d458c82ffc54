/**
 * Building the image bank (METHOD.md section 2): select single-label training
 * patches, drop mostly white ones, encode the rest with the frozen encoder phi in
 * batches, cluster each class with cosine distance (eq. 1) into K subclasses, and
 * take one prototype per subclass.
 *
 * The work is an async generator of typed {@link BankBuildEvent}s, so a notebook
 * can show progress and intermediate tables, the CLI draws a progress bar, and a
 * test reads the result, all from the same loop. Encoding and clustering are
 * separate ({@link encodeBankFeatures}, {@link bankFromFeatures}): a K sweep
 * re-clusters the same features without encoding again, and encoded features can
 * be cached on disk per (encoder, dataset, patch list).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { Sample, Split } from "../data/types";
import { readSample } from "../data/loader";
import { rgbToTensor } from "../data/image";
import type { ImageEncoder } from "../encoders/types";
import { RELEASE, type PbipConfig } from "../config/profiles";
import { cacheDir, float32FromLE, float32ToLE, readJson, sha256, writeFileAtomic, writeJsonAtomic } from "../util/fs";
import { type FeatureMatrix, l2NormalizeRows, selectRows } from "./matrix";
import { classPrototypes, type SubclassRecord } from "./prototypes";
import { BANK_FORMAT, BANK_FORMAT_VERSION, encoderRecord, type BankEncoderRecord, type ImageBank } from "./bank";
import { pbipVersion } from "../io/checkpoint";
import { isMostlyWhite, recordWhiteStep, selectCandidates, whiteFraction, type SelectionStats } from "./select";

/** The encoded bank candidates: one feature row per kept (single-label, not white) patch. */
export interface BankFeatures {
  /** Dataset (spec) name. */
  dataset: string;
  classes: string[];
  codes: string[];
  /** Patch ids, in row order (grouped by class, then sorted by id). */
  ids: string[];
  /** Image files, in row order (for grids of nearest patches). */
  imagePaths: string[];
  /** Class index of each row. */
  classIndex: Int32Array;
  /** Pooled encoder features phi(x), not normalised, `[rows, d]`. */
  features: FeatureMatrix;
  /** White share of each kept patch. */
  whiteFractions: Float32Array;
  /** The encoder that produced them. */
  encoder: BankEncoderRecord;
  /** Selection statistics up to and including the white filter. */
  selection: SelectionStats;
}

/** Progress and results of a bank build, in order of appearance. */
export type BankBuildEvent =
  | { type: "selected"; candidates: number; selection: SelectionStats }
  | { type: "cache"; hit: boolean; file: string }
  | { type: "encode"; done: number; total: number; kept: number; white: number; seconds: number }
  | { type: "encoded"; features: BankFeatures; seconds: number }
  | { type: "cluster"; classIndex: number; className: string; k: number; sizes: number[]; iterations?: number; converged?: boolean }
  | { type: "done"; bank: ImageBank; features: BankFeatures; seconds: number };

/** Options of {@link buildBankEvents}. */
export interface BuildBankOptions {
  /** The training split (from `openDataset(...).split("train")`). */
  split: Split;
  /** The frozen encoder phi. */
  encoder: ImageEncoder;
  /** Bank settings over the release's defaults (`k`, `rule`, `nK`, `whiteGrey`, `whiteMaxFraction`, `kmeansMaxIterations`, `seed`). */
  config?: Partial<PbipConfig["bank"]>;
  /** Patches per encoder batch. Default 16. */
  batchSize?: number;
  /** Keep at most this many single-label patches per class (seeded draw), for quick runs. Default: all. */
  maxPerClass?: number;
  /** Cache encoded features under `<cache>/bank-features/` and reuse them. Default false. */
  cache?: boolean;
}

/** The bank config: release defaults with `over` merged in. */
export function bankConfig(over: Partial<PbipConfig["bank"]> = {}): PbipConfig["bank"] {
  const cfg = { ...RELEASE.bank, ...Object.fromEntries(Object.entries(over).filter(([, v]) => v !== undefined)) } as PbipConfig["bank"];
  if (!["centroid", "nearest", "random"].includes(cfg.rule)) throw new Error(`bank rule must be centroid, nearest or random, got ${JSON.stringify(cfg.rule)}`);
  const ks = Array.isArray(cfg.k) ? cfg.k : [cfg.k];
  if (ks.some((k) => !Number.isInteger(k) || k < 1)) throw new Error(`bank.k must be positive integers, got ${JSON.stringify(cfg.k)}`);
  if (!Number.isInteger(cfg.nK) || cfg.nK < 1) throw new Error(`bank.nK must be a positive integer, got ${cfg.nK}`);
  return cfg;
}

/** Seed of class `c`'s clustering or draw, derived from the bank seed. */
export function classSeed(seed: number, c: number): number {
  return (Math.imul(seed >>> 0, 0x9e3779b1) + Math.imul(c + 1, 0x85ebca6b)) >>> 0;
}

/** Options of {@link encodeSamples}. */
export interface EncodeSamplesOptions {
  batchSize?: number;
  /** Drop patches failing the white test (their rows are not in the output). */
  white?: { whiteGrey: number; whiteMaxFraction: number };
}

/** Progress and result of {@link encodeSamples}. */
export type EncodeEvent =
  | { type: "encode"; done: number; total: number; kept: number; white: number; seconds: number }
  | { type: "features"; features: FeatureMatrix; kept: number[]; whiteFractions: Float32Array; seconds: number };

/**
 * Encode patches of a split in batches with `encoder` (pooled features), reading
 * them with the data loader's reader; optionally drop mostly white ones on the
 * way. Yields a progress event per batch and finally the features (rows of the
 * kept patches, in input order, and their indices).
 */
export async function* encodeSamples(split: Split, samples: readonly Sample[], encoder: ImageEncoder, opts: EncodeSamplesOptions = {}): AsyncGenerator<EncodeEvent> {
  const t0 = Date.now();
  const bs = Math.max(1, opts.batchSize ?? 16);
  const d = encoder.identity.dim;
  const kept: number[] = [];
  const fractions: number[] = [];
  const chunks: Float32Array[] = [];
  let white = 0;
  // Read one batch ahead while the current one is encoded (sharp decodes off the main thread).
  const read = (start: number) => Promise.all(samples.slice(start, start + bs).map((s) => readSample(split, s)));
  let next = samples.length ? read(0) : undefined;
  for (let start = 0; start < samples.length; start += bs) {
    const batch = await next!;
    next = start + bs < samples.length ? read(start + bs) : undefined;
    const keepIdx: number[] = [];
    batch.forEach((b, j) => {
      const f = opts.white ? whiteFraction(b.rgb, opts.white.whiteGrey) : 0;
      if (opts.white && isMostlyWhite(f, opts.white)) white++;
      else {
        keepIdx.push(j);
        fractions.push(f);
      }
    });
    // Patches of one size per tensor (a split normally has one size).
    const bySize = new Map<number, number[]>();
    for (const j of keepIdx) bySize.set(batch[j]!.size, [...(bySize.get(batch[j]!.size) ?? []), j]);
    const rows = new Map<number, Float32Array>();
    for (const [size, js] of bySize) {
      const x = rgbToTensor(js.map((j) => batch[j]!.rgb), size);
      const out = await encoder.encode(x);
      x.dispose();
      if (out.pooled.shape[1] !== d) throw new Error(`${encoder.identity.name}: pooled features have ${out.pooled.shape[1]} values, the encoder declares d = ${d}`);
      const f = (await out.pooled.data()) as Float32Array;
      tf.dispose([out.pooled, out.dense ?? []]);
      js.forEach((j, r) => rows.set(j, f.slice(r * d, (r + 1) * d)));
    }
    for (const j of keepIdx) {
      kept.push(start + j);
      chunks.push(rows.get(j)!);
    }
    yield { type: "encode", done: Math.min(start + bs, samples.length), total: samples.length, kept: kept.length, white, seconds: (Date.now() - t0) / 1000 };
  }
  const data = new Float32Array(kept.length * d);
  chunks.forEach((c, i) => data.set(c, i * d));
  yield { type: "features", features: { rows: kept.length, dim: d, data }, kept, whiteFractions: Float32Array.from(fractions), seconds: (Date.now() - t0) / 1000 };
}

/** Cache key of encoded bank candidates: encoder identity, dataset, white filter, and every candidate file's name, size and mtime. */
function cacheKey(split: Split, samples: readonly Sample[], enc: BankEncoderRecord, white: { whiteGrey: number; whiteMaxFraction: number }): string {
  const files = samples.map((s) => {
    const st = fs.statSync(s.imagePath);
    return `${s.id}:${st.size}:${Math.round(st.mtimeMs)}`;
  });
  return sha256(JSON.stringify({ v: 1, encoder: { name: enc.name, dim: enc.dim, weightsHash: enc.weightsHash, preprocessing: enc.preprocessing }, dataset: split.dataset.name, resize: split.resize ?? null, white, files })).slice(0, 24);
}

interface CachedFeatures {
  rows: number;
  dim: number;
  kept: number[];
  whiteFractions: number[];
}

/**
 * Select and encode the bank candidates of a split (the first half of the
 * build): yields `selected`, `cache`, `encode` progress, then `encoded` with the
 * {@link BankFeatures}.
 */
export async function* encodeBankFeatures(opts: BuildBankOptions): AsyncGenerator<BankBuildEvent> {
  const t0 = Date.now();
  const cfg = bankConfig(opts.config);
  const spec = opts.split.dataset;
  const white = { whiteGrey: cfg.whiteGrey, whiteMaxFraction: cfg.whiteMaxFraction };
  const cand = selectCandidates(opts.split.samples, spec.classes, { ...white, maxPerClass: opts.maxPerClass, seed: cfg.seed });
  yield { type: "selected", candidates: cand.samples.length, selection: cand.stats };
  const enc = encoderRecord(opts.encoder);
  let features: FeatureMatrix | undefined;
  let kept: number[] = [];
  let fractions: Float32Array = new Float32Array(0);
  let cacheFiles: { bin: string; json: string } | undefined;
  if (opts.cache) {
    const dir = cacheDir("bank-features");
    const key = cacheKey(opts.split, cand.samples, enc, white);
    cacheFiles = { bin: path.join(dir, `${key}.f32`), json: path.join(dir, `${key}.json`) };
    if (fs.existsSync(cacheFiles.bin) && fs.existsSync(cacheFiles.json)) {
      const c = readJson<CachedFeatures>(cacheFiles.json);
      const data = float32FromLE(fs.readFileSync(cacheFiles.bin), cacheFiles.bin);
      if (c.dim === enc.dim && data.length === c.rows * c.dim && c.kept.length === c.rows) {
        features = { rows: c.rows, dim: c.dim, data };
        kept = c.kept;
        fractions = Float32Array.from(c.whiteFractions);
      }
    }
    yield { type: "cache", hit: features !== undefined, file: cacheFiles.bin };
  }
  if (!features) {
    for await (const ev of encodeSamples(opts.split, cand.samples, opts.encoder, { batchSize: opts.batchSize, white })) {
      if (ev.type === "encode") yield ev;
      else {
        features = ev.features;
        kept = ev.kept;
        fractions = ev.whiteFractions;
      }
    }
    if (cacheFiles && features) {
      writeFileAtomic(cacheFiles.bin, float32ToLE(features.data));
      writeJsonAtomic(cacheFiles.json, { rows: features.rows, dim: features.dim, kept, whiteFractions: Array.from(fractions) } satisfies CachedFeatures);
    }
  }
  const classIndex = Int32Array.from(kept.map((i) => cand.classIndex[i]!));
  const keptPerClass = spec.classes.map((_, c) => classIndex.filter((v) => v === c).length);
  const bf: BankFeatures = {
    dataset: spec.name,
    classes: [...spec.classes],
    codes: [...spec.codes],
    ids: kept.map((i) => cand.samples[i]!.id),
    imagePaths: kept.map((i) => cand.samples[i]!.imagePath),
    classIndex,
    features: features!,
    whiteFractions: fractions,
    encoder: enc,
    selection: recordWhiteStep(cand.stats, keptPerClass),
  };
  yield { type: "encoded", features: bf, seconds: (Date.now() - t0) / 1000 };
}

/** Options of {@link bankFromFeatures}. */
export interface BankFromFeaturesOptions {
  config?: Partial<PbipConfig["bank"]>;
  /** Dataset folder recorded in bank.json (as given by the user). */
  datasetRoot?: string;
  /** Called after each class is clustered. */
  onClass?: (ev: Extract<BankBuildEvent, { type: "cluster" }>) => void;
}

/**
 * The second half of the build: per class, cluster the L2-normalised features
 * with cosine distance (eq. 1) into K subclasses and take one prototype per
 * subclass by the configured rule (see `prototypes.ts`). Pure and seeded: the
 * same features and config give the same bank, bit for bit.
 */
export function bankFromFeatures(f: BankFeatures, opts: BankFromFeaturesOptions = {}): ImageBank {
  const cfg = bankConfig(opts.config);
  const n = f.classes.length;
  const ks = Array.isArray(cfg.k) ? cfg.k : new Array<number>(n).fill(cfg.k);
  if (ks.length !== n) throw new Error(`bank.k has ${ks.length} entries for ${n} classes (${f.classes.join(", ")})`);
  const unitRows = l2NormalizeRows(f.features);
  const protoParts: Float32Array[] = [];
  const subclasses: SubclassRecord[] = [];
  const kUsed: number[] = [];
  const kmeansInfo: ({ iterations: number; converged: boolean } | null)[] = [];
  for (let c = 0; c < n; c++) {
    const idx: number[] = [];
    for (let i = 0; i < f.classIndex.length; i++) if (f.classIndex[i] === c) idx.push(i);
    if (idx.length === 0) {
      throw new Error(`class ${f.classes[c]} has no patches left for the bank (${f.selection.steps.map((s) => `${s.step}: ${s.perClass[c]}`).join(", ")}); relax the white filter or check the labels`);
    }
    const cp = classPrototypes(
      selectRows(unitRows, idx),
      idx.map((i) => f.ids[i]!),
      c,
      { rule: cfg.rule, k: ks[c]!, nK: cfg.nK, seed: classSeed(cfg.seed, c), maxIterations: cfg.kmeansMaxIterations },
    );
    protoParts.push(cp.prototypes);
    subclasses.push(...cp.subclasses);
    kUsed.push(cp.k);
    kmeansInfo.push(cp.kmeans ?? null);
    opts.onClass?.({ type: "cluster", classIndex: c, className: f.classes[c]!, k: cp.k, sizes: cp.subclasses.map((s) => s.size), ...(cp.kmeans ?? {}) });
  }
  const offsets = [0];
  for (const k of kUsed) offsets.push(offsets[offsets.length - 1]! + k);
  const prototypes = new Float32Array(offsets[n]! * f.features.dim);
  let o = 0;
  for (const p of protoParts) {
    prototypes.set(p, o);
    o += p.length;
  }
  const dataset: { name: string; root?: string } = { name: f.dataset };
  if (opts.datasetRoot !== undefined) dataset.root = opts.datasetRoot;
  return {
    meta: {
      format: BANK_FORMAT,
      formatVersion: BANK_FORMAT_VERSION,
      pbipVersion: pbipVersion(),
      dataset,
      classes: [...f.classes],
      codes: [...f.codes],
      k: kUsed,
      offsets,
      dim: f.features.dim,
      encoder: f.encoder,
      rule: cfg.rule,
      nK: cfg.nK,
      seed: cfg.seed,
      config: cfg,
      selection: f.selection,
      subclasses,
      kmeans: kmeansInfo,
    },
    prototypes,
  };
}

/**
 * Build an image bank, as events: `selected`, `cache`, `encode` (per batch),
 * `encoded`, `cluster` (per class), and `done` with the bank and the features.
 * Nothing is written; save with {@link saveBank}.
 */
export async function* buildBankEvents(opts: BuildBankOptions): AsyncGenerator<BankBuildEvent> {
  const t0 = Date.now();
  let features: BankFeatures | undefined;
  for await (const ev of encodeBankFeatures(opts)) {
    if (ev.type === "encoded") features = ev.features;
    yield ev;
  }
  const clusterEvents: BankBuildEvent[] = [];
  const bank = bankFromFeatures(features!, { config: opts.config, datasetRoot: opts.split.root, onClass: (e) => clusterEvents.push(e) });
  for (const e of clusterEvents) yield e;
  yield { type: "done", bank, features: features!, seconds: (Date.now() - t0) / 1000 };
}

/** Build an image bank (see {@link buildBankEvents}); `onEvent` sees every event. */
export async function buildBank(opts: BuildBankOptions, onEvent?: (ev: BankBuildEvent) => void): Promise<{ bank: ImageBank; features: BankFeatures }> {
  for await (const ev of buildBankEvents(opts)) {
    onEvent?.(ev);
    if (ev.type === "done") return { bank: ev.bank, features: ev.features };
  }
  throw new Error("buildBank: the build ended without a result");
}
