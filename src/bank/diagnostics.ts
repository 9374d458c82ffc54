/**
 * How well can an encoder's prototypes segment the tissue by themselves? A
 * diagnostic to run before training PBIP: every cell of the encoder's dense feature
 * map gets the class of its most similar prototype (cosine), among the classes of
 * the patch's image-level label (as the CAMs are gated), optionally with the
 * white-pixel background prior; scored against the ground truth.
 *
 * PBIP's matching losses pull ClassNet's maps towards this view of the tissue, so
 * when it is worse than what ClassNet learns from the labels alone, L_FGS/L_BGS can
 * lower the pseudo-masks' quality (measured on pbip's synthetic data with the
 * bundled stand-in encoder: docs/results.md). The converse does not hold there: with
 * the ground truth as the dense map ({@link oracleDense}, `bench/oracle-features.ts`)
 * L_FGS alone gains a little and L_BGS, at the release's temperature 0.07, still
 * costs quality.
 */
import * as tf from "@tensorflow/tfjs";
import type { ImageEncoder } from "../encoders/types";
import type { Split } from "../data/types";
import { createLoader } from "../data/loader";
import { ConfusionMatrix, iouPerClass, meanIoU } from "../eval/confusion";
import { l2Normalize } from "../model/heads";
import { resizeBilinear } from "../runtime/resize";
import { prototypesTensor, type ImageBank } from "./bank";
import { camsToMasks } from "../cam";

export interface PrototypeSegmentationScore {
  /** mIoU over the foreground classes, ground-truth background counted. */
  miou: number;
  iou: number[];
  patches: number;
  /** Side of the encoder's dense grid for these patches. */
  denseGrid: number;
}

/**
 * Label-gated nearest-prototype segmentation of a split with masks, from the
 * encoder's dense features. `inputSize`: side the patches are loaded at (the
 * training input size); `whiteGrey`: pixels brighter than this become background
 * (omit to predict no background).
 */
export async function prototypeSegmentation(
  encoder: ImageEncoder,
  bank: ImageBank,
  split: Split,
  o: { inputSize: number; whiteGrey?: number; batchSize?: number; limit?: number },
): Promise<PrototypeSegmentationScore> {
  if (!encoder.hasDense) throw new Error(`encoder ${encoder.identity.name} has no dense feature map`);
  const spec = split.dataset;
  const n = spec.classes.length;
  const k = bank.meta.k;
  const offsets = bank.meta.offsets;
  const protos = tf.tidy(() => tf.transpose(l2Normalize(prototypesTensor(bank)))) as tf.Tensor2D;
  const cm = new ConfusionMatrix(Math.max(n + 1, spec.backgroundId + 1));
  let patches = 0;
  let grid = 0;
  try {
    const loader = createLoader(split, { batchSize: o.batchSize ?? 8, shuffle: false, inputSize: o.inputSize, withMasks: true });
    for await (const b of loader.epoch(0)) {
      const { dense, pooled } = await encoder.encode(b.images, { dense: true });
      pooled.dispose();
      const [bs, h, w, d] = dense!.shape;
      grid = h;
      const [mh, mw] = [b.masks!.shape[1], b.masks!.shape[2]];
      const scores = tf.tidy(() => {
        const sim = tf.reshape(tf.matMul(l2Normalize(tf.reshape(dense!, [-1, d])), protos), [bs, h, w, -1]);
        // Best subclass per class, then gate by the image label (absent classes -> -inf).
        const perClass = tf.stack(
          k.map((kc, c) => tf.max(tf.slice(sim, [0, 0, 0, offsets[c]!], [bs, h, w, kc]), 3)),
          3,
        ) as tf.Tensor4D;
        const gated = tf.add(perClass, tf.mul(tf.sub(tf.reshape(b.labels, [bs, 1, 1, n]), 1), 1e4)) as tf.Tensor4D;
        return resizeBilinear(gated, [mh, mw]);
      });
      // The pseudo-masks' own argmax and white rule (small white blobs kept: minBlob 0).
      const white = o.whiteGrey !== undefined;
      const images = white ? resizeBilinear(b.images, [mh, mw]) : undefined;
      const pred = await camsToMasks(scores, spec.backgroundId, { mode: white ? "white" : "none", power: 1, whiteGrey: o.whiteGrey ?? 255, minBlob: 0 }, images);
      const p = Int32Array.from(await pred.data());
      tf.dispose([scores, images]);
      const take = o.limit ? Math.min(bs, o.limit - patches) : bs;
      cm.add((await b.masks!.data()).subarray(0, take * mh * mw), p.subarray(0, take * mh * mw), 255, b.ids.join(","));
      patches += take;
      tf.dispose([dense, pred, b.images, b.labels, b.masks]);
      if (o.limit && patches >= o.limit) break;
    }
  } finally {
    protos.dispose();
  }
  const fg = spec.classes.map((_, i) => i);
  return { miou: meanIoU(cm, fg), iou: iouPerClass(cm), patches, denseGrid: grid };
}

/**
 * The ground truth as a "dense feature map", for the oracle diagnostic
 * (`bench/oracle-features.ts`): the one-hot of class-id masks [B, H, W] over ids
 * 0..ids-1, area-averaged to a grid x grid map (0 keeps H x W), so each cell holds
 * the class composition of the pixels it covers (a pixel cut by a cell border counts
 * by the fraction inside, as in an exact area resize). Computed on the host; a mask
 * value outside [0, ids) is an error.
 */
export function oracleDense(masks: tf.Tensor3D, ids: number, grid: number): tf.Tensor4D {
  const [b, h, w] = masks.shape;
  const m = masks.dataSync();
  for (let i = 0; i < m.length; i++) if (!(m[i]! >= 0 && m[i]! < ids)) throw new Error(`oracleDense: mask value ${m[i]} outside [0, ${ids})`);
  if (grid <= 0) {
    const oh = new Float32Array(b * h * w * ids);
    for (let i = 0; i < m.length; i++) oh[i * ids + m[i]!] = 1;
    return tf.tensor4d(oh, [b, h, w, ids]);
  }
  const [gh, gw] = [grid, grid];
  // overlap[i][y]: the share of cell i's extent covered by pixel y (rows sum to 1).
  const overlap = (n: number, g: number) =>
    Array.from({ length: g }, (_, i) => {
      const [a, z] = [(i * n) / g, ((i + 1) * n) / g];
      return Float64Array.from({ length: n }, (_, y) => Math.max(0, Math.min(z, y + 1) - Math.max(a, y)) / (z - a));
    });
  const oy = overlap(h, gh);
  const ox = overlap(w, gw);
  const out = new Float32Array(b * gh * gw * ids);
  for (let n = 0; n < b; n++)
    for (let i = 0; i < gh; i++)
      for (let y = 0; y < h; y++) {
        const wy = oy[i]![y]!;
        if (wy === 0) continue;
        for (let j = 0; j < gw; j++)
          for (let x = 0; x < w; x++) {
            const wx = ox[j]![x]!;
            if (wx !== 0) out[((n * gh + i) * gw + j) * ids + m[(n * h + y) * w + x]!]! += wy * wx;
          }
      }
  return tf.tensor4d(out, [b, gh, gw, ids]);
}

/** Oracle prototypes [sum(k), ids]: every subclass of class c is the one-hot e_c (class-major order, as a bank's). */
export function oraclePrototypes(k: readonly number[], ids: number): tf.Tensor2D {
  const rows: number[] = [];
  k.forEach((kc, c) => {
    for (let j = 0; j < kc; j++) for (let i = 0; i < ids; i++) rows.push(i === c ? 1 : 0);
  });
  return tf.tensor2d(rows, [rows.length / ids, ids]);
}
