/**
 * Configuration profiles. Every value of METHOD.md section 6 lives here, for the
 * paper (`paper`), the authors' PyTorch release (`release`), and a small
 * `notebook` profile that trains on two CPU cores in minutes. Override by
 * spreading: `resolveConfig("release", { optim: { lr: 1e-4 } })`.
 */

import { configProblems } from "./validate";

export type RegionMode = "image" | "feature";
export type SimilarityForm = "release" | "paper";
export type BankRule = "centroid" | "nearest" | "random";

export interface PbipConfig {
  /** Profile this config was derived from. */
  profile: string;
  data: {
    /** Side the patches are resized to before the network (224 in both paper and release). */
    inputSize: number;
    /**
     * ClassNet input normalisation (RGB, [0,1] scale): `dataset` uses the dataset
     * manifest's statistics (the release: BCSS-WSSS mean [0.6679,0.4779,0.7062],
     * std [0.1737,0.2256,0.1982]), `backbone` the statistics its weights were trained with.
     */
    normalization: { mean: [number, number, number]; std: [number, number, number] } | "dataset" | "backbone";
    /** Training augmentation (the release: h-flip, v-flip, rot90). */
    augment: { hflip: boolean; vflip: boolean; rot90: boolean };
  };
  bank: {
    /** Subclasses per class (K); a number or one per class. */
    k: number | number[];
    /** Prototype rule: `nearest` (paper: mean of the N_K nearest to the centre), `centroid` (release), `random` (Fig. 4 ablation). */
    rule: BankRule;
    /** N_K: patches per subclass for `nearest`, per class for `random`. */
    nK: number;
    /** White filter: a pixel is white when its grey level exceeds this. */
    whiteGrey: number;
    /** ...and a patch is dropped when more than this fraction of its pixels is white. */
    whiteMaxFraction: number;
    kmeansMaxIterations: number;
    seed: number;
  };
  model: {
    backbone: "mit-b0" | "mit-b1" | "mit-b2" | "mobilenetv2";
    /** Weights file for the backbone (MiT: .safetensors); undefined = bundled (MobileNetV2) or random init (MiT). */
    backboneWeights?: string;
    /** MiT stage strides (release [4,2,2,1]). */
    strides: [number, number, number, number];
    dropPathRate: number;
    /** `similarity` (eq. 2) or the Table 5 ablation `conv1x1`. */
    head: "similarity" | "conv1x1";
    /** `release`: normalised pixel feature . projected prototype * learnable scale; `paper`: true cosine. */
    similarity: SimilarityForm;
    /** Initial value of the learnable scale s_i (release 1/0.07). */
    scaleInit: number;
    learnScale: boolean;
    /** Hidden width of the prototype projection MLP (Linear(d,h), ReLU, Linear(h,C_i)). */
    projectionHidden: number;
    /** Stages (1-based) that get a head. Paper: [2,3,4]; release: [1,2,3,4]. */
    stages: number[];
  };
  match: {
    /** Map used for thresholding: `last` stage (release) or the upsampled `sum` of stages (paper eq. 3). */
    mapSource: "last" | "sum";
    /** delta of eq. 4: tau = delta * max(M). */
    delta: number;
    /** Where the max of eq. 4 runs: over all channels and pixels of an image (release) or per channel. */
    maxOver: "image" | "channel";
    /** Release min-max normalises M*X and (1-M)*X per sample and channel before masking. */
    regionMinMax: boolean;
    /** `image`: masked images through the encoder in the graph (the method); `feature`: map-weighted average of cached dense encoder features (this project's variant). */
    regionMode: RegionMode;
    /** Switch adaptive thresholding off (ablation): regions are M*X and (1-M)*X without b. */
    adaptiveThreshold: boolean;
    /**
     * `image` mode: regions per encoder chunk. 0 runs the encoder on all regions inside
     * ClassNet's gradient tape (when memory allows); N > 0 runs two passes, the first
     * taking the matching losses' gradient with respect to the regions N at a time
     * (exact; bounded memory: the WASM heap is 4 GiB, and the release's ~65 regions at
     * 224 px through Swin-T need more; see `encoderKeep`).
     */
    encoderChunk: number;
    /**
     * Two-pass `image` mode: how many region images keep their encoder activations
     * from pass 1's forward to its backward; the other chunks are recomputed there
     * (gradient checkpointing). Same values either way; each kept image saves one
     * encoder forward pass and costs its activations' memory (about 32 MiB per 224 px
     * image for Swin-T with `memory: "lean"`). `auto`: as many as fit the WASM heap;
     * 0 (the rule on other backends, whose free memory is unknown) recomputes all.
     * Worth it for encoders with hand-written backward passes (the Swin-T); see the
     * notebook profile for one where it is not.
     */
    encoderKeep: number | "auto";
  };
  loss: {
    temperature: number;
    alpha: number;
    beta: number;
    theta1: number;
    theta2: number;
    /** Release: 0.0005 * mean(M_4) inside the beta term. */
    camRegWeight: number;
    /** Classification loss weight per stage (1-based stage order, 4 entries). */
    stageWeights: [number, number, number, number];
    /** `batch`: the release's sums over all pairs inside the log; `pair`: per-pair mean. */
    reduction: "batch" | "pair";
    useFg: boolean;
    useBg: boolean;
  };
  optim: {
    lr: number;
    weightDecay: number;
    betas: [number, number];
    eps: number;
    /** Learning-rate multiplier for the heads (projection MLPs, scales) relative to the backbone. */
    headLrMultiplier: number;
    schedule: { kind: "poly" | "constant" | "cosine"; power: number; warmupSteps: number };
    clipGradNorm?: number;
  };
  train: {
    epochs: number;
    batchSize: number;
    /** Stop after this many steps (0 = no limit); used by quick runs. */
    maxSteps: number;
    seed: number;
    /** Validate (pseudo-mask mIoU on val) every this many epochs. */
    valEvery: number;
    /** Patches of the val split used for per-epoch validation (0 = all). */
    valLimit: number;
    checkpointEvery: number;
  };
  cam: {
    /** Fusion weights per stage (release: 0, 0.3, 0.3, 0.4). */
    stageWeights: [number, number, number, number];
    /** Test-time augmentation: h-flip x intensity scales. */
    tta: { hflip: boolean; intensities: number[] };
    /**
     * How a class's K subclass maps merge into its CAM (and its image-level probability):
     * `softmax`, sum(softmax(s) * s) over the K (release); `mean`, eq. 2's average over the K (paper).
     * Configs written before this key existed are read as `softmax` ({@link upgradeStoredConfig}).
     */
    merge: "softmax" | "mean";
    /** Which labels gate the CAM channels. */
    gate: "gt" | "pred";
    gateThreshold: number;
    /** Background: `none` (release), `power` ((1-max)^p channel), `white` (grey > whiteGrey, blobs < minBlob px ignored), `power-white`. */
    background: { mode: "none" | "power" | "white" | "power-white"; power: number; whiteGrey: number; minBlob: number };
  };
  encoder: {
    /** `mobilenetv2` (bundled stand-in), `swin-t` (release architecture), `onnx:<file>`, `tfjs:<model.json>`. */
    name: string;
    weights?: string;
    /** Override the encoder's input side (the bundled MobileNetV2 accepts any; the notebook profile uses 112 to match its patches). */
    inputSize?: number;
    /**
     * The bundled MobileNetV2's feature layer (default `out_relu`, its last). Earlier
     * layers are less specific to the task it was fine-tuned on; see `bench/encoder-view.ts`.
     */
    featureLayer?: string;
  };
}

/**
 * A config read from a file (a checkpoint, a run's config.json, an ablation record) that an
 * earlier version of pbip wrote, with the keys added since filled by the behaviour that version
 * had, so that it compares equal to the same config written now: `cam.merge` (added 2026-11-30,
 * before it CAMs merged by softmax). Returns a copy (the stored object is unchanged); a current
 * config comes back equal.
 */
export function upgradeStoredConfig(cfg: PbipConfig): PbipConfig {
  return cfg.cam ? { ...cfg, cam: upgradeStoredCam(cfg.cam) } : { ...cfg };
}

/** {@link upgradeStoredConfig} for a stored `cam` section alone (e.g. in a pseudo-mask stamp). Returns a copy. */
export function upgradeStoredCam(cam: PbipConfig["cam"]): PbipConfig["cam"] {
  const c = JSON.parse(JSON.stringify(cam)) as PbipConfig["cam"];
  if ((c as Partial<PbipConfig["cam"]>).merge === undefined) c.merge = "softmax";
  return c;
}

/** The authors' PyTorch release (BCSS-WSSS, stage 1), METHOD.md section 6. */
export const RELEASE: PbipConfig = {
  profile: "release",
  data: { inputSize: 224, normalization: "dataset", augment: { hflip: true, vflip: true, rot90: true } },
  // The release keeps every single-label patch, glass included (whiteMaxFraction 1 = no white filter).
  bank: { k: 3, rule: "centroid", nK: 100, whiteGrey: 200, whiteMaxFraction: 1, kmeansMaxIterations: 100, seed: 42 },
  model: {
    backbone: "mit-b1",
    strides: [4, 2, 2, 1],
    dropPathRate: 0.1,
    head: "similarity",
    similarity: "release",
    scaleInit: 1 / 0.07,
    learnScale: true,
    projectionHidden: 256,
    stages: [1, 2, 3, 4],
  },
  match: { mapSource: "last", delta: 0.5, maxOver: "image", regionMinMax: true, regionMode: "image", adaptiveThreshold: true, encoderChunk: 16, encoderKeep: "auto" },
  loss: {
    temperature: 0.07,
    alpha: 1,
    beta: 0.1,
    theta1: 1,
    theta2: 1,
    camRegWeight: 0.0005,
    stageWeights: [0, 0.1, 1, 1],
    reduction: "batch",
    useFg: true,
    useBg: true,
  },
  optim: {
    lr: 5e-5,
    weightDecay: 1e-3,
    betas: [0.9, 0.999],
    eps: 1e-8,
    headLrMultiplier: 1,
    schedule: { kind: "poly", power: 1, warmupSteps: 0 },
  },
  train: { epochs: 8, batchSize: 10, maxSteps: 0, seed: 42, valEvery: 1, valLimit: 0, checkpointEvery: 1 },
  cam: {
    stageWeights: [0, 0.3, 0.3, 0.4],
    tta: { hflip: true, intensities: [0.9, 1.0, 1.1] },
    merge: "softmax",
    gate: "gt",
    gateThreshold: 0.5,
    background: { mode: "none", power: 10, whiteGrey: 200, minBlob: 80 },
  },
  encoder: { name: "swin-t" },
};

/** The paper's values (METHOD.md section 6) where they differ from the release. */
export const PAPER: PbipConfig = {
  ...RELEASE,
  profile: "paper",
  data: { ...RELEASE.data, augment: { hflip: false, vflip: false, rot90: false } },
  // The paper drops images "with excessive white regions" without saying how: the peers' test
  // (TPRO, MLPS), more than half the pixels with grey level > 200.
  bank: { ...RELEASE.bank, rule: "nearest", nK: 100, whiteMaxFraction: 0.5 },
  model: { ...RELEASE.model, similarity: "paper", stages: [2, 3, 4] },
  match: { ...RELEASE.match, mapSource: "sum", delta: 0.15, regionMinMax: false },
  // Eq. 9 and 11 are one ratio per region j (the release sums every pair of the batch inside one log).
  loss: { ...RELEASE.loss, temperature: 1, alpha: 1, beta: 0.5, theta1: 1, theta2: 0.5, camRegWeight: 0, stageWeights: [0, 1, 1, 1], reduction: "pair" },
  optim: { ...RELEASE.optim, lr: 1e-5, weightDecay: 0.003, schedule: { kind: "constant", power: 1, warmupSteps: 0 } },
  train: { ...RELEASE.train, epochs: 10, batchSize: 10 },
  cam: { ...RELEASE.cam, merge: "mean" },
  // MedCLIP's vision tower (Swin-T + its 768->512 projection, `kernel-setup/export_swin_weights.py
  // medclip`) in TensorFlow.js: the paper's `image` region mode needs gradients through the encoder,
  // which an ONNX export cannot give.
  encoder: { name: "swin-t", weights: "weights/swin-t-medclip.safetensors" },
};

/**
 * Sized for two CPU cores: the release's semantics, the bundled MobileNetV2 as
 * backbone and (stand-in) encoder, 112 px inputs, one epoch (125 steps on the
 * embedded set), the `feature` region mode.
 */
export const NOTEBOOK: PbipConfig = {
  ...RELEASE,
  profile: "notebook",
  data: { ...RELEASE.data, inputSize: 112, normalization: "backbone" },
  bank: { ...RELEASE.bank, k: 3, whiteMaxFraction: 0.5 },
  model: { ...RELEASE.model, backbone: "mobilenetv2", dropPathRate: 0 },
  // encoderKeep 0: the bundled MobileNetV2 differentiates by TF.js autodiff, whose tape is
  // large; keeping every region's activations raised the process's memory from 1.6 to
  // 3.6 GiB for no faster step (`npm run bench -- --only notebook-image`), and filled the
  // heap in notebook 03.
  match: { ...RELEASE.match, regionMode: "feature", encoderKeep: 0 },
  optim: { ...RELEASE.optim, lr: 2e-4, headLrMultiplier: 10, schedule: { kind: "poly", power: 1, warmupSteps: 20 } },
  train: { ...RELEASE.train, epochs: 1, batchSize: 8, valLimit: 60 },
  cam: { ...RELEASE.cam, tta: { hflip: false, intensities: [1] }, background: { mode: "white", power: 10, whiteGrey: 200, minBlob: 80 } },
  encoder: { name: "mobilenetv2", inputSize: 112 },
};

export const PROFILES: Record<string, PbipConfig> = { release: RELEASE, paper: PAPER, notebook: NOTEBOOK };

/** A deep-partial override of a config. */
/** A partial of T at every depth (arrays and other non-plain values are replaced whole). */
export type DeepPartial<T> = T extends readonly unknown[] ? T : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;

/**
 * Changes to a config, at any depth: `{ cam: { background: { mode: "power" } } }`.
 * Merged key by key (arrays replaced whole); `resolveConfig` checks the result.
 */
export type ConfigOverride = DeepPartial<PbipConfig>;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepMerge<T>(base: T, over: unknown): T {
  if (!isPlainObject(over)) return (over === undefined ? base : over) as T;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    out[k] = isPlainObject(v) && isPlainObject(out[k]) ? deepMerge(out[k], v) : v;
  }
  return out as T;
}

/** A profile by name (or a config) with overrides merged in, deeply. */
export function resolveConfig(base: string | PbipConfig, ...overrides: (ConfigOverride | undefined)[]): PbipConfig {
  let cfg: PbipConfig;
  if (typeof base === "string") {
    const p = PROFILES[base];
    if (!p) throw new Error(`unknown profile "${base}"; use one of ${Object.keys(PROFILES).join(", ")}`);
    cfg = p;
  } else cfg = base;
  for (const o of overrides) cfg = deepMerge(cfg, o);
  const out = JSON.parse(JSON.stringify(cfg)) as PbipConfig;
  const problems = configProblems(out);
  if (problems.length) throw new Error(`config (${out.profile} profile with overrides): ${problems.join("; ")}`);
  return out;
}

/** Every leaf where two configs differ: `path: a -> b`. */
export function diffConfigs(a: PbipConfig, b: PbipConfig): { path: string; a: unknown; b: unknown }[] {
  return diffValues(a, b);
}

/** Every leaf (dotted path) where two JSON-like values differ. */
export function diffValues(a: unknown, b: unknown): { path: string; a: unknown; b: unknown }[] {
  const out: { path: string; a: unknown; b: unknown }[] = [];
  const walk = (x: unknown, y: unknown, p: string) => {
    if (isPlainObject(x) && isPlainObject(y)) {
      for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) walk(x[k], y[k], p ? `${p}.${k}` : k);
    } else if (JSON.stringify(x) !== JSON.stringify(y)) out.push({ path: p, a: x, b: y });
  };
  walk(a, b, "");
  return out;
}

/**
 * The differences as aligned text lines, headed by the two configs' names: their
 * profiles unless `labels` are given (two configs of one profile would read
 * "notebook -> notebook").
 */
export function formatConfigDiff(a: PbipConfig, b: PbipConfig, labels: [string, string] = [a.profile, b.profile]): string {
  const d = diffConfigs(a, b);
  if (!d.length) return `${labels[0]} and ${labels[1]}: identical`;
  const w = Math.max(...d.map((r) => r.path.length));
  return [`${labels[0]} -> ${labels[1]}`, ...d.map((r) => `  ${r.path.padEnd(w)}  ${JSON.stringify(r.a)} -> ${JSON.stringify(r.b)}`)].join("\n");
}

/** K per class for N classes. */
export function kPerClass(cfg: PbipConfig, numClasses: number): number[] {
  const k = cfg.bank.k;
  if (Array.isArray(k)) {
    if (k.length !== numClasses) throw new Error(`bank.k has ${k.length} entries for ${numClasses} classes`);
    return [...k];
  }
  return new Array<number>(numClasses).fill(k);
}

/**
 * Whether quick mode is on: PBIP_QUICK=1 shrinks data and steps so that tests
 * can execute every notebook in minutes.
 */
export function quickMode(): boolean {
  const v = process.env.PBIP_QUICK;
  return v !== undefined && v !== "" && v !== "0" && v.toLowerCase() !== "false";
}

/** Optional config keys (absent from a profile unless set), which `--set` accepts. */
const OPTIONAL_KEYS = new Set(["model.backboneWeights", "optim.clipGradNorm", "encoder.weights", "encoder.inputSize", "encoder.featureLayer"]);

/**
 * Turn `path.to.key=value` strings (the CLI's `--set`) into an override. Values are
 * parsed as JSON when they parse (numbers, booleans, arrays), else kept as strings.
 * Unknown paths are an error naming the key.
 */
export function parseSetOverrides(items: readonly string[], base: PbipConfig = RELEASE): ConfigOverride {
  const out: Record<string, unknown> = {};
  for (const item of items) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new Error(`--set ${item}: expected key.path=value`);
    const keys = item.slice(0, eq).split(".");
    const raw = item.slice(eq + 1);
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      /* a plain string */
    }
    let probe: unknown = base;
    for (const k of keys) {
      if (!isPlainObject(probe) || !(k in probe)) {
        if (isPlainObject(probe) && OPTIONAL_KEYS.has(keys.join("."))) break;
        throw new Error(`--set ${item}: unknown config key "${keys.join(".")}"`);
      }
      probe = probe[k];
    }
    let node = out;
    keys.forEach((k, i) => {
      if (i === keys.length - 1) node[k] = value;
      else node = (node[k] ??= {}) as Record<string, unknown>;
    });
    const problems = configProblems(deepMerge(base, out as ConfigOverride)).filter((pr) => pr.startsWith(keys.join(".")));
    if (problems.length) throw new Error(`--set ${item}: ${problems.join("; ")}`);
  }
  return out as ConfigOverride;
}
