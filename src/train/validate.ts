/**
 * Pseudo-mask quality on a split with ground-truth masks: CAMs -> pseudo-masks ->
 * confusion matrix -> mIoU. Used each epoch for best-checkpoint selection and by
 * `pbip cam`/notebook 04.
 */
import * as tf from "@tensorflow/tfjs";
import type { ClassNet } from "../model/classnet";
import type { CamConfig } from "../cam";
import { computeCams, camsToMasks } from "../cam";
import type { Batch } from "../data/types";
import { ConfusionMatrix, iouPerClass, meanIoU } from "../eval/confusion";

/** A source of batches, one pass per epoch (the data loader implements it). */
export interface BatchSource {
  readonly batchesPerEpoch: number;
  epoch(e: number): AsyncIterable<Batch>;
}

export interface PseudoMaskScore {
  /** mIoU over the foreground classes, ground-truth background counted (release convention). */
  miou: number;
  /** IoU per mask id (classes then background; NaN where absent). */
  iou: number[];
  /** Patches evaluated. */
  patches: number;
  convention: "count-bg";
  matrix: ConfusionMatrix;
}

/**
 * Evaluate pseudo-masks of `net` on batches with masks. CAMs are upsampled to the
 * mask resolution before the argmax. The masks are the loader's, resized (nearest) to
 * the training input size when it differs from the patch size (the notebook profile's
 * 112 px): so this per-epoch score can differ slightly from `pbip cam` + `pbip eval`,
 * which score at the patch size (26.76 vs 26.68 mIoU seen on one small set).
 *
 * @param limit stop after this many patches (0 = all)
 */
export async function scorePseudoMasks(
  net: ClassNet,
  source: AsyncIterable<Batch>,
  cam: CamConfig,
  backgroundId: number,
  limit = 0,
  onBatch?: (done: number) => void,
): Promise<PseudoMaskScore> {
  const numIds = net.numClasses + 1;
  const cm = new ConfusionMatrix(Math.max(numIds, backgroundId + 1));
  let n = 0;
  for await (const batch of source) {
    try {
      if (!batch.masks) throw new Error(`scorePseudoMasks: batch ${batch.ids[0]} has no masks`);
      const [, mh, mw] = batch.masks.shape;
      const { cams, gate, probs } = computeCams(net, batch.images, batch.labels, cam, [mh, mw]);
      const imgs = cam.background.mode === "white" || cam.background.mode === "power-white" ? tf.image.resizeBilinear(batch.images, [mh, mw], false, true) : undefined;
      const pred = await camsToMasks(cams, backgroundId, cam.background, imgs);
      const p = await pred.data();
      const g = await batch.masks.data();
      tf.dispose([cams, gate, probs, pred, imgs]);
      const take = limit > 0 ? Math.min(batch.ids.length, limit - n) : batch.ids.length;
      const px = mh * mw;
      cm.add(g.subarray(0, take * px), p.subarray(0, take * px), 255, batch.ids.slice(0, take).join(","));
      n += take;
      onBatch?.(n);
    } finally {
      tf.dispose([batch.images, batch.labels, batch.masks]);
    }
    if (limit > 0 && n >= limit) break;
  }
  const fg = Array.from({ length: net.numClasses }, (_, i) => i);
  return { miou: meanIoU(cm, fg), iou: iouPerClass(cm), patches: n, convention: "count-bg", matrix: cm };
}
