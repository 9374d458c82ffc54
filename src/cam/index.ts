/**
 * Class activation maps and pseudo-masks (METHOD.md section 5): per-stage class
 * maps (subclass merge, ReLU, per-channel min-max, label gating, upsampling),
 * stage fusion, test-time augmentation, and background handling.
 */
import * as tf from "@tensorflow/tfjs";
import { boolToFloat } from "../runtime/ops";
import type { PbipConfig } from "../config/profiles";
import type { ClassNet } from "../model/classnet";
import { mergeSubclasses } from "../model/heads";
import { isWhite } from "../data/glass";
import type { RgbImage } from "../data/image";

export type CamConfig = PbipConfig["cam"];

/**
 * One stage's class map: merge the K subclass channels (`softmax`-weighted as the release, or their `mean` as eq. 2), ReLU,
 * min-max per image and class over the pixels, multiply by the gate (image-level
 * labels or thresholded predictions), upsample to `size`.
 *
 * @param maps M_i [B, h, w, S]
 * @param gate [B, N] in {0, 1}
 * @returns [B, H, W, N] in [0, 1]
 */
export function stageCam(maps: tf.Tensor4D, k: readonly number[], gate: tf.Tensor2D, size: [number, number], merge: "softmax" | "mean" = "softmax"): tf.Tensor4D {
  return tf.tidy(() => {
    const merged = tf.relu(mergeSubclasses(maps, k, merge));
    const mn = tf.min(merged, [1, 2], true);
    const mx = tf.max(merged, [1, 2], true);
    const norm = tf.div(tf.sub(merged, mn), tf.add(tf.sub(mx, mn), 1e-5));
    const gated = tf.mul(norm, tf.reshape(gate, [gate.shape[0], 1, 1, gate.shape[1]])) as tf.Tensor4D;
    return gated.shape[1] === size[0] && gated.shape[2] === size[1] ? gated : tf.image.resizeBilinear(gated, size, false, true);
  });
}

/** Fuse stage CAMs with weights indexed by stage number (1-based): sum_s w_s * CAM_s. */
export function fuseStageCams(cams: tf.Tensor4D[], stages: number[], weights: readonly number[]): tf.Tensor4D {
  return tf.tidy(() => {
    const terms = cams.map((c, i) => tf.mul(c, weights[stages[i]! - 1] ?? 0));
    return tf.addN(terms) as tf.Tensor4D;
  });
}

/** Image-level class probabilities [B, N] from the deepest used stage (subclass merge, default softmax as the release; sigmoid). */
export function classProbabilities(net: ClassNet, logits: tf.Tensor2D[], merge: "softmax" | "mean" = "softmax"): tf.Tensor2D {
  return tf.tidy(() => tf.sigmoid(mergeSubclasses(logits[logits.length - 1]!, net.k, merge)) as tf.Tensor2D);
}

export interface CamResult {
  /** Fused CAMs [B, H, W, N] (foreground classes), TTA-averaged. */
  cams: tf.Tensor4D;
  /** Gate used [B, N]. */
  gate: tf.Tensor2D;
  /** Predicted image-level probabilities [B, N]. */
  probs: tf.Tensor2D;
}

/**
 * Fused CAMs of a batch with test-time augmentation (h-flip x intensity scales,
 * averaged), upsampled to `outSize` (default: the image size). `labels` gate the channels when `cfg.gate` is `gt`; otherwise the
 * predicted probabilities above `cfg.gateThreshold` do (at least the top class).
 */
export function computeCams(net: ClassNet, images: tf.Tensor4D, labels: tf.Tensor2D | undefined, cfg: CamConfig, outSize?: [number, number]): CamResult {
  return tf.tidy(() => {
    const size: [number, number] = outSize ?? [images.shape[1], images.shape[2]];
    const plain = net.forward(images, false);
    const probs = classProbabilities(net, plain.logits, cfg.merge);
    let gate: tf.Tensor2D;
    if (cfg.gate === "gt") {
      if (!labels) throw new Error("computeCams: cam.gate is `gt` but no labels were given");
      gate = boolToFloat(tf.greater(labels, 0.5)) as tf.Tensor2D;
    } else {
      gate = boolToFloat(tf.logicalOr(tf.greater(probs, cfg.gateThreshold), tf.equal(probs, tf.max(probs, 1, true)))) as tf.Tensor2D;
    }
    const variants: { flip: boolean; scale: number }[] = [];
    for (const flip of cfg.tta.hflip ? [false, true] : [false]) for (const s of cfg.tta.intensities.length ? cfg.tta.intensities : [1]) variants.push({ flip, scale: s });
    const fused: tf.Tensor4D[] = [];
    for (const v of variants) {
      const out =
        !v.flip && v.scale === 1
          ? plain
          : net.forward((v.flip ? tf.reverse(tf.mul(images, v.scale), 2) : tf.mul(images, v.scale)) as tf.Tensor4D, false);
      const cams = out.maps.map((m) => stageCam(m, net.k, gate, size, cfg.merge));
      let f = fuseStageCams(cams, out.stages, cfg.stageWeights);
      if (v.flip) f = tf.reverse(f, 2);
      fused.push(f);
    }
    const cams = tf.div(tf.addN(fused), fused.length) as tf.Tensor4D;
    return { cams, gate, probs };
  });
}

/**
 * Turn fused CAMs into class-id masks [B, H, W] (int32).
 *
 * - `none` (release): argmax over the foreground classes; no pixel is background.
 * - `power` (TPRO): a background channel `(1 - max_c CAM_c)^p` joins the argmax.
 * - `white` (TPRO for LUAD): argmax over the foreground classes, then pixels whose
 *   grey level exceeds `whiteGrey` become background, ignoring white blobs smaller
 *   than `minBlob` pixels.
 * - `power-white`: both.
 *
 * @param images RGB [0,1] [B, H, W, 3], needed for `white`
 */
export async function camsToMasks(cams: tf.Tensor4D, backgroundId: number, bg: CamConfig["background"], images?: tf.Tensor4D): Promise<tf.Tensor3D> {
  const ids = tf.tidy(() => {
    if (bg.mode === "none" || bg.mode === "white") return tf.argMax(cams, 3);
    const bgChan = tf.pow(tf.sub(1, tf.max(cams, 3, true)), bg.power);
    const withBg = tf.concat([cams, bgChan], 3);
    const am = tf.argMax(withBg, 3);
    const n = cams.shape[3];
    // The background channel is index n in the concat; map it to backgroundId.
    return tf.where(tf.equal(am, n), tf.fill(am.shape as [number, number, number], backgroundId, "int32"), am);
  }) as tf.Tensor3D;
  if (bg.mode !== "white" && bg.mode !== "power-white") return ids;
  if (!images) {
    ids.dispose();
    throw new Error("camsToMasks: background mode `white` needs the images");
  }
  const [b, h, w] = ids.shape;
  if (images.shape[0] !== b || images.shape[1] !== h || images.shape[2] !== w || images.shape[3] !== 3) {
    ids.dispose();
    throw new Error(`camsToMasks: images [${images.shape.join(", ")}] do not match the CAMs' [${b}, ${h}, ${w}] (RGB)`);
  }
  // Back to 8-bit values (the images were read from 8-bit files), so the rule is the exact integer test.
  const px = Uint8Array.from(await images.data(), (v) => Math.max(0, Math.min(255, Math.round(v * 255))));
  const m = Int32Array.from(await ids.data());
  ids.dispose();
  for (let i = 0; i < b; i++) {
    const white = whiteRuleMask({ data: px.subarray(3 * i * h * w, 3 * (i + 1) * h * w), width: w, height: h }, bg.whiteGrey, bg.minBlob);
    for (let p = 0; p < h * w; p++) if (white[p]) m[i * h * w + p] = backgroundId;
  }
  return tf.tensor3d(m, [b, h, w], "int32");
}

/**
 * The white rule of pseudo-masks (`cam.background` mode `white`) on an 8-bit RGB
 * image: 1 for pixels it calls glass, those whose ITU-R 601 grey is strictly above
 * `whiteGrey` (computed exactly in integers, as the bank's `whiteFraction`), except
 * white blobs under `minBlob` pixels (4-connected), which stay tissue.
 */
export function whiteRuleMask(image: RgbImage, whiteGrey: number, minBlob: number): Uint8Array {
  const { data, width, height } = image;
  if (data.length !== width * height * 3) throw new Error(`whiteRuleMask: ${data.length} bytes for a ${width}x${height} RGB image`);
  const white = new Uint8Array(width * height);
  for (let p = 0; p < white.length; p++) white[p] = isWhite(data[3 * p]!, data[3 * p + 1]!, data[3 * p + 2]!, whiteGrey) ? 1 : 0;
  removeSmallBlobs(white, width, height, minBlob);
  return white;
}

/** Clear 4-connected blobs of 1s smaller than `minSize` pixels, in place. */
export function removeSmallBlobs(mask: Uint8Array, width: number, height: number, minSize: number): void {
  const seen = new Uint8Array(mask.length);
  const stack: number[] = [];
  const blob: number[] = [];
  for (let s = 0; s < mask.length; s++) {
    if (!mask[s] || seen[s]) continue;
    blob.length = 0;
    stack.push(s);
    seen[s] = 1;
    while (stack.length) {
      const p = stack.pop()!;
      blob.push(p);
      const x = p % width;
      const y = (p - x) / width;
      const nb = [x > 0 ? p - 1 : -1, x < width - 1 ? p + 1 : -1, y > 0 ? p - width : -1, y < height - 1 ? p + width : -1];
      for (const q of nb) {
        if (q >= 0 && mask[q] && !seen[q]) {
          seen[q] = 1;
          stack.push(q);
        }
      }
    }
    if (blob.length < minSize) for (const p of blob) mask[p] = 0;
  }
}
