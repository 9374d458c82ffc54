/**
 * A run folder shared by the five notebooks (and `pbip demo`): where the bank,
 * checkpoints, pseudo-masks and `results.json` live, which dataset and config the
 * run uses, and stage helpers that reuse an output when it exists and was made with
 * the same config, so a rerun after a failure resumes.
 *
 * Environment: PBIP_RUN_DIR (run folder; default runs/notebooks-dev), PBIP_QUICK=1
 * (small data and few steps, for tests), PBIP_DATASET + PBIP_DATA (a real dataset
 * instead of the embedded synthetic one), PBIP_PROFILE (default `notebook`),
 * PBIP_ENCODER / PBIP_BACKBONE / PBIP_BACKBONE_WEIGHTS (swap the stand-ins for files
 * the user supplies).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { PbipConfig, ConfigOverride } from "../config/profiles";
import { resolveConfig, quickMode } from "../config/profiles";
import { openDataset, type Dataset } from "../data/dataset";
import { generateSynthetic, defaultSyntheticDir, SYNTH_GENERATOR_VERSION } from "../data/synthetic/generate";
import { syntheticManifest } from "../data/synthetic/generate";
import { verifyDataset } from "../data/verify";
import { loadManifest } from "../data/manifest";
import { FileError } from "../util/errors";
import { projectRoot, readJson, writeJsonAtomic, sha256, cacheDir } from "../util/fs";
import { stableStringify } from "../util/json";
export { stableStringify };
import { ProgressBar } from "../util/progress";
import { inNotebook, newDisplayHandle } from "../viz/display";

/** Sizes of the embedded synthetic dataset: the default set, and the PBIP_QUICK one. */
export const EMBEDDED_SIZES = {
  full: { train: 1000, val: 100, test: 100, seed: 0 },
  quick: { train: 96, val: 24, test: 24, seed: 0 },
} as const;

/** Config changes PBIP_QUICK applies over the profile: a handful of steps, small validation. */
export const QUICK_OVERRIDES: ConfigOverride = {
  train: { epochs: 1, maxSteps: 6, valLimit: 16, batchSize: 8 } as PbipConfig["train"],
};

export interface RunPaths {
  root: string;
  bank: string;
  /** Stage-1 runs by variant name (`pbip`, `cls-only`, `image-mode`, ...). */
  stage1: (variant: string) => string;
  /** Pseudo-masks by model variant and split. */
  pseudo: (variant: string, split: string) => string;
  stage2: string;
  results: string;
}

export interface PbipRun {
  root: string;
  quick: boolean;
  config: PbipConfig;
  dataset: Dataset;
  /** True when the dataset is the embedded synthetic benchmark. */
  synthetic: boolean;
  paths: RunPaths;
  /** Merge one section into results.json (atomic). */
  saveResult(section: string, value: unknown): void;
  /** The current contents of results.json. */
  results(): Record<string, unknown>;
  /** A short hash of a JSON value (stage outputs record the hash of the config they were made with). */
  hash(value: unknown): string;
}

export interface OpenRunOptions {
  /** Run folder; default PBIP_RUN_DIR, else <project>/runs/notebooks-dev. */
  root?: string;
  /** Profile; default PBIP_PROFILE, else `notebook`. */
  profile?: string;
  overrides?: ConfigOverride;
  /** Dataset manifest name and folder; default PBIP_DATASET/PBIP_DATA, else the embedded synthetic set. */
  dataset?: string;
  data?: string;
  /**
   * Compare the dataset's split sizes with the published ones when verifying it (default
   * true; PBIP_CHECK_COUNTS=0 turns it off): false for a subset, a re-split or your own data
   * in a dataset's layout. Every file is still checked.
   */
  checkCounts?: boolean;
  quick?: boolean;
  /** Print progress (dataset generation) to stderr. Default true. */
  verbose?: boolean;
}

/** SHA-256 of every file's relative path, size and modification time under a folder (a cheap change detector). */
export function folderListingHash(dir: string): string {
  const rows: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const st = fs.statSync(p);
        rows.push(`${path.relative(dir, p)}\t${st.size}\t${Math.round(st.mtimeMs)}`);
      }
    }
  };
  walk(dir);
  return sha256(rows.sort().join("\n"));
}

/** Make sure the embedded synthetic dataset exists (generating it with a progress bar). */
export async function ensureSyntheticDataset(dir: string, quick: boolean, verbose = true): Promise<string> {
  const sizes = quick ? EMBEDDED_SIZES.quick : EMBEDDED_SIZES.full;
  const cardFile = path.join(dir, "card.json");
  if (fs.existsSync(cardFile)) {
    const card = readJson<{ counts?: { train: number; val: number; test: number }; generator?: { seed?: number; version?: string } }>(cardFile);
    const sameSizes = card.counts?.train === sizes.train && card.counts.val === sizes.val && card.counts.test === sizes.test && card.generator?.seed === sizes.seed;
    if (sameSizes && card.generator?.version === SYNTH_GENERATOR_VERSION) return dir;
    // A set painted by another version of the generator is not the embedded
    // benchmark any more: numbers measured on it would not match a fresh clone's.
    if (sameSizes && verbose) (inNotebook() ? console.log : console.error)(`${dir} was painted by generator v${card.generator?.version ?? "?"}; regenerating it with v${SYNTH_GENERATOR_VERSION}`);
  }
  const total = sizes.train + sizes.val + sizes.test;
  // In a notebook the progress is one output updated in place (stderr would show as an error box).
  const handle = verbose && inNotebook() ? newDisplayHandle() : undefined;
  const bar = verbose && !handle ? new ProgressBar("generating synthetic tissue", total) : undefined;
  const t0 = Date.now();
  await generateSynthetic({
    out: dir,
    ...sizes,
    onProgress: (e) => {
      if (e.phase !== "paint") return;
      bar?.update(e.done);
      handle?.update({ "text/plain": `generating the embedded synthetic tissue set in ${dir}: ${e.done}/${total} patches, ${((Date.now() - t0) / 1000).toFixed(0)} s` });
    },
  });
  return dir;
}

/** Open (or create) a run folder with its dataset and config. */
export async function openRun(o: OpenRunOptions = {}): Promise<PbipRun> {
  const root = path.resolve(o.root ?? process.env.PBIP_RUN_DIR ?? path.join(projectRoot(), "runs", "notebooks-dev"));
  const quick = o.quick ?? quickMode();
  const profile = o.profile ?? process.env.PBIP_PROFILE ?? "notebook";
  const envOverrides: ConfigOverride = {};
  if (process.env.PBIP_ENCODER) envOverrides.encoder = { name: process.env.PBIP_ENCODER, inputSize: undefined } as PbipConfig["encoder"];
  if (process.env.PBIP_ENCODER_WEIGHTS) envOverrides.encoder = { ...(envOverrides.encoder ?? {}), weights: process.env.PBIP_ENCODER_WEIGHTS } as PbipConfig["encoder"];
  if (process.env.PBIP_BACKBONE) envOverrides.model = { backbone: process.env.PBIP_BACKBONE as PbipConfig["model"]["backbone"] } as PbipConfig["model"];
  if (process.env.PBIP_BACKBONE_WEIGHTS) envOverrides.model = { ...(envOverrides.model ?? {}), backboneWeights: process.env.PBIP_BACKBONE_WEIGHTS } as PbipConfig["model"];
  const config = resolveConfig(profile, envOverrides, quick ? QUICK_OVERRIDES : undefined, o.overrides);
  // The notebook profile shrinks the bundled encoder's input to 112 px; another encoder keeps its own size.
  if (process.env.PBIP_ENCODER && !/^mobilenetv2/.test(process.env.PBIP_ENCODER)) {
    delete config.encoder.inputSize;
    delete config.encoder.featureLayer;
  }
  const datasetName = o.dataset ?? process.env.PBIP_DATASET ?? "synthetic";
  let dataDir = o.data ?? process.env.PBIP_DATA;
  const synthetic = datasetName === "synthetic" && !dataDir;
  if (synthetic) {
    dataDir = quick ? path.join(path.dirname(defaultSyntheticDir()), "synthetic-quick") : defaultSyntheticDir();
    await ensureSyntheticDataset(dataDir, quick, o.verbose ?? true);
  }
  if (!synthetic) loadManifest(datasetName); // an unknown name is an error naming the known ones
  if (!dataDir) throw new Error(`dataset ${datasetName}: give its folder (PBIP_DATA or --data)`);
  if (!fs.existsSync(dataDir) || !fs.statSync(dataDir).isDirectory()) throw new FileError(path.resolve(dataDir), `dataset folder not found (dataset ${datasetName})`);
  let dataset: Dataset;
  if (synthetic) dataset = openDataset(dataDir, { dataset: syntheticManifest() });
  else {
    // A user's download is checked against its manifest first (decoding every file
    // takes minutes for BCSS-WSSS, so a passed check is remembered for an unchanged folder).
    const stampFile = path.join(cacheDir("dataset-verified"), `${sha256(path.resolve(dataDir)).slice(0, 16)}.json`);
    const listing = folderListingHash(dataDir);
    const checkCounts = o.checkCounts ?? process.env.PBIP_CHECK_COUNTS !== "0";
    const stamp = { dataset: datasetName, root: path.resolve(dataDir), listing, ...(checkCounts ? {} : { checkCounts }) };
    const verified = fs.existsSync(stampFile) && stableStringify(readJson(stampFile)) === stableStringify(stamp);
    if (!verified) {
      // The glass check looks at the level the run's glass rule uses (the pseudo-masks' when on, else the bank's).
      const whiteGrey = config.cam.background.mode.includes("white") ? config.cam.background.whiteGrey : config.bank.whiteGrey;
      const report = await verifyDataset(dataDir, { dataset: datasetName, checkCounts, whiteGrey });
      const glassNote = report.problems.find((p) => p.kind === "glass-level");
      if (glassNote && (o.verbose ?? true)) console.log(`note on ${dataDir}: ${glassNote.problem}`);
      if (!report.ok) {
        const countsOnly = report.problems.every((p) => p.kind === "count");
        throw new Error(
          `dataset ${datasetName} at ${dataDir} failed verification (run \`pbip data verify ${dataDir} --dataset ${datasetName}\` for the full table):\n${report.problems.slice(0, 10).map((p) => `  ${p.file}: ${p.problem}`).join("\n")}` +
            (countsOnly ? `\n(only split sizes differ from the published ones: for a subset, a re-split or your own data, pass --no-counts, or set PBIP_CHECK_COUNTS=0 for the notebooks)` : ""),
        );
      }
      writeJsonAtomic(stampFile, stamp);
    }
    dataset = openDataset(dataDir, { dataset: datasetName });
  }
  fs.mkdirSync(root, { recursive: true });
  const results = path.join(root, "results.json");
  const run: PbipRun = {
    root,
    quick,
    config,
    dataset,
    synthetic,
    paths: {
      root,
      bank: path.join(root, "bank"),
      stage1: (v) => path.join(root, "stage1", v),
      pseudo: (v, s) => path.join(root, "pseudo-masks", v, s),
      stage2: path.join(root, "stage2"),
      results,
    },
    saveResult(section, value) {
      const cur = fs.existsSync(results) ? readJson<Record<string, unknown>>(results) : {};
      cur[section] = value;
      cur.updatedAt = new Date().toISOString();
      writeJsonAtomic(results, cur);
    },
    results() {
      return fs.existsSync(results) ? readJson<Record<string, unknown>>(results) : {};
    },
    hash(value) {
      return sha256(stableStringify(value)).slice(0, 16);
    },
  };
  const runFile = path.join(root, "run.json");
  const info = { profile, quick, dataset: { name: dataset.spec.name, root: dataset.root, synthetic }, config };
  if (!fs.existsSync(runFile)) writeJsonAtomic(runFile, { createdAt: new Date().toISOString(), ...info });
  return run;
}
