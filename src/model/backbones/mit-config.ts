/**
 * Configurations of the SegFormer Mix Transformer (MiT) and the list of its
 * parameters under the original SegFormer names; shared by the model (./mit.ts) and
 * the weight loader (./mit-weights.ts).
 */
import type { BackboneOptions } from "./types";

/** The MiT variants pbip builds by name. */
export type MiTName = "mit-b0" | "mit-b1" | "mit-b2";

/** Four per-stage values (stage 1 to stage 4). */
export type Four = [number, number, number, number];

/** Architecture of a Mix Transformer (the original's constructor arguments). */
export interface MiTConfig {
  /** Channels C_i of the four stages (`embed_dims`). */
  embedDims: Four;
  /** Attention heads per stage (`num_heads`); C_i must be divisible by it. */
  numHeads: Four;
  /** Blocks per stage (`depths`). */
  depths: Four;
  /** Spatial-reduction ratio of the keys/values per stage (`sr_ratios`). */
  srRatios: Four;
  /** Mix-FFN hidden width as a multiple of C_i (`mlp_ratios`). */
  mlpRatios: Four;
  /** Patch-embedding kernel sizes (7, 3, 3, 3 in the original); padding is k // 2. */
  patchSizes: Four;
  /** Patch-embedding strides: stem, then one per later stage. Release [4, 2, 2, 1]; original SegFormer [4, 2, 2, 2]. */
  strides: Four;
  /** Bias in the q and kv Linears (`qkv_bias`; true for b0-b5). */
  qkvBias: boolean;
  /** Final stochastic-depth rate (`drop_path_rate`); the release uses 0.1. */
  dropPathRate: number;
  /** LayerNorm eps of block norms and stage norms (`partial(nn.LayerNorm, eps=1e-6)`). */
  blockEps: number;
  /** LayerNorm eps of the patch embeddings and the attention's `norm` (PyTorch default 1e-5). */
  defaultEps: number;
}

const BASE: Omit<MiTConfig, "embedDims" | "depths"> = {
  numHeads: [1, 2, 5, 8],
  srRatios: [8, 4, 2, 1],
  mlpRatios: [4, 4, 4, 4],
  patchSizes: [7, 3, 3, 3],
  strides: [4, 2, 2, 1],
  qkvBias: true,
  dropPathRate: 0.1,
  blockEps: 1e-6,
  defaultEps: 1e-5,
};

/**
 * MiT-b0/b1/b2 as in the original `mit_b0`..`mit_b2` classes, with the PBIP release's
 * strides [4, 2, 2, 1] (stage 4 keeps 1/16) and drop-path 0.1.
 */
export const MIT_CONFIGS: Readonly<Record<MiTName, Readonly<MiTConfig>>> = {
  "mit-b0": { ...BASE, embedDims: [32, 64, 160, 256], depths: [2, 2, 2, 2] },
  "mit-b1": { ...BASE, embedDims: [64, 128, 320, 512], depths: [2, 2, 2, 2] },
  "mit-b2": { ...BASE, embedDims: [64, 128, 320, 512], depths: [3, 4, 6, 3] },
};

/** ImageNet mean/std on the [0, 1] scale (RGB), the normalisation of the SegFormer ImageNet checkpoints. */
export const IMAGENET_NORMALIZATION = { mean: [0.485, 0.456, 0.406] as [number, number, number], std: [0.229, 0.224, 0.225] as [number, number, number] };

/** Options of the MiT builders: the common backbone options plus an optional custom architecture. */
export interface MiTOptions extends BackboneOptions {
  /** Architecture overrides on top of the named configuration (tests use small ones). */
  config?: Partial<MiTConfig>;
}

/** `torch.linspace(0, rate, n)`: the per-block stochastic depth rates. */
export function dropPathRates(rate: number, n: number): number[] {
  if (n <= 1) return n === 1 ? [0] : [];
  return Array.from({ length: n }, (_, i) => (rate * i) / (n - 1));
}

/** Where each variable's PyTorch counterpart comes from; used for init and layout conversion. */
export type MiTParamKind = "conv" | "dwconv" | "linear" | "bias" | "normWeight" | "normBias";

/** One parameter of the model: original name, TF.js shape, and kind. */
export interface MiTParamSpec {
  name: string;
  shape: number[];
  kind: MiTParamKind;
}

/** Every parameter of a MiT of this configuration, in the original's order and TF.js layout. */
export function mitParamSpecs(cfg: MiTConfig): MiTParamSpec[] {
  const specs: MiTParamSpec[] = [];
  const add = (name: string, shape: number[], kind: MiTParamKind) => specs.push({ name, shape, kind });
  const norm = (p: string, c: number) => {
    add(`${p}.weight`, [c], "normWeight");
    add(`${p}.bias`, [c], "normBias");
  };
  const linear = (p: string, cin: number, cout: number, bias = true) => {
    add(`${p}.weight`, [cin, cout], "linear");
    if (bias) add(`${p}.bias`, [cout], "bias");
  };
  let cin = 3;
  for (let s = 0; s < 4; s++) {
    const c = cfg.embedDims[s]!;
    const i = s + 1;
    const k = cfg.patchSizes[s]!;
    add(`patch_embed${i}.proj.weight`, [k, k, cin, c], "conv");
    add(`patch_embed${i}.proj.bias`, [c], "bias");
    norm(`patch_embed${i}.norm`, c);
    const hidden = Math.trunc(c * cfg.mlpRatios[s]!);
    const sr = cfg.srRatios[s]!;
    for (let j = 0; j < cfg.depths[s]!; j++) {
      const p = `block${i}.${j}`;
      norm(`${p}.norm1`, c);
      linear(`${p}.attn.q`, c, c, cfg.qkvBias);
      linear(`${p}.attn.kv`, c, 2 * c, cfg.qkvBias);
      linear(`${p}.attn.proj`, c, c);
      if (sr > 1) {
        add(`${p}.attn.sr.weight`, [sr, sr, c, c], "conv");
        add(`${p}.attn.sr.bias`, [c], "bias");
        norm(`${p}.attn.norm`, c);
      }
      norm(`${p}.norm2`, c);
      linear(`${p}.mlp.fc1`, c, hidden);
      add(`${p}.mlp.dwconv.dwconv.weight`, [3, 3, hidden, 1], "dwconv");
      add(`${p}.mlp.dwconv.dwconv.bias`, [hidden], "bias");
      linear(`${p}.mlp.fc2`, hidden, c);
    }
    norm(`norm${i}`, c);
    cin = c;
  }
  return specs;
}

/** Validate a configuration; throws naming the offending field. */
export function validateMiTConfig(cfg: MiTConfig): void {
  const four = (k: keyof MiTConfig) => {
    const v = cfg[k] as unknown;
    if (!Array.isArray(v) || v.length !== 4 || !v.every((n) => Number.isFinite(n) && n > 0)) {
      throw new Error(`MiT config: ${k} must be four positive numbers, got ${JSON.stringify(v)}`);
    }
  };
  (["embedDims", "numHeads", "depths", "srRatios", "mlpRatios", "patchSizes", "strides"] as const).forEach(four);
  for (let s = 0; s < 4; s++) {
    if (cfg.embedDims[s]! % cfg.numHeads[s]! !== 0) {
      throw new Error(`MiT config: stage ${s + 1} has ${cfg.embedDims[s]} channels, not divisible by ${cfg.numHeads[s]} heads`);
    }
    if (!Number.isInteger(cfg.strides[s]) || !Number.isInteger(cfg.depths[s]) || !Number.isInteger(cfg.srRatios[s])) {
      throw new Error(`MiT config: strides, depths and srRatios must be integers (stage ${s + 1})`);
    }
  }
  if (!(cfg.dropPathRate >= 0 && cfg.dropPathRate < 1)) throw new Error(`MiT config: dropPathRate ${cfg.dropPathRate} must be in [0, 1)`);
}

/** Resolve a MiT name plus options to a configuration (strides and drop-path from the options). */
export function resolveMiTConfig(name: MiTName, options: MiTOptions = {}): MiTConfig {
  const base = MIT_CONFIGS[name];
  if (!base) throw new Error(`unknown MiT variant "${name}"; use one of ${Object.keys(MIT_CONFIGS).join(", ")}`);
  const cfg: MiTConfig = { ...base, ...options.config };
  if (options.strides) cfg.strides = [...options.strides];
  if (options.dropPathRate !== undefined) cfg.dropPathRate = options.dropPathRate;
  return cfg;
}
