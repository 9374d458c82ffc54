/**
 * Stage-2 segmentation networks (METHOD.md section 5: "Stage 2 trains an
 * ordinary segmentation network on those pseudo-masks"; the paper uses
 * DeepLab-v2, the release has no stage 2). Two families, both encoder + decoder +
 * classifier, outputting logits over the N classes plus background in mask-id
 * order (channel k scores mask id k; background sits at the dataset's
 * `backgroundId`), bilinearly upsampled to the input size:
 *
 * - `deeplab-mobilenetv2`: DeepLab-v3+ (Chen et al., ECCV 2018) on the bundled
 *   pretrained MobileNetV2 (output stride 16). ASPP on stage 4: a 1x1 branch,
 *   three 3x3 atrous branches, image pooling, a 1x1 projection; a low-level skip
 *   from stage 1 (stride 4); two 3x3 refinement convolutions; a 1x1 classifier.
 * - `segformer-mit-b0|b1|b2`: the SegFormer all-MLP decoder (Xie et al., NeurIPS
 *   2021) on a Mix Transformer: per-stage linear projection to a common width,
 *   upsampling to 1/4, concatenation, a 1x1 fusion layer, a 1x1 classifier.
 *
 * Deviations, named: GroupNorm replaces BatchNorm in the decoders (batches of 8
 * on two cores are too small for batch statistics, and GroupNorm keeps a step
 * deterministic and stateless); the decoders' dropout is left out; by default the
 * ASPP and refinement 3x3 convolutions are atrous *separable* ones (DeepLab-v3+'s
 * choice for speed; `separable: false` gives full 3x3 convolutions).
 */
import * as tf from "@tensorflow/tfjs";
import { buildBackbone, buildMiT } from "../model/backbones";
import type { Backbone } from "../model/backbones/types";
import type { MiTConfig, MiTName } from "../model/backbones/mit-config";
import { normalizeImages } from "../encoders/preprocess";
import { saveVariables, loadVariables, readMetadata } from "../io/checkpoint";
import { assertCleanLoad } from "../io/tensors";
import { FileError, UsageError } from "../util/errors";
import { Conv, ConvNormAct, ParamStore, SeparableConvNormAct, upsampleBilinear } from "./layers";

/** The stage-2 architectures by name. */
export type SegArch = "deeplab-mobilenetv2" | "segformer-mit-b0" | "segformer-mit-b1" | "segformer-mit-b2";

/** Every architecture {@link buildSegModel} accepts. */
export const SEG_ARCHS: readonly SegArch[] = ["deeplab-mobilenetv2", "segformer-mit-b0", "segformer-mit-b1", "segformer-mit-b2"];

/** Settings of the DeepLab-v3+ decoder. */
export interface DeepLabOptions {
  /** Width of every ASPP branch and of its projection (DeepLab: 256; default 128 for two CPU cores). */
  asppChannels: number;
  /** Atrous rates of the three 3x3 ASPP branches (default {@link atrousRatesFor} the input size). */
  rates: [number, number, number];
  /** Atrous separable convolutions in ASPP and refinement (default true, as DeepLab-v3+); false: full 3x3 convolutions. */
  separable: boolean;
  /** Channels of the 1x1 reduction of the stage-1 low-level features (DeepLab-v3+: 48). */
  lowLevelChannels: number;
  /** Width of the two 3x3 refinement convolutions (DeepLab-v3+: 256; default 128). */
  decoderChannels: number;
}

/** Settings of the SegFormer all-MLP decoder and its Mix Transformer. */
export interface SegFormerOptions {
  /** Common width E of the projected stage features (SegFormer-B0/B1: 256). */
  embedDim: number;
  /**
   * The Mix Transformer's architecture. Defaults: the named MiT with SegFormer's
   * strides [4,2,2,2] (output strides 4/8/16/32) and stochastic depth 0.1. Note:
   * the MiT backbone does not reseed stochastic depth per step (it has no
   * `setStepSeed`), so a resumed run with drop path > 0 differs from an
   * uninterrupted one; set `dropPathRate: 0` where exact resume matters.
   */
  mit: MiTConfig;
}

/** What a caller gives {@link buildSegModel}; everything but `arch`, `classes` and `backgroundId` has a default. */
export interface SegModelOptions {
  arch: SegArch;
  /** Foreground class codes in label order (N). */
  classes: string[];
  /** Mask id of background, in [0, N] (N for LUAD-HistoSeg and BCSS-WSSS). */
  backgroundId: number;
  /** Side the network is trained and run at (default 224); sets the default atrous rates. */
  inputSize?: number;
  /** Input normalisation (RGB, [0,1] scale); default the backbone's. */
  normalization?: { mean: [number, number, number]; std: [number, number, number] };
  deeplab?: Partial<DeepLabOptions>;
  /** SegFormer settings; `mit` overrides parts of the named MiT's architecture (tests use tiny ones). */
  segformer?: { embedDim?: number; mit?: Partial<MiTConfig> };
  /** Most groups per GroupNorm (default 32). */
  groupNormGroups?: number;
  /** Seed of the decoder initialisation (and of the MiT's random init). Default 0. */
  seed?: number;
  /**
   * Backbone start: a MiT `.safetensors` (ImageNet, see kernel-setup/convert_mit_pth.py)
   * or a pbip stage-1 ClassNet checkpoint whose backbone variables are copied.
   * Default: the bundled MobileNetV2 weights, or a randomly initialised MiT.
   */
  backboneWeights?: string;
}

/** The resolved, JSON-serialisable description of a model, stored in its checkpoints. */
export interface SegModelConfig {
  kind: "pbip-seg-model";
  version: 1;
  arch: SegArch;
  classes: string[];
  backgroundId: number;
  /** N + 1: channels of the logits. */
  numOutputs: number;
  inputSize: number;
  normalization: { mean: [number, number, number]; std: [number, number, number] };
  groupNormGroups: number;
  seed: number;
  deeplab?: DeepLabOptions;
  segformer?: SegFormerOptions;
  /** Where the backbone's initial weights came from (informative). */
  backboneStart: string;
}

/** One line of {@link SegModel.summary}. */
export interface SegSummaryRow {
  part: string;
  /** Output shape for one input at the given size. */
  output: number[];
  params: number;
}

/**
 * DeepLab's ASPP rates (6, 12, 18 for 513-pixel crops at output stride 16, i.e. a
 * 33-pixel feature map) scaled to the feature map of `inputSize` at
 * `outputStride`, rounded, at least 1 and strictly increasing. At 224 px: 3, 5, 8;
 * at 112 px: 1, 3, 4.
 */
export function atrousRatesFor(inputSize: number, outputStride = 16): [number, number, number] {
  const map = Math.ceil(inputSize / outputStride);
  const ref = Math.ceil(513 / 16);
  const out: number[] = [];
  for (const r of [6, 12, 18]) out.push(Math.max(Math.round((r * map) / ref), 1, (out[out.length - 1] ?? 0) + 1));
  return out as [number, number, number];
}

interface Decoder {
  /** Stage features -> logits at the stage-1 (or stage-4) resolution. */
  apply(stages: tf.Tensor4D[]): tf.Tensor4D;
  summary(stageShapes: number[][]): SegSummaryRow[];
}

function paramsUnder(store: ParamStore, prefix: string): number {
  let n = 0;
  for (const [k, v] of store.vars) if (k.startsWith(prefix)) n += v.size;
  return n;
}

/** DeepLab-v3+ decoder: ASPP on the deepest stage, low-level skip from stage 1. */
class DeepLabDecoder implements Decoder {
  private readonly b0: ConvNormAct;
  private readonly atrous: (ConvNormAct | SeparableConvNormAct)[];
  private readonly pool: ConvNormAct;
  private readonly project: ConvNormAct;
  private readonly low: ConvNormAct;
  private readonly refine: (ConvNormAct | SeparableConvNormAct)[];
  private readonly classifier: Conv;

  constructor(
    private readonly store: ParamStore,
    private readonly o: DeepLabOptions,
    stageChannels: readonly number[],
    numOutputs: number,
    groups: number,
  ) {
    const a = o.asppChannels;
    const cIn = stageChannels[3]!;
    const p = "decoder/aspp";
    this.b0 = new ConvNormAct(store, `${p}/branch0`, { kernel: 1, in: cIn, out: a }, groups);
    this.atrous = o.rates.map((r, i) =>
      o.separable ? new SeparableConvNormAct(store, `${p}/branch${i + 1}`, cIn, a, r, groups) : new ConvNormAct(store, `${p}/branch${i + 1}`, { kernel: 3, in: cIn, out: a, rate: r }, groups),
    );
    this.pool = new ConvNormAct(store, `${p}/pool`, { kernel: 1, in: cIn, out: a }, groups);
    this.project = new ConvNormAct(store, `${p}/project`, { kernel: 1, in: 5 * a, out: a }, groups);
    this.low = new ConvNormAct(store, "decoder/lowlevel", { kernel: 1, in: stageChannels[0]!, out: o.lowLevelChannels }, groups);
    const d = o.decoderChannels;
    const inRef = a + o.lowLevelChannels;
    this.refine = [0, 1].map((i) => {
      const ci = i === 0 ? inRef : d;
      return o.separable ? new SeparableConvNormAct(store, `decoder/refine${i}`, ci, d, 1, groups) : new ConvNormAct(store, `decoder/refine${i}`, { kernel: 3, in: ci, out: d }, groups);
    });
    this.classifier = new Conv(store, "decoder/classifier", { kernel: 1, in: d, out: numOutputs, bias: true, initStd: 0.01 });
  }

  /** ASPP (DeepLab-v3 section 3.3): five parallel branches on F_4, concatenated and projected. */
  aspp(f4: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const [b, h, w] = f4.shape;
      const branches = [this.b0.apply(f4), ...this.atrous.map((m) => m.apply(f4))];
      // Image pooling: global average, 1x1 conv, broadcast back to h x w.
      const pooled = this.pool.apply(tf.mean(f4, [1, 2], true) as tf.Tensor4D);
      branches.push(tf.add(tf.zeros([b, h, w, this.o.asppChannels]), pooled) as tf.Tensor4D);
      return this.project.apply(tf.concat(branches, 3));
    });
  }

  apply(stages: tf.Tensor4D[]): tf.Tensor4D {
    return tf.tidy(() => {
      const f1 = stages[0]!;
      const x = upsampleBilinear(this.aspp(stages[3]!), [f1.shape[1], f1.shape[2]]);
      let y = tf.concat([x, this.low.apply(f1)], 3);
      for (const r of this.refine) y = r.apply(y);
      return this.classifier.apply(y);
    });
  }

  summary(s: number[][]): SegSummaryRow[] {
    const [s1, , , s4] = s as [number[], number[], number[], number[]];
    const st = this.store;
    return [
      { part: `ASPP (rates ${this.o.rates.join("/")}${this.o.separable ? ", separable" : ""}) on stage 4`, output: [s4[0]!, s4[1]!, this.o.asppChannels], params: paramsUnder(st, "decoder/aspp/") },
      { part: "low-level 1x1 on stage 1", output: [s1[0]!, s1[1]!, this.o.lowLevelChannels], params: paramsUnder(st, "decoder/lowlevel/") },
      { part: "refine 2 x 3x3", output: [s1[0]!, s1[1]!, this.o.decoderChannels], params: paramsUnder(st, "decoder/refine") },
      { part: "classifier 1x1", output: [s1[0]!, s1[1]!, this.classifier.outChannels], params: paramsUnder(st, "decoder/classifier/") },
    ];
  }
}

/** SegFormer all-MLP decoder (Xie et al. 2021, eq. 1-4 of their section 3.2). */
class SegFormerDecoder implements Decoder {
  private readonly proj: Conv[];
  private readonly fuse: ConvNormAct;
  private readonly classifier: Conv;
  constructor(
    private readonly store: ParamStore,
    private readonly e: number,
    stageChannels: readonly number[],
    numOutputs: number,
    groups: number,
  ) {
    // Linear(C_i, E) per stage (PyTorch Linear init is replaced by He normal; a norm follows after fusion).
    this.proj = stageChannels.map((c, i) => new Conv(store, `decoder/linear_c${i + 1}`, { kernel: 1, in: c, out: e, bias: true, initStd: Math.sqrt(1 / c) }));
    this.fuse = new ConvNormAct(store, "decoder/linear_fuse", { kernel: 1, in: 4 * e, out: e }, groups);
    this.classifier = new Conv(store, "decoder/classifier", { kernel: 1, in: e, out: numOutputs, bias: true, initStd: 0.01 });
  }

  apply(stages: tf.Tensor4D[]): tf.Tensor4D {
    return tf.tidy(() => {
      const [h1, w1] = [stages[0]!.shape[1], stages[0]!.shape[2]];
      // SegFormer concatenates the deepest first: [c4, c3, c2, c1].
      const ups = stages.map((f, i) => upsampleBilinear(this.proj[i]!.apply(f), [h1, w1])).reverse();
      return this.classifier.apply(this.fuse.apply(tf.concat(ups, 3)));
    });
  }

  summary(s: number[][]): SegSummaryRow[] {
    const s1 = s[0]!;
    return [
      { part: `linear projections C_i -> ${this.e}, upsampled to 1/4`, output: [s1[0]!, s1[1]!, 4 * this.e], params: paramsUnder(this.store, "decoder/linear_c") },
      { part: "linear_fuse 1x1", output: [s1[0]!, s1[1]!, this.e], params: paramsUnder(this.store, "decoder/linear_fuse/") },
      { part: "classifier 1x1", output: [s1[0]!, s1[1]!, this.classifier.outChannels], params: paramsUnder(this.store, "decoder/classifier/") },
    ];
  }
}

/** A backbone variable's checkpoint name: `backbone/<name>` (MobileNetV2's names carry the prefix already). */
function backboneKey(n: string): string {
  return n.startsWith("backbone/") ? n : `backbone/${n}`;
}

/**
 * A stage-2 segmentation network: backbone + decoder + classifier, logits over
 * N + 1 mask ids at the input size. Build with {@link buildSegModel}, restore with
 * {@link loadSegModel}; dispose when done.
 */
export class SegModel {
  private readonly decoder: Decoder;
  constructor(
    readonly config: SegModelConfig,
    readonly backbone: Backbone,
    private readonly store: ParamStore,
  ) {
    const groups = config.groupNormGroups;
    this.decoder = config.deeplab
      ? new DeepLabDecoder(store, config.deeplab, backbone.stageChannels, config.numOutputs, groups)
      : new SegFormerDecoder(store, config.segformer!.embedDim, backbone.stageChannels, config.numOutputs, groups);
  }

  /** Logits `[B, H, W, N+1]` at the input size for RGB [0,1] images `[B, H, W, 3]`. Differentiable; `training` enables the MiT's stochastic depth. */
  forward(images: tf.Tensor4D, training = false): tf.Tensor4D {
    return tf.tidy(() => this.decode(this.backboneFeatures(images, training), [images.shape[1], images.shape[2]]));
  }

  /** The backbone's four stage maps for RGB [0,1] images (normalised here). The caller owns them. */
  backboneFeatures(images: tf.Tensor4D, training = false): tf.Tensor4D[] {
    return tf.tidy(() => this.backbone.apply(normalizeImages(images, this.config.normalization), training));
  }

  /** Decoder and classifier on stage maps, logits bilinearly upsampled to `size` (the input size). */
  decode(stages: tf.Tensor4D[], size: [number, number]): tf.Tensor4D {
    return tf.tidy(() => upsampleBilinear(this.decoder.apply(stages), size));
  }

  /** Mask ids `[B, h, w]` (int32): logits upsampled to `size` (default the input size), then argmax. */
  predictIds(images: tf.Tensor4D, size?: [number, number]): tf.Tensor3D {
    return tf.tidy(() => {
      const logits = this.forward(images, false);
      const up = size ? upsampleBilinear(logits, size) : logits;
      return tf.cast(tf.argMax(up, 3), "int32") as tf.Tensor3D;
    });
  }

  /** Every variable by stable checkpoint name: `backbone/...` then `decoder/...`. */
  namedVariables(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [n, v] of this.backbone.namedVariables()) out.set(backboneKey(n), v);
    for (const [n, v] of this.store.vars) out.set(n, v);
    return out;
  }

  /** Variables the optimiser updates. */
  trainableVariables(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [n, v] of this.namedVariables()) if (v.trainable) out.set(n, v);
    return out;
  }

  /** Parameter count of the backbone and of the decoder. */
  parameterCounts(): { backbone: number; decoder: number; total: number } {
    let backbone = 0;
    for (const v of this.backbone.namedVariables().values()) backbone += v.size;
    let decoder = 0;
    for (const v of this.store.vars.values()) decoder += v.size;
    return { backbone, decoder, total: backbone + decoder };
  }

  /** Per part: output shape `[h, w, c]` for one input of side `inputSize`, and parameters. */
  summary(inputSize = this.config.inputSize): SegSummaryRow[] {
    const shapes = this.backbone.stageStrides.map((s, i) => [Math.ceil(inputSize / s), Math.ceil(inputSize / s), this.backbone.stageChannels[i]!]);
    const bb = this.parameterCounts().backbone;
    return [
      ...shapes.map((sh, i) => ({ part: `backbone stage ${i + 1} (stride ${this.backbone.stageStrides[i]})`, output: sh, params: i === 0 ? bb : 0 })),
      ...this.decoder.summary(shapes),
      { part: "bilinear upsampling to the input", output: [inputSize, inputSize, this.config.numOutputs], params: 0 },
    ];
  }

  /** {@link summary} as a text table, with the architecture line and parameter totals. */
  summaryText(inputSize = this.config.inputSize): string {
    const c = this.config;
    const rows = this.summary(inputSize);
    const p = this.parameterCounts();
    const w = Math.max(...rows.map((r) => r.part.length));
    return [
      `${c.arch}: backbone ${this.backbone.name} (${c.backboneStart === this.backbone.weightsSource ? c.backboneStart : `${this.backbone.weightsSource}; started from ${c.backboneStart}`}), ${c.classes.length} classes + background (id ${c.backgroundId}) = ${c.numOutputs} outputs, input ${inputSize}px, GroupNorm (<= ${c.groupNormGroups} groups)`,
      `${"part".padEnd(w)}  ${"output".padEnd(16)}  params`,
      ...rows.map((r) => `${r.part.padEnd(w)}  ${JSON.stringify(r.output).padEnd(16)}  ${r.params ? r.params.toLocaleString("en-US") : ""}`),
      `parameters: backbone ${p.backbone.toLocaleString("en-US")} (listed on stage 1), decoder ${p.decoder.toLocaleString("en-US")}, total ${p.total.toLocaleString("en-US")}`,
    ].join("\n");
  }

  /** Save the variables and the model config (plus `metadata`) to a safetensors file, atomically. */
  async save(file: string, metadata: Record<string, unknown> = {}): Promise<void> {
    await saveVariables(file, this.namedVariables(), { ...metadata, kind: "pbip-seg-model", segModel: this.config });
  }

  dispose(): void {
    this.backbone.dispose();
    this.store.dispose();
  }
}

/** Resolve options to the stored config (defaults filled in, rates computed). Needs the backbone's normalisation and MiT config. */
function resolveConfig(o: SegModelOptions, backbone: Backbone, start: string): SegModelConfig {
  const inputSize = o.inputSize ?? 224;
  const n = o.classes.length;
  if (!Number.isInteger(o.backgroundId) || o.backgroundId < 0 || o.backgroundId > n) {
    throw new UsageError(`segmentation model: background id ${o.backgroundId} is outside [0, ${n}] for ${n} classes`);
  }
  const bn = backbone.defaultNormalization;
  const cfg: SegModelConfig = {
    kind: "pbip-seg-model",
    version: 1,
    arch: o.arch,
    classes: [...o.classes],
    backgroundId: o.backgroundId,
    numOutputs: n + 1,
    inputSize,
    normalization: o.normalization ?? { mean: [...bn.mean] as [number, number, number], std: [...bn.std] as [number, number, number] },
    groupNormGroups: o.groupNormGroups ?? 32,
    seed: o.seed ?? 0,
    backboneStart: start,
  };
  if (o.arch === "deeplab-mobilenetv2") {
    const d = o.deeplab ?? {};
    cfg.deeplab = {
      asppChannels: d.asppChannels ?? 128,
      rates: d.rates ?? atrousRatesFor(inputSize, backbone.stageStrides[3]),
      separable: d.separable ?? true,
      lowLevelChannels: d.lowLevelChannels ?? 48,
      decoderChannels: d.decoderChannels ?? 128,
    };
  } else {
    cfg.segformer = { embedDim: o.segformer?.embedDim ?? 256, mit: { ...(backbone as unknown as { config: MiTConfig }).config } };
  }
  return cfg;
}

async function makeBackbone(arch: SegArch, seed: number, mit: Partial<MiTConfig> | undefined, weights: string | undefined): Promise<{ backbone: Backbone; start: string }> {
  if (!SEG_ARCHS.includes(arch)) throw new UsageError(`unknown segmentation model "${String(arch)}"; use one of ${SEG_ARCHS.join(", ")}`);
  const isCheckpoint = weights !== undefined && hasPbipMetadata(weights);
  let backbone: Backbone;
  if (arch === "deeplab-mobilenetv2") {
    if (weights && !isCheckpoint) throw new FileError(weights, "deeplab-mobilenetv2 starts from the bundled MobileNetV2 or a pbip ClassNet checkpoint with a mobilenetv2 backbone; this file is neither");
    backbone = await buildBackbone("mobilenetv2");
  } else {
    const name = arch.replace("segformer-", "") as MiTName;
    backbone = buildMiT(name, { seed, strides: mit?.strides ?? [4, 2, 2, 2], dropPathRate: mit?.dropPathRate ?? 0.1, config: mit, weights: isCheckpoint ? undefined : weights });
  }
  if (isCheckpoint) {
    try {
      assertCleanLoad(weights!, loadVariables(weights!, backbone.namedVariables(), ["head/", "optim/", "decoder/"]));
    } catch (e) {
      backbone.dispose();
      throw e;
    }
  }
  const start = weights ? `${isCheckpoint ? "backbone of checkpoint" : "weights"} ${weights}` : backbone.weightsSource;
  return { backbone, start };
}

/** Whether a weights file is a pbip checkpoint; a missing or damaged file is an error saying so (not "neither"). */
function hasPbipMetadata(file: string): boolean {
  try {
    readMetadata(file);
    return true;
  } catch (e) {
    if (e instanceof FileError && /has no pbip metadata/.test(e.message)) return false;
    throw e;
  }
}

/**
 * Build a stage-2 network (see the file comment for the two families).
 *
 * @example
 * const model = await buildSegModel({ arch: "deeplab-mobilenetv2", classes: spec.codes, backgroundId: spec.backgroundId, inputSize: 112 });
 * console.log(model.summaryText());
 */
export async function buildSegModel(o: SegModelOptions): Promise<SegModel> {
  const seed = o.seed ?? 0;
  const { backbone, start } = await makeBackbone(o.arch, seed, o.segformer?.mit, o.backboneWeights);
  try {
    const cfg = resolveConfig(o, backbone, start);
    return new SegModel(cfg, backbone, new ParamStore(seed * 7919 + 17));
  } catch (e) {
    backbone.dispose();
    throw e;
  }
}

/** Rebuild a model from its config (variables initialised, not loaded). */
export async function segModelFromConfig(cfg: SegModelConfig): Promise<SegModel> {
  if (cfg.kind !== "pbip-seg-model") throw new Error(`not a pbip segmentation model config (kind ${String(cfg.kind)})`);
  const backbone =
    cfg.arch === "deeplab-mobilenetv2" ? await buildBackbone("mobilenetv2") : buildMiT(cfg.arch.replace("segformer-", "") as MiTName, { seed: cfg.seed, config: cfg.segformer!.mit });
  return new SegModel(cfg, backbone, new ParamStore(cfg.seed * 7919 + 17));
}

/**
 * Load a model saved by {@link SegModel.save} or a stage-2 training checkpoint
 * (`step-N.safetensors`, `best.safetensors`). Throws a {@link FileError} when the
 * file is not one, or an error listing every missing, unexpected or mis-shaped
 * variable.
 */
export async function loadSegModel(file: string): Promise<SegModel> {
  const meta = readMetadata<{ segModel?: SegModelConfig; task?: string }>(file);
  if (!meta.segModel) throw new FileError(file, `is not a stage-2 segmentation checkpoint (no segModel in its metadata${meta.task ? `; it is a ${meta.task} checkpoint` : ""})`);
  const model = await segModelFromConfig(meta.segModel);
  try {
    assertCleanLoad(file, loadVariables(file, model.namedVariables(), ["optim/"]));
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}
