/**
 * The bundled pretrained network: the Keras MobileNetV2 (alpha 1.0) that the
 * `nsfwjs@4.4.0` npm package ships as TensorFlow.js layers. It started from
 * ImageNet weights and was then fine-tuned by the nsfwjs authors on a 5-class
 * image-content task; its weights are 8-bit quantised in the package.
 *
 * It is the only pretrained network obtainable without downloads, so pbip uses it
 * (a) as the frozen image encoder of the embedded runs, a STAND-IN for the paper's
 * MedCLIP, and (b) as the default trainable ClassNet backbone.
 *
 * On first use the model is extracted from node_modules into a standard
 * TensorFlow.js layers model (model.json + weights.bin, float32, classification
 * head removed) under the cache folder; nothing is downloaded and no weights are
 * committed to the repository.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { cacheDir, sha256, writeFileAtomic, writeJsonAtomic, readJson, float32ToLE } from "../util/fs";
import { FileError } from "../util/errors";

export const BUNDLED_MOBILENETV2 = {
  id: "mobilenetv2-nsfwjs",
  package: "nsfwjs@4.4.0",
  description:
    "Keras MobileNetV2 (alpha 1.0) from the nsfwjs@4.4.0 npm package: ImageNet initialisation, then fine-tuned on a non-medical 5-class task; 8-bit quantised weights. A stand-in, not MedCLIP.",
  /** The last layer kept: ReLU6 after the 1x1 expansion to 1280 channels (stride 32). */
  featureLayer: "out_relu",
} as const;

interface LayersModelJson {
  format?: string;
  generatedBy?: string;
  convertedBy?: string;
  modelTopology: { model_config: { class_name: string; config: { name: string; layers: KerasLayer[]; input_layers: unknown; output_layers: unknown[] } } } & Record<string, unknown>;
  weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[];
}

export interface KerasLayer {
  class_name: string;
  name: string;
  config: Record<string, unknown>;
  inbound_nodes: unknown[];
}

/** The extracted model as in-memory artifacts, plus the hash of its weights. */
export interface BundledModel {
  modelJson: LayersModelJson;
  weightData: ArrayBuffer;
  weightsHash: string;
  dir: string;
}

function nsfwjsModelDir(): string {
  let entry: string;
  try {
    entry = require.resolve("nsfwjs");
  } catch {
    throw new Error("the bundled MobileNetV2 needs the npm package nsfwjs@4.4.0 (a dependency of pbip): run `npm ci`");
  }
  return path.join(path.dirname(entry), "..", "models", "mobilenet_v2");
}

/** Cut a Keras functional topology after `lastLayer` (which becomes the only output) and free its input size. */
function cutTopology(json: LayersModelJson, lastLayer: string): { modelTopology: LayersModelJson["modelTopology"]; keep: Set<string> } {
  const topo = JSON.parse(JSON.stringify(json.modelTopology)) as LayersModelJson["modelTopology"];
  const layers = topo.model_config.config.layers;
  const idx = layers.findIndex((l) => l.name === lastLayer);
  if (idx < 0) throw new Error(`bundled MobileNetV2: layer ${lastLayer} not found`);
  const kept = layers.slice(0, idx + 1);
  topo.model_config.config.layers = kept;
  topo.model_config.config.output_layers = [[lastLayer, 0, 0]];
  const input = kept[0]!;
  input.config.batch_input_shape = [null, null, null, 3];
  delete topo.training_config;
  return { modelTopology: topo, keep: new Set(kept.map((l) => l.name)) };
}

function concatFloat32(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * Decode a tfjs weights buffer whose entries are float32 or affine-quantised
 * (uint8/uint16: value = min + scale * q), in manifest order.
 */
export function dequantizeWeights(buf: Uint8Array, specs: tf.io.WeightsManifestEntry[], file: string): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = 0;
  for (const spec of specs) {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const q = spec.quantization;
    const data = new Float32Array(n);
    const width = q ? (q.dtype === "uint8" ? 1 : 2) : 4;
    if (off + n * width > buf.byteLength) throw new FileError(file, `weights end at byte ${buf.byteLength}, before ${spec.name} (needs ${off + n * width})`);
    if (!q) {
      if (spec.dtype !== "float32") throw new FileError(file, `${spec.name}: dtype ${spec.dtype} is not supported`);
      for (let i = 0; i < n; i++) data[i] = view.getFloat32(off + i * 4, true);
    } else if (q.dtype === "uint8" || q.dtype === "uint16") {
      if (q.min === undefined || q.scale === undefined) throw new FileError(file, `${spec.name}: quantisation without min/scale`);
      for (let i = 0; i < n; i++) data[i] = q.min + q.scale * (width === 1 ? view.getUint8(off + i) : view.getUint16(off + i * 2, true));
    } else {
      throw new FileError(file, `${spec.name}: quantisation ${q.dtype} is not supported`);
    }
    out.set(spec.name, data);
    off += n * width;
  }
  if (off !== buf.byteLength) throw new FileError(file, `weights have ${buf.byteLength} bytes, the manifest describes ${off}`);
  return out;
}

/** Extract (once) and return the bundled MobileNetV2 feature extractor. */
export function loadBundledMobileNetV2Artifacts(): BundledModel {
  const dir = cacheDir("models", BUNDLED_MOBILENETV2.id);
  const modelFile = path.join(dir, "model.json");
  const weightsFile = path.join(dir, "weights.bin");
  if (!fs.existsSync(modelFile) || !fs.existsSync(weightsFile)) {
    const src = nsfwjsModelDir();
    const json = require(path.join(src, "model.min.js")) as LayersModelJson;
    const b64 = require(path.join(src, "group1-shard1of1.min.js")) as string;
    const buf = Buffer.from(b64, "base64");
    const specs = json.weightsManifest.flatMap((g) => g.weights);
    const { modelTopology, keep } = cutTopology(json, BUNDLED_MOBILENETV2.featureLayer);
    // Dequantise on the host (no tensors: this may run before or on any backend).
    const all = dequantizeWeights(buf, specs, path.join(src, "group1-shard1of1.min.js"));
    const entries: tf.io.WeightsManifestEntry[] = [];
    const parts: Float32Array[] = [];
    for (const spec of specs) {
      if (!keep.has(spec.name.split("/")[0]!)) continue;
      entries.push({ name: spec.name, shape: spec.shape, dtype: "float32" });
      parts.push(all.get(spec.name)!);
    }
    const out = float32ToLE(concatFloat32(parts));
    writeFileAtomic(weightsFile, out);
    writeJsonAtomic(modelFile, {
      format: "layers-model",
      generatedBy: `pbip, extracted from ${BUNDLED_MOBILENETV2.package} (classification head removed, weights dequantised to float32)`,
      convertedBy: null,
      modelTopology,
      weightsManifest: [{ paths: ["weights.bin"], weights: entries }],
    });
  }
  const modelJson = readJson<LayersModelJson>(modelFile);
  const bytes = fs.readFileSync(weightsFile);
  const expected = modelJson.weightsManifest.flatMap((g) => g.weights).reduce((a, w) => a + w.shape.reduce((x, y) => x * y, 1) * 4, 0);
  if (bytes.byteLength !== expected) {
    throw new FileError(weightsFile, `has ${bytes.byteLength} bytes, model.json expects ${expected}; delete ${dir} to extract again`);
  }
  return {
    modelJson,
    weightData: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    weightsHash: sha256(bytes).slice(0, 16),
    dir,
  };
}

/**
 * Build a tfjs LayersModel from the bundled artifacts, optionally editing the
 * Keras layer configs first (the backbone changes a stride). Each call makes new,
 * independent variables.
 */
export async function instantiateBundledMobileNetV2(
  edit?: (layers: KerasLayer[]) => void,
  outputs?: string[],
): Promise<{ model: tf.LayersModel; weightsHash: string }> {
  const art = loadBundledMobileNetV2Artifacts();
  const topo = JSON.parse(JSON.stringify(art.modelJson.modelTopology)) as LayersModelJson["modelTopology"];
  if (edit) edit(topo.model_config.config.layers);
  const model = await tf.loadLayersModel(
    tf.io.fromMemory({
      modelTopology: topo as unknown as object,
      weightSpecs: art.modelJson.weightsManifest.flatMap((g) => g.weights),
      weightData: art.weightData,
    }),
  );
  if (!outputs) return { model, weightsHash: art.weightsHash };
  const multi = tf.model({ inputs: model.inputs, outputs: outputs.map((n) => model.getLayer(n).output as tf.SymbolicTensor) });
  return { model: multi, weightsHash: art.weightsHash };
}

/** Make block 13 stride 1 (output stride 16 instead of 32). */
export function outputStride16(layers: KerasLayer[]): void {
  const pad = layers.find((l) => l.name === "block_13_pad");
  const dw = layers.find((l) => l.name === "block_13_depthwise");
  if (!pad || !dw) throw new Error("bundled MobileNetV2: block_13_pad / block_13_depthwise not found");
  pad.config.padding = [
    [1, 1],
    [1, 1],
  ];
  dw.config.strides = [1, 1];
}
