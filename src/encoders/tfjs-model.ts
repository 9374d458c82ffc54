/**
 * Frozen image encoders saved as TensorFlow.js models on disk: a layers model
 * (Keras, `format: "layers-model"`) or a graph model (converted TensorFlow
 * SavedModel, `format: "graph-model"`), i.e. a `model.json` plus its weight
 * shards. Files are read with node:fs by a small IO handler ({@link fileSystemModelHandler}):
 * nothing is fetched from the network and tfjs-node is not needed.
 *
 * The same sidecar JSON as ONNX encoders ({@link EncoderSidecar}) sits beside the
 * model as `<base>.encoder.json` (`model.json` -> `model.encoder.json`). For
 * TensorFlow.js the layout defaults to NHWC; `inputName` is a graph model's input
 * node (ignored by layers models); `outputName`/`denseOutputName` are layer names
 * (layers) or node names (graph). Without `outputName` the model's own output is
 * used; a 4-D output is average-pooled to the feature vector and doubles as the
 * dense map.
 *
 * Differentiable: {@link TfjsModelEncoder.apply} runs TensorFlow.js ops inside a
 * gradient tape (weights stay frozen), so it can serve the `image` region mode.
 * A graph model with control flow (needs `executeAsync`) is encoded but is not differentiable.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import * as tf from "@tensorflow/tfjs";
import type { EncoderIdentity, EncoderOutput, ImageEncoder } from "./types";
import { preprocessForEncoder } from "./preprocess";
import { applyFrozen } from "./frozen";
import { readEncoderSidecar, sidecarPathFor, sidecarPreprocessing, denseToNHWC, type ResolvedSidecar } from "./onnx";
import { FileError } from "../util/errors";
import { readJson } from "../util/fs";

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2, complex64: 8 };

/** What was read from disk: the artifacts plus a hash over model.json and every shard. */
export interface LoadedModelFiles {
  artifacts: tf.io.ModelArtifacts;
  kind: "layers" | "graph";
  /** SHA-256 over model.json then each shard in manifest order, first 16 hex digits. */
  weightsHash: string;
  files: string[];
}

/**
 * Read a TensorFlow.js `model.json` and its weight shards from disk (paths in the
 * manifest are relative to the model.json folder). Errors name the file: missing
 * shards, shard sizes that disagree with the manifest, a JSON that is not a
 * TensorFlow.js model.
 */
export function readModelFiles(modelJsonPath: string): LoadedModelFiles {
  const json = readJson<tf.io.ModelJSON & { format?: string }>(modelJsonPath);
  if (typeof json !== "object" || json === null || !json.modelTopology) {
    throw new FileError(modelJsonPath, "not a TensorFlow.js model.json (no modelTopology)");
  }
  const topo = json.modelTopology as Record<string, unknown>;
  const kind: "layers" | "graph" =
    json.format === "graph-model" || (json.format === undefined && Array.isArray(topo.node)) ? "graph" : "layers";
  const dir = path.dirname(modelJsonPath);
  const manifest = json.weightsManifest ?? [];
  const hash = crypto.createHash("sha256").update(fs.readFileSync(modelJsonPath));
  const buffers: ArrayBuffer[] = [];
  const files = [modelJsonPath];
  for (const group of manifest) {
    let groupBytes = 0;
    const groupFiles: string[] = [];
    for (const p of group.paths) {
      const f = path.join(dir, p);
      if (!fs.existsSync(f)) throw new FileError(f, `weight shard listed in ${modelJsonPath} not found`);
      const b = fs.readFileSync(f);
      hash.update(b);
      buffers.push(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
      groupBytes += b.byteLength;
      groupFiles.push(f);
      files.push(f);
    }
    let expected = 0;
    let known = true;
    for (const w of group.weights) {
      const dt = w.quantization?.dtype ?? w.dtype;
      const bytes = DTYPE_BYTES[dt];
      if (bytes === undefined) known = false;
      else expected += w.shape.reduce((a, b) => a * b, 1) * bytes;
    }
    if (known && expected !== groupBytes) {
      throw new FileError(groupFiles[0] ?? modelJsonPath, `weight shards hold ${groupBytes} bytes but ${modelJsonPath} lists weights of ${expected} bytes`);
    }
  }
  const weightSpecs = tf.io.getWeightSpecs(manifest);
  const artifacts = tf.io.getModelArtifactsForJSONSync(json, weightSpecs, tf.io.CompositeArrayBuffer.join(buffers));
  return { artifacts, kind, weightsHash: hash.digest("hex").slice(0, 16), files };
}

/** A TensorFlow.js IO handler that loads `model.json` and its shards from the local file system. */
export function fileSystemModelHandler(modelJsonPath: string): tf.io.IOHandler {
  return { load: async () => readModelFiles(modelJsonPath).artifacts };
}

/** Options of {@link TfjsModelEncoder.create}. */
export interface TfjsModelEncoderOptions {
  /** Sidecar JSON; default {@link sidecarPathFor}(modelJson), i.e. `<base>.encoder.json`. */
  sidecar?: string;
}

/** tf.tidy for a function returning an {@link EncoderOutput} (keeps its tensors, disposes the rest). */
function tidyOutput(fn: () => EncoderOutput): EncoderOutput {
  const [pooled, dense] = tf.tidy(() => {
    const o = fn();
    return o.dense ? [o.pooled, o.dense] : [o.pooled];
  }) as [tf.Tensor2D, tf.Tensor4D?];
  return dense ? { pooled, dense } : { pooled };
}

type Runner = (x: tf.Tensor4D) => tf.Tensor[];

/**
 * A frozen encoder phi from a TensorFlow.js model on disk. Identity:
 * `tfjs:<sidecar name>`, weights hash over model.json and its shards.
 */
export class TfjsModelEncoder implements ImageEncoder {
  readonly isStandIn: boolean;
  readonly standInNote?: string;

  private constructor(
    private readonly model: tf.LayersModel | tf.GraphModel,
    private readonly run: Runner,
    private readonly runAsync: ((x: tf.Tensor4D) => Promise<tf.Tensor[]>) | undefined,
    readonly identity: EncoderIdentity,
    readonly sidecar: ResolvedSidecar,
    readonly kind: "layers" | "graph",
    readonly differentiable: boolean,
    /** Where the dense map comes from: a named output, the pooled output itself (4-D), or nowhere. */
    private readonly denseFrom: "named" | "pooled" | "none",
  ) {
    this.isStandIn = sidecar.standInNote !== undefined;
    if (sidecar.standInNote) this.standInNote = sidecar.standInNote;
  }

  get hasDense(): boolean {
    return this.denseFrom !== "none";
  }

  /**
   * Load `modelJson` (layers or graph) and its sidecar, run one probe batch to
   * learn d and the output ranks, and check them against the sidecar.
   */
  static async create(modelJson: string, options: TfjsModelEncoderOptions = {}): Promise<TfjsModelEncoder> {
    if (!fs.existsSync(modelJson)) throw new FileError(modelJson, "TensorFlow.js model.json not found");
    const sidecarFile = options.sidecar ?? sidecarPathFor(modelJson);
    const sc = readEncoderSidecar(sidecarFile, { layout: "NHWC", denseLayout: "NHWC" });
    const files = readModelFiles(modelJson);
    const fail = (problem: string): never => {
      throw new FileError(sidecarFile, `${problem} (model ${modelJson})`);
    };
    let model: tf.LayersModel | tf.GraphModel;
    let run: Runner;
    let runAsync: ((x: tf.Tensor4D) => Promise<tf.Tensor[]>) | undefined;
    const wantNames = [sc.outputName, sc.denseOutputName];
    if (files.kind === "layers") {
      let lm: tf.LayersModel;
      try {
        lm = await tf.loadLayersModel(tf.io.fromMemory(files.artifacts));
      } catch (e) {
        throw new FileError(modelJson, `cannot build the layers model: ${(e as Error).message}`);
      }
      lm.trainable = false;
      const outputs: tf.SymbolicTensor[] = [];
      for (const [i, n] of wantNames.entries()) {
        if (n === undefined) {
          if (i === 0) {
            if (lm.outputs.length !== 1) fail(`the model has ${lm.outputs.length} outputs: name one in "outputName"`);
            outputs.push(lm.outputs[0]!);
          }
          continue;
        }
        let layer: tf.layers.Layer | undefined;
        try {
          layer = lm.getLayer(n);
        } catch {
          layer = undefined;
        }
        if (!layer) fail(`${i === 0 ? "outputName" : "denseOutputName"} "${n}" is not a layer of the model`);
        outputs.push(layer!.output as tf.SymbolicTensor);
      }
      const sub = outputs.length === 1 && outputs[0] === lm.outputs[0] ? lm : tf.model({ inputs: lm.inputs, outputs });
      model = sub;
      run = (x) => {
        // Layer by layer, so an input gradient skips the frozen convolutions' filter gradients.
        return applyFrozen(sub, x);
      };
    } else {
      let gm: tf.GraphModel;
      try {
        gm = await tf.loadGraphModel(tf.io.fromMemory(files.artifacts));
      } catch (e) {
        throw new FileError(modelJson, `cannot build the graph model: ${(e as Error).message}`);
      }
      const inputName = sc.inputName ?? (gm.inputs.length === 1 ? gm.inputs[0]!.name : fail(`the model has ${gm.inputs.length} inputs: name one in "inputName"`));
      if (!gm.inputs.some((t) => t.name === inputName)) fail(`inputName "${inputName}" is not an input of the model (inputs: ${gm.inputs.map((t) => t.name).join(", ")})`);
      const outNames: string[] = [];
      if (sc.outputName !== undefined) outNames.push(sc.outputName);
      else if (gm.outputs.length === 1) outNames.push(gm.outputs[0]!.name);
      else fail(`the model has ${gm.outputs.length} outputs: name one in "outputName"`);
      if (sc.denseOutputName !== undefined) outNames.push(sc.denseOutputName);
      model = gm;
      run = (x) => {
        const y = gm.execute({ [inputName]: x }, outNames);
        return Array.isArray(y) ? y : [y];
      };
      runAsync = async (x) => {
        const y = await gm.executeAsync({ [inputName]: x }, outNames);
        return Array.isArray(y) ? y : [y];
      };
    }
    // Probe: one zero image at the input size.
    let differentiable = true;
    let ranks: number[];
    let dims: number[][];
    const probeIn = tf.zeros([1, sc.inputSize, sc.inputSize, 3]) as tf.Tensor4D;
    const layoutIn = sc.layout === "NCHW" ? (tf.transpose(probeIn, [0, 3, 1, 2]) as tf.Tensor4D) : probeIn;
    try {
      let outs: tf.Tensor[];
      try {
        outs = tf.tidy(() => run(layoutIn));
      } catch (e) {
        if (!runAsync) throw e;
        differentiable = false;
        outs = await runAsync(layoutIn);
      }
      ranks = outs.map((t) => t.rank);
      dims = outs.map((t) => t.shape);
      tf.dispose(outs);
    } catch (e) {
      model.dispose();
      throw new FileError(modelJson, `a probe batch of one ${sc.inputSize}x${sc.inputSize} image failed (wrong inputSize or layout in ${sidecarFile}?): ${(e as Error).message}`);
    } finally {
      tf.dispose([probeIn, layoutIn]);
    }
    const pooledRank = ranks[0]!;
    if (pooledRank !== 2 && pooledRank !== 4) {
      model.dispose();
      fail(`the feature output has shape [${dims[0]!.join(", ")}]; expected [B, d] or a 4-D map to average-pool`);
    }
    const dim = pooledRank === 2 ? dims[0]![1]! : sc.layout === "NCHW" ? dims[0]![1]! : dims[0]![3]!;
    if (sc.dim !== undefined && sc.dim !== dim) {
      model.dispose();
      fail(`the model's features have d = ${dim} but the sidecar says dim ${sc.dim}`);
    }
    const denseFrom = sc.denseOutputName !== undefined ? "named" : pooledRank === 4 ? "pooled" : "none";
    const identity: EncoderIdentity = { name: `tfjs:${sc.name}`, dim, weightsHash: files.weightsHash, preprocessing: sidecarPreprocessing(sc) };
    return new TfjsModelEncoder(model, run, runAsync, identity, sc, files.kind, differentiable, denseFrom);
  }

  private prepare(images: tf.Tensor4D): tf.Tensor4D {
    const x = preprocessForEncoder(images, this.identity.preprocessing);
    return this.sidecar.layout === "NCHW" ? (tf.transpose(x, [0, 3, 1, 2]) as tf.Tensor4D) : x;
  }

  private finish(outs: tf.Tensor[], dense: boolean): EncoderOutput {
    const first = outs[0]!;
    // A 4-D feature output is a map in the model layout; make it NHWC and pool it.
    const map = first.rank === 4 ? denseToNHWC(first, this.sidecar.layout, 0, this.identity.name) : undefined;
    const pooled = (map ? tf.mean(map, [1, 2]) : first) as tf.Tensor2D;
    if (!dense) return { pooled };
    if (this.denseFrom === "none") throw new Error(`${this.identity.name}: the model has no dense feature map (name one in the sidecar's denseOutputName)`);
    const d = this.denseFrom === "pooled" ? map! : denseToNHWC(outs[1]!, this.sidecar.denseLayout, this.sidecar.denseSkipTokens, this.identity.name);
    return { pooled, dense: d };
  }

  /** Differentiable forward pass (synchronous TensorFlow.js ops); RGB [0,1] NHWC in. */
  apply(images: tf.Tensor4D, options: { dense?: boolean } = {}): EncoderOutput {
    if (!this.differentiable) throw new Error(`${this.identity.name}: this graph model needs executeAsync (control flow), so it cannot run inside a gradient tape`);
    return tidyOutput(() => this.finish(this.run(this.prepare(images)), options.dense === true));
  }

  async encode(images: tf.Tensor4D, options: { dense?: boolean } = {}): Promise<EncoderOutput> {
    if (this.differentiable) return this.apply(images, options);
    const x = tf.tidy(() => this.prepare(images));
    const outs = await this.runAsync!(x);
    x.dispose();
    const result = tidyOutput(() => this.finish(outs, options.dense === true));
    tf.dispose(outs);
    return result;
  }

  dispose(): void {
    this.model.dispose();
  }
}
