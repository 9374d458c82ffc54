/**
 * Swin Transformer (Liu et al. 2021) in TensorFlow.js, as Hugging Face's
 * `SwinModel`, with the 768-to-512 projection the authors' release puts on top:
 * the frozen image encoder phi of PBIP (the paper's "MedCLIP", METHOD.md section 6).
 *
 * Architecture (Swin-T = `microsoft/swin-tiny-patch4-window7-224`): a 4x4 stride-4
 * patch embedding and LayerNorm; four stages of depths [2, 2, 6, 2] with [3, 6, 12, 24]
 * heads at 96, 192, 384, 768 channels; each block is pre-norm window attention
 * (7x7 windows; odd blocks shift by 3 with the attention mask; a relative position
 * bias table per block; q, k, v with bias) then an MLP (ratio 4, exact erf GELU);
 * 2x2 patch merging between stages (the four neighbours concatenated in Hugging
 * Face's order (0,0), (1,0), (0,1), (1,1), LayerNorm, Linear 4C -> 2C without bias);
 * a final LayerNorm and the average over tokens (768-d); then `projection`
 * Linear(768, 512) without bias.
 *
 * Input sizes: any H, W whose last stage is at least one window (H, W >= 193 px for
 * Swin-T). As in `transformers`, the image is zero-padded to a multiple of the patch
 * size, feature maps are zero-padded to a multiple of the window (after the block's
 * first LayerNorm), odd maps are padded before merging, and a stage whose map is no
 * larger than the window attends over the whole map without shifting. The encoder
 * itself always resizes to its preprocessing size (224).
 *
 * Speed: the weights are frozen constants, so the per-block bias tables (gathered
 * with the relative position index) and shift masks are precomputed once per
 * resolution, and every block is one `tf.customGrad` op whose hand-written backward
 * computes input gradients only, with 2-D matrix products in the layout the WASM
 * backend runs on XNNPACK (no transposed operands). On the WASM backend pbip's
 * generated SIMD kernels (src/runtime/wasm-transformer.ts) replace what the backend does slowly:
 * the per-window attention products (14x faster than its batched matMul), the
 * window partition with cyclic shift and padding as one row gather (instead of
 * pad, roll by slice/concat and 6-D transposes), exact-erf GELU with its
 * gradient in one pass, and the attention softmax's gradient. Other backends (CPU, WebGPU) run the same maths with
 * ordinary ops; tests compare them. Memory: `fast` keeps q, k, v, the attention
 * probabilities, the MLP pre-activations and the normalised activations for the
 * backward pass, `lean` recomputes the probabilities and pre-activations (the
 * whole encoder under a tape then holds 32 MiB per 224 px image on WASM: `npx tsx
 * bench/swin-speed.ts --memory lean`). Patch embedding and merging are one op each
 * too: as separate ops under a tape, each reshape kept a copy of its input for its
 * gradient (7 MiB more per image).
 */
import * as tf from "@tensorflow/tfjs";
import type { EncoderIdentity, EncoderOutput, ImageEncoder, Preprocessing } from "./types";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { preprocessForEncoder } from "./preprocess";
import { readEncoderSidecar, sidecarPathFor, sidecarPreprocessing } from "./onnx";
import { gatherRows, geluGradWasm, geluWasm, layerNormGradWasm, layerNormWasm, linearMatMul, softmaxGradWasm, transformerKernelsAvailable, windowMatMul } from "../runtime/wasm-transformer";
import {
  PROJECTION_KEY,
  SWIN_T_CONFIG,
  randomProjection,
  randomSwinWeights,
  readSwinProjection,
  readSwinWeights,
  relativePositionIndex,
  swinNumFeatures,
  swinParameterSpecs,
  type SwinConfig,
} from "./swin-weights";
import type { HostTensor, NamedTensors, WeightLoadReport } from "../io/tensors";

export {
  PROJECTION_KEY,
  SWIN_T_CONFIG,
  randomProjection,
  randomSwinWeights,
  readSwinProjection,
  readSwinWeights,
  relativePositionIndex,
  swinNumFeatures,
  swinParameterSpecs,
} from "./swin-weights";
export type { ParamSpec, SwinConfig, SwinHostWeights } from "./swin-weights";
import { assertCleanLoad } from "../io/tensors";
import { FileError, UsageError } from "../util/errors";

// ------------------------------------------------------------------ parameters

/** A linear layer with both layouts kept: `wT` [in, out] for the forward pass, `w` [out, in] for input gradients. */
interface Linear {
  wT: tf.Tensor2D;
  w: tf.Tensor2D;
  b?: tf.Tensor1D;
}

interface Norm {
  g: tf.Tensor1D;
  b: tf.Tensor1D;
  eps: number;
}

interface Block {
  dim: number;
  heads: number;
  ln1: Norm;
  /** The query weights and bias are pre-multiplied by 1/sqrt(head dim). */
  q: Linear;
  k: Linear;
  v: Linear;
  o: Linear;
  ln2: Norm;
  fc1: Linear;
  fc2: Linear;
  /** The relative position bias gathered with the index: [heads, T, T] (host). */
  bias: Float32Array;
}

interface Stage {
  blocks: Block[];
  merge?: { norm: Norm; reduction: Linear };
}

/** The TensorFlow.js parameters of a Swin backbone (frozen constants) and its optional projection. */
export interface SwinParams {
  config: SwinConfig;
  /** Patch embedding as a linear map of flattened (kh, kw, c) patches. */
  patch: Linear;
  embedNorm: Norm;
  stages: Stage[];
  finalNorm: Norm;
  /** Projection [in = 768, out = d] without bias, or undefined for the bare backbone. */
  projection?: Linear;
}

function host(t: HostTensor | undefined, name: string): HostTensor {
  if (!t) throw new Error(`Swin weights: "${name}" is missing`);
  return t;
}

function linearFrom(w: HostTensor, b: HostTensor | undefined, scale = 1): Linear {
  const [out, inp] = w.shape as [number, number];
  const data = scale === 1 ? w.data : w.data.map((v) => v * scale);
  const wt = tf.tensor2d(data, [out, inp]);
  const lin: Linear = { w: wt, wT: tf.transpose(wt) };
  if (b) lin.b = tf.tensor1d(scale === 1 ? b.data : b.data.map((v) => v * scale));
  return lin;
}

/**
 * Turn host weights (canonical Hugging Face names, PyTorch layouts) into frozen
 * TensorFlow.js tensors. `projection` ([d, F], PyTorch layout) is optional.
 */
export function buildSwinParams(config: SwinConfig, weights: NamedTensors, projection?: HostTensor): SwinParams {
  {
    const get = (n: string) => host(weights.get(n), n);
    const norm = (prefix: string, eps: number): Norm => ({ g: tf.tensor1d(get(prefix + ".weight").data), b: tf.tensor1d(get(prefix + ".bias").data), eps });
    const E = config.embedDim;
    const p = config.patchSize;
    const cin = config.inChannels;
    // [E, cin, p, p] -> [p, p, cin, E] -> [p*p*cin, E]; the backward layout is its transpose.
    const pw = get("embeddings.patch_embeddings.projection.weight");
    const pwT = tf.tidy(() => tf.reshape(tf.transpose(tf.tensor4d(pw.data, [E, cin, p, p]), [2, 3, 1, 0]), [p * p * cin, E]) as tf.Tensor2D);
    const patch: Linear = { wT: pwT, w: tf.transpose(pwT), b: tf.tensor1d(get("embeddings.patch_embeddings.projection.bias").data) };
    const eps = config.layerNormEps;
    const w = config.windowSize;
    const T = w * w;
    const index = relativePositionIndex(w);
    const stages: Stage[] = [];
    for (let i = 0; i < config.depths.length; i++) {
      const C = E * 2 ** i;
      const heads = config.numHeads[i]!;
      if (C % heads !== 0) throw new UsageError(`Swin config: stage ${i} has ${C} channels, not a multiple of ${heads} heads`);
      const scale = 1 / Math.sqrt(C / heads);
      const blocks: Block[] = [];
      for (let j = 0; j < config.depths[i]!; j++) {
        const b = `encoder.layers.${i}.blocks.${j}.`;
        const table = get(b + "attention.self.relative_position_bias_table").data;
        const bias = new Float32Array(heads * T * T);
        for (let h = 0; h < heads; h++) for (let k = 0; k < T * T; k++) bias[h * T * T + k] = table[index[k]! * heads + h]!;
        blocks.push({
          dim: C,
          heads,
          ln1: norm(b + "layernorm_before", eps),
          q: linearFrom(get(b + "attention.self.query.weight"), get(b + "attention.self.query.bias"), scale),
          k: linearFrom(get(b + "attention.self.key.weight"), get(b + "attention.self.key.bias")),
          v: linearFrom(get(b + "attention.self.value.weight"), get(b + "attention.self.value.bias")),
          o: linearFrom(get(b + "attention.output.dense.weight"), get(b + "attention.output.dense.bias")),
          ln2: norm(b + "layernorm_after", eps),
          fc1: linearFrom(get(b + "intermediate.dense.weight"), get(b + "intermediate.dense.bias")),
          fc2: linearFrom(get(b + "output.dense.weight"), get(b + "output.dense.bias")),
          bias,
        });
      }
      const stage: Stage = { blocks };
      if (i < config.depths.length - 1) {
        const d = `encoder.layers.${i}.downsample.`;
        // nn.LayerNorm(4C) in SwinPatchMerging uses the default eps 1e-5.
        stage.merge = { norm: norm(d + "norm", 1e-5), reduction: linearFrom(get(d + "reduction.weight"), undefined) };
      }
      stages.push(stage);
    }
    // SwinEmbeddings.norm is nn.LayerNorm(embed_dim) with the default eps 1e-5.
    const params: SwinParams = { config, patch, embedNorm: norm("embeddings.norm", 1e-5), stages, finalNorm: norm("layernorm", eps) };
    if (projection) params.projection = linearFrom(projection, undefined);
    return params;
  }
}

/** Every tensor held by a {@link SwinParams}. */
function paramTensors(p: SwinParams): tf.Tensor[] {
  const out: tf.Tensor[] = [];
  const lin = (l: Linear) => out.push(l.w, l.wT, ...(l.b ? [l.b] : []));
  const nrm = (n: Norm) => out.push(n.g, n.b);
  lin(p.patch);
  nrm(p.embedNorm);
  for (const s of p.stages) {
    for (const b of s.blocks) {
      nrm(b.ln1);
      nrm(b.ln2);
      [b.q, b.k, b.v, b.o, b.fc1, b.fc2].forEach(lin);
    }
    if (s.merge) {
      nrm(s.merge.norm);
      lin(s.merge.reduction);
    }
  }
  nrm(p.finalNorm);
  if (p.projection) lin(p.projection);
  return out;
}

// ------------------------------------------------------------------ primitives

/** Exact GELU, 0.5 x (1 + erf(x / sqrt 2)). */
function gelu(a: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(a, 0.5), tf.add(tf.erf(tf.mul(a, Math.SQRT1_2)), 1));
}

/** d GELU / dx = Phi(x) + x phi(x). */
function geluGrad(a: tf.Tensor): tf.Tensor {
  const cdf = tf.mul(tf.add(tf.erf(tf.mul(a, Math.SQRT1_2)), 1), 0.5);
  const pdf = tf.mul(tf.exp(tf.mul(tf.square(a), -0.5)), 1 / Math.sqrt(2 * Math.PI));
  return tf.add(cdf, tf.mul(a, pdf));
}

interface LnOut {
  y: tf.Tensor2D;
  xhat: tf.Tensor2D;
  rstd: tf.Tensor2D;
}

function lnForward(x: tf.Tensor2D, n: Norm): LnOut {
  if (x.shape[1] % 4 === 0 && transformerKernelsAvailable()) return layerNormWasm(x, n.g, n.b, n.eps);
  const mean = tf.mean(x, -1, true);
  const xc = tf.sub(x, mean);
  const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), n.eps)) as tf.Tensor2D;
  const xhat = tf.mul(xc, rstd) as tf.Tensor2D;
  return { y: tf.add(tf.mul(xhat, n.g), n.b) as tf.Tensor2D, xhat, rstd };
}

/** {@link lnForward} in its own scope: only y, xhat and rstd outlive it. */
function lnScoped(x: tf.Tensor2D, n: Norm): LnOut {
  return tf.tidy(() => ({ ...lnForward(x, n) })) as unknown as LnOut;
}

/** Input gradient of LayerNorm: rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy*xhat)). */
function lnBackward(dy: tf.Tensor2D, xhat: tf.Tensor2D, rstd: tf.Tensor2D, g: tf.Tensor1D): tf.Tensor2D {
  const d = tf.mul(dy, g);
  const m1 = tf.mean(d, -1, true);
  const m2 = tf.mean(tf.mul(d, xhat), -1, true);
  return tf.mul(tf.sub(tf.sub(d, m1), tf.mul(xhat, m2)), rstd) as tf.Tensor2D;
}

/** x @ w for [M, K] by [K, N]: pbip's threaded GEMM on WASM, else TF.js's. */
function product(x: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D {
  return transformerKernelsAvailable() ? linearMatMul(x, w) : tf.matMul(x, w);
}

function linearForward(x: tf.Tensor2D, l: Linear): tf.Tensor2D {
  if (transformerKernelsAvailable()) return linearMatMul(x, l.wT, l.b);
  const y = tf.matMul(x, l.wT);
  return (l.b ? tf.add(y, l.b) : y) as tf.Tensor2D;
}

type GradBody<T extends tf.Tensor> = (x: tf.Tensor, save: tf.GradSaveFunc) => { value: T; gradFunc: (dy: T, saved: tf.Tensor[]) => tf.Tensor };

/** One differentiable op of one input with a hand-written gradient (tf.customGrad). */
function customOp<T extends tf.Tensor>(x: tf.Tensor, body: GradBody<T>): T {
  const f = tf.customGrad(((...args: (tf.Tensor | tf.GradSaveFunc)[]) => body(args[0] as tf.Tensor, args[1] as tf.GradSaveFunc)) as unknown as Parameters<typeof tf.customGrad<T>>[0]);
  return f(x) as T;
}

/** LayerNorm over the last axis of [N, C] as one differentiable op (input gradient only). */
function layerNormOp(x: tf.Tensor2D, n: Norm): tf.Tensor2D {
  return customOp(x, (xx, save) => {
    const r = lnForward(xx as tf.Tensor2D, n);
    save([r.xhat, r.rstd]);
    return { value: r.y, gradFunc: (dy, saved) => lnBackward(dy, saved[0] as tf.Tensor2D, saved[1] as tf.Tensor2D, n.g) };
  });
}

/** LayerNorm input gradient: one WASM kernel where it applies, else {@link lnBackward}. */
function lnGrad(dy: tf.Tensor2D, xhat: tf.Tensor2D, rstd: tf.Tensor2D, n: Norm): tf.Tensor2D {
  return xhat.shape[1] % 4 === 0 && transformerKernelsAvailable() ? layerNormGradWasm(dy, xhat, rstd, n.g) : lnBackward(dy, xhat, rstd, n.g);
}

/** LayerNorm of what `f` makes, in scopes of their own: only y, xhat and rstd outlive it. */
function lnOf(f: () => tf.Tensor2D, n: Norm): LnOut {
  const x = tf.tidy(f);
  const r = lnScoped(x, n);
  x.dispose();
  return r;
}

/**
 * Patch embedding [B, H0, W0, cin] (H0, W0 multiples of the patch) -> LayerNorm(patches @ W + b)
 * [B, H, W, C]; with `diff`, one differentiable op (input gradient only). As separate ops
 * under a gradient tape, every reshape kept a copy of its input for its gradient (the
 * patches and the normalised map: 1.7 MiB per 224 px image); this keeps the LayerNorm's
 * xhat and rstd.
 */
function patchEmbedOp(x: tf.Tensor4D, p: number, patch: Linear, n: Norm, diff: boolean): tf.Tensor4D {
  const [B, H0, W0, cin] = x.shape;
  const [H, W] = [H0 / p, W0 / p];
  const forward = (t: tf.Tensor4D) => lnOf(() => linearForward(tf.reshape(tf.transpose(tf.reshape(t, [B, H, p, W, p, cin]), [0, 1, 3, 2, 4, 5]), [B * H * W, p * p * cin]) as tf.Tensor2D, patch), n);
  if (!diff) {
    const r = forward(x);
    tf.dispose([r.xhat, r.rstd]);
    return tf.reshape(r.y, [B, H, W, r.y.shape[1]]) as tf.Tensor4D;
  }
  return customOp(x, (xx, save) => {
    const r = forward(xx as tf.Tensor4D);
    save([r.xhat, r.rstd]);
    const C = r.y.shape[1];
    return {
      value: tf.reshape(r.y, [B, H, W, C]) as tf.Tensor4D,
      gradFunc: (dy, saved) => {
        const dp = product(lnGrad(tf.reshape(dy, [B * H * W, C]) as tf.Tensor2D, saved[0] as tf.Tensor2D, saved[1] as tf.Tensor2D, n), patch.w);
        return tf.reshape(tf.transpose(tf.reshape(dp, [B, H, W, p, p, cin]), [0, 1, 3, 2, 4, 5]), [B, H0, W0, cin]);
      },
    };
  });
}

/**
 * Patch merging [B, h0, w0, c0] -> [B, ceil(h0/2), ceil(w0/2), 2 c0]: the 2x2 neighbours'
 * channels concatenated (Hugging Face's order), LayerNorm, then the reduction, as one
 * differentiable op (input gradient only). As separate ops under a tape the reshapes kept
 * 2.5 maps of the input's size beyond the LayerNorm's xhat (5 MiB per 224 px image).
 */
function patchMergeOp(x: tf.Tensor4D, n: Norm, reduction: Linear, diff: boolean): tf.Tensor4D {
  const [B, h0, w0, c0] = x.shape;
  const [H, W] = [Math.ceil(h0 / 2), Math.ceil(w0 / 2)];
  const odd = h0 % 2 !== 0 || w0 % 2 !== 0;
  // [B, H, dh, W, dw, C] -> [B, H, W, dw, dh, C]: channel blocks (0,0), (1,0), (0,1), (1,1).
  const gather = (t: tf.Tensor4D) => tf.reshape(tf.transpose(tf.reshape(odd ? tf.pad(t, [[0, 0], [0, h0 % 2], [0, w0 % 2], [0, 0]]) : t, [B, H, 2, W, 2, c0]), [0, 1, 3, 4, 2, 5]), [B * H * W, 4 * c0]) as tf.Tensor2D;
  const forward = (t: tf.Tensor4D) => {
    const r = lnOf(() => gather(t), n);
    const y = tf.reshape(tf.tidy(() => linearForward(r.y, reduction)), [B, H, W, -1]) as tf.Tensor4D;
    r.y.dispose();
    return { y, xhat: r.xhat, rstd: r.rstd };
  };
  if (!diff) {
    const r = forward(x);
    tf.dispose([r.xhat, r.rstd]);
    return r.y;
  }
  return customOp(x, (xx, save) => {
    const r = forward(xx as tf.Tensor4D);
    save([r.xhat, r.rstd]);
    return {
      value: r.y,
      gradFunc: (dy, saved) => {
        const C = dy.shape[3]!;
        const dm = lnGrad(product(tf.reshape(dy, [B * H * W, C]) as tf.Tensor2D, reduction.w), saved[0] as tf.Tensor2D, saved[1] as tf.Tensor2D, n);
        // Inverse of the gather's permutation [0, 1, 3, 4, 2, 5] is [0, 1, 4, 2, 3, 5].
        const dt = tf.reshape(tf.transpose(tf.reshape(dm, [B, H, W, 2, 2, c0]), [0, 1, 4, 2, 3, 5]), [B, 2 * H, 2 * W, c0]) as tf.Tensor4D;
        return odd ? tf.slice(dt, [0, 0, 0, 0], [B, h0, w0, c0]) : dt;
      },
    };
  });
}

/** x @ W^T + b on [N, in] as one differentiable op; the input gradient dy @ W uses the stored [out, in] layout. */
function linearOp(x: tf.Tensor2D, l: Linear): tf.Tensor2D {
  return customOp(x, (xx) => ({ value: linearForward(xx as tf.Tensor2D, l), gradFunc: (dy) => product(dy, l.w) }));
}

/** Cyclic shift of a [B, H, W, C] map by (s, s): out[i, j] = in[(i - s) mod H, (j - s) mod W] (torch.roll). */
function roll2(x: tf.Tensor4D, s: number): tf.Tensor4D {
  const [, H, W] = x.shape;
  const r = (t: tf.Tensor4D, axis: 1 | 2, L: number): tf.Tensor4D => {
    const k = ((s % L) + L) % L;
    if (k === 0) return t;
    const [a, b] = tf.split(t, [L - k, k], axis);
    return tf.concat([b!, a!], axis) as tf.Tensor4D;
  };
  return r(r(x, 1, H), 2, W);
}

/** Window geometry of one block at one resolution (Hugging Face's `set_shift_and_window_size` and `maybe_pad`). */
interface Geometry {
  B: number;
  H: number;
  W: number;
  C: number;
  ws: number;
  shift: number;
  Hp: number;
  Wp: number;
  nWh: number;
  nWw: number;
  /** Tokens per window. */
  T: number;
  /**
   * On the WASM backend, per image: window-order row -> natural row (-1 for padding),
   * and natural row -> window-order row, as int32 tensors (the partition as one row gather).
   */
  perm?: { toWin: tf.Tensor1D; fromWin: tf.Tensor1D };
}

function geometry(B: number, H: number, W: number, C: number, window: number, odd: boolean, where: string): Geometry {
  let ws = window;
  let shift = odd ? Math.floor(window / 2) : 0;
  if (Math.min(H, W) <= window) {
    ws = Math.min(H, W);
    shift = 0;
  }
  if (ws !== window) {
    throw new UsageError(
      `Swin: ${where} works on a ${H}x${W} map, smaller than the ${window}x${window} attention window (the bias tables fit ${window}x${window} windows only); use a larger input (at least ${32 * window - 31} px for a 4-stage, patch-4 Swin)`,
    );
  }
  const Hp = Math.ceil(H / ws) * ws;
  const Wp = Math.ceil(W / ws) * ws;
  return { B, H, W, C, ws, shift, Hp, Wp, nWh: Hp / ws, nWw: Wp / ws, T: ws * ws };
}

/** The window partition of one image of a geometry as row indices (see {@link Geometry.perm}). */
function windowPermutation(g: Geometry): { toWin: Int32Array; fromWin: Int32Array } {
  const { H, W, ws, shift, Hp, Wp, nWh, nWw, T } = g;
  const toWin = new Int32Array(nWh * nWw * T);
  const fromWin = new Int32Array(H * W);
  let r = 0;
  for (let wy = 0; wy < nWh; wy++) {
    for (let wx = 0; wx < nWw; wx++) {
      for (let t = 0; t < T; t++, r++) {
        const y = (wy * ws + Math.floor(t / ws) + shift) % Hp;
        const x = (wx * ws + (t % ws) + shift) % Wp;
        if (y < H && x < W) {
          toWin[r] = y * W + x;
          fromWin[y * W + x] = r;
        } else toWin[r] = -1;
      }
    }
  }
  return { toWin, fromWin };
}

/** [B, H, W, C] natural order -> [B * nW * T, C] window order (pad, cyclic shift by -shift, partition). */
function toWindows(x: tf.Tensor4D, g: Geometry): tf.Tensor2D {
  if (g.perm) return gatherRows(tf.reshape(x, [-1, g.C]) as tf.Tensor2D, g.perm.toWin, g.B);
  let t = x;
  if (g.Hp !== g.H || g.Wp !== g.W) t = tf.pad(t, [[0, 0], [0, g.Hp - g.H], [0, g.Wp - g.W], [0, 0]]);
  if (g.shift) t = roll2(t, -g.shift);
  const r = tf.reshape(t, [g.B, g.nWh, g.ws, g.nWw, g.ws, g.C]);
  return tf.reshape(tf.transpose(r, [0, 1, 3, 2, 4, 5]), [-1, g.C]) as tf.Tensor2D;
}

/** The inverse (and adjoint) of {@link toWindows}: window order -> [B, H, W, C] (reverse, shift back, crop). */
function fromWindows(w: tf.Tensor2D, g: Geometry): tf.Tensor4D {
  if (g.perm) return tf.reshape(gatherRows(w, g.perm.fromWin, g.B), [g.B, g.H, g.W, g.C]) as tf.Tensor4D;
  const r = tf.reshape(w, [g.B, g.nWh, g.nWw, g.ws, g.ws, g.C]);
  let t = tf.reshape(tf.transpose(r, [0, 1, 3, 2, 4, 5]), [g.B, g.Hp, g.Wp, g.C]) as tf.Tensor4D;
  if (g.shift) t = roll2(t, g.shift);
  if (g.Hp !== g.H || g.Wp !== g.W) t = tf.slice(t, [0, 0, 0, 0], [g.B, g.H, g.W, g.C]);
  return t;
}

/**
 * The additive attention term of a block at one geometry: relative position bias
 * [heads, T, T], plus (shifted blocks) the -100 mask between tokens that come from
 * different regions of the cyclically shifted map, as Hugging Face's `get_attn_mask`
 * on the padded map. Shape [nW or 1, heads, T, T] (host).
 */
function biasAndMask(bias: Float32Array, heads: number, g: Geometry): { data: Float32Array; shape: [number, number, number, number] } {
  const T = g.T;
  if (!g.shift) return { data: bias, shape: [1, heads, T, T] };
  const region = new Int32Array(g.Hp * g.Wp);
  const bands = (L: number) => (i: number) => (i < L - g.ws ? 0 : i < L - g.shift ? 1 : 2);
  const bh = bands(g.Hp);
  const bw = bands(g.Wp);
  for (let y = 0; y < g.Hp; y++) for (let x = 0; x < g.Wp; x++) region[y * g.Wp + x] = bh(y) * 3 + bw(x);
  const nW = g.nWh * g.nWw;
  const out = new Float32Array(nW * heads * T * T);
  const ids = new Int32Array(T);
  for (let wy = 0; wy < g.nWh; wy++) {
    for (let wx = 0; wx < g.nWw; wx++) {
      const win = wy * g.nWw + wx;
      for (let t = 0; t < T; t++) ids[t] = region[(wy * g.ws + Math.floor(t / g.ws)) * g.Wp + wx * g.ws + (t % g.ws)]!;
      for (let h = 0; h < heads; h++) {
        const base = (win * heads + h) * T * T;
        for (let i = 0; i < T; i++) {
          for (let j = 0; j < T; j++) out[base + i * T + j] = bias[h * T * T + i * T + j]! + (ids[i] === ids[j] ? 0 : -100);
        }
      }
    }
  }
  return { data: out, shape: [nW, heads, T, T] };
}

// ------------------------------------------------------------------ the block

/** Tensors a block's backward pass needs. */
interface BlockSaved {
  xhat1: tf.Tensor2D;
  rstd1: tf.Tensor2D;
  q: tf.Tensor4D;
  k: tf.Tensor4D;
  v: tf.Tensor4D;
  /** Attention probabilities; recomputed from q, k in the backward pass when absent (lean memory). */
  p?: tf.Tensor4D;
  xhat2: tf.Tensor2D;
  rstd2: tf.Tensor2D;
  /** MLP pre-activation; recomputed from xhat2 when absent (lean memory). */
  a?: tf.Tensor2D;
}

/**
 * What a block keeps for its backward pass. `fast` keeps everything; `lean` recomputes
 * the attention probabilities and the MLP pre-activation in the backward pass (one
 * more fc1 product and softmax per block, roughly 10 % more time, and about half the
 * memory).
 */
export type SwinMemoryMode = "fast" | "lean";

/** [M, C] -> [M / T, heads, T, hd]. */
function splitHeads(x: tf.Tensor2D, T: number, heads: number): tf.Tensor4D {
  const [M, C] = x.shape;
  return tf.transpose(tf.reshape(x, [M / T, T, heads, C / heads]), [0, 2, 1, 3]) as tf.Tensor4D;
}

/** [M / T, heads, T, hd] -> [M, C]. */
function mergeHeads(x: tf.Tensor4D): tf.Tensor2D {
  const [n, heads, T, hd] = x.shape;
  return tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [n * T, heads * hd]) as tf.Tensor2D;
}

/** softmax(q k^T + bias + mask) per window and head: [nWin, heads, T, T]. */
function attentionProbs(q: tf.Tensor4D, k: tf.Tensor4D, biasMask: tf.Tensor4D, fast: boolean): tf.Tensor4D {
  const [nWin, heads, T] = q.shape;
  const nWm = biasMask.shape[0];
  const qk = fast ? windowMatMul(q, tf.transpose(k, [0, 1, 3, 2])) : tf.matMul(q, k, false, true);
  const s = tf.add(tf.reshape(qk, [nWin / nWm, nWm, heads, T, T]), biasMask);
  return tf.reshape(tf.softmax(s), [nWin, heads, T, T]) as tf.Tensor4D;
}

/**
 * One Swin block (Hugging Face `SwinLayer`) forward on [B, H, W, C]. With `saved`, puts
 * the tensors named in `keep` there for the backward pass.
 *
 * Each intermediate is freed as soon as the next one exists (scoped `tf.tidy` plus
 * explicit disposal): the enclosing scope would otherwise hold every one of them until
 * the block ends, which made a block's transient memory several times what it keeps.
 */
function blockForward(x: tf.Tensor4D, blk: Block, g: Geometry, biasMask: tf.Tensor4D, saved?: Partial<BlockSaved>, keep: ReadonlySet<keyof BlockSaved> = new Set()): tf.Tensor4D {
  const { B, H, W, C, T } = g;
  const N = B * H * W;
  const fast = g.perm !== undefined;
  const kept = (k: keyof BlockSaved) => saved !== undefined && keep.has(k);
  const x2 = tf.reshape(x, [N, C]) as tf.Tensor2D;
  const ln1 = lnScoped(x2, blk.ln1);
  if (!kept("xhat1")) tf.dispose([ln1.xhat, ln1.rstd]);
  const hw = tf.tidy(() => toWindows(tf.reshape(ln1.y, [B, H, W, C]) as tf.Tensor4D, g));
  ln1.y.dispose();
  const [q, k, v] = [blk.q, blk.k, blk.v].map((l) => tf.tidy(() => splitHeads(linearForward(hw, l), T, blk.heads))) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
  hw.dispose();
  const p = tf.tidy(() => attentionProbs(q, k, biasMask, fast));
  if (!kept("q")) tf.dispose([q, k]);
  const ctx = tf.tidy(() => mergeHeads((fast ? windowMatMul(p, v) : tf.matMul(p, v)) as tf.Tensor4D));
  if (!kept("v")) v.dispose();
  if (!kept("p")) p.dispose();
  const o = tf.tidy(() => tf.reshape(fromWindows(linearForward(ctx, blk.o), g), [N, C]));
  ctx.dispose();
  const x1 = tf.add(x2, o) as tf.Tensor2D;
  o.dispose();
  const ln2 = lnScoped(x1, blk.ln2);
  if (!kept("xhat2")) tf.dispose([ln2.xhat, ln2.rstd]);
  const a = tf.tidy(() => linearForward(ln2.y, blk.fc1));
  ln2.y.dispose();
  const ga = (fast ? geluWasm(a) : gelu(a)) as tf.Tensor2D;
  if (!kept("a")) a.dispose();
  const mlp = tf.tidy(() => linearForward(ga, blk.fc2));
  ga.dispose();
  const y = tf.add(x1, mlp);
  tf.dispose([x1, mlp]);
  if (saved) {
    const all: BlockSaved = { xhat1: ln1.xhat, rstd1: ln1.rstd, q, k, v, p, xhat2: ln2.xhat, rstd2: ln2.rstd, a };
    for (const name of keep) (saved as Record<string, tf.Tensor>)[name] = all[name]!;
  }
  return tf.reshape(y, [B, H, W, C]) as tf.Tensor4D;
}

/** Input gradient of {@link blockForward}; frees each intermediate as soon as it has been used (never the saved tensors). */
function blockBackward(dy: tf.Tensor4D, blk: Block, g: Geometry, biasMask: tf.Tensor4D, s: BlockSaved): tf.Tensor4D {
  const { B, H, W, C, T } = g;
  const N = B * H * W;
  const dy2 = tf.reshape(dy, [N, C]) as tf.Tensor2D;
  const fast = g.perm !== undefined;
  // MLP branch.
  const a = s.a ?? tf.tidy(() => linearForward(tf.add(tf.mul(s.xhat2, blk.ln2.g), blk.ln2.b) as tf.Tensor2D, blk.fc1));
  const dg = product(dy2, blk.fc2.w);
  const da = tf.tidy(() => (fast ? geluGradWasm(a, dg) : tf.mul(dg, geluGrad(a))) as tf.Tensor2D);
  dg.dispose();
  if (a !== s.a) a.dispose();
  const dh2 = product(da, blk.fc1.w);
  da.dispose();
  const dx1 = tf.tidy(() => (fast ? layerNormGradWasm(dh2, s.xhat2, s.rstd2, blk.ln2.g, dy2) : (tf.add(dy2, lnBackward(dh2, s.xhat2, s.rstd2, blk.ln2.g)) as tf.Tensor2D)));
  dh2.dispose();
  // Attention branch.
  const dctx = tf.tidy(() => splitHeads(product(toWindows(tf.reshape(dx1, [B, H, W, C]) as tf.Tensor4D, g), blk.o.w), T, blk.heads));
  const bmm = (a: tf.Tensor, b: tf.Tensor, ta = false) => (fast ? windowMatMul(a, b, ta) : tf.matMul(a, b, ta, false)) as tf.Tensor4D;
  const p = s.p ?? tf.tidy(() => attentionProbs(s.q, s.k, biasMask, fast));
  const dp = tf.tidy(() => bmm(dctx, tf.transpose(s.v, [0, 1, 3, 2])));
  const dvW = tf.tidy(() => product(mergeHeads(bmm(tf.transpose(p, [0, 1, 3, 2]), dctx)), blk.v.w));
  dctx.dispose();
  const ds = tf.tidy(() => (fast ? softmaxGradWasm(p, dp) : tf.mul(p, tf.sub(dp, tf.sum(tf.mul(dp, p), -1, true)))) as tf.Tensor4D);
  dp.dispose();
  if (p !== s.p) p.dispose();
  const dqW = tf.tidy(() => product(mergeHeads(bmm(ds, s.k)), blk.q.w));
  const dkW = tf.tidy(() => product(mergeHeads(bmm(tf.transpose(ds, [0, 1, 3, 2]), s.q)), blk.k.w));
  ds.dispose();
  const dh = tf.tidy(() => tf.reshape(fromWindows(tf.addN([dqW, dkW, dvW]) as tf.Tensor2D, g), [N, C]) as tf.Tensor2D);
  tf.dispose([dqW, dkW, dvW]);
  const dx = fast ? layerNormGradWasm(dh, s.xhat1, s.rstd1, blk.ln1.g, dx1) : tf.add(dx1, lnBackward(dh, s.xhat1, s.rstd1, blk.ln1.g));
  tf.dispose([dh, dx1]);
  return tf.reshape(dx, [B, H, W, C]) as tf.Tensor4D;
}

/** A block as one differentiable op (input gradient only; the saved tensors are freed as soon as the backward has used them). */
function blockOp(x: tf.Tensor4D, blk: Block, g: Geometry, biasMask: tf.Tensor4D, memory: SwinMemoryMode): tf.Tensor4D {
  const order: (keyof BlockSaved)[] = memory === "lean" ? ["xhat1", "rstd1", "q", "k", "v", "xhat2", "rstd2"] : ["xhat1", "rstd1", "q", "k", "v", "p", "xhat2", "rstd2", "a"];
  return customOp(x, (xx, save) => {
    const saved: Partial<BlockSaved> = {};
    const y = blockForward(xx as tf.Tensor4D, blk, g, biasMask, saved, new Set(order));
    save(order.map((k) => saved[k]!));
    return {
      value: y,
      gradFunc: (dy, kept) => {
        const s = Object.fromEntries(order.map((k, i) => [k, kept[i]])) as unknown as BlockSaved;
        const dx = tf.tidy(() => blockBackward(dy, blk, g, biasMask, s));
        tf.dispose(kept);
        return dx;
      },
    };
  });
}

// ------------------------------------------------------------------ the model

/** Outputs of {@link SwinModel.forward}. */
export interface SwinForwardOutput {
  /** Pooled backbone features [B, F] (Hugging Face `pooler_output`, 768-d for Swin-T). */
  pooled: tf.Tensor2D;
  /** Final-LayerNorm tokens as a map [B, h, w, F] (`last_hidden_state`), when asked for. */
  tokens?: tf.Tensor4D;
}

/**
 * A Swin backbone with frozen weights (and an optional projection). `forward` takes
 * already-normalised NHWC pixels; {@link SwinEncoder} adds the preprocessing.
 */
export class SwinModel {
  /** Per-geometry constants: bias + mask tensors and window permutations, kept until dispose. */
  private readonly masks = new Map<string, tf.Tensor>();

  constructor(readonly params: SwinParams) {}

  /** Feature size F of the backbone (768 for Swin-T). */
  get numFeatures(): number {
    return swinNumFeatures(this.params.config);
  }

  /** Attach the WASM row permutation of a geometry (cached per map size, shared by all batch sizes). */
  private withPermutation(g: Geometry): Geometry {
    if (!transformerKernelsAvailable() || g.C % 4 !== 0) return g;
    const key = `perm.${g.H}x${g.W}.${g.ws}.${g.shift}`;
    let toWin = this.masks.get(key + ".to") as tf.Tensor1D | undefined;
    let fromWin = this.masks.get(key + ".from") as tf.Tensor1D | undefined;
    if (!toWin || !fromWin) {
      const p = windowPermutation(g);
      toWin = tf.keep(tf.tensor1d(p.toWin, "int32"));
      fromWin = tf.keep(tf.tensor1d(p.fromWin, "int32"));
      this.masks.set(key + ".to", toWin);
      this.masks.set(key + ".from", fromWin);
    }
    return { ...g, perm: { toWin, fromWin } };
  }

  private biasMask(si: number, bi: number, blk: Block, g: Geometry): tf.Tensor4D {
    const key = `${si}.${bi}.${g.Hp}x${g.Wp}.${g.shift}`;
    let t = this.masks.get(key) as tf.Tensor4D | undefined;
    if (!t) {
      const { data, shape } = biasAndMask(blk.bias, blk.heads, g);
      t = tf.keep(tf.tensor4d(data, shape));
      this.masks.set(key, t);
    }
    return t;
  }

  /**
   * Backbone forward pass on normalised pixels [B, H, W, 3]. With `differentiable`
   * (default true) every block, norm and linear layer is a custom-gradient op, so the
   * call can sit inside `tf.grad`/`variableGrads`; gradients reach the input only.
   */
  forward(x: tf.Tensor4D, options: { tokens?: boolean; differentiable?: boolean; memory?: SwinMemoryMode } = {}): SwinForwardOutput {
    const diff = options.differentiable ?? true;
    const memory = options.memory ?? "fast";
    const c = this.params.config;
    return tf.tidy(() => {
      const [B, H0, W0, cin] = x.shape;
      if (cin !== c.inChannels) throw new UsageError(`Swin: input has ${cin} channels, the model takes ${c.inChannels}`);
      const p = c.patchSize;
      let t: tf.Tensor4D = x;
      const Hpad = Math.ceil(H0 / p) * p;
      const Wpad = Math.ceil(W0 / p) * p;
      if (Hpad !== H0 || Wpad !== W0) t = tf.pad(t, [[0, 0], [0, Hpad - H0], [0, Wpad - W0], [0, 0]]);
      let H = Hpad / p;
      let W = Wpad / p;
      const norm = diff ? layerNormOp : (a: tf.Tensor2D, n: Norm) => lnForward(a, n).y;
      let C = c.embedDim;
      let h = patchEmbedOp(t, p, this.params.patch, this.params.embedNorm, diff);
      // Each block and merge runs in its own scope and the map it consumed is freed at once
      // (the gradient tape only needs the tensors its ops saved), so a forward pass under
      // a gradient tape holds what the backward pass needs, not every intermediate map.
      const step = (hin: tf.Tensor4D, f: (t: tf.Tensor4D) => tf.Tensor4D): tf.Tensor4D => {
        const out = tf.tidy(() => f(hin));
        hin.dispose();
        return out;
      };
      this.params.stages.forEach((stage, si) => {
        stage.blocks.forEach((blk, bi) => {
          const g = this.withPermutation(geometry(B, H, W, C, c.windowSize, bi % 2 === 1, `stage ${si + 1}`));
          const bm = this.biasMask(si, bi, blk, g);
          h = step(h, (hin) => (diff ? blockOp(hin, blk, g, bm, memory) : blockForward(hin, blk, g, bm)));
        });
        if (stage.merge) {
          H = Math.ceil(H / 2);
          W = Math.ceil(W / 2);
          C *= 2;
          h = step(h, (hin) => patchMergeOp(hin, stage.merge!.norm, stage.merge!.reduction, diff));
        }
      });
      const tokens = tf.reshape(norm(tf.reshape(h, [B * H * W, C]) as tf.Tensor2D, this.params.finalNorm), [B, H, W, C]) as tf.Tensor4D;
      const pooled = tf.mean(tokens, [1, 2]) as tf.Tensor2D;
      return options.tokens ? { pooled, tokens } : { pooled };
    });
  }

  /** Apply the projection to [..., F] features (pooled vectors or token maps); throws when the model has none. */
  project<T extends tf.Tensor>(features: T, differentiable = true): T {
    const proj = this.params.projection;
    if (!proj) throw new UsageError("Swin: this model has no projection");
    return tf.tidy(() => {
      const shape = features.shape;
      const f2 = tf.reshape(features, [-1, shape[shape.length - 1]!]) as tf.Tensor2D;
      const y = differentiable ? linearOp(f2, proj) : linearForward(f2, proj);
      return tf.reshape(y, [...shape.slice(0, -1), proj.wT.shape[1]]) as T;
    });
  }

  dispose(): void {
    tf.dispose(paramTensors(this.params));
    tf.dispose([...this.masks.values()]);
    this.masks.clear();
  }
}

// ------------------------------------------------------------------ the encoder

/** ImageNet statistics, the normalisation `microsoft/swin-tiny-patch4-window7-224` was trained with. */
export const SWIN_IMAGENET_PREPROCESSING: Preprocessing = {
  inputSize: 224,
  channelOrder: "RGB",
  scale: 1,
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
};

/** Options of {@link createSwinEncoder}. */
export interface SwinEncoderOptions {
  /**
   * A `.safetensors` file with Hugging Face `SwinModel` names (or `swin.`-prefixed,
   * or MedCLIP's `vision_model.model.`), optionally holding `projection.weight`
   * [512, 768]. Written by `kernel-setup/export_swin_weights.py`.
   */
  weights?: string;
  /** A separate `.safetensors` file holding `projection.weight` [d, 768] (PyTorch layout). */
  projection?: string;
  /** Sidecar JSON (input size, mean/std, channel order, source); default: beside `weights` with `.json`. */
  sidecar?: string;
  /**
   * Seed of the random projection used when no file holds one: U(-1/sqrt(768), 1/sqrt(768))
   * drawn by pbip's generator (same distribution as the release's `nn.Linear(768, 512)`,
   * not the same numbers). Default 0.
   */
  projectionSeed?: number;
  /** Output dimension d of a random projection (default 512). Ignored when a file holds the projection. */
  projectionDim?: number;
  /** Build without any weights file, from seeded random backbone weights (tests, benchmarks). Never real features. */
  randomSeed?: number;
  /** Architecture (default Swin-T). */
  config?: SwinConfig;
  /** Override the preprocessing (default: the sidecar's, else ImageNet statistics at 224 px). */
  preprocessing?: Partial<Preprocessing>;
  /** Images per chunk in {@link SwinEncoder.encode} (default 16). */
  batchSize?: number;
  /**
   * What {@link SwinEncoder.apply} keeps for the backward pass (see {@link SwinMemoryMode}).
   * Default: `lean` when the WASM backend is active at creation (its heap stops at
   * 4 GiB, and the two-pass image mode keeps three times as many regions' activations
   * with it: measured 48 of 66 against 16, and a faster release step), `fast` elsewhere.
   */
  memory?: SwinMemoryMode;
}

/** What a {@link SwinEncoder} was built from. */
export interface SwinWeightsInfo {
  /** `imagenet`, `medclip`, `random` or what the sidecar says. */
  source: string;
  /** How the projection was obtained. */
  projection: string;
  /** The load report of the weight files (empty for random weights). */
  report: WeightLoadReport;
  files: string[];
}

/**
 * The frozen encoder phi as the authors' release builds its "MedCLIP": Swin-T
 * (pooled 768-d) followed by Linear(768, 512) without bias, d = 512. The release
 * never loads MedCLIP weights: its encoder is the ImageNet Swin-T under a seeded
 * random projection (METHOD.md section 6). This class runs whatever weights it is
 * given and says what they are: with real MedCLIP vision weights (MedCLIP's
 * `MedCLIPVisionModelViT`: the same Swin-T plus its trained `projection_head`) it is
 * not a stand-in; with ImageNet weights and a seeded projection it is the release's
 * encoder, labelled as a stand-in for MedCLIP; with random weights it is a
 * labelled test stand-in.
 *
 * Differentiable: {@link apply} runs inside `tf.grad`/`variableGrads` (gradients
 * reach the input images only). The dense map is the final-LayerNorm tokens,
 * projected per token ([B, 7, 7, 512] at 224 px): since the projection is linear
 * without bias, its average pool equals the pooled vector.
 */
export class SwinEncoder implements ImageEncoder {
  readonly differentiable = true;
  readonly hasDense = true;
  readonly isStandIn: boolean;
  readonly standInNote?: string;

  constructor(
    readonly model: SwinModel,
    readonly identity: EncoderIdentity,
    readonly info: SwinWeightsInfo,
    standInNote: string | undefined,
    private readonly batchSize = 16,
    /** What {@link apply} keeps for the backward pass; may be changed between calls. */
    public memory: SwinMemoryMode = "fast",
  ) {
    this.isStandIn = standInNote !== undefined;
    if (standInNote !== undefined) this.standInNote = standInNote;
  }

  /** Build from files or seeded random weights; see {@link SwinEncoderOptions}. */
  static async create(options: SwinEncoderOptions = {}): Promise<SwinEncoder> {
    return createSwinEncoder(options);
  }

  private run(images: tf.Tensor4D, dense: boolean, differentiable: boolean): EncoderOutput {
    return tf.tidy(() => {
      const x = preprocessForEncoder(images, this.identity.preprocessing);
      const out = this.model.forward(x, { tokens: dense, differentiable, memory: this.memory });
      const pooled = this.model.project(out.pooled, differentiable);
      if (!dense) return { pooled };
      return { pooled, dense: this.model.project(out.tokens!, differentiable) };
    });
  }

  /** Differentiable forward pass (RGB [0, 1] NHWC in, any size; resized and normalised here). */
  apply(images: tf.Tensor4D, options: { dense?: boolean } = {}): EncoderOutput {
    return this.run(images, options.dense ?? false, true);
  }

  /** Encode without gradients, in chunks of `batchSize` images. The caller disposes the outputs. */
  async encode(images: tf.Tensor4D, options: { dense?: boolean } = {}): Promise<EncoderOutput> {
    const dense = options.dense ?? false;
    const n = images.shape[0];
    if (n <= this.batchSize) return this.run(images, dense, false);
    const pooled: tf.Tensor2D[] = [];
    const maps: tf.Tensor4D[] = [];
    for (let i = 0; i < n; i += this.batchSize) {
      const size = Math.min(this.batchSize, n - i);
      // tf.gather, not tf.slice: the WASM backend's slice copies the whole input first.
      const out = tf.tidy(() => this.run(tf.gather(images, tf.range(i, i + size, 1, "int32")), dense, false));
      pooled.push(out.pooled);
      if (out.dense) maps.push(out.dense);
      await new Promise((r) => setImmediate(r));
    }
    const result: EncoderOutput = { pooled: tf.concat(pooled, 0) };
    if (dense) result.dense = tf.concat(maps, 0);
    tf.dispose([...pooled, ...maps]);
    return result;
  }

  dispose(): void {
    this.model.dispose();
  }
}

function hashTensors(parts: { name: string; t: HostTensor }[]): string {
  const h = crypto.createHash("sha256");
  for (const { name, t } of parts) {
    h.update(name);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest("hex").slice(0, 16);
}

/**
 * Build the release's Swin-T encoder (see {@link SwinEncoder}) from a weights file
 * (`options.weights`, as `createEncoder("swin-t", { weights })` passes it), or from
 * seeded random weights when `randomSeed` is given. The load is strict: any missing,
 * unexpected or mis-shaped key is an error that names them all.
 */
export async function createSwinEncoder(options: SwinEncoderOptions = {}): Promise<SwinEncoder> {
  const config = options.config ?? { ...SWIN_T_CONFIG, depths: [...SWIN_T_CONFIG.depths], numHeads: [...SWIN_T_CONFIG.numHeads] };
  const F = swinNumFeatures(config);
  let weights: NamedTensors;
  let report: WeightLoadReport = { loaded: [], missing: [], unexpected: [], misshaped: [] };
  const files: string[] = [];
  let source: string;
  let preprocessing: Preprocessing = { ...SWIN_IMAGENET_PREPROCESSING };
  let sidecarNote: string | undefined;
  let sidecarName: string | undefined;
  if (options.weights) {
    files.push(options.weights);
    if (options.projection) files.push(options.projection);
    for (const f of files) {
      if (!fs.existsSync(f)) {
        throw new FileError(
          path.resolve(f),
          "file not found. Swin-T weights are written once, on a machine with Python, PyTorch and transformers: " +
            "`python kernel-setup/export_swin_weights.py medclip --medclip-checkpoint <MedCLIP pytorch_model.bin> --out weights/swin-t-medclip.safetensors` " +
            "(MedCLIP's vision tower, the paper profile's encoder) or `... imagenet --seed 42 --out weights/swin-t-imagenet-seed42.safetensors` (the release's); " +
            "see README, Real data and real encoders",
        );
      }
    }
    const r = readSwinWeights(files, config, { projection: true });
    const allow = r.tensors.has(PROJECTION_KEY) ? [] : [/^projection\.weight$/];
    assertCleanLoad(files.join(" + "), r.report, allow);
    report = r.report;
    weights = r.tensors;
    const sidecarFile = options.sidecar ?? sidecarPathFor(options.weights);
    if (options.sidecar || fs.existsSync(sidecarFile)) {
      const sc = readEncoderSidecar(sidecarFile, { layout: "NHWC" });
      preprocessing = sidecarPreprocessing(sc);
      source = (sc as { source?: string }).source ?? sc.name;
      sidecarNote = sc.standInNote;
      sidecarName = sc.name;
    } else {
      source = "Swin weights without a sidecar JSON (ImageNet preprocessing assumed)";
    }
  } else if (options.randomSeed !== undefined) {
    weights = randomSwinWeights(config, options.randomSeed);
    source = `random Swin weights (seed ${options.randomSeed})`;
    if (options.projection) {
      weights.set(PROJECTION_KEY, readSwinProjection(options.projection, F));
      files.push(options.projection);
    }
  } else {
    throw new UsageError(
      "encoder swin-t needs weights: write them with kernel-setup/export_swin_weights.py (ImageNet Swin-T + the release's seeded projection, or MedCLIP's vision tower) and pass the .safetensors file",
    );
  }
  let projection = weights.get(PROJECTION_KEY);
  let projectionNote: string;
  if (projection) {
    projectionNote = `projection.weight [${projection.shape.join(", ")}] from the weights file`;
  } else {
    const seed = options.projectionSeed ?? 0;
    const d = options.projectionDim ?? 512;
    projection = randomProjection(d, F, seed);
    projectionNote = `seeded random projection Linear(${F}, ${d}) (pbip Rng seed ${seed}, PyTorch default-Linear distribution U(+-1/sqrt(${F})); not the release's matrix)`;
  }
  const parts = swinParameterSpecs(config).map((s) => ({ name: s.name, t: weights.get(s.name)! }));
  parts.push({ name: PROJECTION_KEY, t: projection });
  const weightsHash = hashTensors(parts);
  const params = buildSwinParams(config, weights, projection);
  const model = new SwinModel(params);
  const dim = projection.shape[0]!;
  const isRandom = options.weights === undefined;
  let standIn: string | undefined;
  if (isRandom) standIn = `TEST STAND-IN: Swin with random weights (seed ${options.randomSeed}) and a ${projectionNote}; its features mean nothing`;
  else if (sidecarName === undefined) standIn = `Swin weights of unstated origin (no sidecar JSON beside ${options.weights}), ${projectionNote}: treated as a stand-in for MedCLIP`;
  else standIn = sidecarNote;
  const tag = isRandom ? `random-seed${options.randomSeed}` : (sidecarName ?? "unstated");
  const identity: EncoderIdentity = {
    name: `swin-t-medclip-release:${tag}`,
    dim,
    weightsHash,
    preprocessing: { ...preprocessing, ...options.preprocessing },
  };
  const info: SwinWeightsInfo = { source, projection: projectionNote, report, files };
  return new SwinEncoder(model, identity, info, standIn, options.batchSize ?? 16, options.memory ?? (tf.getBackend() === "wasm" ? "lean" : "fast"));
}
