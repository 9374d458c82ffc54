/**
 * `pbip bench`: the training-step and pseudo-mask benchmark (not a test).
 *
 * What it measures, per compute backend (WASM always; WebGPU when Dawn finds an
 * adapter; native TensorFlow when installed), each as the median of a few
 * repetitions after a warm-up:
 *
 * - the stage-1 training step of the `release` profile (MiT-b1 ClassNet, the
 *   release's Swin-T encoder with random weights, batch 10, 224 px) in both region
 *   modes (`image`: regions through the encoder inside the gradient tape, the
 *   method; `feature`: dense encoder features once without gradient, this
 *   project's variant), split into the loop's parts (preparation, forward+backward,
 *   optimiser, region encoding), plus ClassNet alone (classification loss only)
 *   and the encoder's forward and forward+backward on the step's region images;
 * - the same for the `notebook` profile (bundled MobileNetV2, 112 px, batch 8);
 * - pseudo-mask generation (CAMs + masks) in ms per patch, MiT-b1, 224 px,
 *   batch 10, without and with the release's test-time augmentation;
 * - peak memory: the process's maximum RSS and the engine's peak tensor bytes (one
 *   profiled step, which also gives the kernel-time breakdown on CPU backends).
 *
 * The data are seeded random tensors (images in [0, 1], two labelled classes per
 * image), the weights random: timing does not depend on values. Results are
 * compared with PyTorch 1.13 figures measured on two cores of this machine class
 * and written as JSON (atomically) plus a text table.
 *
 * `--smoke` runs every measured path once at tiny sizes (tiny MiT and Swin
 * architectures, 64 px, batch 2) to prove it works, in seconds. On a software
 * WebGPU adapter (lavapipe, SwiftShader) the tiny sizes are used unless `--full`.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { type Command, parse, str, flag, intOption } from "../command";
import { UsageError } from "../../util/errors";
import { projectRoot, writeFileAtomic, writeJsonAtomic } from "../../util/fs";
import { initBackend, parseBackendChoice, formatBackendReport, type BackendName, type BackendReport } from "../../runtime/backend";
import { formatBytes } from "../../runtime/memory";
import { resolveConfig, type PbipConfig, type ConfigOverride } from "../../config/profiles";
import { buildMiT } from "../../model/backbones";
import type { MiTConfig } from "../../model/backbones/mit-config";
import { buildMobileNetV2Backbone } from "../../model/backbones/mobilenetv2";
import type { Backbone } from "../../model/backbones/types";
import { ClassNet } from "../../model/classnet";
import { createSwinEncoder } from "../../encoders/swin";
import type { SwinConfig } from "../../encoders/swin-weights";
import { MobileNetV2Encoder } from "../../encoders/mobilenetv2";
import type { ImageEncoder } from "../../encoders/types";
import { PbipTask } from "../../train/trainer";
import { runTraining, type TrainEvent } from "../../train/loop";
import { AdamW } from "../../train/optim";
import type { BatchSource } from "../../train/validate";
import type { Batch } from "../../data/types";
import { computeCams, camsToMasks } from "../../cam";
import { Rng } from "../../util/rng";

// ------------------------------------------------------------------ reference figures

/**
 * PyTorch 1.13 on two cores of this machine class (the issues' figures): the
 * release's stage-1 step (MiT-b1, Swin-T encoder, batch 10, 224 px), its Swin-T
 * forward+backward share, ClassNet alone, and pseudo-mask generation per patch
 * without test-time augmentation.
 */
export const PYTORCH_REFERENCE = {
  releaseStepSeconds: 25,
  encoderForwardBackwardSeconds: 23,
  classNetAloneSeconds: 2.4,
  camMsPerPatchNoTta: [84, 96] as [number, number],
  source: "PyTorch 1.13 (CPU), two cores of this machine class; the region count of its step is not stated",
};

// ------------------------------------------------------------------ options and results

/** The measured paths. */
export const BENCH_CASES = ["release-image", "release-feature", "notebook-feature", "notebook-image", "cam"] as const;
/** One measured path: a profile's training step in a region mode, or pseudo-mask generation. */
export type BenchCase = (typeof BENCH_CASES)[number];

/** Options of {@link runBench}. */
export interface BenchOptions {
  /** One backend, run in this process. Undefined: every available backend, each in a child process. */
  backend?: BackendName;
  /** Each path once at tiny sizes. */
  smoke: boolean;
  /** Full sizes even on a software WebGPU adapter. */
  full: boolean;
  /** Timed repetitions (median reported); default 3 (1 with --smoke, 2 at tiny sizes). */
  reps?: number;
  /** Untimed warm-up steps; default 1 (0 with --smoke). */
  warmup?: number;
  cases: BenchCase[];
  /** Positive classes per image of the random labels (drives the number of matched pairs). */
  labelsPerImage: number;
  /** JSON file to write (default runs/bench/<timestamp>/bench.json). */
  out?: string;
  /** Fail (exit 3) when the WebGPU adapter is a software rasteriser. */
  requireGpu: boolean;
}

/** Timings of one training step, in seconds (the loop's step event, plus the process CPU time). */
export interface StepTiming {
  step: number;
  prepare: number;
  forwardBackward: number;
  optimizer: number;
  regions?: number;
  cpu: number;
  pairs: number;
  /** Two-pass image mode: region images whose encoder activations pass 1 kept, and those it ran again (checkpointed). */
  encoderKept?: number;
  encoderRecomputed?: number;
}

/** One measured training configuration. */
export interface TrainCaseResult {
  kind: "train";
  name: BenchCase;
  profile: string;
  regionMode: "image" | "feature";
  backbone: string;
  encoder: string;
  encoderNote?: string;
  batch: number;
  size: number;
  /** Every timed step. */
  steps: StepTiming[];
  /** Medians over the timed steps. */
  median: StepTiming;
  /** ClassNet alone (classification loss only): medians of its steps. */
  classNetAlone?: StepTiming;
  /** The encoder on the step's region images (image mode) or on the batch (feature mode, dense map, no gradient). */
  encoderTiming?: { images: number; size: number; forward: number; forwardBackward?: number };
  /**
   * The AdamW update by itself on ClassNet's parameters (random gradients): flat
   * groups (the trainer's default) and one parameter tensor at a time, seconds.
   */
  optimizerTiming?: { tensors: number; values: number; fused: number; perTensor: number };
  /** Where one step's time goes (seconds, estimated from the parts). */
  breakdown: Record<string, number>;
  peakRssBytes: number;
  peakTensorBytes?: number;
  /** Top kernels of one profiled step (CPU-side backends), ms. */
  kernels?: { name: string; ms: number; calls: number }[];
  /** The costliest matrix-product kernels of that step by operand shapes (which layers the time is spent in), ms. */
  matMuls?: { name: string; ms: number; calls: number }[];
  /** The same two lists for one profiled ClassNet-alone step. */
  classNetKernels?: { name: string; ms: number; calls: number }[];
  classNetMatMuls?: { name: string; ms: number; calls: number }[];
  notes: string[];
}

/** Pseudo-mask generation timing. */
export interface CamCaseResult {
  kind: "cam";
  name: "cam";
  backbone: string;
  batch: number;
  size: number;
  noTta: { seconds: number[]; msPerPatch: number };
  tta: { variants: number; seconds: number[]; msPerPatch: number };
  peakRssBytes: number;
  notes: string[];
}

/** What one measured path gave. */
export type CaseResult = TrainCaseResult | CamCaseResult;

/** Everything measured on one backend. */
export interface BackendResult {
  backend: BackendName;
  ok: boolean;
  /** Why the backend could not run (not installed, no adapter, a failure). */
  error?: string;
  device?: string;
  threads?: number;
  software?: boolean;
  adapter?: BackendReport["adapter"];
  versions?: Record<string, string>;
  /** `full` (the stated sizes), `tiny` (software adapter without --full) or `smoke`. */
  sizes?: "full" | "tiny" | "smoke";
  cases: CaseResult[];
  failures: { name: string; error: string }[];
  peakRssBytes?: number;
  seconds?: number;
}

/** The benchmark file (`bench.json`). */
export interface BenchReport {
  kind: "pbip-bench";
  version: 1;
  createdAt: string;
  machine: { cpus: number; cpuModel: string; loadavg: number[]; totalMemBytes: number; node: string; platform: string };
  options: { smoke: boolean; full: boolean; reps?: number; warmup?: number; cases: string[]; labelsPerImage: number };
  reference: typeof PYTORCH_REFERENCE;
  backends: BackendResult[];
  /** Comparison with PyTorch and where the time goes, as printed. */
  summary: string[];
}

// ------------------------------------------------------------------ sizes

export interface Sizes {
  label: "full" | "tiny" | "smoke";
  release: { batch: number; size: number; mit?: Partial<MiTConfig>; swin?: SwinConfig; swinInput?: number };
  notebook: { batch: number; size: number };
  cam: { batch: number; size: number; mit?: Partial<MiTConfig> };
  reps: number;
  warmup: number;
}

/** A tiny MiT (same code path as MiT-b1: four stages, efficient attention, Mix-FFN). */
const TINY_MIT: Partial<MiTConfig> = { embedDims: [16, 32, 40, 64], numHeads: [1, 2, 5, 8], depths: [1, 1, 1, 1] };
/** A tiny Swin (same code path as Swin-T: windows, shifts, merging) that takes 64 px inputs. */
const TINY_SWIN: SwinConfig = { patchSize: 4, inChannels: 3, embedDim: 12, depths: [1, 2, 1, 1], numHeads: [1, 2, 2, 4], windowSize: 2, mlpRatio: 2, layerNormEps: 1e-5 };

export function sizesFor(o: BenchOptions, software: boolean): Sizes {
  const tiny = o.smoke || (software && !o.full);
  if (!tiny) {
    return {
      label: "full",
      release: { batch: 10, size: 224 },
      notebook: { batch: 8, size: 112 },
      cam: { batch: 10, size: 224 },
      reps: o.reps ?? 3,
      warmup: o.warmup ?? 1,
    };
  }
  return {
    label: o.smoke ? "smoke" : "tiny",
    release: { batch: 2, size: 64, mit: TINY_MIT, swin: TINY_SWIN, swinInput: 64 },
    notebook: { batch: 2, size: 64 },
    cam: { batch: 2, size: 64, mit: TINY_MIT },
    reps: o.reps ?? (o.smoke ? 1 : 2),
    warmup: o.warmup ?? (o.smoke ? 0 : 1),
  };
}

// ------------------------------------------------------------------ helpers

function median(a: number[]): number {
  if (!a.length) return NaN;
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function medianTiming(steps: StepTiming[]): StepTiming {
  const pick = (k: keyof StepTiming) => median(steps.map((s) => s[k] ?? NaN).filter((v) => Number.isFinite(v)));
  const out: StepTiming = { step: pick("step"), prepare: pick("prepare"), forwardBackward: pick("forwardBackward"), optimizer: pick("optimizer"), cpu: pick("cpu"), pairs: pick("pairs") };
  if (steps.some((s) => s.regions !== undefined)) out.regions = pick("regions");
  if (steps.some((s) => s.encoderKept !== undefined)) {
    out.encoderKept = pick("encoderKept");
    out.encoderRecomputed = pick("encoderRecomputed");
  }
  return out;
}

/** The process's peak resident memory so far (bytes). */
function maxRss(): number {
  return process.resourceUsage().maxRSS * 1024;
}

const log = (line: string) => process.stderr.write(line + "\n");

/** Seeded random batches (images in [0, 1], `labelsPerImage` positive classes per image). */
export function randomSource(n: number, batch: number, size: number, numClasses: number, labelsPerImage: number, seed: number): BatchSource {
  return {
    batchesPerEpoch: n,
    async *epoch(e: number) {
      for (let i = 0; i < n; i++) {
        const rng = new Rng(seed + 1000 * e + i);
        const labels = new Float32Array(batch * numClasses);
        for (let b = 0; b < batch; b++) {
          const order = rng.shuffle(Array.from({ length: numClasses }, (_, c) => c));
          for (const c of order.slice(0, Math.max(1, Math.min(numClasses, labelsPerImage)))) labels[b * numClasses + c] = 1;
        }
        const images = tf.randomUniform([batch, size, size, 3], 0, 1, "float32", seed + 7 * i + 1) as tf.Tensor4D;
        const out: Batch = { images, labels: tf.tensor2d(labels, [batch, numClasses]), ids: Array.from({ length: batch }, (_, b) => `random-${e}-${i}-${b}`) };
        yield out;
      }
    },
  };
}

/** BCSS-WSSS statistics (the release's dataset normalisation). */
const BCSS_NORMALIZATION = { mean: [0.6679, 0.4779, 0.7062], std: [0.1737, 0.2256, 0.1982] };
const NUM_CLASSES = 4;

export interface Models {
  cfg: PbipConfig;
  net: ClassNet;
  /** Undefined when built for CAMs only. */
  encoder?: ImageEncoder;
  protos: tf.Tensor2D;
  backboneName: string;
  encoderName: string;
  encoderNote?: string;
  dispose(): void;
}

/**
 * ClassNet (random prototypes of the encoder's dimension, K = 3 for each of 4
 * classes) and the frozen encoder of a profile, at the benchmark's sizes.
 */
export async function buildModels(which: "release" | "notebook", regionMode: "image" | "feature", sz: Sizes, over: ConfigOverride = {}, withEncoder = true): Promise<Models> {
  const base = resolveConfig(which, { match: { regionMode } as PbipConfig["match"] }, over);
  const k = new Array<number>(NUM_CLASSES).fill(typeof base.bank.k === "number" ? base.bank.k : 3);
  let backbone: Backbone;
  let encoder: ImageEncoder | undefined;
  let backboneName: string;
  let normalization: { mean: number[]; std: number[] };
  let dim: number;
  if (which === "release") {
    const r = sz.release;
    backbone = buildMiT("mit-b1", { strides: base.model.strides, dropPathRate: base.model.dropPathRate, seed: 1, config: r.mit });
    backboneName = r.mit ? "mit (tiny config)" : "mit-b1 (random init)";
    const projectionDim = r.swin ? 32 : 512;
    if (withEncoder) {
      encoder = await createSwinEncoder({ randomSeed: 1, config: r.swin, preprocessing: r.swinInput ? { inputSize: r.swinInput } : undefined, projectionDim });
    }
    dim = projectionDim;
    normalization = BCSS_NORMALIZATION;
  } else {
    const nb = sz.notebook;
    backbone = await buildMobileNetV2Backbone({ strides: base.model.strides, dropPathRate: base.model.dropPathRate, seed: 1 });
    backboneName = "mobilenetv2 (bundled)";
    if (withEncoder) encoder = await MobileNetV2Encoder.create({ preprocessing: { inputSize: nb.size } });
    dim = 1280;
    normalization = { mean: [...backbone.defaultNormalization.mean], std: [...backbone.defaultNormalization.std] };
  }
  const s = k.reduce((a, b) => a + b, 0);
  const protos = tf.tidy(() => {
    const p = tf.randomNormal([s, encoder?.identity.dim ?? dim], 0, 1, "float32", 11);
    return tf.div(p, tf.norm(p, "euclidean", 1, true)) as tf.Tensor2D;
  });
  const net = new ClassNet({ backbone, prototypes: protos, k, model: base.model, normalization, seed: 1 });
  return {
    cfg: base,
    net,
    encoder,
    protos,
    backboneName,
    encoderName: encoder?.identity.name ?? "-",
    encoderNote: encoder?.standInNote,
    dispose() {
      net.dispose();
      encoder?.dispose();
      protos.dispose();
    },
  };
}

type KernelTime = { name: string; ms: number; calls: number };

/** Run `warmup + reps` steps of a task through the training loop; returns the timed steps. */
async function timeSteps(
  label: string,
  task: PbipTask,
  cfg: PbipConfig,
  source: BatchSource,
  warmup: number,
  reps: number,
  profileStep: boolean,
): Promise<{ steps: StepTiming[]; peakTensorBytes?: number; kernels?: KernelTime[]; matMuls?: KernelTime[] }> {
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), "pbip-bench-"));
  const total = warmup + reps + (profileStep ? 1 : 0);
  const it = runTraining(task, { config: { ...cfg, train: { ...cfg.train, epochs: 1, maxSteps: 0, valEvery: 1_000_000, checkpointEvery: 1_000_000 } }, train: source, outDir, resume: false, stopAfter: total });
  const steps: StepTiming[] = [];
  let peakTensorBytes: number | undefined;
  let kernels: KernelTime[] | undefined;
  let matMuls: KernelTime[] | undefined;
  let n = 0;
  try {
    const next = async (): Promise<IteratorResult<TrainEvent>> => {
      for (;;) {
        const r = await it.next();
        if (r.done || r.value.type === "step") return r;
      }
    };
    for (; n < total; n++) {
      const profiling = profileStep && n === warmup + reps;
      const cpu0 = process.cpuUsage();
      let r: IteratorResult<TrainEvent> | undefined;
      if (profiling) {
        const kernelNames = new Set(tf.getKernelsForBackend(tf.getBackend()).map((kk) => kk.kernelName));
        const info = await tf.profile(async () => {
          r = await next();
          return [];
        });
        peakTensorBytes = info.peakBytes;
        const by = new Map<string, { ms: number; calls: number }>();
        const byShape = new Map<string, { ms: number; calls: number }>();
        const add = (m: Map<string, { ms: number; calls: number }>, key: string, ms: number) => {
          const e = m.get(key) ?? { ms: 0, calls: 0 };
          e.ms += Number.isFinite(ms) ? ms : 0;
          e.calls++;
          m.set(key, e);
        };
        for (const kk of info.kernels) {
          if (!kernelNames.has(kk.name)) continue; // custom-gradient wrappers repeat their inner kernels
          const ms = typeof kk.kernelTimeMs === "number" ? kk.kernelTimeMs : NaN;
          add(by, kk.name, ms);
          // Matrix products by operand shapes: which layers the time is spent in.
          if (/MatMul/.test(kk.name)) {
            const shapes = kk.inputShapes.slice(0, 2).map((sh) => `[${(sh ?? []).join(",")}]`).join("x");
            add(byShape, `${kk.name} ${shapes}->[${(kk.outputShapes[0] ?? []).join(",")}]`, ms);
          }
        }
        const top = (m: Map<string, { ms: number; calls: number }>, n: number) => [...m.entries()].map(([name, e]) => ({ name, ...e })).sort((a, b) => b.ms - a.ms).slice(0, n);
        kernels = top(by, 12);
        matMuls = top(byShape, 8);
        if (kernels.every((kk) => kk.ms === 0)) kernels = matMuls = undefined; // backend without kernel timers
      } else {
        r = await next();
      }
      if (!r || r.done || r.value.type !== "step") throw new Error(`${label}: the training loop stopped after ${n} steps`);
      const cu = process.cpuUsage(cpu0);
      const ev = r.value;
      const timing: StepTiming = {
        step: ev.seconds.step,
        prepare: ev.seconds.prepare,
        forwardBackward: ev.seconds.forwardBackward,
        optimizer: ev.seconds.optimizer,
        cpu: (cu.user + cu.system) / 1e6,
        pairs: ev.counts.pairs ?? 0,
      };
      if (ev.seconds.regions !== undefined) timing.regions = ev.seconds.regions;
      if (ev.counts.encoderKept !== undefined) {
        timing.encoderKept = ev.counts.encoderKept;
        timing.encoderRecomputed = ev.counts.encoderRecomputed ?? 0;
      }
      const phase = n < warmup ? "warm-up" : profiling ? "profiled" : `rep ${n - warmup + 1}/${reps}`;
      log(`  ${label}: ${phase} step ${timing.step.toFixed(2)} s (forward+backward ${timing.forwardBackward.toFixed(2)} s, pairs ${timing.pairs}${timing.encoderKept !== undefined ? `, encoder activations kept for ${timing.encoderKept} regions, recomputed for ${timing.encoderRecomputed}` : ""}), rss ${formatBytes(process.memoryUsage().rss)}`);
      if (n >= warmup && !profiling) steps.push(timing);
    }
  } finally {
    await it.return?.(undefined);
    fs.rmSync(outDir, { recursive: true, force: true });
  }
  return { steps, peakTensorBytes, kernels, matMuls };
}

/** Time `fn` (which awaits its own results) `warmup + reps` times; returns the timed seconds. */
async function timeIt(warmup: number, reps: number, fn: () => Promise<void>): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    out.push((performance.now() - t0) / 1000);
  }
  return out;
}

// ------------------------------------------------------------------ cases

async function trainCase(name: BenchCase, sz: Sizes, o: BenchOptions, profile: boolean): Promise<TrainCaseResult> {
  const which = name.startsWith("release") ? "release" : "notebook";
  const regionMode = name.endsWith("image") ? "image" : "feature";
  const dims = which === "release" ? sz.release : sz.notebook;
  const override: ConfigOverride = { train: { batchSize: dims.batch } as PbipConfig["train"], data: { inputSize: dims.size } as PbipConfig["data"] };
  const m = await buildModels(which, regionMode, sz, override);
  const encoder = m.encoder!;
  const notes: string[] = [];
  if (which === "release") notes.push("random weights (MiT-b1 and Swin-T): timing only");
  if (m.encoderNote) notes.push(m.encoderNote);
  try {
    log(`[${tf.getBackend()}] ${name}: ${m.backboneName}, encoder ${m.encoderName}, batch ${dims.batch}, ${dims.size} px, region mode ${regionMode}`);
    const task = new PbipTask({ config: m.cfg, net: m.net, encoder, bankPrototypes: m.protos, backgroundId: NUM_CLASSES });
    let main;
    try {
      main = await timeSteps(name, task, m.cfg, randomSource(sz.warmup + sz.reps + (profile ? 1 : 0), dims.batch, dims.size, NUM_CLASSES, o.labelsPerImage, 100), sz.warmup, sz.reps, profile);
    } finally {
      task.dispose();
    }
    const med = medianTiming(main.steps);
    // ClassNet alone: the classification loss only (no matching, no encoder).
    const clsCfg = resolveConfig(m.cfg, { loss: { useFg: false, useBg: false } as PbipConfig["loss"] });
    const clsTask = new PbipTask({ config: clsCfg, net: m.net, encoder, bankPrototypes: m.protos, backgroundId: NUM_CLASSES });
    let cls;
    try {
      cls = await timeSteps(`${name} ClassNet alone`, clsTask, clsCfg, randomSource(sz.warmup + sz.reps + (profile ? 1 : 0), dims.batch, dims.size, NUM_CLASSES, o.labelsPerImage, 200), sz.warmup, sz.reps, profile);
    } finally {
      clsTask.dispose();
    }
    const classNetAlone = medianTiming(cls.steps);
    // The encoder by itself on the images the step gives it (in the trainer's chunks).
    let encoderTiming: TrainCaseResult["encoderTiming"];
    const chunk = m.cfg.match.encoderChunk && m.cfg.match.encoderChunk > 0 ? m.cfg.match.encoderChunk : 16;
    if (regionMode === "image") {
      const nImg = Math.max(1, Math.round(2 * med.pairs));
      const x = tf.randomUniform([nImg, dims.size, dims.size, 3], 0, 1, "float32", 5) as tf.Tensor4D;
      const r = tf.randomNormal([nImg, encoder.identity.dim], 0, 1, "float32", 6);
      const parts: { x: tf.Tensor4D; r: tf.Tensor }[] = [];
      for (let i = 0; i < nImg; i += chunk) {
        const n = Math.min(chunk, nImg - i);
        parts.push({ x: tf.slice(x, i, n) as tf.Tensor4D, r: tf.slice(r, i, n) });
      }
      try {
        const fwd = await timeIt(sz.warmup, sz.reps, async () => {
          for (const pt of parts) {
            const out = encoder.apply!(pt.x);
            await out.pooled.data();
            tf.dispose([out.pooled, out.dense]);
          }
        });
        const g = tf.grad((xx: tf.Tensor) => encoder.apply!(xx as tf.Tensor4D).pooled);
        const fb = await timeIt(sz.warmup, sz.reps, async () => {
          for (const pt of parts) {
            const gx = g(pt.x, pt.r);
            await gx.data();
            gx.dispose();
          }
        });
        encoderTiming = { images: nImg, size: dims.size, forward: median(fwd), forwardBackward: median(fb) };
      } finally {
        tf.dispose([x, r, ...parts.flatMap((pt) => [pt.x, pt.r])]);
      }
    } else {
      const x = tf.randomUniform([dims.batch, dims.size, dims.size, 3], 0, 1, "float32", 5) as tf.Tensor4D;
      try {
        const fwd = await timeIt(sz.warmup, sz.reps, async () => {
          const out = await encoder.encode(x, { dense: true });
          await out.dense!.data();
          tf.dispose([out.pooled, out.dense]);
        });
        encoderTiming = { images: dims.batch, size: dims.size, forward: median(fwd) };
      } finally {
        x.dispose();
      }
    }
    // The optimiser by itself, fused and one tensor at a time (the parameters move; the
    // case is over, and the network is disposed after).
    const params = m.net.trainableVariables();
    const grads = [...params].map(([k, v], i) => [k, tf.randomNormal(v.shape, 0, 1e-3, "float32", i + 1)] as const);
    const gradMap = new Map(grads);
    const last = [...params.values()].at(-1)!;
    const optTime = async (fuse: boolean): Promise<number> => {
      const opt = new AdamW(params, { lr: 1e-4, weightDecay: 1e-3, fuse });
      try {
        return median(
          await timeIt(sz.warmup, sz.reps, async () => {
            opt.step(gradMap, 1e-4);
            await last.data();
          }),
        );
      } finally {
        opt.dispose();
      }
    };
    let optimizerTiming: TrainCaseResult["optimizerTiming"];
    try {
      const fused = await optTime(true);
      const perTensor = await optTime(false);
      optimizerTiming = { tensors: params.size, values: [...params.values()].reduce((a, v) => a + v.size, 0), fused, perTensor };
      log(`  ${name}: AdamW update alone ${fused.toFixed(3)} s as flat groups, ${perTensor.toFixed(3)} s one tensor at a time (${params.size} tensors)`);
    } finally {
      tf.dispose(grads.map(([, g]) => g));
    }
    // Where the time goes: ClassNet (from the classification-only step), the encoder
    // (measured by itself), the optimiser, and the rest of the step (matching maps,
    // thresholds, regions, losses, the extra forward pass for pair selection).
    const breakdown: Record<string, number> = {};
    breakdown["ClassNet forward+backward"] = classNetAlone.forwardBackward;
    let enc = regionMode === "image" ? (encoderTiming.forwardBackward ?? 0) : encoderTiming.forward;
    breakdown[regionMode === "image" ? "encoder forward+backward (regions)" : "encoder dense features (no gradient)"] = enc;
    if (regionMode === "image" && (m.cfg.match.encoderChunk ?? 0) > 0) {
      // Two-pass image mode: the chunks whose activations were not kept run forward twice.
      const recomputed = med.encoderRecomputed ?? 0;
      const share = recomputed / Math.max(1, recomputed + (med.encoderKept ?? 0));
      const again = (encoderTiming.forward ?? 0) * share;
      breakdown[`encoder forward again (two-pass image mode: the ${recomputed} checkpointed regions)`] = again;
      enc += again;
    }
    breakdown["optimiser (AdamW)"] = med.optimizer;
    breakdown["rest: matching, regions, losses, the pair-selection forward"] = Math.max(0, med.step - classNetAlone.forwardBackward - enc - med.optimizer);
    return {
      kind: "train",
      name,
      profile: which,
      regionMode,
      backbone: m.backboneName,
      encoder: m.encoderName,
      encoderNote: m.encoderNote,
      batch: dims.batch,
      size: dims.size,
      steps: main.steps,
      median: med,
      classNetAlone,
      encoderTiming,
      optimizerTiming,
      breakdown,
      peakRssBytes: maxRss(),
      peakTensorBytes: main.peakTensorBytes,
      kernels: main.kernels,
      matMuls: main.matMuls,
      classNetKernels: cls.kernels,
      classNetMatMuls: cls.matMuls,
      notes,
    };
  } finally {
    m.dispose();
  }
}

async function camCase(sz: Sizes): Promise<CamCaseResult> {
  const dims = sz.cam;
  const sizes: Sizes = { ...sz, release: { ...sz.release, mit: dims.mit } };
  const m = await buildModels("release", "feature", sizes, {}, false);
  const notes = ["random weights (MiT-b1): timing only", "CAMs (4 stages fused 0/0.3/0.3/0.4, label gating), argmax masks, read back to the host"];
  try {
    log(`[${tf.getBackend()}] cam: ${m.backboneName}, batch ${dims.batch}, ${dims.size} px`);
    const images = tf.randomUniform([dims.batch, dims.size, dims.size, 3], 0, 1, "float32", 9) as tf.Tensor4D;
    const labels = tf.tidy(() => tf.cast(tf.greater(tf.randomUniform([dims.batch, NUM_CLASSES], 0, 1, "float32", 10), 0.5), "float32")) as tf.Tensor2D;
    const run = async (cam: PbipConfig["cam"]) => {
      const { cams, gate, probs } = computeCams(m.net, images, labels, cam);
      const masks = await camsToMasks(cams, NUM_CLASSES, cam.background);
      await masks.data();
      tf.dispose([cams, gate, probs, masks]);
    };
    try {
      const plain = { ...m.cfg.cam, tta: { hflip: false, intensities: [1] } };
      const tta = m.cfg.cam;
      const noTta = await timeIt(sz.warmup, sz.reps, () => run(plain));
      log(`  cam without TTA: ${((1000 * median(noTta)) / dims.batch).toFixed(1)} ms per patch`);
      const withTta = await timeIt(sz.warmup, sz.reps, () => run(tta));
      const variants = (tta.tta.hflip ? 2 : 1) * Math.max(1, tta.tta.intensities.length);
      log(`  cam with TTA (${variants} variants): ${((1000 * median(withTta)) / dims.batch).toFixed(1)} ms per patch`);
      return {
        kind: "cam",
        name: "cam",
        backbone: m.backboneName,
        batch: dims.batch,
        size: dims.size,
        noTta: { seconds: noTta, msPerPatch: (1000 * median(noTta)) / dims.batch },
        tta: { variants, seconds: withTta, msPerPatch: (1000 * median(withTta)) / dims.batch },
        peakRssBytes: maxRss(),
        notes,
      };
    } finally {
      tf.dispose([images, labels]);
    }
  } finally {
    m.dispose();
  }
}

// ------------------------------------------------------------------ one backend, in this process

/** The adapter check the GPU bundle's launcher relies on: exit code 3 for a software adapter when a GPU is required. */
export class SoftwareAdapterError extends Error {}

/** Initialise `backend` here and run every selected case on it. */
export async function benchBackend(backend: BackendName, o: BenchOptions): Promise<BackendResult> {
  const t0 = Date.now();
  let report: BackendReport;
  try {
    report = await initBackend({ backend, acceptSoftwareGpu: true });
  } catch (e) {
    return { backend, ok: false, error: (e as Error).message, cases: [], failures: [] };
  }
  const software = report.adapter?.software ?? false;
  log(formatBackendReport(report).split("\n").slice(0, 3).join("\n"));
  if (software) {
    log(`NOTE: ${report.adapter!.description || report.adapter!.device} is a SOFTWARE adapter (CPU rasteriser), not a GPU: its timings say nothing about GPU speed`);
    if (o.requireGpu) throw new SoftwareAdapterError(`the WebGPU adapter "${report.adapter!.description || report.adapter!.device}" is a software rasteriser, not a GPU`);
  }
  const sz = sizesFor(o, software);
  const res: BackendResult = {
    backend,
    ok: true,
    device: report.device,
    threads: report.threads,
    software,
    adapter: report.adapter,
    versions: report.versions,
    sizes: sz.label,
    cases: [],
    failures: [],
  };
  // One profiled step per case on backends whose kernels run synchronously on the CPU (kernel times are meaningful there).
  const profile = backend !== "webgpu" || o.full;
  for (const c of o.cases) {
    try {
      if (c === "cam") res.cases.push(await camCase(sz));
      else res.cases.push(await trainCase(c, sz, o, profile));
    } catch (e) {
      const msg = (e as Error).stack ?? String(e);
      log(`[${backend}] ${c} FAILED: ${msg}`);
      res.failures.push({ name: c, error: (e as Error).message });
    }
  }
  res.peakRssBytes = maxRss();
  res.seconds = (Date.now() - t0) / 1000;
  res.ok = res.failures.length === 0;
  return res;
}

// ------------------------------------------------------------------ several backends, one child each

interface ChildSpec {
  backend: BackendName;
  env?: NodeJS.ProcessEnv;
  /** Recorded instead of running when the backend cannot be tried at all. */
  skip?: string;
}

function lavapipeEnv(): NodeJS.ProcessEnv | undefined {
  if (process.env.VK_ICD_FILENAMES) return undefined;
  try {
    // Development checkouts: the Mesa lavapipe driver unpacked by the setup (software; labelled as such).
    const lp = require("../../nbrun/lavapipe") as typeof import("../../nbrun/lavapipe");
    const env = lp.readGpuEmulationEnv();
    return env ? lp.withGpuEmulation(process.env, env) : undefined;
  } catch {
    return undefined;
  }
}

function nativeTensorflowInstalled(): string | undefined {
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      require.resolve(pkg);
      return pkg;
    } catch {
      /* not installed */
    }
  }
  return undefined;
}

function childSpecs(): ChildSpec[] {
  const specs: ChildSpec[] = [{ backend: "wasm" }];
  specs.push({ backend: "webgpu", env: lavapipeEnv() });
  specs.push(nativeTensorflowInstalled() ? { backend: "tensorflow" } : { backend: "tensorflow", skip: "no native TensorFlow binding is installed (optional)" });
  return specs;
}

/** The command line that runs this same program again (bin/pbip.js, the GPU bundle, or bench/run.ts through tsx). */
function selfCommand(): string[] {
  const entry = process.argv[1];
  if (!entry) throw new Error("pbip bench: cannot find the script to start children with");
  const words = process.argv[2] === "bench" ? ["bench"] : [];
  return [process.execPath, ...process.execArgv, entry, ...words];
}

function optionArgs(o: BenchOptions): string[] {
  const a: string[] = [];
  if (o.smoke) a.push("--smoke");
  if (o.full) a.push("--full");
  if (o.reps !== undefined) a.push("--reps", String(o.reps));
  if (o.warmup !== undefined) a.push("--warmup", String(o.warmup));
  a.push("--only", o.cases.join(","), "--labels", String(o.labelsPerImage));
  return a;
}

async function runChild(spec: ChildSpec, o: BenchOptions): Promise<BackendResult> {
  if (spec.skip) return { backend: spec.backend, ok: false, error: spec.skip, cases: [], failures: [] };
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "pbip-bench-child-"));
  const file = path.join(tmp, "result.json");
  const [cmd, ...args] = selfCommand();
  args.push("--backend", spec.backend, "--child-out", file, ...optionArgs(o));
  log(`\n=== ${spec.backend} (child process) ===`);
  const tail: string[] = [];
  const code = await new Promise<number>((resolve) => {
    const child = spawn(cmd!, args, { env: { ...(spec.env ?? process.env), PBIP_BACKEND: spec.backend }, stdio: ["ignore", "inherit", "pipe"] });
    let buf = "";
    child.stderr!.on("data", (d: Buffer) => {
      process.stderr.write(d);
      buf += d.toString("utf8");
      const lines = buf.split("\n");
      buf = lines.pop() ?? "";
      for (const l of lines) {
        tail.push(l);
        if (tail.length > 12) tail.shift();
      }
    });
    child.on("error", (e) => {
      tail.push(e.message);
      resolve(-1);
    });
    child.on("close", (c) => resolve(c ?? -1));
  });
  try {
    if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, "utf8")) as BackendResult;
    return { backend: spec.backend, ok: false, error: `child exited with code ${code}: ${tail.join(" | ").slice(-600)}`, cases: [], failures: [] };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ report

const fmtS = (s: number | undefined) => (s === undefined || !Number.isFinite(s) ? "-" : s >= 100 ? s.toFixed(0) : s >= 10 ? s.toFixed(1) : s.toFixed(2));

/** How `ours` compares with `ref` (seconds): a factor, or in percent near parity, where a factor rounds to "1.0x". */
export function ratioText(ours: number, ref: number, who = "PyTorch"): string {
  if (!Number.isFinite(ours) || ours <= 0) return "n/a";
  const r = ours / ref;
  if (r > 0.8 && r < 1.25) {
    const pct = Math.round(100 * Math.abs(r - 1));
    return pct === 0 ? `on par with ${who}` : `${pct}% ${r >= 1 ? "slower" : "faster"} than ${who}`;
  }
  return r >= 1 ? `${r.toFixed(1)}x slower than ${who}` : `${(1 / r).toFixed(1)}x faster than ${who}`;
}

/** The printed table: one row per training case and backend, then the CAM rows. */
export function formatBenchTable(rep: BenchReport): string {
  const lines: string[] = [];
  const head = ["backend", "case", "batch", "px", "step s", "prepare", "fwd+bwd", "regions", "optim", "ClassNet", "encoder f+b", "pairs", "peak RSS", "peak tensors"];
  const rows: string[][] = [];
  for (const b of rep.backends) {
    if (!b.ok && b.cases.length === 0) {
      rows.push([b.backend, `not run: ${(b.error ?? "").slice(0, 110)}`]);
      continue;
    }
    const tag = `${b.backend}${b.software ? " (software)" : ""}${b.sizes !== "full" ? ` [${b.sizes}]` : ""}`;
    for (const c of b.cases) {
      if (c.kind !== "train") continue;
      const enc = c.encoderTiming;
      rows.push([
        tag,
        c.name,
        String(c.batch),
        String(c.size),
        fmtS(c.median.step),
        fmtS(c.median.prepare),
        fmtS(c.median.forwardBackward),
        fmtS(c.median.regions),
        fmtS(c.median.optimizer),
        fmtS(c.classNetAlone?.step),
        enc?.forwardBackward !== undefined ? `${fmtS(enc.forwardBackward)} (${enc.images} img)` : enc ? `${fmtS(enc.forward)} fwd` : "-",
        String(c.median.pairs),
        formatBytes(c.peakRssBytes),
        c.peakTensorBytes !== undefined ? formatBytes(c.peakTensorBytes) : "-",
      ]);
    }
    for (const f of b.failures) rows.push([tag, `${f.name} FAILED: ${f.error.slice(0, 100)}`]);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.filter((r) => r.length > 2).map((r) => (r[i] ?? "").length)));
  const fmtRow = (r: string[]) => (r.length <= 2 ? r.join("  ") : r.map((v, i) => v.padEnd(widths[i]!)).join("  "));
  lines.push("Training step (seconds, median; 'ClassNet' = a step with the classification loss only)");
  lines.push(fmtRow(head));
  for (const r of rows) lines.push(fmtRow(r));
  const camRows: string[] = [];
  for (const b of rep.backends) {
    for (const c of b.cases) {
      if (c.kind !== "cam") continue;
      camRows.push(
        `${`${b.backend}${b.software ? " (software)" : ""}${b.sizes !== "full" ? ` [${b.sizes}]` : ""}`.padEnd(22)} batch ${c.batch}, ${c.size} px: ` +
          `${c.noTta.msPerPatch.toFixed(1)} ms/patch without TTA, ${c.tta.msPerPatch.toFixed(1)} ms/patch with TTA (${c.tta.variants} variants)`,
      );
    }
  }
  if (camRows.length) lines.push("", "Pseudo-mask generation (CAMs + masks)", ...camRows);
  return lines.join("\n");
}

/** How far each backend is from the PyTorch figures, and where the time goes. */
export function summarize(rep: BenchReport): string[] {
  const out: string[] = [];
  const ref = rep.reference;
  for (const b of rep.backends) {
    if (!b.cases.length) continue;
    const tag = `${b.backend}${b.software ? " (SOFTWARE adapter, not a GPU)" : ""}`;
    if (b.sizes !== "full") {
      out.push(`${tag}: ${b.sizes} sizes; not comparable with the PyTorch figures (run with --full${b.software ? " on a real GPU" : ""})`);
      continue;
    }
    // The reference figures are CPU figures: on a GPU, say so wherever they are compared.
    const gpu = b.backend === "webgpu" && !b.software;
    const pt = gpu ? "PyTorch on 2 CPU cores" : "PyTorch";
    const ratio = (ours: number, r: number) => ratioText(ours, r, pt);
    const rel = b.cases.find((c): c is TrainCaseResult => c.kind === "train" && c.name === "release-image");
    if (gpu) {
      out.push(
        `${tag}: a GPU; the PyTorch figures below are the CPU reference (two cores), not PyTorch on this GPU, which is far faster ` +
          "(`python3 bench/torch-reference.py`, in the GPU bundle `python3 torch-reference.py`, times the step's two networks there; docs/results.md has an H200's figures)",
      );
    }
    if (rel) {
      out.push(`${tag}: release step (image mode) ${fmtS(rel.median.step)} s vs ${pt} ${ref.releaseStepSeconds} s: ${ratio(rel.median.step, ref.releaseStepSeconds)}`);
      if (rel.encoderTiming?.forwardBackward !== undefined) {
        const per = rel.encoderTiming.forwardBackward / rel.encoderTiming.images;
        out.push(
          `  Swin-T forward+backward on the step's ${rel.encoderTiming.images} region images: ${fmtS(rel.encoderTiming.forwardBackward)} s (${fmtS(per)} s per image) vs ${pt}: ${ref.encoderForwardBackwardSeconds} s ` +
            `(${ratio(rel.encoderTiming.forwardBackward, ref.encoderForwardBackwardSeconds)}; PyTorch's region count is not stated, ${rel.median.pairs} pairs here)`,
        );
      }
      if (rel.classNetAlone) out.push(`  ClassNet alone (classification-loss step) ${fmtS(rel.classNetAlone.step)} s vs ${pt} ${ref.classNetAloneSeconds} s: ${ratio(rel.classNetAlone.step, ref.classNetAloneSeconds)}`);
      const total = Object.values(rel.breakdown).reduce((a, v) => a + v, 0);
      if (total > 0) {
        out.push(`  where the time goes: ${Object.entries(rel.breakdown).map(([k, v]) => `${k} ${fmtS(v)} s (${((100 * v) / total).toFixed(0)}%)`).join(", ")}`);
      }
      const ot = rel.optimizerTiming;
      if (ot) {
        out.push(
          `  AdamW update alone (${ot.tensors} parameter tensors, ${(ot.values / 1e6).toFixed(1)} M values): ${fmtS(ot.fused)} s as flat groups (the default), ` +
            `${fmtS(ot.perTensor)} s one tensor at a time`,
        );
      }
      if (rel.kernels?.length) {
        out.push(`  top kernels of one step: ${rel.kernels.slice(0, 6).map((k) => `${k.name} ${(k.ms / 1000).toFixed(2)} s`).join(", ")}`);
        const mm = (rel.matMuls ?? []).slice(0, 4);
        if (mm.length) out.push(`  costliest matrix products (operand shapes): ${mm.map((k) => `${k.name} ${(k.ms / 1000).toFixed(2)} s in ${k.calls} calls`).join("; ")}`);
      }
      if (rel.classNetKernels?.length) {
        out.push(`  ClassNet alone, top kernels: ${rel.classNetKernels.slice(0, 6).map((k) => `${k.name} ${(k.ms / 1000).toFixed(2)} s`).join(", ")}`);
        const mm = (rel.classNetMatMuls ?? []).slice(0, 4);
        if (mm.length) out.push(`  ClassNet alone, costliest matrix products: ${mm.map((k) => `${k.name} ${(k.ms / 1000).toFixed(2)} s in ${k.calls} calls`).join("; ")}`);
      }
    }
    const feat = b.cases.find((c): c is TrainCaseResult => c.kind === "train" && c.name === "release-feature");
    if (feat) out.push(`  release step in feature mode (this project's variant; the release has only image mode) ${fmtS(feat.median.step)} s, vs ${pt} in image mode ${ref.releaseStepSeconds} s: ${ratio(feat.median.step, ref.releaseStepSeconds)}`);
    const cam = b.cases.find((c): c is CamCaseResult => c.kind === "cam");
    if (cam) {
      const [lo, hi] = ref.camMsPerPatchNoTta;
      const v = cam.noTta.msPerPatch;
      const verdict = v <= hi ? (v < lo ? `${(lo / v).toFixed(1)}x faster than ${pt}: ${lo}-${hi} ms` : `within ${pt}: ${lo}-${hi} ms`) : `${(v / hi).toFixed(1)}-${(v / lo).toFixed(1)}x slower than ${pt}: ${lo}-${hi} ms`;
      out.push(`  pseudo-masks without TTA ${v.toFixed(1)} ms/patch: ${verdict}; with TTA ${cam.tta.msPerPatch.toFixed(1)} ms/patch`);
    }
    if (b.backend === "wasm" && (b.threads ?? 1) === 1) {
      out.push("  WASM computed on one thread (PBIP_WASM_THREADS=1, or the multi-threaded build did not start: see `pbip doctor`); PyTorch used two cores");
    } else if (b.backend === "wasm") {
      out.push(`  WASM on ${b.threads} threads: XNNPACK's convolutions and pbip's kernels (Swin-T's and MiT-b1's products, attention, GELU, LayerNorm, large transposes, ...) use them all; the other TF.js kernels run on one; PyTorch used two cores`);
    }
  }
  const load = rep.machine.loadavg[0] ?? 0;
  if (load > rep.machine.cpus) out.push(`machine load average ${load.toFixed(1)} on ${rep.machine.cpus} CPUs while measuring: other processes competed, wall times are inflated (the 'cpu' field of each step is the process's CPU time)`);
  return out;
}

// ------------------------------------------------------------------ entry

function defaultOut(): string {
  const stamp = new Date().toISOString().replace(/[:]/g, "-").replace(/\..*$/, "");
  return path.join(projectRoot(), "runs", "bench", stamp, "bench.json");
}

/**
 * Run the benchmark: one backend in this process, or every available backend in
 * child processes; write `bench.json` (atomically) and `bench.txt`; return the report.
 */
export async function runBench(o: BenchOptions): Promise<{ report: BenchReport; file: string }> {
  const backends: BackendResult[] = [];
  if (o.backend) backends.push(await benchBackend(o.backend, o));
  else for (const spec of childSpecs()) backends.push(await runChild(spec, o));
  const report: BenchReport = {
    kind: "pbip-bench",
    version: 1,
    createdAt: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? "?", loadavg: os.loadavg(), totalMemBytes: os.totalmem(), node: process.version, platform: `${process.platform}-${process.arch}` },
    options: { smoke: o.smoke, full: o.full, reps: o.reps, warmup: o.warmup, cases: o.cases, labelsPerImage: o.labelsPerImage },
    reference: PYTORCH_REFERENCE,
    backends,
    summary: [],
  };
  report.summary = summarize(report);
  const file = path.resolve(o.out ?? defaultOut());
  writeJsonAtomic(file, report);
  writeFileAtomic(file.replace(/\.json$/, "") + ".txt", formatBenchTable(report) + "\n\n" + report.summary.join("\n") + "\n");
  return { report, file };
}

function parseCases(v: string | undefined): BenchCase[] {
  if (!v) return [...BENCH_CASES];
  const out: BenchCase[] = [];
  for (const w of v.split(",").map((s) => s.trim()).filter(Boolean)) {
    const matches = BENCH_CASES.filter((c) => c === w || (w === "release" && c.startsWith("release")) || (w === "notebook" && c.startsWith("notebook")));
    if (!matches.length) throw new UsageError(`pbip bench: --only: unknown case "${w}"; use ${BENCH_CASES.join(", ")}, release or notebook`);
    for (const m of matches) if (!out.includes(m)) out.push(m);
  }
  return out;
}

const bench: Command = {
  name: ["bench"],
  summary: "benchmark the training step and pseudo-mask generation per backend (JSON + table)",
  usage: [
    "--backend NAME     one backend in this process (webgpu, wasm, tensorflow, cpu); default: PBIP_BACKEND,",
    "                   else every available one (wasm; webgpu when Dawn finds an adapter; tensorflow if installed)",
    "--smoke            every measured path once at tiny sizes (seconds): proves it works",
    "--full             the stated sizes even on a software WebGPU adapter (lavapipe: slow)",
    "--reps N           timed repetitions, median reported (default 3; 1 with --smoke)",
    "--warmup N         untimed warm-up steps (default 1; 0 with --smoke)",
    `--only LIST        cases, comma-separated: ${BENCH_CASES.join(", ")} (default all)`,
    "--labels N         positive classes per random image (default 2; drives the matched pairs)",
    "--out FILE         bench.json to write (default runs/bench/<timestamp>/bench.json; bench.txt beside it)",
    "--probe            only initialise the backend and print the adapter (JSON on stdout)",
    "--require-gpu      exit 3 when the WebGPU adapter is a software rasteriser (the GPU bundle's launcher uses it)",
    "--allow-software   accepted for the launcher's sake (the default here)",
  ].join("\n"),
  async run(argv) {
    const p = parse("bench", argv, {
      backend: { type: "string" },
      smoke: { type: "boolean" },
      full: { type: "boolean" },
      reps: { type: "string" },
      warmup: { type: "string" },
      only: { type: "string" },
      labels: { type: "string" },
      out: { type: "string" },
      probe: { type: "boolean" },
      "require-gpu": { type: "boolean" },
      "allow-software": { type: "boolean" },
      "child-out": { type: "string" },
    });
    const backendValue = str(p, "backend") ?? process.env.PBIP_BACKEND;
    const choice = backendValue ? parseBackendChoice(backendValue, str(p, "backend") ? "--backend" : "PBIP_BACKEND") : undefined;
    if (choice === "auto") throw new UsageError("pbip bench: --backend auto is not a single backend; leave it out to run every available one");
    const requireGpu = flag(p, "require-gpu") && !flag(p, "allow-software");
    if (flag(p, "probe")) {
      const r = await initBackend({ backend: choice ?? "webgpu", acceptSoftwareGpu: true });
      console.error(formatBackendReport(r));
      const software = r.adapter?.software ?? false;
      console.log(JSON.stringify({ backend: r.backend, device: r.device, adapter: r.adapter, software, versions: r.versions }));
      if (software) {
        console.error(`the WebGPU adapter "${r.adapter!.description || r.adapter!.device}" is a SOFTWARE rasteriser (CPU), not a GPU`);
        if (requireGpu) return 3;
      }
      return 0;
    }
    const labels = intOption("bench", "labels", str(p, "labels"), 2);
    if (labels < 1 || labels > NUM_CLASSES) throw new UsageError(`pbip bench: --labels must be 1..${NUM_CLASSES}`);
    const o: BenchOptions = {
      backend: choice as BackendName | undefined,
      smoke: flag(p, "smoke"),
      full: flag(p, "full"),
      reps: str(p, "reps") !== undefined ? Math.max(1, intOption("bench", "reps", str(p, "reps"), 3)) : undefined,
      warmup: str(p, "warmup") !== undefined ? intOption("bench", "warmup", str(p, "warmup"), 1) : undefined,
      cases: parseCases(str(p, "only")),
      labelsPerImage: labels,
      out: str(p, "out"),
      requireGpu,
    };
    const childOut = str(p, "child-out");
    if (childOut) {
      // A child of a multi-backend run: measure and hand the result to the parent.
      if (!o.backend) throw new UsageError("pbip bench: --child-out needs --backend");
      const res = await benchBackend(o.backend, o);
      writeJsonAtomic(childOut, res);
      return 0;
    }
    let result;
    try {
      result = await runBench(o);
    } catch (e) {
      if (e instanceof SoftwareAdapterError) {
        console.error(`pbip bench: ${e.message}; pass --allow-software to measure it anyway`);
        return 3;
      }
      throw e;
    }
    const { report, file } = result;
    console.log(formatBenchTable(report));
    if (report.summary.length) console.log("\n" + report.summary.join("\n"));
    console.log(`\nwrote ${file}`);
    const failed = report.backends.filter((b) => b.failures.length > 0);
    const ran = report.backends.filter((b) => b.cases.length > 0);
    if (failed.length || ran.length === 0) {
      console.error(`pbip bench: ${failed.length ? `failures on ${failed.map((b) => b.backend).join(", ")}` : "no backend could run"}`);
      return 1;
    }
    return 0;
  },
};

/** `pbip bench`. */
export const commands: Command[] = [bench];
