/**
 * ClassNet (METHOD.md section 3): backbone features F_i, prototypes projected into
 * each used stage (P_i = MLP_i(P)), similarity maps M_i (eq. 2), and image-level
 * subclass logits by global average pooling.
 */
import * as tf from "@tensorflow/tfjs";
import type { Backbone } from "./backbones/types";
import type { PbipConfig } from "../config/profiles";
import { normalizeImages } from "../encoders/preprocess";
import { PrototypeProjection, Conv1x1Head, similarityMaps, poolLogits, mergeSubclasses } from "./heads";
import { saveVariables, loadVariables } from "../io/checkpoint";
import { assertCleanLoad } from "../io/tensors";

export interface ClassNetOptions {
  backbone: Backbone;
  /** Bank prototypes P [S, d] (S = sum of K per class). Kept as a constant. */
  prototypes: tf.Tensor2D;
  /** Subclasses per class, class-major (sums to S). */
  k: number[];
  /** The model section of a profile. */
  model: PbipConfig["model"];
  /** Input normalisation (RGB, [0,1] scale). */
  normalization: { mean: readonly number[]; std: readonly number[] };
  /** Seed for head initialisation. */
  seed?: number;
}

/** What one forward pass returns (all tensors owned by the caller). */
export interface ClassNetOutput {
  /** The used stages, 1-based, in order (e.g. [1,2,3,4]). */
  stages: number[];
  /** F_i per used stage, [B, h_i, w_i, C_i]. */
  features: tf.Tensor4D[];
  /** M_i per used stage, one channel per subclass: [B, h_i, w_i, S]. */
  maps: tf.Tensor4D[];
  /** Pooled subclass logits per used stage, [B, S]. */
  logits: tf.Tensor2D[];
}

export interface StageSummary {
  stage: number;
  stride: number;
  feature: number[];
  projected: number[];
  map: number[];
  headParams: number;
}

/** The classification network of PBIP. */
export class ClassNet {
  readonly backbone: Backbone;
  readonly k: number[];
  readonly numClasses: number;
  readonly numSubclasses: number;
  readonly stages: number[];
  readonly cfg: PbipConfig["model"];
  readonly normalization: { mean: readonly number[]; std: readonly number[] };
  private prototypes: tf.Tensor2D;
  private readonly projections = new Map<number, PrototypeProjection>();
  private readonly convHeads = new Map<number, Conv1x1Head>();
  private readonly scales = new Map<number, tf.Variable>();

  constructor(o: ClassNetOptions) {
    this.backbone = o.backbone;
    this.k = [...o.k];
    this.numClasses = o.k.length;
    this.numSubclasses = o.k.reduce((a, b) => a + b, 0);
    if (o.prototypes.shape[0] !== this.numSubclasses) {
      throw new Error(`ClassNet: ${o.prototypes.shape[0]} prototypes for K per class [${o.k}] (sum ${this.numSubclasses})`);
    }
    this.cfg = o.model;
    this.stages = [...o.model.stages].sort();
    for (const s of this.stages) if (s < 1 || s > 4) throw new Error(`ClassNet: stage ${s} is not in 1..4`);
    this.normalization = o.normalization;
    this.prototypes = tf.keep(o.prototypes.clone());
    const seed = o.seed ?? 0;
    const d = o.prototypes.shape[1];
    for (const s of this.stages) {
      const c = o.backbone.stageChannels[s - 1]!;
      if (o.model.head === "similarity") {
        this.projections.set(s, new PrototypeProjection(`head/stage${s}/proj`, d, o.model.projectionHidden, c, seed + 100 * s));
        this.scales.set(s, tf.tidy(() => tf.variable(tf.scalar(o.model.scaleInit), o.model.learnScale)));
      } else {
        this.convHeads.set(s, new Conv1x1Head(`head/stage${s}/conv1x1`, c, this.numSubclasses, seed + 100 * s));
      }
    }
  }

  /** Replace the bank's prototypes (same S and d), e.g. after rebuilding the bank. */
  setPrototypes(p: tf.Tensor2D): void {
    if (p.shape[0] !== this.prototypes.shape[0] || p.shape[1] !== this.prototypes.shape[1]) {
      throw new Error(`setPrototypes: shape [${p.shape}] differs from [${this.prototypes.shape}]`);
    }
    this.prototypes.dispose();
    this.prototypes = tf.keep(p.clone());
  }

  /** P_i = MLP_i(P) for a used stage, [S, C_i] (only for the similarity head). */
  projectedPrototypes(stage: number): tf.Tensor2D {
    const proj = this.projections.get(stage);
    if (!proj) throw new Error(`stage ${stage} has no prototype projection (head: ${this.cfg.head})`);
    return proj.apply(this.prototypes);
  }

  /** The learnable scale s_i of a stage. */
  scale(stage: number): tf.Variable | undefined {
    return this.scales.get(stage);
  }

  /** Forward pass on RGB [0,1] images, NHWC. Differentiable; call inside a tape to train. */
  forward(images: tf.Tensor4D, training = false): ClassNetOutput {
    return tf.tidy(() => {
      const x = normalizeImages(images, this.normalization);
      const all = this.backbone.apply(x, training);
      const features: tf.Tensor4D[] = [];
      const maps: tf.Tensor4D[] = [];
      const logits: tf.Tensor2D[] = [];
      for (const s of this.stages) {
        const f = all[s - 1]!;
        let m: tf.Tensor4D;
        if (this.cfg.head === "similarity") {
          m = similarityMaps(f, this.projections.get(s)!.apply(this.prototypes), this.scales.get(s)! as tf.Scalar, this.cfg.similarity);
        } else {
          m = this.convHeads.get(s)!.apply(f);
        }
        features.push(f);
        maps.push(m);
        logits.push(poolLogits(m));
      }
      return { stages: [...this.stages], features, maps, logits };
    });
  }

  /** Class logits [B, N] of one used stage with a subclass merge rule. */
  classLogits(out: ClassNetOutput, stage: number, mode: "mean" | "softmax"): tf.Tensor2D {
    const i = out.stages.indexOf(stage);
    if (i < 0) throw new Error(`stage ${stage} is not used (stages ${out.stages})`);
    return mergeSubclasses(out.logits[i]!, this.k, mode);
  }

  /** Every trainable variable by a stable name: backbone then heads. */
  namedVariables(): Map<string, tf.Variable> {
    const out = new Map(this.backbone.namedVariables());
    for (const [s, p] of this.projections) {
      for (const [n, v] of p.named()) out.set(n, v);
      out.set(`head/stage${s}/scale`, this.scales.get(s)!);
    }
    for (const h of this.convHeads.values()) for (const [n, v] of h.named()) out.set(n, v);
    return out;
  }

  /** Variables the optimiser updates (the scale only when `learnScale`). */
  trainableVariables(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const [n, v] of this.namedVariables()) if (v.trainable) out.set(n, v);
    return out;
  }

  /** Per used stage: stride, shapes for an input side, and head parameter count. */
  summary(inputSize: number, batch = 1): StageSummary[] {
    return this.stages.map((s) => {
      const stride = this.backbone.stageStrides[s - 1]!;
      const h = Math.ceil(inputSize / stride);
      const c = this.backbone.stageChannels[s - 1]!;
      let headParams = 0;
      const proj = this.projections.get(s);
      if (proj) headParams = proj.variables().reduce((a, v) => a + v.size, 0) + 1;
      const conv = this.convHeads.get(s);
      if (conv) headParams = conv.variables().reduce((a, v) => a + v.size, 0);
      return {
        stage: s,
        stride,
        feature: [batch, h, h, c],
        projected: this.cfg.head === "similarity" ? [this.numSubclasses, c] : [],
        map: [batch, h, h, this.numSubclasses],
        headParams,
      };
    });
  }

  /** A text table of {@link summary} plus backbone and total parameter counts. */
  summaryText(inputSize: number): string {
    const rows = this.summary(inputSize);
    const bbParams = [...this.backbone.namedVariables().values()].reduce((a, v) => a + v.size, 0);
    const headParams = rows.reduce((a, r) => a + r.headParams, 0);
    const lines = [
      `ClassNet: backbone ${this.backbone.name} (${this.backbone.weightsSource}), head ${this.cfg.head}${this.cfg.head === "similarity" ? ` (${this.cfg.similarity} form)` : ""}, ${this.numClasses} classes x K [${this.k}] = ${this.numSubclasses} subclass channels, input ${inputSize}px`,
      `stage  stride  F_i                 P_i          M_i                 head params`,
      ...rows.map(
        (r) =>
          `${String(r.stage).padEnd(7)}${String(r.stride).padEnd(8)}${JSON.stringify(r.feature).padEnd(20)}${JSON.stringify(r.projected).padEnd(13)}${JSON.stringify(r.map).padEnd(20)}${r.headParams.toLocaleString("en-US")}`,
      ),
      `parameters: backbone ${bbParams.toLocaleString("en-US")}, heads ${headParams.toLocaleString("en-US")}, total ${(bbParams + headParams).toLocaleString("en-US")}`,
    ];
    return lines.join("\n");
  }

  /** Save every variable (backbone and heads) with metadata to one safetensors file, atomically. */
  async saveWeights(file: string, metadata: Record<string, unknown> = {}): Promise<void> {
    await saveVariables(file, this.namedVariables(), { kind: "pbip-classnet-weights", backbone: this.backbone.name, k: this.k, model: this.cfg, ...metadata });
  }

  /**
   * Load variables saved by {@link saveWeights} or by the trainer's checkpoints
   * (optimiser state ignored). Throws, naming the file and every missing,
   * unexpected or mis-shaped variable, unless the file matches exactly.
   */
  loadWeights(file: string): void {
    assertCleanLoad(file, loadVariables(file, this.namedVariables(), ["optim/"]));
  }

  dispose(): void {
    this.backbone.dispose();
    this.prototypes.dispose();
    for (const p of this.projections.values()) tf.dispose(p.variables());
    for (const h of this.convHeads.values()) tf.dispose(h.variables());
    tf.dispose([...this.scales.values()]);
  }
}
