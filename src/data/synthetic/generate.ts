/**
 * `pbip data synth`: write a synthetic H&E tissue benchmark in exactly the
 * LUAD-HistoSeg layout (train patches with the label in the file name, val/test
 * with palette-mode masks, background = 4), plus ground-truth masks for the
 * training patches (`train-mask/`, which real WSSS sets lack) and a dataset card
 * (card.json, card.md, card.png) with class frequencies, label statistics, the
 * normalisation statistics of the train split, and two difficulty baselines.
 *
 * Same seed and options, same bytes (on the same Node version: the PNG bytes come
 * from Node's zlib). Patches are painted in worker threads with per-patch seeds,
 * so the output does not depend on the number of workers.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import { FileError, UsageError } from "../../util/errors";
import { projectRoot, writeDirAtomic } from "../../util/fs";
import { loadManifest } from "../manifest";
import type { SplitName } from "../types";
import { buildCard, writeCard, type SynthCard } from "./card";
import { paintDefaults, type PaintParams } from "./paint";
import { patchSeed, SYNTH_PALETTE } from "./spec";
import { runPatchTask, type PatchResult, type PatchTask } from "./task";

/**
 * Version of the generator's algorithm; part of the card, bumped whenever the
 * painted pixels change (test/data/synthetic-golden.test.ts fails until it is).
 * 1.1.0: the optical-density lookup table (sets written by 1.0.0 differ slightly).
 */
export const SYNTH_GENERATOR_VERSION = "1.1.0";

/** Options of {@link generateSynthetic}: sizes, seed, workers, plus any {@link PaintParams}. */
export interface SynthOptions extends Partial<PaintParams> {
  /** Output folder (default {@link defaultSyntheticDir}). Replaced atomically. */
  out?: string;
  train?: number;
  val?: number;
  test?: number;
  seed?: number;
  /** Worker threads (default: available cores, at most 8; 0 or 1 paints in the calling thread). */
  workers?: number;
  /** Also write masks for the training patches in `train-mask/` (default true). */
  trainMasks?: boolean;
  /** Replace an existing folder that is not a synthetic set (default false). */
  force?: boolean;
  /** Progress: patches done so far, and the total. */
  onProgress?: (event: SynthProgress) => void;
}

/** A progress event of {@link generateSynthetic}. */
export interface SynthProgress {
  phase: "paint" | "card";
  done: number;
  total: number;
}

/** Defaults of the generator (the default embedded set). */
export const synthDefaults = {
  ...paintDefaults,
  train: 1000,
  val: 100,
  test: 100,
  seed: 0,
  trainMasks: true,
};

/** What {@link generateSynthetic} returns. */
export interface SynthResult {
  out: string;
  card: SynthCard;
  /** Wall-clock seconds, and the worker threads used. */
  seconds: number;
  workers: number;
}

/** Where the embedded synthetic set lives by default: `<project>/data/synthetic` (gitignored). */
export function defaultSyntheticDir(): string {
  return path.join(projectRoot(), "data", "synthetic");
}

/** The worker entry: compiled JS, or the TS source bootstrapped through tsx; undefined when neither can run. */
function workerScript(): { file: string; eval: boolean } | undefined {
  const js = path.join(__dirname, "worker.js");
  if (fs.existsSync(js)) return { file: js, eval: false };
  // Running from TypeScript sources (tests, tsx): bootstrap tsx inside the worker.
  const ts = path.join(__dirname, "worker.ts");
  try {
    const tsx = require.resolve("tsx/cjs");
    return { file: `require(${JSON.stringify(tsx)}); require(${JSON.stringify(ts)});`, eval: true };
  } catch {
    return undefined;
  }
}

/** Run the tasks on `workers` threads (or in this thread); returns the number of threads used. */
async function runTasks(tasks: PatchTask[], root: string, workers: number, onDone: (r: PatchResult) => void): Promise<number> {
  const script = workers > 1 ? workerScript() : undefined;
  if (!script) {
    for (const t of tasks) onDone(runPatchTask(t, root));
    return 1;
  }
  const pool = Array.from({ length: Math.min(workers, tasks.length) }, () => new Worker(script.file, { eval: script.eval, workerData: { root } }));
  let next = 0;
  try {
    await Promise.all(
      pool.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            const send = (): void => {
              if (next >= tasks.length) return resolve();
              w.postMessage(tasks[next++]!);
            };
            w.on("message", (m: { ok: true; result: PatchResult } | { ok: false; error: string; task: number; split: string }) => {
              if (!m.ok) return reject(new Error(`synthetic patch ${m.split} #${m.task} failed in a worker: ${m.error}`));
              onDone(m.result);
              send();
            });
            w.on("error", reject);
            w.on("exit", (code) => {
              if (code !== 0) reject(new Error(`synthetic worker exited with code ${code}`));
            });
            send();
          }),
      ),
    );
  } finally {
    await Promise.all(pool.map((w) => w.terminate()));
  }
  return pool.length;
}

function isSyntheticDir(dir: string): boolean {
  try {
    const c = JSON.parse(fs.readFileSync(path.join(dir, "card.json"), "utf8")) as { generator?: { name?: string } };
    return c.generator?.name === "pbip-synthetic";
  } catch {
    return false;
  }
}

/**
 * Generate a synthetic benchmark. Deterministic: the same seed and options give
 * the same files byte for byte, whatever the number of workers.
 */
export async function generateSynthetic(opts: SynthOptions = {}): Promise<SynthResult> {
  const o = { ...synthDefaults, ...opts };
  const out = path.resolve(opts.out ?? defaultSyntheticDir());
  for (const k of ["train", "val", "test", "size"] as const) {
    if (!Number.isInteger(o[k]) || o[k] < 0) throw new UsageError(`synthetic: ${k} must be a non-negative integer, got ${o[k]}`);
  }
  if (o.size < 16) throw new UsageError(`synthetic: size must be at least 16, got ${o.size}`);
  if (o.train + o.val + o.test === 0) throw new UsageError("synthetic: nothing to generate (train, val and test are all 0)");
  if (fs.existsSync(out) && fs.readdirSync(out).length > 0 && !isSyntheticDir(out) && !opts.force) {
    throw new FileError(out, "folder exists and is not a pbip synthetic set; choose another --out or pass --force to replace it");
  }
  const params: PaintParams = {
    size: o.size,
    minArea: o.minArea,
    backgroundProbability: o.backgroundProbability,
    maxBackground: o.maxBackground,
    classPrior: o.classPrior,
    classCountWeights: o.classCountWeights,
    stainJitter: o.stainJitter,
  };
  const workers = opts.workers ?? Math.min(8, os.availableParallelism?.() ?? os.cpus().length);
  const t0 = Date.now();
  let card: SynthCard | undefined;
  let used = 1;
  await writeDirAtomic(out, async (tmp) => {
    const dirs = ["train", "val/img", "val/mask", "test/img", "test/mask", ...(o.trainMasks ? ["train-mask"] : [])];
    for (const d of dirs) fs.mkdirSync(path.join(tmp, d), { recursive: true });
    const tasks: PatchTask[] = [];
    const pad = (n: number, total: number): string => String(n).padStart(Math.max(4, String(total - 1).length), "0");
    for (let i = 0; i < o.train; i++) {
      tasks.push({
        split: "train",
        index: i,
        seed: patchSeed(o.seed, "train", i),
        params,
        imageDir: "train",
        maskDir: o.trainMasks ? "train-mask" : undefined,
        name: `synth-${pad(i, o.train)}-{label}.png`,
        palette: SYNTH_PALETTE,
        keepPixels: false,
      });
    }
    for (const split of ["val", "test"] as const) {
      for (let i = 0; i < o[split]; i++) {
        tasks.push({
          split,
          index: i,
          seed: patchSeed(o.seed, split, i),
          params,
          imageDir: `${split}/img`,
          maskDir: `${split}/mask`,
          name: `synth-${split}-${pad(i, o[split])}.png`,
          palette: SYNTH_PALETTE,
          keepPixels: split === "test",
        });
      }
    }
    const results: Record<SplitName, PatchResult[]> = { train: [], val: [], test: [] };
    let done = 0;
    used = await runTasks(tasks, tmp, workers, (r) => {
      results[r.split][r.index] = r;
      o.onProgress?.({ phase: "paint", done: ++done, total: tasks.length });
    });
    o.onProgress?.({ phase: "card", done: 0, total: 1 });
    card = buildCard({ results, params, seed: o.seed, counts: { train: o.train, val: o.val, test: o.test }, trainMasks: o.trainMasks, version: SYNTH_GENERATOR_VERSION });
    await writeCard(tmp, card, results);
    o.onProgress?.({ phase: "card", done: 1, total: 1 });
  }, { what: "a pbip synthetic set", replaces: (d) => opts.force === true || isSyntheticDir(d) });
  return { out, card: card!, seconds: (Date.now() - t0) / 1000, workers: used };
}

/** The synthetic manifest (data-manifests/synthetic.json). */
export function syntheticManifest(): ReturnType<typeof loadManifest> {
  return loadManifest("synthetic");
}
