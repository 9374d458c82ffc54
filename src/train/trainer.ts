/**
 * Stage 1: the PBIP task for the training loop (see loop.ts). One step: ClassNet
 * forward; L_CLS over the used stages (eq. 7-8); pair selection on the matching
 * stage's logits; the matching map, the adaptive threshold (eq. 4) and the
 * foreground/background regions (eq. 5); region features through the frozen
 * encoder (`image` mode) or from its dense map (`feature` mode); L_FGS and L_BGS
 * against the bank's prototypes (eq. 9-13); the total loss (eq. 6).
 */
import * as tf from "@tensorflow/tfjs";
import type { PbipConfig } from "../config/profiles";
import type { ClassNet, ClassNetOutput } from "../model/classnet";
import type { ImageEncoder } from "../encoders/types";
import type { Batch } from "../data/types";
import { classificationLoss } from "../losses/classification";
import { foregroundContrastiveLoss, backgroundContrastiveLoss, type ContrastiveLossOptions } from "../losses/contrastive";
import { pbipLoss } from "../losses/total";
import { matchingMap, adaptiveThreshold, selectPairs, foregroundBackground, encodeRegionsImage, encodeRegionsFeature, type MatchPairs } from "../match";
import { canReadSync } from "../runtime/memory";
import { WASM_HEAP_LIMIT_BYTES } from "../runtime/wasm-heap";
import { recomputeGrads } from "../runtime/gradients";
import { prototypesSha256 } from "../bank/bank";
import { scorePseudoMasks, type BatchSource } from "./validate";
import { runTraining, type TrainTask, type StepResult, type TrainEvent, type ValidationScore } from "./loop";
import type { ParamGroup } from "./optim";

/**
 * Pieces of the PBIP objective a researcher can replace or extend without forking
 * the trainer. Each is called where the release's piece is, in both region modes
 * (and both passes of the two-pass `image` mode). `name` identifies the variation:
 * it is recorded in checkpoints, and a run with other hooks is not resumed from them.
 *
 * @example
 * // An entropy penalty on the deepest stage's subclass maps, logged as "entropy".
 * const hooks: PbipHooks = {
 *   name: "entropy-0.01",
 *   extraLoss: ({ out }) => ({ entropy: tf.tidy(() => {
 *     const p = tf.softmax(out.maps[out.maps.length - 1]!);
 *     return tf.mul(-0.01, tf.mean(tf.sum(tf.mul(p, tf.log(tf.add(p, 1e-8))), -1))) as tf.Scalar;
 *   }) }),
 * };
 */
export interface PbipHooks {
  /** Names this variation in checkpoints and run records. */
  name: string;
  /**
   * Eq. 4: the binary foreground mask b [B, H, W, S] of the matching map m
   * [B, H, W, S] (values 0 or 1; its gradient is not used). Default:
   * `adaptiveThreshold(m, match.delta, match.maxOver)`.
   */
  threshold?: (m: tf.Tensor4D, config: PbipConfig) => tf.Tensor4D;
  /**
   * Eq. 9-10: L_FGS from the foreground region features [P, d] (not normalised), the
   * prototype row of each pair, and the prototypes [S, d]. Default:
   * `foregroundContrastiveLoss`.
   */
  fgLoss?: (features: tf.Tensor2D, subclass: number[], prototypes: tf.Tensor2D, opts: ContrastiveLossOptions) => tf.Scalar;
  /** Eq. 11-12: L_BGS, as `fgLoss` for the background features. Default: `backgroundContrastiveLoss`. */
  bgLoss?: (features: tf.Tensor2D, subclass: number[], prototypes: tf.Tensor2D, opts: ContrastiveLossOptions) => tf.Scalar;
  /**
   * Terms added to the total loss, each logged under its name: computed inside the
   * gradient tape from the step's ClassNet outputs, so their gradients train the
   * network. `pairs` is this step's (image, subclass) selection.
   */
  extraLoss?: (x: { out: ClassNetOutput; batch: Batch; pairs?: MatchPairs; step: number; config: PbipConfig }) => Record<string, tf.Scalar>;
}

export interface PbipTaskOptions {
  /** Replace or extend parts of the objective (see {@link PbipHooks}). */
  hooks?: PbipHooks;
  config: PbipConfig;
  net: ClassNet;
  /** The frozen encoder phi used for region features (the one that built the bank). */
  encoder: ImageEncoder;
  /** Bank prototypes in encoder space, [S, d]. */
  bankPrototypes: tf.Tensor2D;
  /** Mask id of background in ground-truth masks (for validation). */
  backgroundId: number;
}

interface PbipCtx {
  dense?: tf.Tensor4D;
  /** Labels read on the host. */
  labels: Float32Array;
  /** Pairs chosen before the tape (backends without synchronous reads, or two-pass image mode). */
  pairs?: MatchPairs;
  /**
   * Two-pass `image` mode: the gradient of beta*(theta1*L_FGS + theta2*L_BGS) with
   * respect to X_FG and X_BG (computed in chunks through the encoder before the
   * tape), and the loss values.
   */
  regionGrad?: { fg: tf.Tensor4D; bg: tf.Tensor4D; fgLoss: number; bgLoss: number; keptImages: number; recomputedImages: number };
}

/**
 * `encoder(x)` for gradient checkpointing without nested tapes: the forward pass runs
 * inside a custom-gradient op, so no activation is kept, and its backward pass only
 * records the upstream gradient `dy` (giving x a zero gradient). `vjp(x)` then runs
 * the encoder again under its own tape and returns the true input gradient, after
 * the enclosing gradient has finished and freed its tape. (TF.js cannot nest
 * `tf.grad` inside a backward pass: the inner call discards the outer tape.) Pass
 * `vjp` a tensor with x's values that outlives the enclosing gradient's scope.
 */
export function checkpointed(encoder: (x: tf.Tensor4D) => tf.Tensor2D, x: tf.Tensor4D): { value: tf.Tensor2D; vjp(x: tf.Tensor4D): tf.Tensor4D; dispose(): void } {
  let dy: tf.Tensor | undefined;
  const op = tf.customGrad(((xx: tf.Tensor4D) => ({
    value: encoder(xx),
    gradFunc: (d: tf.Tensor) => {
      dy?.dispose();
      dy = tf.keep(d.clone());
      return tf.zerosLike(xx);
    },
  })) as unknown as Parameters<typeof tf.customGrad>[0]);
  return {
    value: op(x) as tf.Tensor2D,
    vjp: (again) => (dy ? (tf.grad((z: tf.Tensor) => encoder(z as tf.Tensor4D))(again, dy) as tf.Tensor4D) : tf.zerosLike(again)),
    dispose: () => dy?.dispose(),
  };
}

/**
 * sum(X_FG * G_FG) + sum(X_BG * G_BG), pass 2 of the two-pass `image` mode, as one op
 * of the matching map `m` and the threshold `b` (G_FG, G_BG: pass 1's gradients, one
 * row per pair). Its forward pass keeps only m and b; its backward pass rebuilds the
 * regions `chunk` pairs at a time under a local tape (gradient checkpointing) and sums
 * their gradients, which touch disjoint pixels of m, so the result is the same as
 * autodiff through all regions at once. That autodiff kept some twenty tensors the size
 * of all regions (the release's min-max) alive until ClassNet's backward pass: over
 * 1 GiB of the 4 GiB WASM heap for 33 pairs at 224 px (`tf.profile` of the release
 * step), at the step's memory peak.
 */
export function regionSurrogate(images: tf.Tensor4D, m: tf.Tensor4D, b: tf.Tensor4D, pairs: MatchPairs, cfg: PbipConfig["match"], gFg: tf.Tensor4D, gBg: tf.Tensor4D, chunk: number): tf.Scalar {
  const n = pairs.image.length;
  const size = chunk > 0 ? chunk : n;
  const part = (mm: tf.Tensor4D, bb: tf.Tensor4D, s: number, e: number): tf.Scalar =>
    tf.tidy(() => {
      const sub: MatchPairs = { image: pairs.image.slice(s, e), subclass: pairs.subclass.slice(s, e), cls: pairs.cls.slice(s, e) };
      const r = foregroundBackground(images, mm, bb, sub, cfg);
      return tf.add(tf.sum(tf.mul(r.fg, tf.slice(gFg, s, e - s))), tf.sum(tf.mul(r.bg, tf.slice(gBg, s, e - s)))) as tf.Scalar;
    });
  const ranges: [number, number][] = [];
  for (let s = 0; s < n; s += size) ranges.push([s, Math.min(n, s + size)]);
  const op = tf.customGrad(((mm: tf.Tensor4D, bb: tf.Tensor4D, save: tf.GradSaveFunc) => {
    save([mm, bb]);
    return {
      value: tf.tidy(() => tf.addN(ranges.map(([s, e]) => part(mm, bb, s, e)))),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sm, sb] = saved as [tf.Tensor4D, tf.Tensor4D];
        let dm: tf.Tensor = tf.zerosLike(sm);
        let db: tf.Tensor = tf.zerosLike(sb);
        for (const [s, e] of ranges) {
          const [gm, gb] = recomputeGrads((a, c) => part(a as tf.Tensor4D, c as tf.Tensor4D, s, e), [sm, sb], dy);
          const [dm1, db1] = [tf.add(dm, gm!), tf.add(db, gb!)];
          tf.dispose([dm, db, gm, gb]);
          [dm, db] = [dm1, db1];
        }
        return [dm, db];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(m, b) as tf.Scalar;
}

/** Usable share of the WASM heap for kept encoder activations (the rest: fragmentation, XNNPACK's buffers, TF.js's scratch). */
const WASM_KEEP_FRACTION = 0.9;
/** Room kept free besides one chunk's worth for the backward pass's transient tensors. */
const WASM_KEEP_SPARE_BYTES = 128 * 2 ** 20;

/**
 * Which encoder chunks of pass 1 keep their activations. A number: that many region
 * images at most (0 = checkpoint every chunk). `auto`: on the WASM backend, the next
 * chunk of n images while the live tensors, its activations, a whole chunk's more
 * (room for the backward pass's transient tensors) and 128 MiB fit in 90 % of the
 * 4 GiB heap, activations counted per image as measured on the chunks kept so far;
 * the first chunk is always kept (back-propagating a checkpointed one needs the same
 * memory later). Measured with the release's Swin-T (`lean`, 16 per chunk, 224 px):
 * 32 MiB per image, and the heap's high-water mark 350 MiB above the live tensors at
 * the end of pass 1's forward with all 62 regions kept, where this rule reserves
 * 644 MiB below 3.6 GiB (`npx tsx bench/two-pass.ts auto:lean`). On other backends
 * the free device memory is not known, so `auto` checkpoints every chunk.
 */
export function encoderKeepPlan(setting: PbipConfig["match"]["encoderKeep"], backend: string, chunkImages: number): { keep(keptImages: number, images: number, perImageBytes: number): boolean } {
  if (typeof setting === "number") return { keep: (k, n) => k + n <= setting };
  if (backend !== "wasm") return { keep: () => false };
  const limit = WASM_KEEP_FRACTION * WASM_HEAP_LIMIT_BYTES;
  return { keep: (k, n, perImage) => k === 0 || tf.memory().numBytes + (n + chunkImages) * perImage + WASM_KEEP_SPARE_BYTES <= limit };
}

/** An identity whose gradient is zero (tfjs has no stopGradient op). */
const stopGradient = tf.customGrad(((x: tf.Tensor) => ({ value: tf.clone(x), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) })) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (x: tf.Tensor) => tf.Tensor;

/** Split [N, ...] into chunks of at most `size` along the first axis. */
function chunks<T extends tf.Tensor>(x: T, size: number): T[] {
  const n = x.shape[0]!;
  const out: T[] = [];
  for (let i = 0; i < n; i += size) out.push(tf.slice(x, i, Math.min(size, n - i)) as T);
  return out;
}

/** The PBIP stage-1 objective as a {@link TrainTask}. Dispose it after training (it holds a copy of the prototypes). */
export class PbipTask implements TrainTask<PbipCtx> {
  readonly name = "classnet";
  private readonly protos: tf.Tensor2D;
  private readonly stageWeights: number[];
  private readonly useSim: boolean;
  private warnedNoPairs = false;

  constructor(private readonly o: PbipTaskOptions) {
    this.protos = tf.keep(o.bankPrototypes.clone());
    this.stageWeights = o.net.stages.map((s) => o.config.loss.stageWeights[s - 1] ?? 0);
    this.useSim = o.config.loss.useFg || o.config.loss.useBg;
    if (this.useSim && o.config.match.regionMode === "image" && !o.encoder.differentiable) {
      throw new Error(`encoder ${o.encoder.identity.name} is not differentiable: the "image" region mode needs one; use match.regionMode "feature"`);
    }
  }

  variables(): Map<string, tf.Variable> {
    return this.o.net.trainableVariables();
  }

  paramGroups(): ParamGroup[] {
    const m = this.o.config.optim.headLrMultiplier;
    return m !== 1 ? [{ name: "heads", match: /^head\//, lrScale: m }] : [];
  }

  /** Eq. 4, or the hooks' threshold. */
  private threshold(m: tf.Tensor4D): tf.Tensor4D {
    const h = this.o.hooks?.threshold;
    return h ? h(m, this.o.config) : adaptiveThreshold(m, this.o.config.match.delta, this.o.config.match.maxOver);
  }

  private fgLoss(f: tf.Tensor2D, subclass: number[], protos: tf.Tensor2D, opts: ContrastiveLossOptions): tf.Scalar {
    return (this.o.hooks?.fgLoss ?? foregroundContrastiveLoss)(f, subclass, protos, opts);
  }

  private bgLoss(f: tf.Tensor2D, subclass: number[], protos: tf.Tensor2D, opts: ContrastiveLossOptions): tf.Scalar {
    return (this.o.hooks?.bgLoss ?? backgroundContrastiveLoss)(f, subclass, protos, opts);
  }

  /** Whether `image` mode runs in two passes with the encoder in chunks (see {@link regionGradients}). */
  private twoPass(): boolean {
    return this.useSim && this.o.config.match.regionMode === "image" && (this.o.config.match.encoderChunk ?? 0) > 0;
  }

  async prepare(batch: Batch, step: number): Promise<PbipCtx> {
    const ctx: PbipCtx = { labels: Float32Array.from(await batch.labels.data()) };
    if (!this.useSim) return ctx;
    if (!canReadSync() || this.twoPass()) {
      // The pairs depend on this step's logits. Where the backend cannot read them
      // synchronously inside the tape (WebGPU in Node), or when the regions' encoder
      // gradients are computed beforehand, run the forward pass once before the tape,
      // with the same stochastic-depth seed, and select from that.
      this.seedStep(step);
      const out = tf.tidy(() => {
        const o = this.o.net.forward(batch.images, true);
        tf.dispose([...o.features, ...o.logits.slice(0, -1)]);
        return { maps: o.maps, logits: o.logits[o.logits.length - 1]! };
      });
      ctx.pairs = selectPairs(await out.logits.data(), ctx.labels, batch.ids.length, this.o.net.k);
      if (this.twoPass() && ctx.pairs.image.length > 0) ctx.regionGrad = await this.regionGradients(batch, out.maps, ctx.pairs);
      tf.dispose([...out.maps, out.logits]);
    }
    if (this.o.config.match.regionMode === "feature") {
      const out = await this.o.encoder.encode(batch.images, { dense: true });
      out.pooled.dispose();
      if (!out.dense) throw new Error(`encoder ${this.o.encoder.identity.name} gives no dense map: use the "image" region mode`);
      ctx.dense = out.dense;
    }
    return ctx;
  }

  /** Seed stochastic depth by the step, so a resumed run repeats an uninterrupted one. */
  private seedStep(step: number): void {
    this.o.net.backbone.setStepSeed?.(this.o.config.train.seed * 1_000_003 + step);
  }

  /**
   * Two-pass `image` mode, pass 1: G = d beta*(theta1 L_FGS + theta2 L_BGS) / d(X_FG, X_BG),
   * one gradient over all regions with the encoder run `encoderChunk` regions at a
   * time. A chunk either keeps its encoder activations for the backward pass, or is
   * checkpointed: its forward pass keeps nothing and its gradient is computed
   * afterwards by running it again ({@link checkpointed}). Which chunks keep theirs is
   * `match.encoderKeep` (see {@link encoderKeepPlan}); the values are the same either
   * way. Pass 2 (in `loss`) rebuilds the regions in the tape and adds
   * sum(X * G) - stop(sum(X * G)), whose gradient is exactly the matching losses'
   * gradient. Encoder memory is bounded by what is kept plus one chunk.
   */
  private async regionGradients(batch: Batch, maps: tf.Tensor4D[], pairs: MatchPairs): Promise<NonNullable<PbipCtx["regionGrad"]>> {
    const { config: cfg, encoder } = this.o;
    const size = cfg.match.encoderChunk;
    const p = pairs.image.length;
    const regions = tf.tidy(() => {
      const m = matchingMap(maps, [batch.images.shape[1], batch.images.shape[2]], cfg.match.mapSource);
      const b = this.threshold(m);
      const r = foregroundBackground(batch.images, m, b, pairs, cfg.match);
      return tf.concat([r.fg, r.bg], 0) as tf.Tensor4D;
    });
    const opts = { temperature: cfg.loss.temperature, reduction: cfg.loss.reduction };
    const w = cfg.loss;
    const plan = encoderKeepPlan(cfg.match.encoderKeep, tf.getBackend(), size);
    const encode = (x: tf.Tensor4D) => encoder.apply!(x).pooled;
    const deferred: (ReturnType<typeof checkpointed> | undefined)[] = [];
    let kept = 0;
    let fgT: tf.Scalar | undefined;
    let bgT: tf.Scalar | undefined;
    const gKept = tf.tidy(() =>
      tf.grad((x: tf.Tensor) => {
        let perImage = 0;
        const feats = chunks(x as tf.Tensor4D, size).map((c, i) => {
          const n = c.shape[0];
          if (plan.keep(kept, n, perImage)) {
            const before = tf.memory().numBytes;
            const f = encode(c);
            perImage = Math.max(perImage, (tf.memory().numBytes - before) / n);
            kept += n;
            return f;
          }
          const d = checkpointed(encode, c);
          deferred[i] = d;
          return d.value;
        });
        const f = tf.concat(feats, 0) as tf.Tensor2D;
        const terms: tf.Scalar[] = [];
        if (w.useFg) {
          fgT = tf.keep(this.fgLoss(tf.slice(f, 0, p) as tf.Tensor2D, pairs.subclass, this.protos, opts));
          terms.push(tf.mul(fgT, w.beta * w.theta1));
        }
        if (w.useBg) {
          bgT = tf.keep(this.bgLoss(tf.slice(f, p, p) as tf.Tensor2D, pairs.subclass, this.protos, opts));
          terms.push(tf.mul(bgT, w.beta * w.theta2));
        }
        return tf.addN(terms) as tf.Scalar;
      })(regions),
    ) as tf.Tensor4D;
    const fgLoss = fgT ? (await fgT.data())[0]! : 0;
    const bgLoss = bgT ? (await bgT.data())[0]! : 0;
    // The checkpointed chunks' encoder gradients, now that the kept activations are freed.
    const gAll = tf.tidy(() => tf.add(gKept, tf.concat(chunks(regions, size).map((c, i) => deferred[i]?.vjp(c) ?? tf.zerosLike(c)), 0)) as tf.Tensor4D);
    deferred.forEach((d) => d?.dispose());
    tf.dispose([regions, fgT, bgT, gKept]);
    const fg = tf.slice(gAll, 0, p) as tf.Tensor4D;
    const bg = tf.slice(gAll, p, p) as tf.Tensor4D;
    gAll.dispose();
    return { fg, bg, fgLoss, bgLoss, keptImages: kept, recomputedImages: 2 * p - kept };
  }

  release(ctx: PbipCtx): void {
    tf.dispose([ctx.dense, ctx.regionGrad?.fg, ctx.regionGrad?.bg]);
  }

  loss(batch: Batch, ctx: PbipCtx, step: number, counts: Record<string, number>, seconds: Record<string, number>): StepResult {
    const { config: cfg, net, encoder } = this.o;
    this.seedStep(step);
    const out = net.forward(batch.images, true);
    const cls = classificationLoss(out.logits, batch.labels, { k: net.k, stageWeights: this.stageWeights, merge: "mean" });
    let fg: tf.Scalar | undefined;
    let bg: tf.Scalar | undefined;
    let surrogate: tf.Scalar | undefined;
    counts.pairs = 0;
    let pairs: MatchPairs | undefined;
    if (this.useSim) {
      const sel = ctx.pairs ?? selectPairs(out.logits[out.logits.length - 1]!.dataSync(), ctx.labels, batch.ids.length, net.k);
      pairs = sel;
      counts.pairs = sel.image.length;
      if (sel.image.length === 0 && !this.warnedNoPairs) {
        this.warnedNoPairs = true;
        console.warn(
          `pbip: step ${step}: no (image, subclass) pair was selected (every labelled class's subclass logits equal their mean), so L_FGS and L_BGS are 0 for it; ` +
            "if this repeats, the similarity maps are constant (a dead encoder or bank, or a collapsed head)",
        );
      }
      if (sel.image.length > 0) {
        const m = matchingMap(out.maps, [batch.images.shape[1], batch.images.shape[2]], cfg.match.mapSource);
        const b = this.threshold(m);
        const g = ctx.regionGrad;
        if (g) {
          // Pass 2 of the two-pass image mode: values from pass 1, gradient through sum(X * G).
          counts.encoderKept = g.keptImages;
          counts.encoderRecomputed = g.recomputedImages;
          const lin = regionSurrogate(batch.images, m, b, sel, cfg.match, g.fg, g.bg, cfg.match.encoderChunk);
          surrogate = tf.sub(lin, stopGradient(lin)) as tf.Scalar;
          if (cfg.loss.useFg) fg = tf.scalar(g.fgLoss);
          if (cfg.loss.useBg) bg = tf.scalar(g.bgLoss);
        } else {
          const regions = foregroundBackground(batch.images, m, b, sel, cfg.match);
          const tr = Date.now();
          const feats = cfg.match.regionMode === "image" ? encodeRegionsImage(encoder, regions) : encodeRegionsFeature(ctx.dense!, regions, sel);
          seconds.regions = (Date.now() - tr) / 1000;
          const opts = { temperature: cfg.loss.temperature, reduction: cfg.loss.reduction };
          if (cfg.loss.useFg) fg = this.fgLoss(feats.fg, sel.subclass, this.protos, opts);
          if (cfg.loss.useBg) bg = this.bgLoss(feats.bg, sel.subclass, this.protos, opts);
        }
      }
    }
    const camReg = this.useSim ? out.maps[out.maps.length - 1] : undefined;
    const t = pbipLoss({ cls: cls.total, fg, bg, camReg }, cfg.loss);
    const terms: Record<string, tf.Scalar> = { cls: t.cls, fg: t.fg, bg: t.bg, camReg: t.camReg };
    out.stages.forEach((s, i) => (terms[`cls_stage${s}`] = cls.perStage[i]!));
    let total = surrogate ? (tf.add(t.total, surrogate) as tf.Scalar) : t.total;
    const extra = this.o.hooks?.extraLoss?.({ out, batch, pairs, step, config: cfg }) ?? {};
    for (const [name, v] of Object.entries(extra)) {
      if (name in terms || name === "total") throw new Error(`PbipHooks.extraLoss: the term name "${name}" is taken by the objective's own terms; choose another`);
      if (v.rank !== 0) throw new Error(`PbipHooks.extraLoss: term "${name}" must be a scalar, got shape [${v.shape}]`);
      terms[name] = v;
      total = tf.add(total, v) as tf.Scalar;
    }
    return { total, terms };
  }

  async validate(source: BatchSource): Promise<ValidationScore> {
    const s = await scorePseudoMasks(this.o.net, source.epoch(0), this.o.config.cam, this.o.backgroundId, this.o.config.train.valLimit);
    const { matrix: _m, ...rest } = s;
    return rest;
  }

  dispose(): void {
    this.protos.dispose();
  }
}

export interface TrainClassNetOptions extends PbipTaskOptions {
  train: BatchSource;
  val?: BatchSource;
  outDir: string;
  resume?: boolean;
  stopAfter?: number;
  /** Stop cleanly when aborted (Ctrl-C): the steps since the last checkpoint are saved; the last event is `interrupted`. */
  signal?: AbortSignal;
  /** Identity of the bank (stored in checkpoints). */
  bankIdentity?: Record<string, unknown>;
}

/**
 * What a stage-1 checkpoint must have been trained with, besides its config, to be
 * resumed: the frozen encoder's identity and a hash of the prototypes (a bank rebuilt
 * under the same config, e.g. after an encoder's weights changed, hashes otherwise).
 */
export function classNetIdentity(encoder: ImageEncoder, prototypes: tf.Tensor2D, hooks?: PbipHooks): Record<string, unknown> {
  return { encoder: encoder.identity, prototypesSha256: prototypesSha256(prototypes.dataSync() as Float32Array), ...(hooks ? { hooks: hooks.name } : {}) };
}

/**
 * Train ClassNet with PBIP. Yields the loop's events; the last is `done` (or `interrupted`). A run
 * resumes from the newest checkpoint in `outDir` only if it was trained with the
 * same config, encoder and prototypes ({@link classNetIdentity}).
 *
 * @example
 * for await (const ev of trainClassNet(opts)) if (ev.type === "step") console.log(ev.step, ev.losses.total);
 */
export async function* trainClassNet(o: TrainClassNetOptions): AsyncGenerator<TrainEvent> {
  const task = new PbipTask(o);
  try {
    yield* runTraining(task, {
      runRecord: { task: "classnet", bank: o.bankIdentity, encoder: o.encoder.identity, ...(o.hooks ? { hooks: o.hooks.name } : {}) },
      config: o.config,
      train: o.train,
      val: o.val,
      outDir: o.outDir,
      resume: o.resume,
      stopAfter: o.stopAfter,
      signal: o.signal,
      metadata: { bank: o.bankIdentity, encoder: o.encoder.identity, backbone: o.net.backbone.name },
      identity: classNetIdentity(o.encoder, o.bankPrototypes, o.hooks),
    });
  } finally {
    task.dispose();
  }
}
