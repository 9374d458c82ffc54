/**
 * Frozen image encoders exported to ONNX (MedCLIP's vision tower, PLIP, CONCH,
 * UNI, any CLIP ViT), run by onnxruntime-node on the CPU.
 *
 * Every `.onnx` file comes with a small JSON "sidecar" beside it (same base name,
 * `.json`; see {@link EncoderSidecar}) that says how the network wants its input
 * (size, channel order, scale, mean/std, layout) and which outputs are the pooled
 * feature and, optionally, the dense feature map. `kernel-setup/export_onnx_encoders.py`
 * writes both files; `kernel-setup/ENCODERS.md` documents the format.
 *
 * The encoder is NOT differentiable: onnxruntime runs outside TensorFlow.js, so it
 * can build an image bank and encode regions in the `feature` region mode, but
 * cannot back-propagate into similarity maps (the `image` region mode needs the
 * bundled MobileNetV2, a TensorFlow.js model from disk, or the Swin-T encoder).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import * as tf from "@tensorflow/tfjs";
import type * as ort from "onnxruntime-node";
import type { EncoderIdentity, EncoderOutput, ImageEncoder, Preprocessing } from "./types";
import { preprocessForEncoder } from "./preprocess";
import { FileError } from "../util/errors";
import { readJson } from "../util/fs";

/** Memory layout of a 4-D tensor: channels first (PyTorch, ONNX default) or last (TensorFlow). */
export type TensorLayout = "NCHW" | "NHWC";

/**
 * The JSON file beside an exported encoder. Example (MedCLIP's vision tower as the
 * authors' release builds it):
 *
 * ```json
 * { "name": "medclip-release-swin-t", "inputSize": 224, "channelOrder": "RGB", "scale": 1,
 *   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "NCHW",
 *   "inputName": "pixel_values", "outputName": "pooled", "denseOutputName": "dense",
 *   "denseLayout": "NHWC", "dim": 512, "source": "torchvision swin_t IMAGENET1K_V1 + Linear(768,512, bias=False), seed 42" }
 * ```
 */
export interface EncoderSidecar {
  /** Short stable name; the encoder's identity becomes `onnx:<name>` (or `tfjs:<name>`). */
  name: string;
  /** Square input side in pixels; pbip resizes patches to it (bilinear, half-pixel centres). */
  inputSize: number;
  /** Channel order the weights expect (pbip images are RGB; `BGR` flips them). Default `RGB`. */
  channelOrder?: "RGB" | "BGR";
  /** Multiplier applied to [0,1] pixels before mean/std (1 for [0,1] statistics, 255 for [0,255]). Default 1. */
  scale?: number;
  /** Per-channel mean and std in the scaled range, in the encoder's channel order. */
  mean: [number, number, number];
  std: [number, number, number];
  /** Input layout of the network. Default `NCHW` for ONNX, `NHWC` for TensorFlow.js models. */
  layout?: TensorLayout;
  /** Name of the image input (default: the model's only input). */
  inputName?: string;
  /** Name of the pooled feature output [B, d] (default: the model's only output). */
  outputName?: string;
  /** Name of an optional dense feature output, in the same feature space as the pooled one. */
  denseOutputName?: string;
  /**
   * Layout of the dense output: `NCHW` ([B, d, h, w], CNNs), `NHWC` ([B, h, w, d]), or
   * `tokens` ([B, L, d], transformers; the first `denseSkipTokens` tokens, e.g. CLS, are
   * dropped and the rest reshaped to a square grid). Default `NCHW` for ONNX, `NHWC` for TensorFlow.js models.
   */
  denseLayout?: TensorLayout | "tokens";
  /** Leading tokens to drop from a `tokens` dense output (1 for a CLS token). Default 0. */
  denseSkipTokens?: number;
  /** Feature dimension d of the pooled output (checked against the model when the model states it). */
  dim?: number;
  /** Free text: where the weights come from and how the file was exported. */
  source?: string;
  /**
   * Set when the exported network is not the encoder it stands for (e.g. the
   * release's "MedCLIP" is an ImageNet Swin-T under a random projection): says what it is.
   */
  standInNote?: string;
}

/** A validated sidecar with its defaults filled in. */
export type ResolvedSidecar = EncoderSidecar & Required<Pick<EncoderSidecar, "channelOrder" | "scale" | "layout" | "denseLayout" | "denseSkipTokens">>;

/** The sidecar file of an encoder model file: same folder and base name, `.json` (for a `model.json`, `model.encoder.json`). */
export function sidecarPathFor(modelFile: string): string {
  const dir = path.dirname(modelFile);
  const ext = path.extname(modelFile);
  const base = path.basename(modelFile, ext);
  return ext.toLowerCase() === ".json" ? path.join(dir, `${base}.encoder.json`) : path.join(dir, `${base}.json`);
}

function isTriple(v: unknown): v is [number, number, number] {
  return Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === "number" && Number.isFinite(x));
}

/**
 * Read and validate a sidecar JSON (types and ranges only; {@link OnnxEncoder.create}
 * checks the names and shapes against the model). Errors are {@link FileError}s naming the file.
 */
export function readEncoderSidecar(file: string, defaults: { layout: TensorLayout; denseLayout?: TensorLayout }): ResolvedSidecar {
  if (!fs.existsSync(file)) {
    throw new FileError(file, "encoder sidecar JSON not found: every exported encoder needs one beside it (see kernel-setup/ENCODERS.md)");
  }
  const raw = readJson<Record<string, unknown>>(file);
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new FileError(file, "sidecar must be a JSON object");
  const bad = (field: string, want: string) => new FileError(file, `sidecar field "${field}" must be ${want}, got ${JSON.stringify(raw[field])}`);
  const optStr = (f: string) => {
    if (raw[f] !== undefined && (typeof raw[f] !== "string" || raw[f] === "")) throw bad(f, "a non-empty string");
  };
  if (typeof raw.name !== "string" || !/^[A-Za-z0-9._-]+$/.test(raw.name)) throw bad("name", "a name of letters, digits, '.', '_' or '-'");
  if (typeof raw.inputSize !== "number" || !Number.isInteger(raw.inputSize) || raw.inputSize < 8) throw bad("inputSize", "an integer >= 8");
  if (raw.channelOrder !== undefined && raw.channelOrder !== "RGB" && raw.channelOrder !== "BGR") throw bad("channelOrder", '"RGB" or "BGR"');
  if (raw.scale !== undefined && (typeof raw.scale !== "number" || !(raw.scale > 0))) throw bad("scale", "a positive number");
  if (!isTriple(raw.mean)) throw bad("mean", "three numbers");
  if (!isTriple(raw.std) || raw.std.some((s) => !(s > 0))) throw bad("std", "three positive numbers");
  if (raw.layout !== undefined && raw.layout !== "NCHW" && raw.layout !== "NHWC") throw bad("layout", '"NCHW" or "NHWC"');
  for (const f of ["inputName", "outputName", "denseOutputName", "source", "standInNote"]) optStr(f);
  if (raw.denseLayout !== undefined && !["NCHW", "NHWC", "tokens"].includes(raw.denseLayout as string)) throw bad("denseLayout", '"NCHW", "NHWC" or "tokens"');
  if (raw.denseSkipTokens !== undefined && (!Number.isInteger(raw.denseSkipTokens) || (raw.denseSkipTokens as number) < 0)) throw bad("denseSkipTokens", "a non-negative integer");
  if (raw.dim !== undefined && (!Number.isInteger(raw.dim) || (raw.dim as number) < 1)) throw bad("dim", "a positive integer");
  const s = raw as unknown as EncoderSidecar;
  return {
    ...s,
    channelOrder: s.channelOrder ?? "RGB",
    scale: s.scale ?? 1,
    layout: s.layout ?? defaults.layout,
    denseLayout: s.denseLayout ?? defaults.denseLayout ?? "NCHW",
    denseSkipTokens: s.denseSkipTokens ?? 0,
  };
}

/** The {@link Preprocessing} a sidecar describes. */
export function sidecarPreprocessing(s: EncoderSidecar): Preprocessing {
  return { inputSize: s.inputSize, channelOrder: s.channelOrder ?? "RGB", scale: s.scale ?? 1, mean: [...s.mean], std: [...s.std] };
}

/** SHA-256 of a file, streamed (large encoders do not have to fit in memory twice); first 16 hex digits. */
export async function hashFile16(file: string): Promise<string> {
  const h = crypto.createHash("sha256");
  await new Promise<void>((resolve, reject) => {
    fs.createReadStream(file)
      .on("data", (c) => h.update(c))
      .on("end", () => resolve())
      .on("error", (e) => reject(new FileError(file, `cannot read: ${e.message}`)));
  });
  return h.digest("hex").slice(0, 16);
}

/**
 * Convert a dense feature output to NHWC [B, h, w, d]: `NCHW` is transposed,
 * `tokens` ([B, L, d]) loses its first `skip` tokens and is reshaped to a square grid.
 */
export function denseToNHWC(t: tf.Tensor, layout: TensorLayout | "tokens", skip: number, what: string): tf.Tensor4D {
  return tf.tidy(() => {
    if (layout === "tokens") {
      if (t.rank !== 3) throw new Error(`${what}: dense output with layout "tokens" must be [B, L, d], got [${t.shape.join(", ")}]`);
      const [b, l, d] = t.shape as [number, number, number];
      const n = l - skip;
      const side = Math.round(Math.sqrt(n));
      if (n <= 0 || side * side !== n) throw new Error(`${what}: ${l} tokens minus ${skip} skipped is not a square grid`);
      return tf.reshape(tf.slice(t, [0, skip, 0], [b, n, d]), [b, side, side, d]) as tf.Tensor4D;
    }
    if (t.rank !== 4) throw new Error(`${what}: dense output with layout "${layout}" must be 4-D, got [${t.shape.join(", ")}]`);
    return (layout === "NCHW" ? tf.transpose(t, [0, 2, 3, 1]) : t) as tf.Tensor4D;
  });
}

/** Options of {@link OnnxEncoder.create}. */
export interface OnnxEncoderOptions {
  /** Sidecar JSON; default {@link sidecarPathFor}(modelFile). */
  sidecar?: string;
  /** onnxruntime intra-op threads; default: onnxruntime's choice (all cores). */
  threads?: number;
}

function loadOrt(): typeof ort {
  try {
    return require("onnxruntime-node") as typeof ort;
  } catch (e) {
    throw new Error(`ONNX encoders need the npm package onnxruntime-node (a dependency of pbip): ${(e as Error).message}`);
  }
}

function shapeOf(meta: ort.InferenceSession.ValueMetadata | undefined): readonly (number | string)[] | undefined {
  return meta && meta.isTensor ? meta.shape : undefined;
}

/**
 * A frozen encoder phi run by onnxruntime-node: pooled features [B, d] and, when
 * the sidecar names one, a dense map [B, h, w, d]. Preprocessing is the library's
 * ({@link preprocessForEncoder}), then the batch is transposed to the model's
 * layout. Identity: `onnx:<sidecar name>`, weights hash = SHA-256 of the `.onnx` file.
 */
export class OnnxEncoder implements ImageEncoder {
  readonly differentiable = false;
  readonly hasDense: boolean;
  readonly isStandIn: boolean;
  readonly standInNote?: string;

  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly ortModule: typeof ort,
    readonly identity: EncoderIdentity,
    readonly sidecar: ResolvedSidecar,
    /** Fixed batch size of the model's input (1 for a model exported without a dynamic batch axis), or undefined. */
    readonly fixedBatch: number | undefined,
    readonly modelFile: string,
    private readonly inputName: string,
    private readonly outputName: string,
  ) {
    this.hasDense = sidecar.denseOutputName !== undefined;
    this.isStandIn = sidecar.standInNote !== undefined;
    if (sidecar.standInNote) this.standInNote = sidecar.standInNote;
  }

  /**
   * Open `modelFile` and its sidecar, and check that they agree: the input and
   * output names exist, the input is a float tensor of rank 4 with 3 channels and
   * (where fixed) the sidecar's size, and the pooled output is [B, d] with d as stated.
   */
  static async create(modelFile: string, options: OnnxEncoderOptions = {}): Promise<OnnxEncoder> {
    if (!fs.existsSync(modelFile)) throw new FileError(modelFile, "ONNX model file not found");
    const sidecarFile = options.sidecar ?? sidecarPathFor(modelFile);
    const sc = readEncoderSidecar(sidecarFile, { layout: "NCHW" });
    const o = loadOrt();
    let session: ort.InferenceSession;
    try {
      session = await o.InferenceSession.create(modelFile, {
        executionProviders: ["cpu"],
        graphOptimizationLevel: "all",
        ...(options.threads ? { intraOpNumThreads: options.threads } : {}),
      });
    } catch (e) {
      throw new FileError(modelFile, `onnxruntime cannot load it: ${(e as Error).message}`);
    }
    const fail = (problem: string): never => {
      void session.release();
      throw new FileError(sidecarFile, `${problem} (model ${modelFile}: inputs ${session.inputNames.join(", ")}; outputs ${session.outputNames.join(", ")})`);
    };
    const pick = (given: string | undefined, names: readonly string[], what: string): string => {
      if (given !== undefined) {
        if (!names.includes(given)) fail(`${what} "${given}" is not in the model`);
        return given;
      }
      if (names.length !== 1) fail(`the model has ${names.length} ${what}s: name one in the sidecar`);
      return names[0]!;
    };
    const inputName = pick(sc.inputName, session.inputNames, "inputName");
    const outputName = pick(sc.outputName, session.outputNames, "outputName");
    if (sc.denseOutputName !== undefined && !session.outputNames.includes(sc.denseOutputName)) fail(`denseOutputName "${sc.denseOutputName}" is not in the model`);

    const inMeta = session.inputMetadata.find((m) => m.name === inputName);
    const inShape = shapeOf(inMeta);
    if (inMeta && inMeta.isTensor && inMeta.type !== "float32") fail(`input "${inputName}" has type ${inMeta.type}; pbip feeds float32 images`);
    let fixedBatch: number | undefined;
    if (inShape && inShape.length > 0) {
      if (inShape.length !== 4) fail(`input "${inputName}" has rank ${inShape.length}, expected 4 (an image batch)`);
      const [n, a, b, c] = inShape;
      const [ch, h, w] = sc.layout === "NCHW" ? [a, b, c] : [c, a, b];
      if (typeof ch === "number" && ch !== 3) fail(`input "${inputName}" has ${ch} channels in layout ${sc.layout}, expected 3 (wrong "layout"?)`);
      for (const s of [h, w]) {
        if (typeof s === "number" && s !== sc.inputSize) fail(`input "${inputName}" is ${h}x${w} but the sidecar says inputSize ${sc.inputSize}`);
      }
      if (typeof n === "number" && n > 0) fixedBatch = n;
    }
    const outShape = shapeOf(session.outputMetadata.find((m) => m.name === outputName));
    let dim = sc.dim;
    if (outShape && outShape.length > 0) {
      if (outShape.length !== 2) fail(`pooled output "${outputName}" has rank ${outShape.length}, expected 2 ([B, d])`);
      const d = outShape[1];
      if (typeof d === "number") {
        if (dim !== undefined && d !== dim) fail(`pooled output "${outputName}" has d = ${d} but the sidecar says dim ${dim}`);
        dim = d;
      }
    }
    if (dim === undefined) fail(`the model does not state the size of "${outputName}": give "dim" in the sidecar`);
    const identity: EncoderIdentity = {
      name: `onnx:${sc.name}`,
      dim: dim!,
      weightsHash: await hashFile16(modelFile),
      preprocessing: sidecarPreprocessing(sc),
    };
    return new OnnxEncoder(session, o, identity, sc, fixedBatch, modelFile, inputName, outputName);
  }

  /** Encode a batch (RGB [0,1], NHWC, any size). Runs the model on the CPU; the caller disposes the outputs. */
  async encode(images: tf.Tensor4D, options: { dense?: boolean } = {}): Promise<EncoderOutput> {
    const wantDense = options.dense === true && this.hasDense;
    if (options.dense && !this.hasDense) throw new Error(`${this.identity.name}: the sidecar names no denseOutputName, so there is no dense feature map`);
    const batch = images.shape[0];
    const step = this.fixedBatch ?? batch;
    const pooledParts: tf.Tensor2D[] = [];
    const denseParts: tf.Tensor4D[] = [];
    try {
      for (let start = 0; start < batch; start += step) {
        const n = Math.min(step, batch - start);
        if (this.fixedBatch !== undefined && n !== this.fixedBatch) throw new Error(`${this.modelFile}: the model takes batches of exactly ${this.fixedBatch}`);
        const x = tf.tidy(() => {
          const part = n === batch ? images : (tf.slice(images, [start, 0, 0, 0], [n, -1, -1, -1]) as tf.Tensor4D);
          const p = preprocessForEncoder(part, this.identity.preprocessing);
          return this.sidecar.layout === "NCHW" ? tf.transpose(p, [0, 3, 1, 2]) : p;
        });
        const data = (await x.data()) as Float32Array;
        const shape = x.shape;
        x.dispose();
        const feeds = { [this.inputName]: new this.ortModule.Tensor("float32", data, shape) };
        const fetches = wantDense ? [this.outputName, this.sidecar.denseOutputName!] : [this.outputName];
        const out = await this.session.run(feeds, fetches);
        const pooled = out[this.outputName]!;
        const pdims = pooled.dims;
        if (pdims.length !== 2 || pdims[0] !== n || pdims[1] !== this.identity.dim) {
          throw new Error(`${this.modelFile}: output "${this.outputName}" has shape [${pdims.join(", ")}], expected [${n}, ${this.identity.dim}]`);
        }
        pooledParts.push(tf.tensor2d(Float32Array.from(pooled.data as Float32Array), [n, this.identity.dim]));
        if (wantDense) {
          const d = out[this.sidecar.denseOutputName!]!;
          const raw = tf.tensor(Float32Array.from(d.data as Float32Array), d.dims as number[]);
          const nhwc = denseToNHWC(raw, this.sidecar.denseLayout, this.sidecar.denseSkipTokens, `${this.modelFile} output "${this.sidecar.denseOutputName}"`);
          raw.dispose();
          if (nhwc.shape[3] !== this.identity.dim) {
            nhwc.dispose();
            throw new Error(`${this.modelFile}: dense output "${this.sidecar.denseOutputName}" has ${nhwc.shape[3]} channels, the pooled feature has ${this.identity.dim}`);
          }
          denseParts.push(nhwc);
        }
        for (const v of Object.values(out)) v.dispose?.();
      }
      const pooled = pooledParts.length === 1 ? pooledParts[0]! : tf.concat(pooledParts, 0);
      const dense = denseParts.length === 0 ? undefined : denseParts.length === 1 ? denseParts[0]! : tf.concat(denseParts, 0);
      if (pooledParts.length > 1) tf.dispose(pooledParts);
      if (denseParts.length > 1) tf.dispose(denseParts);
      return dense ? { pooled, dense } : { pooled };
    } catch (e) {
      tf.dispose(pooledParts);
      tf.dispose(denseParts);
      throw e;
    }
  }

  dispose(): void {
    void this.session.release();
  }
}
