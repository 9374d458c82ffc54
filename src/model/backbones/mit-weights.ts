/**
 * Loading SegFormer Mix Transformer weights from `.safetensors`.
 *
 * Two naming schemes are read (detected per file):
 *
 * 1. The original SegFormer names (NVlabs `mix_transformer.py`, the ImageNet
 *    checkpoints `mit_b0.pth`..`mit_b5.pth` the PBIP release starts from):
 *    `patch_embed1.proj.weight`, `patch_embed1.norm.weight`, `block1.0.norm1.weight`,
 *    `block1.0.attn.q.weight`, `block1.0.attn.kv.weight` ([2C, C]: k rows then v rows),
 *    `block1.0.attn.sr.weight`, `block1.0.attn.norm.weight`, `block1.0.attn.proj.weight`,
 *    `block1.0.mlp.fc1.weight`, `block1.0.mlp.dwconv.dwconv.weight`, `block1.0.mlp.fc2.weight`,
 *    `block1.0.norm2.weight`, `norm1.weight`, ... . A `module.` or `backbone.` prefix
 *    (DataParallel, mmseg) is accepted; `head.*` (the ImageNet classifier) and
 *    `decode_head.*` / `auxiliary_head.*` are ignored.
 *
 * 2. Hugging Face transformers `SegformerModel` / `SegformerForImageClassification` /
 *    `SegformerForSemanticSegmentation` names, with or without the `segformer.` prefix
 *    (stage s = i-1, block j):
 *
 *    | Hugging Face                                         | original                     |
 *    |------------------------------------------------------|------------------------------|
 *    | `encoder.patch_embeddings.{s}.proj.*`                | `patch_embed{i}.proj.*`      |
 *    | `encoder.patch_embeddings.{s}.layer_norm.*`          | `patch_embed{i}.norm.*`      |
 *    | `encoder.block.{s}.{j}.layer_norm_1.*`               | `block{i}.{j}.norm1.*`       |
 *    | `encoder.block.{s}.{j}.attention.self.query.*`       | `block{i}.{j}.attn.q.*`      |
 *    | `encoder.block.{s}.{j}.attention.self.key.*` + `value.*` | `block{i}.{j}.attn.kv.*` (concatenated: key rows, then value rows) |
 *    | `encoder.block.{s}.{j}.attention.self.sr.*`          | `block{i}.{j}.attn.sr.*`     |
 *    | `encoder.block.{s}.{j}.attention.self.layer_norm.*`  | `block{i}.{j}.attn.norm.*`   |
 *    | `encoder.block.{s}.{j}.attention.output.dense.*`     | `block{i}.{j}.attn.proj.*`   |
 *    | `encoder.block.{s}.{j}.layer_norm_2.*`               | `block{i}.{j}.norm2.*`       |
 *    | `encoder.block.{s}.{j}.mlp.dense1.*`                 | `block{i}.{j}.mlp.fc1.*`     |
 *    | `encoder.block.{s}.{j}.mlp.dwconv.dwconv.*`          | `block{i}.{j}.mlp.dwconv.dwconv.*` |
 *    | `encoder.block.{s}.{j}.mlp.dense2.*`                 | `block{i}.{j}.mlp.fc2.*`     |
 *    | `encoder.layer_norm.{s}.*`                           | `norm{i}.*`                  |
 *
 *    `classifier.*` and `decode_head.*` are ignored. Note: Hugging Face builds every
 *    LayerNorm with eps 1e-5, the original uses 1e-6 in block and stage norms; pbip
 *    keeps the original's eps whichever names the weights came with, so outputs differ
 *    from `transformers` by that eps (a relative effect of order 1e-6 / variance).
 *
 * PyTorch layouts are converted: convolutions OIHW -> HWIO, the depthwise filter
 * [C, 1, 3, 3] -> [3, 3, C, 1], Linear [out, in] -> [in, out]. Problems are reported
 * by the file's own names: missing, unexpected, and mis-shaped (`name: file [..] vs
 * model [..]`, both in PyTorch layout).
 */
import * as tf from "@tensorflow/tfjs";
import { readSafetensors } from "../../io/safetensors";
import type { HostTensor, NamedTensors, WeightLoadReport } from "../../io/tensors";
import { mitParamSpecs, type MiTConfig, type MiTParamKind } from "./mit-config";

/** Options of {@link loadMiTWeights}. */
export interface MiTWeightsOptions {
  /** Force a naming scheme instead of detecting it. */
  naming?: "original" | "huggingface";
}

/** Name prefixes that are not part of the encoder and are skipped silently. */
export const MIT_IGNORED_PREFIXES = ["head.", "decode_head.", "auxiliary_head.", "classifier.", "segformer.classifier."];

/** The kind of a parameter from its original name (decides its layout conversion). */
function kindOf(name: string): MiTParamKind {
  if (/^(patch_embed\d\.proj|block\d\.\d+\.attn\.sr)\.weight$/.test(name)) return "conv";
  if (/\.mlp\.dwconv\.dwconv\.weight$/.test(name)) return "dwconv";
  if (/(^|\.)norm\d?\.weight$/.test(name)) return "normWeight";
  if (/(^|\.)norm\d?\.bias$/.test(name)) return "normBias";
  if (name.endsWith(".bias")) return "bias";
  return "linear";
}

/** PyTorch shape of a parameter from its TF.js shape. */
function pytorchShape(kind: MiTParamKind, tfShape: number[]): number[] {
  switch (kind) {
    case "conv": {
      const [kh, kw, ci, co] = tfShape as [number, number, number, number];
      return [co, ci, kh, kw];
    }
    case "dwconv": {
      const [kh, kw, c] = tfShape as [number, number, number, number];
      return [c, 1, kh, kw];
    }
    case "linear":
      return [tfShape[1]!, tfShape[0]!];
    default:
      return [...tfShape];
  }
}

/** The PyTorch shape of every parameter of a configuration, by original name. */
export function expectedPyTorchShapes(cfg: MiTConfig): Map<string, number[]> {
  return new Map(mitParamSpecs(cfg).map((s) => [s.name, pytorchShape(s.kind, s.shape)]));
}

/** Convert a PyTorch-layout host tensor to the TF.js layout of the named parameter. */
export function fromPyTorchLayout(name: string, t: HostTensor): tf.Tensor {
  const kind = kindOf(name);
  return tf.tidy(() => {
    const x = tf.tensor(t.data, t.shape, "float32");
    switch (kind) {
      case "conv":
        return tf.transpose(x, [2, 3, 1, 0]); // [O, I, kh, kw] -> [kh, kw, I, O]
      case "dwconv":
        return tf.transpose(x, [2, 3, 0, 1]); // [C, 1, kh, kw] -> [kh, kw, C, 1]
      case "linear":
        return tf.transpose(x); // [out, in] -> [in, out]
      default:
        return x;
    }
  });
}

/** The inverse of {@link fromPyTorchLayout} for a variable in TF.js layout. */
export function toPyTorchLayout(name: string, v: tf.Tensor): tf.Tensor {
  switch (kindOf(name)) {
    case "conv":
      return tf.transpose(v, [3, 2, 0, 1]);
    case "dwconv":
      return tf.transpose(v, [2, 3, 0, 1]);
    case "linear":
      return tf.transpose(v);
    default:
      return tf.clone(v);
  }
}

/** Map one Hugging Face Segformer name to the original name (k/v map to the kv name); null if not an encoder name. */
export function hfToOriginalName(hf: string): { name: string; part?: "k" | "v" } | null {
  const n = hf.replace(/^segformer\./, "");
  let m = /^encoder\.patch_embeddings\.(\d+)\.(proj|layer_norm)\.(weight|bias)$/.exec(n);
  if (m) return { name: `patch_embed${Number(m[1]) + 1}.${m[2] === "proj" ? "proj" : "norm"}.${m[3]}` };
  m = /^encoder\.layer_norm\.(\d+)\.(weight|bias)$/.exec(n);
  if (m) return { name: `norm${Number(m[1]) + 1}.${m[2]}` };
  m = /^encoder\.block\.(\d+)\.(\d+)\.(.+)\.(weight|bias)$/.exec(n);
  if (!m) return null;
  const pre = `block${Number(m[1]) + 1}.${m[2]}.`;
  const mid = m[3]!;
  const wb = m[4]!;
  const table: Record<string, string> = {
    layer_norm_1: "norm1",
    layer_norm_2: "norm2",
    "attention.self.query": "attn.q",
    "attention.self.sr": "attn.sr",
    "attention.self.layer_norm": "attn.norm",
    "attention.output.dense": "attn.proj",
    "mlp.dense1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.dense2": "mlp.fc2",
  };
  if (mid === "attention.self.key") return { name: `${pre}attn.kv.${wb}`, part: "k" };
  if (mid === "attention.self.value") return { name: `${pre}attn.kv.${wb}`, part: "v" };
  const o = table[mid];
  return o ? { name: `${pre}${o}.${wb}` } : null;
}

/** The Hugging Face name(s) of an original parameter name (two for kv: key, value). */
export function originalToHfNames(name: string, prefix = "segformer."): string[] {
  let m = /^patch_embed(\d)\.(proj|norm)\.(weight|bias)$/.exec(name);
  if (m) return [`${prefix}encoder.patch_embeddings.${Number(m[1]) - 1}.${m[2] === "proj" ? "proj" : "layer_norm"}.${m[3]}`];
  m = /^norm(\d)\.(weight|bias)$/.exec(name);
  if (m) return [`${prefix}encoder.layer_norm.${Number(m[1]) - 1}.${m[2]}`];
  m = /^block(\d)\.(\d+)\.(.+)\.(weight|bias)$/.exec(name);
  if (!m) return [name];
  const pre = `${prefix}encoder.block.${Number(m[1]) - 1}.${m[2]}.`;
  const table: Record<string, string> = {
    norm1: "layer_norm_1",
    norm2: "layer_norm_2",
    "attn.q": "attention.self.query",
    "attn.sr": "attention.self.sr",
    "attn.norm": "attention.self.layer_norm",
    "attn.proj": "attention.output.dense",
    "mlp.fc1": "mlp.dense1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.fc2": "mlp.dense2",
  };
  if (m[3] === "attn.kv") return [`${pre}attention.self.key.${m[4]}`, `${pre}attention.self.value.${m[4]}`];
  return [`${pre}${table[m[3]!] ?? m[3]}.${m[4]}`];
}

const HF_PATTERN = /^(segformer\.)?encoder\.(patch_embeddings|block|layer_norm)\./;

/** Which naming scheme a file's tensor names use. */
export function detectMiTNaming(names: Iterable<string>): "original" | "huggingface" {
  for (const n of names) if (HF_PATTERN.test(n)) return "huggingface";
  return "original";
}

interface Candidate {
  /** The file's name(s) for this parameter (two for HF kv). */
  fileNames: string[];
  tensor: HostTensor;
}

const shapeStr = (s: readonly number[]) => `[${s.join(", ")}]`;

/**
 * Match a file's tensors against a MiT's variables and assign the ones that fit.
 * `source` is a `.safetensors` path or tensors already read (PyTorch layouts).
 * Returns what was loaded, missing, unexpected and mis-shaped, by the file's names.
 */
export function loadMiTWeights(
  vars: Map<string, tf.Variable>,
  cfg: MiTConfig,
  source: string | NamedTensors,
  options: MiTWeightsOptions = {},
): WeightLoadReport {
  const tensors = typeof source === "string" ? readSafetensors(source) : source;
  const naming = options.naming ?? detectMiTNaming(tensors.keys());
  const expected = expectedPyTorchShapes(cfg);
  const report: WeightLoadReport = { loaded: [], missing: [], unexpected: [], misshaped: [] };
  const found = new Map<string, Candidate>();
  const kvParts = new Map<string, { k?: [string, HostTensor]; v?: [string, HostTensor] }>();
  let hfPrefix = "segformer.";

  for (const [fileName, t] of tensors) {
    const bare = fileName.replace(/^(module\.)?(backbone\.)?/, "");
    if (MIT_IGNORED_PREFIXES.some((p) => bare.startsWith(p))) continue;
    if (naming === "huggingface") {
      const r = hfToOriginalName(fileName);
      if (!r || !expected.has(r.name)) {
        report.unexpected.push(fileName);
        continue;
      }
      hfPrefix = fileName.startsWith("segformer.") ? "segformer." : "";
      if (r.part) {
        const e = kvParts.get(r.name) ?? {};
        e[r.part] = [fileName, t];
        kvParts.set(r.name, e);
      } else {
        found.set(r.name, { fileNames: [fileName], tensor: t });
      }
    } else {
      if (!expected.has(bare)) {
        report.unexpected.push(fileName);
        continue;
      }
      found.set(bare, { fileNames: [fileName], tensor: t });
    }
  }

  // Hugging Face key + value -> the original kv ([2C, C] weight, [2C] bias).
  for (const [name, { k, v }] of kvParts) {
    if (!k || !v) {
      for (const hf of originalToHfNames(name, hfPrefix)) {
        if (!(k && k[0] === hf) && !(v && v[0] === hf)) report.missing.push(hf);
      }
      continue;
    }
    const [kName, kt] = k;
    const [vName, vt] = v;
    if (shapeStr(kt.shape) !== shapeStr(vt.shape)) {
      report.misshaped.push(`${vName}: file ${shapeStr(vt.shape)} vs key ${shapeStr(kt.shape)}`);
      continue;
    }
    const data = new Float32Array(kt.data.length + vt.data.length);
    data.set(kt.data, 0);
    data.set(vt.data, kt.data.length);
    found.set(name, { fileNames: [kName, vName], tensor: { dtype: "float32", shape: [kt.shape[0]! * 2, ...kt.shape.slice(1)], data } });
  }

  const fileNamesOf = (name: string) => (naming === "huggingface" ? originalToHfNames(name, hfPrefix) : [name]);
  for (const [name, shape] of expected) {
    const c = found.get(name);
    if (!c) {
      if (!kvParts.has(name)) report.missing.push(...fileNamesOf(name));
      continue;
    }
    const label = c.fileNames.join(" + ");
    if (shapeStr(c.tensor.shape) !== shapeStr(shape)) {
      report.misshaped.push(`${label}: file ${shapeStr(c.tensor.shape)} vs model ${shapeStr(shape)}`);
      continue;
    }
    const variable = vars.get(name);
    if (!variable) throw new Error(`internal: MiT has no variable ${name}`);
    tf.tidy(() => variable.assign(fromPyTorchLayout(name, c.tensor)));
    report.loaded.push(...c.fileNames);
  }
  return report;
}
