/**
 * The SegFormer Mix Transformer (MiT) encoder in TensorFlow.js, the backbone of
 * the PBIP release's ClassNet (METHOD.md section 3: the F_i of eq. 2).
 *
 * Structure and parameter names follow the original SegFormer `mix_transformer.py`
 * (NVlabs), so a checkpoint such as `mit_b1.pth`, converted to `.safetensors`,
 * loads by name (see ./mit-weights.ts). Per stage i (1..4):
 *
 * - `patch_embed{i}`: overlapping patch embedding, a convolution (7x7 padding 3 for
 *   stage 1, 3x3 padding 1 after) with the stage's stride, then LayerNorm with
 *   PyTorch's default eps 1e-5 (`nn.LayerNorm(dim)` in the original);
 * - `block{i}.{j}`: pre-norm transformer blocks
 *   `x += DropPath(Attn(norm1(x)))`, `x += DropPath(MixFFN(norm2(x)))`, norms with eps 1e-6;
 *   - efficient self-attention: `q` Linear; keys and values from one `kv` Linear
 *     ([2C, C] in PyTorch: rows 0..C-1 give k, C..2C-1 give v, each split into heads
 *     of C/heads channels) applied to the token grid reduced by `sr`, a
 *     kernel = stride = sr_ratio convolution, and its LayerNorm `attn.norm` (eps 1e-5,
 *     the original's default `nn.LayerNorm(dim)`); softmax(q k^T * head_dim^-0.5) v;
 *     then `proj`;
 *   - Mix-FFN: `fc1`, a 3x3 depthwise convolution `dwconv.dwconv` over the token
 *     grid, exact (erf) GELU, `fc2`;
 * - `norm{i}`: a LayerNorm (eps 1e-6) closing the stage; its output, reshaped to
 *   NHWC, is the stage's feature map.
 *
 * Stochastic depth rates rise linearly from 0 to `dropPathRate` over all blocks
 * (torch.linspace), and act only when `training` is true, per sample, seeded.
 *
 * Variables are kept in TensorFlow.js layouts under the original names: convolutions
 * HWIO (`[kh, kw, in, out]`), the depthwise filter `[3, 3, C, 1]`, Linear weights
 * `[in, out]` (PyTorch stores OIHW, `[C, 1, 3, 3]` and `[out, in]`).
 *
 * Training cost. Every layer with weights carries a hand-written gradient made of
 * untransposed matMuls, plain slices, pads and ones-matMul column sums
 * ({@link linearOp}, {@link batchMatMulOp}, {@link patchReduce}, {@link depthwise3x3Op},
 * {@link patchEmbedConvOp}), because on the WASM backend the transposed-matMul flags,
 * strided slices and leading-axis reductions that TF.js's own gradients use are 5-70x
 * slower. On WASM, batched products, column sums and the depthwise filter gradient run
 * on pbip's SIMD kernels (`src/runtime/wasm-simd.ts`). And each block is gradient-checkpointed when training (TF.js keeps every
 * activation and every intermediate gradient until the backward pass ends, which put
 * MiT-b1 at batch 10 x 224 beyond the 4 GB WASM heap). Each of these is tested against
 * TF.js's own op and the whole model against PyTorch autograd. The model has no
 * gradient path to its input image (see {@link patchEmbedConvOp}).
 */
import * as tf from "@tensorflow/tfjs";
import { Rng } from "../../util/rng";
import { columnSums, depthwise3x3FilterGrad, gemm, wasmSimdKernelsAvailable } from "../../runtime/wasm-simd";
import { recomputeGrads } from "../../runtime/gradients";
import { geluGradWasm, geluWasm, layerNormGradWasm, layerNormWasm, linearMatMul, transformerKernelsAvailable, weightGradMatMul } from "../../runtime/wasm-transformer";
import type { NamedTensors, WeightLoadReport } from "../../io/tensors";
import type { Backbone } from "./types";
import { expectedPyTorchShapes, loadMiTWeights, toPyTorchLayout, type MiTWeightsOptions } from "./mit-weights";
import { dropPathRates, IMAGENET_NORMALIZATION, mitParamSpecs, validateMiTConfig, type Four, type MiTConfig } from "./mit-config";

let instanceCounter = 0;

/**
 * Column sums of a matrix `[N, C]` -> `[C]`, as `ones[1, N] @ x`: on the WASM backend a
 * reduction over a leading axis transposes first and is 50x slower than this matMul.
 */
export function sumRows(x: tf.Tensor2D): tf.Tensor1D {
  // pbip's WASM SIMD kernel where it applies: the matMul packs x as XNNPACK weights on every call.
  if (x.shape[1] % 4 === 0 && x.shape[0] > 0 && wasmSimdKernelsAvailable()) return columnSums(x);
  return tf.reshape(tf.matMul(tf.ones([1, x.shape[0]]), x), [x.shape[1]]);
}

/**
 * 3x3 depthwise convolution, stride 1, padding 1 (Mix-FFN's `dwconv`) with bias, whose
 * gradient avoids slow WASM paths: `dx` is the depthwise convolution of `dy` with the
 * spatially flipped filter; `dW[kh, kw, c]` sums `x_pad[.., h+kh, w+kw, c] * dy[.., h, w, c]`
 * over batch and space: on WASM in one pass ({@link depthwise3x3FilterGrad}), elsewhere
 * tap by tap, reducing with {@link sumRows}.
 */
export function depthwise3x3Op(x: tf.Tensor4D, filter: tf.Tensor4D, bias: tf.Tensor): tf.Tensor4D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[3] as tf.GradSaveFunc;
    const [xi, fi, bi] = args as [tf.Tensor4D, tf.Tensor4D, tf.Tensor];
    save([xi, fi]);
    return {
      value: tf.fused.depthwiseConv2d({ x: xi, filter: fi, strides: 1, pad: 1, bias: bi }),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sf] = saved as [tf.Tensor4D, tf.Tensor4D];
        const dy4 = dy as tf.Tensor4D;
        const [b, h, w, c] = sx.shape;
        const dx = tf.depthwiseConv2d(dy4, tf.reverse(sf, [0, 1]) as tf.Tensor4D, 1, 1);
        if (c % 4 === 0 && wasmSimdKernelsAvailable()) {
          const { dw, db } = depthwise3x3FilterGrad(sx, dy4);
          return [dx, dw, db];
        }
        const dy2 = tf.reshape(dy4, [b * h * w, c]) as tf.Tensor2D;
        const xp = tf.pad(sx, [
          [0, 0],
          [1, 1],
          [1, 1],
          [0, 0],
        ]);
        const taps: tf.Tensor1D[] = [];
        for (let kh = 0; kh < 3; kh++) {
          for (let kw = 0; kw < 3; kw++) {
            taps.push(tf.tidy(() => sumRows(tf.mul(tf.reshape(tf.slice(xp, [0, kh, kw, 0], [b, h, w, c]), [b * h * w, c]), dy2) as tf.Tensor2D)));
          }
        }
        return [dx, tf.reshape(tf.stack(taps), [3, 3, c, 1]), sumRows(dy2)];
      },
    };
  });
  return f(x, filter, bias) as tf.Tensor4D;
}

/**
 * LayerNorm over the last axis of a 2-D token matrix `[tokens, C]`, with a hand-written
 * gradient (fewer ops and saved tensors than autodiff through mean/variance):
 * `dx = rstd * (g*dy - mean(g*dy) - xhat * mean(g*dy * xhat))`. On the WASM backend
 * with SIMD (C a multiple of 4), the forward pass and the input gradient are one
 * kernel each (`src/runtime/wasm-transformer.ts`, shared with the Swin encoder) instead of eight
 * TF.js kernels: the same formulas, summed in another order.
 */
export function layerNorm(x: tf.Tensor2D, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor2D {
  if (x.shape[1] % 4 === 0 && gamma.rank === 1 && transformerKernelsAvailable()) return layerNormFused(x, gamma as tf.Tensor1D, beta as tf.Tensor1D, eps);
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, g, b, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const mean = tf.mean(xi, -1, true);
    const xc = tf.sub(xi, mean);
    const rstd = tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), eps));
    const xhat = tf.mul(xc, rstd);
    save([xhat, rstd, g]);
    return {
      value: tf.add(tf.mul(xhat, g), b),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sxhat, srstd, sg] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        const gdy = tf.mul(dy, sg);
        const m1 = tf.mean(gdy, -1, true);
        const m2 = tf.mean(tf.mul(gdy, sxhat), -1, true);
        const dx = tf.mul(tf.sub(tf.sub(gdy, m1), tf.mul(sxhat, m2)), srstd);
        return [dx, sumRows(tf.mul(dy, sxhat) as tf.Tensor2D), sumRows(dy as tf.Tensor2D)];
      },
    };
  });
  return f(x, gamma, beta) as tf.Tensor2D;
}

function layerNormFused(x: tf.Tensor2D, gamma: tf.Tensor1D, beta: tf.Tensor1D, eps: number): tf.Tensor2D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, g, b, save] = args as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D, tf.GradSaveFunc];
    const { y, xhat, rstd } = layerNormWasm(xi, g, b, eps);
    save([xhat, rstd, g]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sxhat, srstd, sg] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
        const dy2 = dy as tf.Tensor2D;
        return [layerNormGradWasm(dy2, sxhat, srstd, sg), sumRows(tf.mul(dy2, sxhat) as tf.Tensor2D), sumRows(dy2)];
      },
    };
  });
  return f(x, gamma, beta) as tf.Tensor2D;
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * Exact GELU, `x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`, with the analytic gradient
 * `Phi(x) + x phi(x)`. On the WASM backend with SIMD (size a multiple of 4) each pass is
 * one kernel (the Swin encoder's, erf within 1.5e-7) instead of five and seven TF.js kernels.
 */
export function geluErf(x: tf.Tensor): tf.Tensor {
  if (x.size % 4 === 0 && transformerKernelsAvailable()) {
    const fused = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [xi, save] = args as [tf.Tensor, tf.GradSaveFunc];
      save([xi]);
      return { value: geluWasm(xi), gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [geluGradWasm(saved[0]!, dy)] };
    });
    return fused(x);
  }
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const cdf = tf.add(tf.mul(tf.erf(tf.mul(xi, SQRT1_2)), 0.5), 0.5);
    save([xi, cdf]);
    return {
      value: tf.mul(xi, cdf),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, scdf] = saved as [tf.Tensor, tf.Tensor];
        const pdf = tf.mul(tf.exp(tf.mul(tf.square(sx), -0.5)), INV_SQRT_2PI);
        return [tf.mul(dy, tf.add(scdf, tf.mul(sx, pdf)))];
      },
    };
  });
  return f(x);
}

/** Swap the last two axes (an explicit transpose, fast on every backend). */
function swapLast2(x: tf.Tensor): tf.Tensor {
  const perm = x.shape.map((_, i) => i);
  const r = perm.length;
  [perm[r - 2], perm[r - 1]] = [perm[r - 1]!, perm[r - 2]!];
  return tf.transpose(x, perm);
}

/**
 * `x @ W (+ b)` for a token matrix `x` `[N, in]` and `W` `[in, out]`, with a gradient
 * written with untransposed matMuls only: `dx = dy @ W^T`, `dW = x^T @ dy` with the
 * transposes done explicitly. (The WASM backend's BatchMatMul is 5-70x slower with its
 * transposeA/transposeB flags than on explicitly transposed operands, and TF.js's own
 * matMul gradient uses those flags.)
 */
export function linearOp(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor): tf.Tensor2D {
  // On WASM, x @ W + b, dy @ W^T and dW = x^T dy run on pbip's threaded GEMM (bias fused;
  // x read transposed in place, the tokens in blocks): faster than XNNPACK's at batch 10
  // (`npx tsx bench/mit-speed.ts`, `npx tsx bench/gemm-speed.ts`).
  const pool = transformerKernelsAvailable();
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xi, wi, bi] = args.slice(0, -1) as [tf.Tensor2D, tf.Tensor2D, tf.Tensor | undefined];
    save([xi, wi]);
    return {
      value: pool ? linearMatMul(xi, wi, bi as tf.Tensor1D | undefined) : tf.fused.matMul({ a: xi, b: wi, bias: bi }),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sw] = saved as [tf.Tensor2D, tf.Tensor2D];
        const dy2 = dy as tf.Tensor2D;
        const grads = [pool ? linearMatMul(dy2, tf.transpose(sw)) : tf.matMul(dy2, tf.transpose(sw)), pool ? weightGradMatMul(sx, dy2) : tf.matMul(tf.transpose(sx), dy2)];
        if (bi) grads.push(sumRows(dy2));
        return grads;
      },
    };
  });
  return (b ? f(x, w, b) : f(x, w)) as tf.Tensor2D;
}

/** Batched `a @ b` (rank 3 or 4, no transposes) whose gradient also uses untransposed matMuls (see {@link linearOp}). */
export function batchMatMulOp(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
  const simd = wasmSimdKernelsAvailable();
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[2] as tf.GradSaveFunc;
    const [ai, bi] = args as [tf.Tensor, tf.Tensor];
    save([ai, bi]);
    return {
      // TF.js's WASM BatchMatMul runs any batch above 1 on a scalar loop: pbip's SIMD GEMM where available.
      value: simd ? gemm(ai, bi) : tf.matMul(ai, bi),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sa, sb] = saved as [tf.Tensor, tf.Tensor];
        if (simd) return [gemm(dy, swapLast2(sb)), gemm(sa, dy, { transposeA: true })];
        return [tf.matMul(dy, swapLast2(sb)), tf.matMul(swapLast2(sa), dy)];
      },
    };
  });
  return f(a, b);
}

/**
 * The spatial-reduction convolution (kernel = stride = r, no padding) as
 * space-to-depth plus one matMul: non-overlapping r x r windows become rows of
 * `r*r*C` values in (kh, kw, c) order, the order of the HWIO filter flattened. The
 * same arithmetic as the convolution, with a cheap exact gradient.
 */
export function patchReduce(grid: tf.Tensor4D, filter: tf.Tensor4D, bias: tf.Tensor, r: number): tf.Tensor2D {
  const [b, h, w, c] = grid.shape;
  const ho = Math.floor(h / r);
  const wo = Math.floor(w / r);
  const cout = filter.shape[3];
  let x: tf.Tensor4D = grid;
  if (ho * r !== h || wo * r !== w) x = tf.slice(grid, [0, 0, 0, 0], [b, ho * r, wo * r, c]);
  // [B*Ho, r, Wo, r*C] -> [B*Ho, Wo, r, r*C] -> rows of (kh, kw, c)
  const windows = tf.reshape(tf.transpose(tf.reshape(x, [b * ho, r, wo, r * c]), [0, 2, 1, 3]), [b * ho * wo, r * r * c]) as tf.Tensor2D;
  return linearOp(windows, tf.reshape(filter, [r * r * c, cout]) as tf.Tensor2D, bias);
}

/**
 * Convolution with bias, square kernel K, stride s, symmetric zero padding p (the
 * overlapping patch embeddings), whose gradient is im2col arithmetic with fast ops
 * only. The input is split into its s x s stride phases (one reshape + transpose), so
 * every filter tap is a plain slice of one phase; `dW = cols^T @ dy` with `cols` the
 * taps side by side in (kh, kw, c) order; `dx` scatters `dy @ W^T` back tap by tap
 * (pads and adds per phase) and interleaves the phases again. Forward is the backend's
 * fused convolution. With `inputGradient` false the op has no gradient path to `x` at
 * all (asking for one is an error, not zeros): the stage-1 embedding's input is the
 * image, whose gradient no PBIP loss needs and which would cost a full-resolution pass.
 */
export function patchEmbedConvOp(x: tf.Tensor4D, filter: tf.Tensor4D, bias: tf.Tensor, stride: number, pad: number, inputGradient = true): tf.Tensor4D {
  const [kh0, kw0, cin, cout] = filter.shape;
  if (kh0 !== kw0) throw new Error(`patchEmbedConvOp: square kernels only, got ${kh0}x${kw0}`);
  const K = kh0;
  const s = stride;
  // On WASM the filter and input gradients' products run on pbip's threaded GEMM (see linearOp).
  const pool = transformerKernelsAvailable();
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const [xi, fi, bi] = (inputGradient ? args : [x, ...args]) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor];
    save([xi, fi]);
    return {
      value: tf.fused.conv2d({ x: xi, filter: fi, strides: s, pad: pad === 0 ? "valid" : pad, bias: bi }),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sf] = saved as [tf.Tensor4D, tf.Tensor4D];
        const [b, h, w] = sx.shape;
        const [, ho, wo] = dy.shape as [number, number, number, number];
        const q = Math.floor((K - 1) / s);
        const hq = Math.max(Math.ceil((h + 2 * pad) / s), q + ho);
        const wq = Math.max(Math.ceil((w + 2 * pad) / s), q + wo);
        const n = b * ho * wo;
        const dy2 = tf.reshape(dy, [n, cout]) as tf.Tensor2D;
        // Stride phases of the padded input: phase (rh, rw) holds x_pad[:, rh::s, rw::s, :].
        const phases = tf.tidy(() => {
          const xp = tf.pad(sx, [
            [0, 0],
            [pad, hq * s - h - pad],
            [pad, wq * s - w - pad],
            [0, 0],
          ]);
          if (s === 1) return [xp];
          const split = tf.reshape(tf.transpose(tf.reshape(xp, [b, hq, s, wq, s, cin]), [0, 2, 4, 1, 3, 5]), [b, s * s, hq * wq * cin]);
          return Array.from({ length: s * s }, (_, i) => tf.reshape(tf.slice(split, [0, i, 0], [b, 1, hq * wq * cin]), [b, hq, wq, cin]) as tf.Tensor4D);
        });
        const tap = (kh: number, kw: number) => [(kh % s) * s + (kw % s), Math.floor(kh / s), Math.floor(kw / s)] as const;
        const dW = tf.tidy(() => {
          const cols: tf.Tensor[] = [];
          for (let kh = 0; kh < K; kh++) {
            for (let kw = 0; kw < K; kw++) {
              const [ph, oh, ow] = tap(kh, kw);
              cols.push(tf.slice(phases[ph]!, [0, oh, ow, 0], [b, ho, wo, cin]));
            }
          }
          const colMat = tf.reshape(cols.length === 1 ? cols[0]! : tf.concat(cols, 3), [n, K * K * cin]) as tf.Tensor2D;
          return tf.reshape(pool ? weightGradMatMul(colMat, dy2) : tf.matMul(tf.transpose(colMat), dy2), [K, K, cin, cout]);
        });
        tf.dispose(phases);
        const db = sumRows(dy2);
        if (!inputGradient) return [dW, db];
        const dx = tf.tidy(() => {
          // Per tap, dy @ W[kh, kw]^T (slicing the small filter, not a wide activation).
          const wT = tf.transpose(sf, [0, 1, 3, 2]);
          const acc: tf.Tensor[][] = Array.from({ length: s * s }, () => []);
          for (let kh = 0; kh < K; kh++) {
            for (let kw = 0; kw < K; kw++) {
              const [ph, oh, ow] = tap(kh, kw);
              const wTap = tf.reshape(tf.slice(wT, [kh, kw, 0, 0], [1, 1, cout, cin]), [cout, cin]) as tf.Tensor2D;
              const t = tf.reshape(pool ? linearMatMul(dy2, wTap) : tf.matMul(dy2, wTap), [b, ho, wo, cin]);
              acc[ph]!.push(
                tf.pad(t, [
                  [0, 0],
                  [oh, hq - oh - ho],
                  [ow, wq - ow - wo],
                  [0, 0],
                ]),
              );
            }
          }
          const phaseGrads = acc.map((list) => (list.length ? tf.addN(list) : tf.zeros([b, hq, wq, cin])));
          const full =
            s === 1
              ? phaseGrads[0]!
              : tf.reshape(tf.transpose(tf.reshape(tf.stack(phaseGrads, 1), [b, s, s, hq, wq, cin]), [0, 3, 1, 4, 2, 5]), [b, hq * s, wq * s, cin]);
          return tf.slice(full, [0, pad, pad, 0], [b, h, w, cin]);
        });
        return [dx, dW, db];
      },
    };
  });
  return (inputGradient ? f(x, filter, bias) : f(filter, bias)) as tf.Tensor4D;
}

/** A block's parameter by name relative to the block (e.g. `attn.q.weight`). */
type ParamLookup = (name: string) => tf.Tensor;

/** Shape facts and stochastic-depth masks of one block call. */
interface BlockGeometry {
  stage: number;
  b: number;
  h: number;
  w: number;
  attnMask: Float32Array | null;
  mlpMask: Float32Array | null;
}

/** `x @ W + b` on a token matrix, fused. */
function linear(x: tf.Tensor2D, P: ParamLookup, name: string, bias = true): tf.Tensor2D {
  return linearOp(x, P(`${name}.weight`) as tf.Tensor2D, bias ? P(`${name}.bias`) : undefined);
}

/** Stochastic depth: scale each sample's rows of a branch `[B*N, C]` by its mask entry (0 or 1/keep). */
function applyDropMask(branch: tf.Tensor2D, mask: Float32Array | null, batch: number): tf.Tensor2D {
  if (!mask) return branch;
  const [n, c] = branch.shape;
  return tf.reshape(tf.mul(tf.reshape(branch, [batch, (n / batch) * c]), tf.tensor2d(mask, [batch, 1])), [n, c]);
}

/**
 * Efficient self-attention on normalised tokens `t` `[B*H*W, C]`: q from all tokens,
 * k and v from the grid reduced by the kernel = stride = sr convolution and its
 * LayerNorm, softmax(q k^T / sqrt(head_dim)) v per head, then `proj`.
 */
function attention(t: tf.Tensor2D, P: ParamLookup, g: BlockGeometry, cfg: MiTConfig): tf.Tensor2D {
  const { stage, b, h, w } = g;
  const c = cfg.embedDims[stage]!;
  const heads = cfg.numHeads[stage]!;
  const hd = c / heads;
  const sr = cfg.srRatios[stage]!;
  const n = h * w;
  const scale = hd ** -0.5;
  // The scale is folded into q's weight and bias (C*C multiplies instead of B*N*C).
  const wq = tf.mul(P("attn.q.weight"), scale) as tf.Tensor2D;
  const bq = cfg.qkvBias ? tf.mul(P("attn.q.bias"), scale) : undefined;
  const q = linearOp(t, wq, bq);
  let src = t;
  let m = n;
  if (sr > 1) {
    const red = patchReduce(tf.reshape(t, [b, h, w, c]) as tf.Tensor4D, P("attn.sr.weight") as tf.Tensor4D, P("attn.sr.bias"), sr);
    m = red.shape[0] / b;
    src = layerNorm(red, P("attn.norm.weight"), P("attn.norm.bias"), cfg.defaultEps);
  }
  // kv's [C, 2C] weight: columns 0..C-1 give k, C..2C-1 give v (PyTorch rows of [2C, C]).
  const wkv = P("attn.kv.weight");
  const bkv = cfg.qkvBias ? P("attn.kv.bias") : undefined;
  const k = linearOp(src, tf.slice(wkv, [0, 0], [c, c]) as tf.Tensor2D, bkv && tf.slice(bkv, [0], [c]));
  const v = linearOp(src, tf.slice(wkv, [0, c], [c, c]) as tf.Tensor2D, bkv && tf.slice(bkv, [c], [c]));
  let out: tf.Tensor;
  if (heads === 1) {
    const q3 = tf.reshape(q, [b, n, c]) as tf.Tensor3D;
    const k3 = tf.reshape(k, [b, m, c]) as tf.Tensor3D;
    const v3 = tf.reshape(v, [b, m, c]) as tf.Tensor3D;
    out = batchMatMulOp(tf.softmax(batchMatMulOp(q3, tf.transpose(k3, [0, 2, 1]))), v3);
  } else {
    // q, v: [B, heads, len, hd]; k directly as [B, heads, hd, M] (one transpose instead of two).
    const split = (x: tf.Tensor2D, len: number) => tf.transpose(tf.reshape(x, [b, len, heads, hd]), [0, 2, 1, 3]);
    const kT = tf.transpose(tf.reshape(k, [b, m, heads, hd]), [0, 2, 3, 1]);
    const attn = tf.softmax(batchMatMulOp(split(q, n), kT));
    out = tf.transpose(batchMatMulOp(attn, split(v, m)), [0, 2, 1, 3]);
  }
  return linear(tf.reshape(out, [b * n, c]) as tf.Tensor2D, P, "attn.proj");
}

/** Mix-FFN on normalised tokens: fc1, depthwise 3x3 over the token grid, GELU (erf), fc2. */
function mixFfn(t: tf.Tensor2D, P: ParamLookup, g: BlockGeometry): tf.Tensor2D {
  const { b, h, w } = g;
  const hid = linear(t, P, "mlp.fc1");
  const hidden = hid.shape[1];
  const mixed = depthwise3x3Op(tf.reshape(hid, [b, h, w, hidden]) as tf.Tensor4D, P("mlp.dwconv.dwconv.weight") as tf.Tensor4D, P("mlp.dwconv.dwconv.bias"));
  const act = geluErf(tf.reshape(mixed, [b * h * w, hidden])) as tf.Tensor2D;
  return linear(act, P, "mlp.fc2");
}

function linearInit(rng: Rng, n: number): Float32Array {
  // timm trunc_normal_(std=.02) truncates at +-2 (absolute), i.e. practically never.
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = rng.normal(0, 0.02);
    while (Math.abs(v) > 2) v = rng.normal(0, 0.02);
    out[i] = v;
  }
  return out;
}

function normalInit(rng: Rng, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal(0, std);
  return out;
}

/**
 * A SegFormer Mix Transformer backbone (b0/b1/b2 or a custom configuration): maps a
 * normalised NHWC batch to the four stage feature maps F_1..F_4 (NHWC) of eq. 2.
 */
export class MixTransformer implements Backbone {
  readonly name: string;
  readonly config: Readonly<MiTConfig>;
  readonly stageChannels: readonly number[];
  readonly stageStrides: readonly number[];
  readonly defaultNormalization = IMAGENET_NORMALIZATION;
  private source: string;
  private readonly vars = new Map<string, tf.Variable>();
  private readonly dpr: number[];
  private dropRng: Rng;
  private disposed = false;

  /**
   * Reseed the stochastic-depth masks for one training step (Backbone.setStepSeed),
   * so a resumed run draws the same masks as an uninterrupted one.
   */
  setStepSeed(seed: number): void {
    this.dropRng = new Rng(seed).fork(2);
  }

  /**
   * @param name shown in summaries and errors (`mit-b1`).
   * @param config the architecture (see `MIT_CONFIGS`).
   * @param seed seeds the initialisation and the stochastic-depth masks.
   * @param randomInit false: fill with zeros (LayerNorm weights 1), for a model whose
   *   every weight is about to be loaded from a file (skips drawing millions of normals).
   */
  constructor(name: string, config: MiTConfig, seed = 0, randomInit = true) {
    validateMiTConfig(config);
    this.name = name;
    this.config = { ...config };
    this.stageChannels = [...config.embedDims];
    const strides: number[] = [];
    config.strides.reduce((acc, s) => (strides.push(acc * s), acc * s), 1);
    this.stageStrides = strides;
    this.dpr = dropPathRates(config.dropPathRate, config.depths.reduce((a, b) => a + b, 0));
    const rng = new Rng(seed);
    const initRng = rng.fork(1);
    this.dropRng = rng.fork(2);
    const prefix = `${name.replace(/[^A-Za-z0-9_-]/g, "_")}_${instanceCounter++}/`;
    for (const spec of mitParamSpecs(config)) {
      const n = spec.shape.reduce((a, b) => a * b, 1);
      let data: Float32Array;
      switch (randomInit || spec.kind === "normWeight" ? spec.kind : "bias") {
        case "linear":
          data = linearInit(initRng, n);
          break;
        case "conv": {
          // original _init_weights: normal(0, sqrt(2 / fan_out)), fan_out = kh * kw * out / groups
          const [kh, kw, , co] = spec.shape as Four;
          data = normalInit(initRng, n, Math.sqrt(2 / (kh * kw * co)));
          break;
        }
        case "dwconv": {
          const [kh, kw] = spec.shape as Four;
          data = normalInit(initRng, n, Math.sqrt(2 / (kh * kw)));
          break;
        }
        case "normWeight":
          data = new Float32Array(n).fill(1);
          break;
        default:
          data = new Float32Array(n);
      }
      const init = tf.tensor(data, spec.shape, "float32");
      this.vars.set(spec.name, tf.variable(init, true, prefix + spec.name));
      init.dispose(); // the variable holds its own reference to the data
    }
    this.source = randomInit ? `random init (seed ${seed})` : "zeros (awaiting weights)";
  }

  /** Where the weights came from: `random init (seed N)` or the file last loaded. */
  get weightsSource(): string {
    return this.source;
  }

  /** Trainable variables by original SegFormer name (TF.js layouts, see the module doc). */
  namedVariables(): Map<string, tf.Variable> {
    this.checkAlive();
    return new Map(this.vars);
  }

  /** Number of scalar parameters, in total and per stage (patch embedding + blocks + stage norm). */
  parameterCounts(): { total: number; perStage: number[] } {
    const perStage = [0, 0, 0, 0];
    let total = 0;
    for (const [name, v] of this.vars) {
      const m = /^(?:patch_embed|block|norm)(\d)/.exec(name);
      total += v.size;
      if (m) perStage[Number(m[1]) - 1]! += v.size;
    }
    return { total, perStage };
  }

  /**
   * Load a `.safetensors` file with original SegFormer or Hugging Face Segformer names
   * (see ./mit-weights.ts); converts PyTorch layouts. Matching tensors are assigned,
   * the rest is reported by name. Pass the report to `assertCleanLoad` to insist on an
   * exact match.
   */
  loadWeights(file: string, options: MiTWeightsOptions = {}): WeightLoadReport {
    this.checkAlive();
    const report = loadMiTWeights(this.vars, this.config, file, options);
    if (report.loaded.length) this.source = file;
    return report;
  }

  /** Load from tensors already in memory (original or HF names, PyTorch layouts). */
  loadTensors(tensors: NamedTensors, label = "<tensors>", options: MiTWeightsOptions = {}): WeightLoadReport {
    this.checkAlive();
    const report = loadMiTWeights(this.vars, this.config, tensors, options);
    if (report.loaded.length) this.source = label;
    return report;
  }

  /** The weights as PyTorch would hold them (original names, OIHW / [out, in]), e.g. to write a `.safetensors`. */
  stateDict(): NamedTensors {
    this.checkAlive();
    const shapes = expectedPyTorchShapes(this.config);
    const out: NamedTensors = new Map();
    for (const [name, v] of this.vars) {
      const t = tf.tidy(() => toPyTorchLayout(name, v));
      out.set(name, { dtype: "float32", shape: shapes.get(name)!, data: t.dataSync() as Float32Array });
      t.dispose();
    }
    return out;
  }

  private v(name: string): tf.Variable {
    const t = this.vars.get(name);
    if (!t) throw new Error(`${this.name}: no variable ${name}`);
    return t;
  }

  private checkAlive(): void {
    if (this.disposed) throw new Error(`${this.name}: used after dispose()`);
  }

  /** Per-sample stochastic depth scale factors (0 or 1/keep) for one branch, or null when inactive. */
  private drawDropMask(rate: number, batch: number, training: boolean): Float32Array | null {
    if (!training || rate <= 0) return null;
    const keep = 1 - rate;
    const mask = new Float32Array(batch);
    for (let b = 0; b < batch; b++) mask[b] = Math.floor(keep + this.dropRng.next()) / keep;
    return mask;
  }

  /**
   * One transformer block `x += DropPath(Attn(norm1(x)))`, `x += DropPath(MixFFN(norm2(x)))`
   * on tokens `[B*H*W, C]`, as a pure function of `x` and the parameters `P` (names
   * relative to the block), so it can be recomputed for gradient checkpointing.
   */
  private blockFn(x: tf.Tensor2D, P: ParamLookup, g: BlockGeometry): tf.Tensor2D {
    const cfg = this.config;
    const a = tf.tidy(() => attention(layerNorm(x, P("norm1.weight"), P("norm1.bias"), cfg.blockEps), P, g, cfg));
    const x1 = tf.tidy(() => tf.add(x, applyDropMask(a, g.attnMask, g.b)) as tf.Tensor2D);
    a.dispose();
    const f = tf.tidy(() => mixFfn(layerNorm(x1, P("norm2.weight"), P("norm2.bias"), cfg.blockEps), P, g));
    const out = tf.tidy(() => tf.add(x1, applyDropMask(f, g.mlpMask, g.b)));
    tf.dispose([x1, f]);
    return out as tf.Tensor2D;
  }

  /**
   * A block with gradient checkpointing: the forward keeps only the block's input;
   * the backward recomputes the block under a nested gradient tape. Same values, same
   * gradients, a fraction of the memory (the engine otherwise keeps every activation
   * and every intermediate gradient of the whole network until the backward ends).
   */
  private checkpointedBlock(x: tf.Tensor2D, prefix: string, g: BlockGeometry): tf.Tensor2D {
    const names = this.blockParamNames(prefix);
    const vars = names.map((n) => this.v(`${prefix}.${n}`));
    const run = (xi: tf.Tensor, ps: tf.Tensor[]): tf.Tensor2D => {
      const m = new Map(names.map((n, k) => [n, ps[k]!]));
      return this.blockFn(xi as tf.Tensor2D, (n) => m.get(n)!, g);
    };
    const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const save = args[args.length - 1] as tf.GradSaveFunc;
      const inputs = args.slice(0, -1) as tf.Tensor[];
      save(inputs);
      return {
        value: run(inputs[0]!, inputs.slice(1)),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => recomputeGrads((...a: tf.Tensor[]) => run(a[0]!, a.slice(1)), saved, dy),
      };
    });
    return op(x, ...vars) as tf.Tensor2D;
  }

  private readonly paramNameCache = new Map<string, string[]>();
  private blockParamNames(prefix: string): string[] {
    let names = this.paramNameCache.get(prefix);
    if (!names) {
      names = [...this.vars.keys()].filter((n) => n.startsWith(`${prefix}.`)).map((n) => n.slice(prefix.length + 1));
      this.paramNameCache.set(prefix, names);
    }
    return names;
  }

  /**
   * Forward pass: `x` is a normalised NHWC batch (ImageNet mean/std for the
   * pretrained weights). Returns the four stage maps `[B, H/s_i, W/s_i, C_i]`.
   * `training` turns on stochastic depth and, unless disabled with
   * {@link setGradientCheckpointing}, per-block gradient checkpointing.
   */
  apply(x: tf.Tensor4D, training: boolean): tf.Tensor4D[] {
    this.checkAlive();
    if (x.rank !== 4 || x.shape[3] !== 3) throw new Error(`${this.name}: expected an NHWC batch with 3 channels, got shape [${x.shape.join(", ")}]`);
    return tf.tidy(() => {
      const cfg = this.config;
      const outs: tf.Tensor4D[] = [];
      let feat: tf.Tensor4D = x;
      let blockIndex = 0;
      const b = x.shape[0];
      for (let s = 0; s < 4; s++) {
        const i = s + 1;
        const c = cfg.embedDims[s]!;
        const k = cfg.patchSizes[s]!;
        const pad = Math.floor(k / 2);
        const input = feat;
        let tokens = tf.tidy(() => {
          const emb = patchEmbedConvOp(input, this.v(`patch_embed${i}.proj.weight`) as tf.Tensor4D, this.v(`patch_embed${i}.proj.bias`), cfg.strides[s]!, pad, s > 0);
          return layerNorm(tf.reshape(emb, [-1, c]), this.v(`patch_embed${i}.norm.weight`), this.v(`patch_embed${i}.norm.bias`), cfg.defaultEps);
        });
        const h = Math.floor((input.shape[1] + 2 * pad - k) / cfg.strides[s]!) + 1;
        const w = Math.floor((input.shape[2] + 2 * pad - k) / cfg.strides[s]!) + 1;
        for (let j = 0; j < cfg.depths[s]!; j++, blockIndex++) {
          const prefix = `block${i}.${j}`;
          const rate = this.dpr[blockIndex]!;
          const g: BlockGeometry = {
            stage: s,
            b,
            h,
            w,
            attnMask: this.drawDropMask(rate, b, training),
            mlpMask: this.drawDropMask(rate, b, training),
          };
          const next =
            training && this.checkpointing
              ? this.checkpointedBlock(tokens, prefix, g)
              : this.blockFn(tokens, (n) => this.v(`${prefix}.${n}`), g);
          tokens.dispose();
          tokens = next;
        }
        const t = tokens;
        feat = tf.tidy(() => tf.reshape(layerNorm(t, this.v(`norm${i}.weight`), this.v(`norm${i}.bias`), cfg.blockEps), [b, h, w, c]));
        tokens.dispose();
        outs.push(feat);
      }
      return outs;
    });
  }

  private checkpointing = true;
  /**
   * Per-block gradient checkpointing when `training` (default on): trades one extra
   * forward pass of each block during the backward for memory. Off gives the same
   * gradients with the whole network's activations held at once.
   */
  setGradientCheckpointing(on: boolean): void {
    this.checkpointing = on;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }
}

