/**
 * ImgMatchNet (METHOD.md section 4): the adaptive threshold of eq. 4, pair
 * selection, the foreground/background separation of eq. 5, and region encoding
 * through the frozen encoder phi.
 */
import * as tf from "@tensorflow/tfjs";
import type { PbipConfig } from "../config/profiles";
import type { ImageEncoder } from "../encoders/types";
import { resizeBilinear } from "../runtime/resize";

/**
 * The map used for matching: the deepest used stage (release) or the sum of all
 * used stages' maps upsampled to the input size (paper eq. 3). [B, H, W, S].
 */
export function matchingMap(maps: tf.Tensor4D[], size: [number, number], source: "last" | "sum"): tf.Tensor4D {
  return tf.tidy(() => {
    // Exact-gradient resize: tf.image.resizeBilinear's gradient ignores half-pixel centres (tfjs 4.22).
    const up = (m: tf.Tensor4D) => (m.shape[1] === size[0] && m.shape[2] === size[1] ? m : resizeBilinear(m, size));
    if (source === "last") return up(maps[maps.length - 1]!);
    return tf.addN(maps.map(up)) as tf.Tensor4D;
  });
}

/**
 * Eq. 4: `b = M >= tau` with `tau = delta * max(M)`. The release takes the max over
 * all channels and pixels of each image (`maxOver: "image"`); `"channel"` takes it
 * per image and channel. Returns a 0/1 float mask [B, H, W, S] without gradient.
 */
export function adaptiveThreshold(m: tf.Tensor4D, delta: number, maxOver: "image" | "channel"): tf.Tensor4D {
  // The mask's gradient is zero (a step function), so it is declared so: left to autodiff,
  // the max's gradient would still build its mask with a broadcasting equal, which the
  // WASM backend runs at ~0.1 us per element (0.8 s of a release step), to multiply it by zero.
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const mi = args[0] as tf.Tensor4D;
    const mx = maxOver === "image" ? tf.max(mi, [1, 2, 3], true) : tf.max(mi, [1, 2], true);
    const tau = tf.mul(mx, delta);
    // [m >= tau] as 1 - step(tau - m) (step(x) = x > 0): the same bits as a broadcasting
    // greaterEqual (tau - m > 0 exactly when tau > m), which the WASM backend runs ~100x
    // slower (1 s on a release batch's maps).
    return { value: tf.sub(1, tf.step(tf.sub(tau, mi))), gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy) };
  });
  return tf.tidy(() => f(m) as tf.Tensor4D);
}

/** One (image, subclass) pair used for matching. */
export interface MatchPairs {
  /** Image index in the batch, per pair. */
  image: number[];
  /** Subclass channel (0..S-1), per pair: the pair's own prototype p+. */
  subclass: number[];
  /** Class of that subclass, per pair. */
  cls: number[];
}

/**
 * Pair selection (release): (image, subclass) where the class is in the image label
 * and the subclass's pooled logit exceeds the mean of its class's K logits.
 * With K = 1 every labelled class contributes its single subclass.
 *
 * @param logits pooled subclass logits of the matching stage [B, S] (read on the host)
 * @param labels multi-hot [B, N]
 */
export function selectPairs(logits: ArrayLike<number>, labels: ArrayLike<number>, batch: number, k: readonly number[]): MatchPairs {
  const n = k.length;
  const s = k.reduce((a, b) => a + b, 0);
  const out: MatchPairs = { image: [], subclass: [], cls: [] };
  for (let b = 0; b < batch; b++) {
    let off = 0;
    for (let c = 0; c < n; c++) {
      const kc = k[c]!;
      if (labels[b * n + c]! > 0.5) {
        let mean = 0;
        for (let j = 0; j < kc; j++) mean += logits[b * s + off + j]!;
        mean /= kc;
        for (let j = 0; j < kc; j++) {
          if (kc === 1 || logits[b * s + off + j]! > mean) {
            out.image.push(b);
            out.subclass.push(off + j);
            out.cls.push(c);
          }
        }
      }
      off += kc;
    }
  }
  return out;
}

/** Gather, per pair, its image's channel of a map: [B, H, W, S] -> [P, H, W, 1]. */
export function pairChannels(m: tf.Tensor4D, pairs: MatchPairs): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, s] = m.shape;
    const flat = tf.reshape(tf.transpose(m, [0, 3, 1, 2]), [b * s, h * w]);
    const idx = tf.tensor1d(
      pairs.image.map((i, p) => i * s + pairs.subclass[p]!),
      "int32",
    );
    return tf.reshape(tf.gather(flat, idx), [pairs.image.length, h, w, 1]) as tf.Tensor4D;
  });
}

/**
 * Shrink [B, H, W, C] to [B, h, w, C] by area averaging when H and W are multiples
 * of h and w (average pooling), bilinearly otherwise.
 */
export function areaResize(x: tf.Tensor4D, size: [number, number]): tf.Tensor4D {
  const [, hh, ww] = x.shape;
  if (hh === size[0] && ww === size[1]) return x.clone();
  if (hh % size[0] === 0 && ww % size[1] === 0) {
    const f: [number, number] = [hh / size[0], ww / size[1]];
    return tf.avgPool(x, f, f, "valid");
  }
  return resizeBilinear(x, size);
}

/**
 * Per-sample, per-channel min-max normalisation of [P, H, W, C] to [0, 1]:
 * y = (x - min) / (max - min + eps).
 *
 * The gradient is written out (the same as TF.js's autodiff, ties included: every
 * element equal to the min or the max receives that statistic's whole gradient),
 * because TF.js's min/max gradient builds its masks with a broadcasting `equal`
 * that the WASM backend runs at ~0.1 us per element (2.3 s of a release step):
 * dx = dy / d + [x = min] sum(dy (y - 1)) / d - [x = max] sum(dy y) / d, with
 * d = max - min + eps and [x = min] = 1 - sign(x - min) (x - min >= 0, and 0 only
 * where x equals the min).
 */
export function minMaxPerChannel(x: tf.Tensor4D, eps = 1e-5): tf.Tensor4D {
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [xi, save] = args as [tf.Tensor4D, tf.GradSaveFunc];
    const mn = tf.min(xi, [1, 2], true);
    const mx = tf.max(xi, [1, 2], true);
    const d = tf.add(tf.sub(mx, mn), eps);
    const y = tf.div(tf.sub(xi, mn), d) as tf.Tensor4D;
    save([xi, mn, mx, d, y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, smn, smx, sd, sy] = saved as tf.Tensor4D[];
        const gMin = tf.div(tf.sum(tf.mul(dy, tf.sub(sy!, 1)), [1, 2], true), sd!);
        const gMax = tf.neg(tf.div(tf.sum(tf.mul(dy, sy!), [1, 2], true), sd!));
        const atMin = tf.sub(1, tf.sign(tf.sub(sx!, smn!)));
        const atMax = tf.sub(1, tf.sign(tf.sub(smx!, sx!)));
        return tf.addN([tf.div(dy, sd!), tf.mul(atMin, gMin), tf.mul(atMax, gMax)]);
      },
    };
  });
  return f(x) as tf.Tensor4D;
}

export interface Regions {
  /** X_FG per pair [P, H, W, 3] (RGB, [0,1]). */
  fg: tf.Tensor4D;
  /** X_BG per pair [P, H, W, 3]. */
  bg: tf.Tensor4D;
  /** The foreground weights used ([P, H, W, 1]): b * M' (M' in [0,1]). */
  fgWeight: tf.Tensor4D;
  /** The background weights used: (1 - b) * (1 - M'). */
  bgWeight: tf.Tensor4D;
}

/**
 * Eq. 5, foreground/background separation for each pair, on RGB [0,1] images.
 *
 * - release (`regionMinMax`): `X_FG = b * minmax(M * X)`, `X_BG = (1-b) * minmax((1-M) * X)`,
 *   min-max per pair and RGB channel (the release does this on its normalised input;
 *   pbip applies it to RGB [0,1], which the encoder then normalises itself).
 * - paper: `X_FG = b * M' * X`, `X_BG = (1-b) * (1-M') * X` with M' the pair's map
 *   min-max normalised to [0,1] so that the regions stay images.
 * - `adaptiveThreshold: false` (ablation): b = 1 for the foreground and 0 for the background.
 *
 * Gradients flow through M (not through b).
 *
 * @param images [B, H, W, 3]
 * @param m the matching map at image size [B, H, W, S]
 * @param b the eq. 4 mask [B, H, W, S]
 */
export function foregroundBackground(images: tf.Tensor4D, m: tf.Tensor4D, b: tf.Tensor4D, pairs: MatchPairs, cfg: PbipConfig["match"]): Regions {
  return tf.tidy(() => {
    const idx = tf.tensor1d(pairs.image, "int32");
    const x = tf.gather(images, idx) as tf.Tensor4D;
    const mp = pairChannels(m, pairs);
    const bp = cfg.adaptiveThreshold ? pairChannels(b, pairs) : tf.onesLike(mp);
    const notB = cfg.adaptiveThreshold ? tf.sub(1, bp) : tf.onesLike(mp);
    const m01 = minMaxPerChannel(mp);
    let fg: tf.Tensor4D;
    let bg: tf.Tensor4D;
    if (cfg.regionMinMax) {
      fg = tf.mul(bp, minMaxPerChannel(tf.mul(mp, x) as tf.Tensor4D)) as tf.Tensor4D;
      bg = tf.mul(notB, minMaxPerChannel(tf.mul(tf.sub(1, mp), x) as tf.Tensor4D)) as tf.Tensor4D;
    } else {
      fg = tf.mul(tf.mul(bp, m01), x) as tf.Tensor4D;
      bg = tf.mul(tf.mul(notB, tf.sub(1, m01)), x) as tf.Tensor4D;
    }
    return {
      fg,
      bg,
      fgWeight: tf.mul(bp, m01) as tf.Tensor4D,
      bgWeight: tf.mul(notB, tf.sub(1, m01)) as tf.Tensor4D,
    };
  });
}

/**
 * Region features in the `image` mode: X_FG and X_BG go through the frozen encoder
 * inside the training graph (the method as stated; needs a differentiable encoder).
 * Returns pooled features [P, d] each.
 */
export function encodeRegionsImage(encoder: ImageEncoder, regions: Regions): { fg: tf.Tensor2D; bg: tf.Tensor2D } {
  if (!encoder.apply) throw new Error(`encoder ${encoder.identity.name} is not differentiable: use the "feature" region mode`);
  return tf.tidy(() => {
    const p = regions.fg.shape[0];
    // One batch through the encoder for both region sets.
    const both = encoder.apply!(tf.concat([regions.fg, regions.bg], 0) as tf.Tensor4D).pooled;
    return { fg: tf.slice(both, [0, 0], [p, -1]) as tf.Tensor2D, bg: tf.slice(both, [p, 0], [p, -1]) as tf.Tensor2D };
  });
}

/**
 * Region features in the `feature` mode (this project's variant, not the paper's):
 * the encoder's dense feature map D of each image, computed once without gradients
 * (cacheable, so ONNX encoders work too), averaged under the region weights resized
 * to D's grid: f = sum_xy w(xy) D(xy) / sum_xy w(xy). Gradients flow through w into M.
 *
 * @param dense D per image [B, h, w, d] (constant)
 */
export function encodeRegionsFeature(dense: tf.Tensor4D, regions: Regions, pairs: MatchPairs): { fg: tf.Tensor2D; bg: tf.Tensor2D } {
  return tf.tidy(() => {
    const [, h, w, d] = dense.shape;
    const dp = tf.reshape(tf.gather(dense, tf.tensor1d(pairs.image, "int32")), [pairs.image.length, h * w, d]);
    const pool = (wt: tf.Tensor4D) => {
      const small = tf.reshape(areaResize(wt, [h, w]), [wt.shape[0], 1, h * w]);
      const num = tf.reshape(tf.matMul(small, dp), [wt.shape[0], d]);
      return tf.div(num, tf.add(tf.sum(small, [1, 2]).reshape([-1, 1]), 1e-6)) as tf.Tensor2D;
    };
    return { fg: pool(regions.fgWeight), bg: pool(regions.bgWeight) };
  });
}
