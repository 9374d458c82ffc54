/**
 * The batch loader: typed batches (images RGB [0,1] NHWC float32, multi-hot
 * labels, optional int32 masks), the augmentations of the authors' release
 * (h-flip, v-flip, rot90, applied identically to image and mask), deterministic
 * shuffling by seed and epoch, and prefetching: the next batches are decoded
 * (by sharp, off the main thread) while the current one trains.
 *
 * Prefetched batches are held as plain typed arrays; tensors are created only
 * when a batch is handed out, and the caller disposes them, so tensor count and
 * memory stay flat over an epoch.
 */
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import { Rng } from "../util/rng";
import { readImage, readMask, resizeMaskNearest } from "./image";
import type { Batch, RGB, Sample, Split } from "./types";

/** Which random augmentations to apply (each with the release's probabilities). */
export interface AugmentOptions {
  /** Horizontal flip with probability 1/2. */
  hflip?: boolean;
  /** Vertical flip with probability 1/2. */
  vflip?: boolean;
  /** Rotation by k * 90 degrees, k uniform in {0, 1, 2, 3}. */
  rot90?: boolean;
}

/** One sample's augmentation: rotate by `k` quarter turns (counter-clockwise, as numpy's rot90), then flip. */
export interface AugmentOp {
  k: number;
  hflip: boolean;
  vflip: boolean;
}

/** Options of {@link createLoader}. */
export interface LoaderOptions {
  batchSize: number;
  /** Shuffle each epoch (default: true for the train split, false otherwise). */
  shuffle?: boolean;
  /** Seed of the shuffling and augmentation streams (default 0). */
  seed?: number;
  /** Augmentations; `true` means all three (the release's train transform). Default none. */
  augment?: AugmentOptions | boolean;
  /** Resize every patch to this side before batching (bilinear for images, nearest for masks). */
  inputSize?: number;
  /** Batches decoded ahead of the consumer (default 2). */
  prefetch?: number;
  /** Drop the last incomplete batch (default false). */
  dropLast?: boolean;
  /** Include masks (default: for val/test splits whose samples all have one; train batches carry none unless asked, as real WSSS training sets have no masks). */
  withMasks?: boolean;
}

/** A batch-producing view of a split. */
export interface Loader {
  readonly split: Split;
  readonly batchSize: number;
  readonly batchesPerEpoch: number;
  /** Side of the images in the batches. */
  readonly size: number;
  /** The sample order of epoch `e` (indices into split.samples). */
  order(e: number): number[];
  /** The augmentation of the sample at position `pos` of epoch `e`. */
  augmentation(e: number, pos: number): AugmentOp;
  /** The batches of epoch `e`; deterministic given the seed and `e`. The caller disposes each batch's tensors. */
  epoch(e: number): AsyncIterable<Batch>;
  /** Batches decoded so far (all epochs): with prefetching it runs ahead of the batches consumed. */
  decodedBatches(): number;
}

/** Host-side batch before it becomes tensors. */
interface HostBatch {
  images: Float32Array;
  labels: Float32Array;
  masks?: Int32Array;
  ids: string[];
  b: number;
}

function mix(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  }
  return h >>> 0;
}

/**
 * Apply an augmentation to an interleaved `h` x `w` x `c` array: rotate by
 * `op.k` quarter turns counter-clockwise (numpy `rot90` semantics:
 * `out[y][x] = in[x][w-1-y]` for k = 1), then flip left-right, then up-down.
 * Square images only when k is odd.
 */
export function augmentPixels<T extends Uint8Array | Float32Array | Int32Array>(src: T, h: number, w: number, c: number, op: AugmentOp): T {
  const k = ((op.k % 4) + 4) % 4;
  if (k === 0 && !op.hflip && !op.vflip) return src;
  if (k % 2 === 1 && h !== w) throw new Error(`augmentPixels: rot90 needs a square image, got ${w}x${h}`);
  const out = new (src.constructor as new (n: number) => T)(src.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      // Output (y, x) after flips comes from rotated (ry, rx).
      const ry = op.vflip ? h - 1 - y : y;
      const rx = op.hflip ? w - 1 - x : x;
      let sy: number;
      let sx: number;
      if (k === 0) {
        sy = ry;
        sx = rx;
      } else if (k === 1) {
        sy = rx;
        sx = w - 1 - ry;
      } else if (k === 2) {
        sy = h - 1 - ry;
        sx = w - 1 - rx;
      } else {
        sy = h - 1 - rx;
        sx = ry;
      }
      const o = (y * w + x) * c;
      const s = (sy * w + sx) * c;
      for (let ch = 0; ch < c; ch++) out[o + ch] = src[s + ch]!;
    }
  }
  return out;
}

function augmentConfig(a: LoaderOptions["augment"]): Required<AugmentOptions> {
  if (a === true) return { hflip: true, vflip: true, rot90: true };
  if (!a) return { hflip: false, vflip: false, rot90: false };
  return { hflip: !!a.hflip, vflip: !!a.vflip, rot90: !!a.rot90 };
}

/**
 * Read one sample as host arrays: RGB bytes and (optionally) mask ids at `size`.
 * Images of another size than the dataset's are an error unless the split asks
 * for resizing.
 */
export async function readSample(split: Split, sample: Sample, opts: { inputSize?: number; withMask?: boolean } = {}): Promise<{ rgb: Uint8Array; ids?: Uint8Array; size: number }> {
  const spec = split.dataset;
  const img = await readImage(sample.imagePath, { expectSize: spec.patchSize, resize: split.resize });
  let rgb = img.data;
  let size = img.width;
  if (opts.inputSize && opts.inputSize !== size) {
    const r = await sharp(rgb, { raw: { width: img.width, height: img.height, channels: 3 } }).resize(opts.inputSize, opts.inputSize, { fit: "fill", kernel: "linear" }).raw().toBuffer();
    rgb = new Uint8Array(r.buffer, r.byteOffset, r.byteLength);
    size = opts.inputSize;
  }
  let ids: Uint8Array | undefined;
  if (opts.withMask) {
    if (!sample.maskPath) throw new Error(`sample ${sample.id} has no mask`);
    let m = readMask(sample.maskPath, spec, { expectSize: spec.patchSize, resize: split.resize });
    if (m.width !== size) m = resizeMaskNearest(m, size);
    ids = m.ids;
  }
  return { rgb, ids, size };
}

/**
 * Create a loader over a split. `epoch(e)` yields {@link Batch}es in a
 * seed-and-epoch-determined order with per-sample augmentations drawn from the
 * same seed, so a run is reproducible regardless of prefetching.
 */
export function createLoader(split: Split, opts: LoaderOptions): Loader {
  const batchSize = opts.batchSize;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`createLoader: batchSize must be a positive integer, got ${batchSize}`);
  const n = split.samples.length;
  if (n === 0) throw new Error(`createLoader: split ${split.name} of ${split.dataset.name} at ${split.root} has no samples`);
  const shuffle = opts.shuffle ?? split.name === "train";
  const seed = opts.seed ?? 0;
  const aug = augmentConfig(opts.augment);
  const prefetch = Math.max(0, opts.prefetch ?? 2);
  const withMasks = opts.withMasks ?? (split.name !== "train" && split.samples.every((s) => s.maskPath));
  if (withMasks && !split.samples.every((s) => s.maskPath)) throw new Error(`createLoader: withMasks asked for, but split ${split.name} has samples without masks`);
  const size = opts.inputSize ?? split.resize ?? split.dataset.patchSize;
  const numClasses = split.dataset.classes.length;
  const batchesPerEpoch = opts.dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
  if (batchesPerEpoch === 0) {
    throw new Error(`createLoader: split ${split.name} of ${split.dataset.name} at ${split.root} has ${n} patches, fewer than one batch of ${batchSize} (the last, incomplete batch is dropped): lower the batch size (--batch) to at most ${n}`);
  }

  const order = (e: number): number[] => {
    const idx = Array.from({ length: n }, (_, i) => i);
    return shuffle ? new Rng(mix(seed, e, 0x5eed)).shuffle(idx) : idx;
  };
  const augmentation = (e: number, pos: number): AugmentOp => {
    const r = new Rng(mix(seed, e, pos, 0xa06));
    const k = r.int(4);
    const h = r.next() < 0.5;
    const v = r.next() < 0.5;
    return { k: aug.rot90 ? k : 0, hflip: aug.hflip && h, vflip: aug.vflip && v };
  };

  let decoded = 0;
  const loadHost = async (ord: number[], bi: number, e: number): Promise<HostBatch> => {
    const start = bi * batchSize;
    const positions = Array.from({ length: Math.min(batchSize, n - start) }, (_, j) => start + j);
    const b = positions.length;
    const plane = size * size;
    const images = new Float32Array(b * plane * 3);
    const labels = new Float32Array(b * numClasses);
    const masks = withMasks ? new Int32Array(b * plane) : undefined;
    const ids: string[] = [];
    await Promise.all(
      positions.map(async (pos, j) => {
        const sample = split.samples[ord[pos]!]!;
        const { rgb, ids: m, size: got } = await readSample(split, sample, { inputSize: size, withMask: withMasks });
        if (got !== size) throw new Error(`loader: ${sample.imagePath} decoded at ${got}px, expected ${size}px`);
        const op = augmentation(e, pos);
        const a = augmentPixels(rgb, size, size, 3, op);
        const off = j * plane * 3;
        for (let i = 0; i < plane * 3; i++) images[off + i] = a[i]! / 255;
        sample.label.forEach((v, c) => (labels[j * numClasses + c] = v));
        if (masks && m) {
          const am = augmentPixels(m, size, size, 1, op);
          masks.set(am, j * plane);
        }
        ids[j] = sample.id;
      }),
    );
    decoded++;
    return { images, labels, masks, ids, b };
  };

  const toBatch = (h: HostBatch): Batch => ({
    images: tf.tensor4d(h.images, [h.b, size, size, 3], "float32"),
    labels: tf.tensor2d(h.labels, [h.b, numClasses], "float32"),
    masks: h.masks ? tf.tensor3d(h.masks, [h.b, size, size], "int32") : undefined,
    ids: h.ids,
  });

  return {
    split,
    batchSize,
    batchesPerEpoch,
    size,
    order,
    augmentation,
    decodedBatches: () => decoded,
    epoch(e: number): AsyncIterable<Batch> {
      return {
        async *[Symbol.asyncIterator]() {
          const ord = order(e);
          const queue: Promise<HostBatch>[] = [];
          let next = 0;
          // While the consumer holds batch k, batches k+1 .. k+prefetch are being decoded.
          const fill = (min: number): void => {
            while (queue.length < Math.max(prefetch, min) && next < batchesPerEpoch) {
              const p = loadHost(ord, next++, e);
              p.catch(() => undefined); // a batch the consumer never awaits must not become an unhandled rejection
              queue.push(p);
            }
          };
          while (queue.length || next < batchesPerEpoch) {
            fill(1);
            const host = await queue.shift()!;
            fill(0);
            yield toBatch(host);
          }
        },
      };
    },
  };
}

/**
 * Normalise images with per-channel statistics: `(x - mean) / std`, on RGB
 * images in [0, 1] (NHWC). Models call this inside their forward pass with the
 * dataset's `spec.normalization` (release values for BCSS-WSSS: mean
 * [0.6679, 0.4779, 0.7062], std [0.1737, 0.2256, 0.1982]).
 */
export function normalize(images: tf.Tensor4D, stats: { mean: RGB | number[]; std: RGB | number[] }): tf.Tensor4D {
  if (stats.mean.length !== 3 || stats.std.length !== 3) throw new Error("normalize: mean and std need three values (RGB)");
  return tf.tidy(() => tf.div(tf.sub(images, tf.tensor1d(stats.mean as number[])), tf.tensor1d(stats.std as number[])) as tf.Tensor4D);
}
