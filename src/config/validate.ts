/**
 * What a config's values may be. `resolveConfig` checks every config it builds, so a
 * bad value (from `--set`, a spread override or a hand-written object) is an error
 * naming the key and what it takes, before any work, rather than a NaN step count or
 * a failure deep inside a loader or an optimiser.
 */
import type { PbipConfig } from "./profiles";

type Check = (v: unknown) => boolean;

const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const int = (min: number): Check => (v) => Number.isInteger(v) && (v as number) >= min;
const range = (lo: number, hi: number): Check => (v) => isNum(v) && v >= lo && v <= hi;
const positive: Check = (v) => isNum(v) && v > 0;
const nonNegative: Check = (v) => isNum(v) && v >= 0;
const bool: Check = (v) => typeof v === "boolean";
const oneOf = (...xs: string[]): [Check, string] => [(v) => typeof v === "string" && xs.includes(v), `one of ${xs.map((x) => `"${x}"`).join(", ")}`];
const listOf = (each: Check, length?: number): Check => (v) => Array.isArray(v) && v.length > 0 && (length === undefined || v.length === length) && v.every(each);
const optional = (c: Check): Check => (v) => v === undefined || c(v);

/** Path, check, and what the key takes (for the message). */
const RULES: [string, Check, string][] = [
  ["data.inputSize", int(16), "an integer of at least 16 (pixels)"],
  ["data.normalization", (v) => v === "dataset" || v === "backbone" || (typeof v === "object" && v !== null && listOf(isNum, 3)((v as { mean?: unknown }).mean) && listOf(positive, 3)((v as { std?: unknown }).std)), '"dataset", "backbone" or {mean: [r, g, b], std: [r, g, b]} with positive stds'],
  ["data.augment.hflip", bool, "true or false"],
  ["data.augment.vflip", bool, "true or false"],
  ["data.augment.rot90", bool, "true or false"],
  ["bank.k", (v) => int(1)(v) || listOf(int(1))(v), "an integer of at least 1, or one per class"],
  ["bank.rule", ...oneOf("centroid", "nearest", "random")],
  ["bank.nK", int(1), "an integer of at least 1"],
  ["bank.whiteGrey", range(0, 255), "a grey level from 0 to 255"],
  ["bank.whiteMaxFraction", range(0, 1), "a fraction from 0 to 1"],
  ["bank.kmeansMaxIterations", int(1), "an integer of at least 1"],
  ["bank.seed", int(0), "a non-negative integer"],
  ["model.backbone", ...oneOf("mit-b0", "mit-b1", "mit-b2", "mobilenetv2")],
  ["model.backboneWeights", optional((v) => typeof v === "string" && v.length > 0), "a file path"],
  ["model.strides", listOf(int(1), 4), "four positive integers"],
  ["model.dropPathRate", (v) => isNum(v) && v >= 0 && v < 1, "a rate from 0 up to (not including) 1"],
  ["model.head", ...oneOf("similarity", "conv1x1")],
  ["model.similarity", ...oneOf("release", "paper")],
  ["model.scaleInit", positive, "a positive number"],
  ["model.learnScale", bool, "true or false"],
  ["model.projectionHidden", int(1), "an integer of at least 1"],
  ["model.stages", (v) => listOf(range(1, 4))(v) && (v as number[]).every(Number.isInteger) && new Set(v as number[]).size === (v as number[]).length, "distinct stages among 1, 2, 3, 4"],
  ["match.mapSource", ...oneOf("last", "sum")],
  ["match.delta", range(0, 1), "a fraction from 0 to 1"],
  ["match.maxOver", ...oneOf("image", "channel")],
  ["match.regionMinMax", bool, "true or false"],
  ["match.regionMode", ...oneOf("image", "feature")],
  ["match.adaptiveThreshold", bool, "true or false"],
  ["match.encoderChunk", int(0), "a non-negative integer (0: all regions at once)"],
  ["match.encoderKeep", (v) => v === "auto" || int(0)(v), '"auto" or a non-negative integer'],
  ["loss.temperature", positive, "a positive number"],
  ["loss.alpha", nonNegative, "a non-negative number"],
  ["loss.beta", nonNegative, "a non-negative number"],
  ["loss.theta1", nonNegative, "a non-negative number"],
  ["loss.theta2", nonNegative, "a non-negative number"],
  ["loss.camRegWeight", nonNegative, "a non-negative number"],
  ["loss.stageWeights", listOf(nonNegative, 4), "four non-negative numbers"],
  ["loss.reduction", ...oneOf("batch", "pair")],
  ["loss.useFg", bool, "true or false"],
  ["loss.useBg", bool, "true or false"],
  ["optim.lr", positive, "a positive number"],
  ["optim.weightDecay", nonNegative, "a non-negative number"],
  ["optim.betas", listOf((v) => isNum(v) && v >= 0 && v < 1, 2), "two numbers from 0 up to (not including) 1"],
  ["optim.eps", positive, "a positive number"],
  ["optim.headLrMultiplier", positive, "a positive number"],
  ["optim.schedule.kind", ...oneOf("poly", "constant", "cosine")],
  ["optim.schedule.power", positive, "a positive number"],
  ["optim.schedule.warmupSteps", int(0), "a non-negative integer"],
  ["optim.clipGradNorm", optional(positive), "a positive number"],
  ["train.epochs", int(1), "an integer of at least 1"],
  ["train.batchSize", int(1), "an integer of at least 1"],
  ["train.maxSteps", int(0), "a non-negative integer (0: no cap)"],
  ["train.seed", int(0), "a non-negative integer"],
  ["train.valEvery", int(1), "an integer of at least 1"],
  ["train.valLimit", int(0), "a non-negative integer (0: every patch)"],
  ["train.checkpointEvery", int(1), "an integer of at least 1"],
  ["cam.stageWeights", listOf(nonNegative, 4), "four non-negative numbers"],
  ["cam.tta.hflip", bool, "true or false"],
  ["cam.tta.intensities", listOf(positive), "a non-empty list of positive numbers"],
  ["cam.merge", ...oneOf("softmax", "mean")],
  ["cam.gate", ...oneOf("gt", "pred")],
  ["cam.gateThreshold", range(0, 1), "a probability from 0 to 1"],
  ["cam.background.mode", ...oneOf("none", "power", "white", "power-white")],
  ["cam.background.power", positive, "a positive number"],
  ["cam.background.whiteGrey", range(0, 255), "a grey level from 0 to 255"],
  ["cam.background.minBlob", int(0), "a non-negative integer (pixels)"],
  ["encoder.name", (v) => typeof v === "string" && v.length > 0, "an encoder name"],
  ["encoder.weights", optional((v) => typeof v === "string" && v.length > 0), "a file path"],
  ["encoder.inputSize", optional(int(16)), "an integer of at least 16 (pixels)"],
  ["encoder.featureLayer", optional((v) => typeof v === "string" && v.length > 0), "a layer name"],
];

function at(cfg: unknown, p: string): unknown {
  let v = cfg;
  for (const k of p.split(".")) v = typeof v === "object" && v !== null ? (v as Record<string, unknown>)[k] : undefined;
  return v;
}

/** Every value of `cfg` that is not what its key takes, as `key: takes X, got Y` (empty when all are). */
export function configProblems(cfg: PbipConfig): string[] {
  const out: string[] = [];
  for (const [p, check, takes] of RULES) {
    const v = at(cfg, p);
    if (!check(v)) out.push(`${p} takes ${takes}, got ${v === undefined ? "nothing" : JSON.stringify(v)}`);
  }
  return out;
}

/** The rule's text for a key ("an integer of at least 1"), if the key has one. */
export function configKeyTakes(p: string): string | undefined {
  return RULES.find((r) => r[0] === p)?.[2];
}
