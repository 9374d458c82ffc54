/**
 * Swin Transformer weights: the configuration, the Hugging Face `SwinModel`
 * parameter names, reading them from `.safetensors` with a named report of what is
 * missing, unexpected or mis-shaped, and seeded random weights for tests.
 *
 * Names (checked against `transformers/models/swin/modeling_swin.py`: `SwinModel`
 * -> `embeddings`, `encoder.layers[i]` (`SwinStage`) -> `blocks[j]` (`SwinLayer`)
 * and `downsample` (`SwinPatchMerging`), then `layernorm`):
 *
 * ```
 * embeddings.patch_embeddings.projection.{weight [E,3,P,P], bias [E]}
 * embeddings.norm.{weight, bias}                                            [E]
 * encoder.layers.{i}.blocks.{j}.layernorm_before.{weight, bias}             [C]
 * encoder.layers.{i}.blocks.{j}.attention.self.relative_position_bias_table [(2w-1)^2, heads]
 * encoder.layers.{i}.blocks.{j}.attention.self.{query,key,value}.{weight [C,C], bias [C]}
 * encoder.layers.{i}.blocks.{j}.attention.output.dense.{weight [C,C], bias [C]}
 * encoder.layers.{i}.blocks.{j}.layernorm_after.{weight, bias}              [C]
 * encoder.layers.{i}.blocks.{j}.intermediate.dense.{weight [4C,C], bias [4C]}
 * encoder.layers.{i}.blocks.{j}.output.dense.{weight [C,4C], bias [C]}
 * encoder.layers.{i}.downsample.reduction.weight                           [2C, 4C] (no bias; i < last)
 * encoder.layers.{i}.downsample.norm.{weight, bias}                         [4C]
 * layernorm.{weight, bias}                                                  [8E]
 * projection.weight                                                         [512, 8E]  (pbip's name; PyTorch [out, in])
 * ```
 *
 * The buffer `encoder.layers.{i}.blocks.{j}.attention.self.relative_position_index`
 * (int64, `[w^2, w^2]`) that `transformers` saves is checked against the index pbip
 * computes when present, and not required. `SwinForImageClassification` files
 * (prefix `swin.`, plus `classifier.*`) and MedCLIP's `MedCLIPVisionModelViT`
 * names (prefix `vision_model.model.`, projection `vision_model.projection_head.weight`)
 * are accepted; classifier heads, MedCLIP's text tower and `logit_scale` are ignored.
 */
import * as fs from "node:fs";
import { parseSafetensorsHeader, readSafetensors } from "../io/safetensors";
import type { HostTensor, NamedTensors, WeightLoadReport } from "../io/tensors";
import { FileError } from "../util/errors";
import { Rng } from "../util/rng";

/** Architecture hyper-parameters of a Swin Transformer (Hugging Face `SwinConfig` field names in the docs). */
export interface SwinConfig {
  /** `patch_size`: side of the non-overlapping patches of the patch embedding (4). */
  patchSize: number;
  /** `num_channels`: input channels (3). */
  inChannels: number;
  /** `embed_dim`: channels of stage 1 (96 for Swin-T); stage i has embedDim * 2^i. */
  embedDim: number;
  /** `depths`: blocks per stage ([2, 2, 6, 2] for Swin-T). */
  depths: number[];
  /** `num_heads`: attention heads per stage ([3, 6, 12, 24]). */
  numHeads: number[];
  /** `window_size`: side of the attention windows (7); odd blocks shift by floor(window/2). */
  windowSize: number;
  /** `mlp_ratio`: hidden width of the MLP as a multiple of C (4). */
  mlpRatio: number;
  /** `layer_norm_eps` (1e-5; `nn.LayerNorm`'s default for the embedding and merging norms, also 1e-5). */
  layerNormEps: number;
}

/** Swin-T as `microsoft/swin-tiny-patch4-window7-224` (the release's "MedCLIP" backbone): 768-d pooled output. */
export const SWIN_T_CONFIG: Readonly<SwinConfig> = Object.freeze({
  patchSize: 4,
  inChannels: 3,
  embedDim: 96,
  depths: [2, 2, 6, 2],
  numHeads: [3, 6, 12, 24],
  windowSize: 7,
  mlpRatio: 4,
  layerNormEps: 1e-5,
});

/** Channels of the last stage (the pooled feature size, 768 for Swin-T). */
export function swinNumFeatures(c: SwinConfig): number {
  return c.embedDim * 2 ** (c.depths.length - 1);
}

/** The name pbip uses for the projection matrix (PyTorch layout `[out, in]`, no bias). */
export const PROJECTION_KEY = "projection.weight";

/** One expected parameter: its Hugging Face name and PyTorch shape. */
export interface ParamSpec {
  name: string;
  shape: number[];
}

/** Every parameter of a `SwinModel` with this config, in module order, with PyTorch shapes. */
export function swinParameterSpecs(c: SwinConfig): ParamSpec[] {
  const out: ParamSpec[] = [];
  const E = c.embedDim;
  const p = c.patchSize;
  out.push({ name: "embeddings.patch_embeddings.projection.weight", shape: [E, c.inChannels, p, p] });
  out.push({ name: "embeddings.patch_embeddings.projection.bias", shape: [E] });
  out.push({ name: "embeddings.norm.weight", shape: [E] }, { name: "embeddings.norm.bias", shape: [E] });
  const w = c.windowSize;
  for (let i = 0; i < c.depths.length; i++) {
    const C = E * 2 ** i;
    const heads = c.numHeads[i]!;
    const hidden = Math.floor(c.mlpRatio * C);
    for (let j = 0; j < c.depths[i]!; j++) {
      const b = `encoder.layers.${i}.blocks.${j}.`;
      out.push({ name: b + "layernorm_before.weight", shape: [C] }, { name: b + "layernorm_before.bias", shape: [C] });
      out.push({ name: b + "attention.self.relative_position_bias_table", shape: [(2 * w - 1) * (2 * w - 1), heads] });
      for (const q of ["query", "key", "value"]) {
        out.push({ name: `${b}attention.self.${q}.weight`, shape: [C, C] }, { name: `${b}attention.self.${q}.bias`, shape: [C] });
      }
      out.push({ name: b + "attention.output.dense.weight", shape: [C, C] }, { name: b + "attention.output.dense.bias", shape: [C] });
      out.push({ name: b + "layernorm_after.weight", shape: [C] }, { name: b + "layernorm_after.bias", shape: [C] });
      out.push({ name: b + "intermediate.dense.weight", shape: [hidden, C] }, { name: b + "intermediate.dense.bias", shape: [hidden] });
      out.push({ name: b + "output.dense.weight", shape: [C, hidden] }, { name: b + "output.dense.bias", shape: [C] });
    }
    if (i < c.depths.length - 1) {
      const d = `encoder.layers.${i}.downsample.`;
      out.push({ name: d + "reduction.weight", shape: [2 * C, 4 * C] });
      out.push({ name: d + "norm.weight", shape: [4 * C] }, { name: d + "norm.bias", shape: [4 * C] });
    }
  }
  const F = swinNumFeatures(c);
  out.push({ name: "layernorm.weight", shape: [F] }, { name: "layernorm.bias", shape: [F] });
  return out;
}

/**
 * Swin's relative position index for a w x w window (the `relative_position_index`
 * buffer): entry (i, j) indexes the bias table row for the offset between tokens i
 * and j, `(dy + w - 1) * (2w - 1) + (dx + w - 1)` with dy = y_i - y_j, dx = x_i - x_j.
 */
export function relativePositionIndex(w: number): Int32Array {
  const T = w * w;
  const idx = new Int32Array(T * T);
  for (let i = 0; i < T; i++) {
    const yi = Math.floor(i / w);
    const xi = i % w;
    for (let j = 0; j < T; j++) {
      const yj = Math.floor(j / w);
      const xj = j % w;
      idx[i * T + j] = (yi - yj + w - 1) * (2 * w - 1) + (xi - xj + w - 1);
    }
  }
  return idx;
}

/** Prefixes under which a Swin backbone is found in the files pbip accepts. */
const BACKBONE_PREFIXES = ["", "swin.", "vision_model.model.", "model."];
/** Names of the projection matrix, in order of preference. */
const PROJECTION_NAMES = [PROJECTION_KEY, "vision_model.projection_head.weight", "projection_head.weight"];
/** Names that are known and deliberately unused (classifier heads, MedCLIP's text tower and temperature, pooler-less extras). */
const IGNORED = [/^classifier\./, /^swin\.classifier\./, /^text_model\./, /^vision_model\.text_model\./, /^logit_scale$/, /\.relative_position_index$/];

/** Host (JavaScript) Swin weights under their canonical (prefix-free) names, plus where they came from. */
export interface SwinHostWeights {
  config: SwinConfig;
  /** Canonical name -> tensor (PyTorch layouts). The projection, when present, is under {@link PROJECTION_KEY}. */
  tensors: NamedTensors;
  report: WeightLoadReport;
  /** Relative position index buffers found in the file and checked (count). */
  checkedIndexBuffers: number;
}

function decodeIntTensor(bytes: Uint8Array, dataStart: number, e: { dtype: string; shape: number[]; data_offsets: [number, number] }): Int32Array | undefined {
  const n = e.shape.reduce((a, b) => a * b, 1);
  const view = new DataView(bytes.buffer, bytes.byteOffset + dataStart + e.data_offsets[0], e.data_offsets[1] - e.data_offsets[0]);
  const out = new Int32Array(n);
  if (e.dtype === "I64") for (let i = 0; i < n; i++) out[i] = Number(view.getBigInt64(i * 8, true));
  else if (e.dtype === "I32") for (let i = 0; i < n; i++) out[i] = view.getInt32(i * 4, true);
  else return undefined;
  return out;
}

/**
 * Match the tensors of one or more files against the parameters of a Swin with
 * `config` (plus the projection when `projection` is true). Returns canonical names,
 * and a report naming every missing, unexpected and mis-shaped key. Relative
 * position index buffers, if present, must equal {@link relativePositionIndex}
 * (a mismatch is a {@link FileError}: the file was made for another window size or layout).
 */
export function readSwinWeights(files: string[], config: SwinConfig, options: { projection?: boolean } = {}): SwinHostWeights {
  const specs = swinParameterSpecs(config);
  const expected = new Map(specs.map((s) => [s.name, s.shape]));
  const tensors: NamedTensors = new Map();
  const report: WeightLoadReport = { loaded: [], missing: [], unexpected: [], misshaped: [] };
  let checkedIndexBuffers = 0;
  const misshaped = new Set<string>();
  const refIndex = relativePositionIndex(config.windowSize);
  for (const file of files) {
    let bytes: Uint8Array;
    try {
      bytes = fs.readFileSync(file);
    } catch (e) {
      throw new FileError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const header = parseSafetensorsHeader(bytes, file);
    // Integer buffers: check the relative position index where present.
    for (const [name, e] of header.tensors) {
      if (!name.endsWith(".relative_position_index")) continue;
      const idx = decodeIntTensor(bytes, header.dataStart, e);
      if (!idx) throw new FileError(file, `tensor "${name}": dtype ${e.dtype}, expected I64 or I32`);
      if (idx.length !== refIndex.length || idx.some((v, i) => v !== refIndex[i])) {
        throw new FileError(file, `tensor "${name}" differs from the relative position index of a ${config.windowSize}x${config.windowSize} window: the weights were made for another window size`);
      }
      checkedIndexBuffers++;
    }
    const raw = readSafetensors(file, { skipNonFloat: true });
    for (const [name, t] of raw) {
      let canonical: string | undefined;
      if (PROJECTION_NAMES.includes(name)) canonical = PROJECTION_KEY;
      else {
        for (const p of BACKBONE_PREFIXES) {
          if (name.startsWith(p) && expected.has(name.slice(p.length))) {
            canonical = name.slice(p.length);
            break;
          }
        }
      }
      if (canonical === undefined) {
        if (!IGNORED.some((re) => re.test(name))) report.unexpected.push(name);
        continue;
      }
      if (canonical === PROJECTION_KEY) {
        if (!options.projection) {
          report.unexpected.push(name);
          continue;
        }
        const F = swinNumFeatures(config);
        if (t.shape.length !== 2 || t.shape[1] !== F) {
          report.misshaped.push(`${name}: file [${t.shape.join(", ")}] vs model [d, ${F}]`);
          misshaped.add(canonical);
          continue;
        }
      } else {
        const shape = expected.get(canonical)!;
        if (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i])) {
          report.misshaped.push(`${name}: file [${t.shape.join(", ")}] vs model [${shape.join(", ")}]`);
          misshaped.add(canonical);
          continue;
        }
      }
      if (tensors.has(canonical)) {
        report.unexpected.push(`${name} (duplicate of ${canonical})`);
        continue;
      }
      tensors.set(canonical, t);
      report.loaded.push(canonical);
    }
  }
  for (const s of specs) if (!tensors.has(s.name) && !misshaped.has(s.name)) report.missing.push(s.name);
  if (options.projection && !tensors.has(PROJECTION_KEY) && !misshaped.has(PROJECTION_KEY)) report.missing.push(PROJECTION_KEY);
  return { config, tensors, report, checkedIndexBuffers };
}

/**
 * Read only the projection matrix (`projection.weight`, or MedCLIP's
 * `vision_model.projection_head.weight`) from a `.safetensors` file, checking that
 * it is [d, numFeatures] (PyTorch layout). Other tensors in the file are ignored.
 */
export function readSwinProjection(file: string, numFeatures: number): HostTensor {
  const t = readSafetensors(file, { filter: (n) => PROJECTION_NAMES.includes(n) });
  const found = PROJECTION_NAMES.map((n) => t.get(n)).find((x) => x !== undefined);
  if (!found) throw new FileError(file, `no projection matrix: expected a tensor named ${PROJECTION_NAMES.join(" or ")}`);
  if (found.shape.length !== 2 || found.shape[1] !== numFeatures) {
    throw new FileError(file, `projection matrix is [${found.shape.join(", ")}], expected [d, ${numFeatures}] (PyTorch [out, in])`);
  }
  return found;
}

/**
 * Seeded random weights for a Swin with `config` (for tests and benchmarks; never
 * features anyone should use): linear and patch-embedding weights N(0, 0.02) as
 * Hugging Face's `_init_weights`, biases N(0, 0.02), LayerNorm gains 1 + N(0, 0.1)
 * and biases N(0, 0.05), bias tables N(0, 0.5) (so that the relative position bias
 * and the shift mask matter in tests). Drawn from pbip's {@link Rng}.
 */
export function randomSwinWeights(config: SwinConfig, seed: number): NamedTensors {
  const rng = new Rng(seed);
  const out: NamedTensors = new Map();
  for (const s of swinParameterSpecs(config)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    let mean = 0;
    let std = 0.02;
    if (/(norm|layernorm_before|layernorm_after|^layernorm)\.weight$/.test(s.name)) {
      mean = 1;
      std = 0.1;
    } else if (/(norm|layernorm_before|layernorm_after|^layernorm)\.bias$/.test(s.name)) std = 0.05;
    else if (s.name.endsWith("relative_position_bias_table")) std = 0.5;
    for (let i = 0; i < n; i++) data[i] = rng.normal(mean, std);
    out.set(s.name, { dtype: "float32", shape: [...s.shape], data });
  }
  return out;
}

/**
 * A seeded random projection `[outDim, inDim]` drawn from the distribution of
 * PyTorch's default `nn.Linear` initialisation (kaiming-uniform with a = sqrt(5),
 * i.e. U(-1/sqrt(in), 1/sqrt(in))), as the release's `nn.Linear(768, 512, bias=False)`.
 * The numbers come from pbip's {@link Rng}, not from torch's generator: same
 * distribution, not the release's matrix (kernel-setup/export_swin_weights.py writes that one).
 */
export function randomProjection(outDim: number, inDim: number, seed: number): HostTensor {
  const rng = new Rng(seed);
  const bound = 1 / Math.sqrt(inDim);
  const data = new Float32Array(outDim * inDim);
  for (let i = 0; i < data.length; i++) data[i] = rng.uniform(-bound, bound);
  return { dtype: "float32", shape: [outDim, inDim], data };
}
