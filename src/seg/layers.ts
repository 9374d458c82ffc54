/**
 * Building blocks of the stage-2 segmentation networks (METHOD.md section 5,
 * "Stage 2"): atrous convolution, bilinear upsampling with half-pixel centres,
 * group normalisation, and small stateful layers that hold their variables under
 * stable checkpoint names.
 *
 * Two TensorFlow.js 4.22 gradient gaps shape this file, both checked by
 * test/seg/layers.test.ts:
 * - `tf.conv2d` / `tf.depthwiseConv2d` with `dilations > 1` have no gradient
 *   ("dilation rates greater than 1 are not yet supported in gradients", CPU and
 *   WASM). {@link atrousConv2d} computes the same convolution exactly from ops
 *   that have gradients: by space-to-batch (pad, fold the `rate x rate` phases
 *   into the batch, an ordinary rate-1 convolution, fold back), or as a sum of
 *   shifted taps.
 * - `tf.image.resizeBilinear`'s gradient ignores `halfPixelCenters` (so the
 *   gradient of the PyTorch `align_corners=False` resize is wrong), and on CPU it
 *   returns a transposed shape for non-square inputs. {@link upsampleBilinear}
 *   multiplies by separable interpolation matrices instead: same forward values
 *   as `resizeBilinear(x, size, false, true)`, gradients by matMul.
 */
import * as tf from "@tensorflow/tfjs";
import { resizeBilinear } from "../runtime/resize";
import { Rng } from "../util/rng";

/** How {@link atrousConv2d} computes a dilated convolution (both exact and differentiable). */
export type AtrousMethod = "auto" | "space-to-batch" | "taps";

/**
 * Atrous (dilated) convolution with stride 1 and `same` zero padding, as in
 * DeepLab (Chen et al. 2017, eq. 1: y[i] = sum_k x[i + r*k] w[k]), made
 * differentiable on every backend from ops that have gradients:
 *
 * - `space-to-batch` (TensorFlow's `atrous_conv2d` construction): zero-pad by
 *   `r*(k-1)/2` on each side (plus up to `r-1` rows/columns at the bottom/right so
 *   the padded sides are multiples of `r`); reshape `[B, H', W', C]` to
 *   `[B, H'/r, r, W'/r, r, C]` and move the two phase axes to the front, giving
 *   `r*r*B` sub-images that sample every `r`-th pixel; an ordinary `valid`
 *   convolution on them (a dilated tap `r*k` in the image is tap `k` in a
 *   sub-image); the inverse reshape/transpose; crop to `[B, H, W, O]`.
 * - `taps`: pad once, then for each of the k*k taps a shifted view of the input
 *   times that tap's weights (a 1x1 convolution, or a per-channel product for a
 *   depthwise filter), summed. Taps whose offset is at least the map's side read
 *   only padding and are skipped. On DeepLab's small stride-16 maps with large
 *   rates this avoids the padding blow-up of space-to-batch (a 7x7 map at rate 4
 *   becomes 16x16), so it is `auto`'s choice for depthwise filters.
 *
 * Whatever the method, when `r` is at least the map's height and width only the
 * centre tap sees the image, and the result is computed as a 1x1 convolution with
 * it (the other taps get a zero gradient, as they should).
 *
 * @param x input `[B, H, W, C]`
 * @param filter `[k, k, C, O]` (or `[k, k, C, 1]` with `depthwise`), k odd
 * @param rate dilation rate r >= 1
 * @param depthwise depthwise convolution (channel multiplier 1: `C` outputs)
 * @param method `auto` (default): `taps` for depthwise filters, `space-to-batch` otherwise
 */
export function atrousConv2d(x: tf.Tensor4D, filter: tf.Tensor4D, rate: number, depthwise = false, method: AtrousMethod = "auto"): tf.Tensor4D {
  const [kh, kw, fc, fo] = filter.shape;
  if (!Number.isInteger(rate) || rate < 1) throw new Error(`atrousConv2d: rate must be a positive integer, got ${rate}`);
  if (kh % 2 !== 1 || kw % 2 !== 1) throw new Error(`atrousConv2d: kernel must have odd sides, got ${kh}x${kw}`);
  if (depthwise && fo !== 1) throw new Error(`atrousConv2d: depthwise filters need channel multiplier 1, got [${filter.shape}]`);
  const conv = (a: tf.Tensor4D, f: tf.Tensor4D, pad: "same" | "valid") => (depthwise ? tf.depthwiseConv2d(a, f, 1, pad) : tf.conv2d(a, f, 1, pad));
  if (rate === 1) return conv(x, filter, "same");
  const [b, h, w, c] = x.shape;
  const hh = (kh - 1) / 2;
  const hw = (kw - 1) / 2;
  if (rate >= h && rate >= w) {
    // Only the centre tap ever sees the image.
    return tf.tidy(() => conv(x, tf.slice(filter, [hh, hw, 0, 0], [1, 1, fc, fo]), "valid"));
  }
  const m = method === "auto" ? (depthwise ? "taps" : "space-to-batch") : method;
  if (m === "taps") {
    return tf.tidy(() => {
      const ph = Math.min(rate * hh, h);
      const pw = Math.min(rate * hw, w);
      const xp = tf.pad(x, [
        [0, 0],
        [ph, ph],
        [pw, pw],
        [0, 0],
      ]);
      const parts: tf.Tensor4D[] = [];
      for (let i = 0; i < kh; i++) {
        const dy = (i - hh) * rate;
        if (Math.abs(dy) >= h) continue;
        for (let j = 0; j < kw; j++) {
          const dx = (j - hw) * rate;
          if (Math.abs(dx) >= w) continue;
          const view = tf.slice(xp, [0, ph + dy, pw + dx, 0], [b, h, w, c]);
          const tap = tf.slice(filter, [i, j, 0, 0], [1, 1, fc, fo]);
          parts.push(depthwise ? (tf.mul(view, tf.reshape(tap, [c])) as tf.Tensor4D) : tf.conv2d(view, tap, 1, "valid"));
        }
      }
      return (parts.length === 1 ? parts[0]! : tf.addN(parts)) as tf.Tensor4D;
    });
  }
  return tf.tidy(() => {
    const eh = (rate - (h % rate)) % rate;
    const ew = (rate - (w % rate)) % rate;
    const padH = rate * hh;
    const padW = rate * hw;
    const xp = tf.pad(x, [
      [0, 0],
      [padH, padH + eh],
      [padW, padW + ew],
      [0, 0],
    ]);
    const hp = (h + 2 * padH + eh) / rate;
    const wp = (w + 2 * padW + ew) / rate;
    // [B, hp, r, wp, r, C] -> [r, r, B, hp, wp, C] -> [r*r*B, hp, wp, C]
    const s2b = tf.reshape(tf.transpose(tf.reshape(xp, [b, hp, rate, wp, rate, c]), [2, 4, 0, 1, 3, 5]), [rate * rate * b, hp, wp, c]) as tf.Tensor4D;
    const y = conv(s2b, filter, "valid");
    const [, oh, ow, o] = y.shape;
    // [r, r, B, oh, ow, O] -> [B, oh, r, ow, r, O] -> [B, oh*r, ow*r, O]
    const b2s = tf.reshape(tf.transpose(tf.reshape(y, [rate, rate, b, oh, ow, o]), [2, 3, 0, 4, 1, 5]), [b, oh * rate, ow * rate, o]);
    return tf.slice(b2s, [0, 0, 0, 0], [b, h, w, o]) as tf.Tensor4D;
  });
}

/**
 * Bilinear resize of NHWC maps with half-pixel centres and an exact gradient (see
 * runtime/resize.ts for why not `tf.image.resizeBilinear`). Returns `x` itself when
 * the size already matches.
 */
export function upsampleBilinear(x: tf.Tensor4D, size: [number, number]): tf.Tensor4D {
  return x.shape[1] === size[0] && x.shape[2] === size[1] ? x : resizeBilinear(x, size);
}

/**
 * Group normalisation (Wu and He 2018), as `torch.nn.GroupNorm`: per sample and
 * group of `C/groups` channels, subtract the mean and divide by
 * `sqrt(biased variance + eps)` over the group's pixels and channels, then scale
 * by `gamma` and shift by `beta` per channel. Used in the decoders in place of
 * BatchNorm (see {@link ConvNormAct}).
 */
export function groupNorm(x: tf.Tensor4D, gamma: tf.Tensor1D, beta: tf.Tensor1D, groups: number, eps = 1e-5): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  if (c % groups !== 0) throw new Error(`groupNorm: ${c} channels do not split into ${groups} groups`);
  return tf.tidy(() => {
    const xg = tf.reshape(x, [b, h * w, groups, c / groups]);
    const mean = tf.mean(xg, [1, 3], true);
    const d = tf.sub(xg, mean);
    const v = tf.mean(tf.square(d), [1, 3], true);
    const y = tf.reshape(tf.mul(d, tf.rsqrt(tf.add(v, eps))), [b, h, w, c]);
    return tf.add(tf.mul(y, gamma), beta) as tf.Tensor4D;
  });
}

/** The largest divisor of `channels` that is at most `maxGroups` (32 groups, GroupNorm's default, when it divides). */
export function groupsFor(channels: number, maxGroups = 32): number {
  for (let g = Math.min(maxGroups, channels); g > 1; g--) if (channels % g === 0) return g;
  return 1;
}

/**
 * Holds a model's variables by stable checkpoint name and creates them with
 * seeded initialisers (host-side mulberry32 streams, identical on every
 * backend).
 */
export class ParamStore {
  readonly vars = new Map<string, tf.Variable>();
  private readonly rng: Rng;
  constructor(seed: number) {
    this.rng = new Rng(seed);
  }

  private add(name: string, shape: number[], data: Float32Array): tf.Variable {
    if (this.vars.has(name)) throw new Error(`ParamStore: variable ${name} defined twice`);
    // Inside tidy: tf.variable shares its initial tensor's data; the initial tensor must go.
    const v = tf.tidy(() => tf.variable(tf.tensor(data, shape, "float32"), true));
    this.vars.set(name, v);
    return v;
  }

  /** Normal(0, std) initialisation. */
  normal(name: string, shape: number[], std: number): tf.Variable {
    const n = shape.reduce((a, b) => a * b, 1);
    const r = this.rng.fork(this.vars.size + 1);
    return this.add(name, shape, Float32Array.from({ length: n }, () => r.normal(0, std)));
  }

  /** He (Kaiming) normal for ReLU layers: std = sqrt(2 / fanIn), as `nn.init.kaiming_normal_` in DeepLab-v3+ code. */
  heNormal(name: string, shape: number[], fanIn: number): tf.Variable {
    return this.normal(name, shape, Math.sqrt(2 / fanIn));
  }

  constant(name: string, shape: number[], value: number): tf.Variable {
    return this.add(name, shape, new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value));
  }

  dispose(): void {
    tf.dispose([...this.vars.values()]);
    this.vars.clear();
  }
}

/** Arguments of a {@link Conv}. */
export interface ConvArgs {
  /** Kernel side k (odd). */
  kernel: number;
  /** Input channels. */
  in: number;
  /** Output channels (ignored for depthwise: outputs = inputs). */
  out: number;
  /** Atrous rate (default 1). */
  rate?: number;
  /** Depthwise convolution (default false). */
  depthwise?: boolean;
  /** Add a bias (default false: a normalisation follows). */
  bias?: boolean;
  /** Initial weight std; default He normal. */
  initStd?: number;
}

/** A stride-1, `same`-padded (atrous) convolution with variables `<name>/weight` (`[k,k,in,out]`) and optionally `<name>/bias`. */
export class Conv {
  readonly weight: tf.Variable;
  readonly bias?: tf.Variable;
  readonly rate: number;
  readonly depthwise: boolean;
  readonly outChannels: number;
  constructor(store: ParamStore, name: string, a: ConvArgs) {
    this.rate = a.rate ?? 1;
    this.depthwise = a.depthwise ?? false;
    this.outChannels = this.depthwise ? a.in : a.out;
    const shape = this.depthwise ? [a.kernel, a.kernel, a.in, 1] : [a.kernel, a.kernel, a.in, a.out];
    const fanIn = a.kernel * a.kernel * (this.depthwise ? 1 : a.in);
    this.weight = a.initStd !== undefined ? store.normal(`${name}/weight`, shape, a.initStd) : store.heNormal(`${name}/weight`, shape, fanIn);
    if (a.bias) this.bias = store.constant(`${name}/bias`, [this.outChannels], 0);
  }
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const y = atrousConv2d(x, this.weight as tf.Tensor4D, this.rate, this.depthwise);
      return this.bias ? (tf.add(y, this.bias) as tf.Tensor4D) : y;
    });
  }
}

/** Convolution, GroupNorm, ReLU: the decoders' `Conv-BN-ReLU` with GroupNorm in place of BatchNorm. */
export class ConvNormAct {
  private readonly conv: Conv;
  private readonly gamma: tf.Variable;
  private readonly beta: tf.Variable;
  private readonly groups: number;
  constructor(store: ParamStore, name: string, a: ConvArgs, maxGroups: number) {
    this.conv = new Conv(store, `${name}/conv`, a);
    const c = this.conv.outChannels;
    this.groups = groupsFor(c, maxGroups);
    this.gamma = store.constant(`${name}/gn/weight`, [c], 1);
    this.beta = store.constant(`${name}/gn/bias`, [c], 0);
  }
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => tf.relu(groupNorm(this.conv.apply(x), this.gamma as tf.Tensor1D, this.beta as tf.Tensor1D, this.groups)));
  }
}

/**
 * Atrous separable convolution (DeepLab-v3+, Chen et al. 2018, section 3.1): a
 * depthwise 3x3 atrous convolution followed by a pointwise 1x1 convolution, then
 * GroupNorm and ReLU.
 */
export class SeparableConvNormAct {
  private readonly dw: Conv;
  private readonly pw: ConvNormAct;
  constructor(store: ParamStore, name: string, inC: number, outC: number, rate: number, maxGroups: number) {
    this.dw = new Conv(store, `${name}/depthwise`, { kernel: 3, in: inC, out: inC, rate, depthwise: true });
    this.pw = new ConvNormAct(store, `${name}/pointwise`, { kernel: 1, in: inC, out: outC }, maxGroups);
  }
  apply(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => this.pw.apply(this.dw.apply(x)));
  }
}
