// The loader: typed batches, deterministic shuffling and augmentation by seed
// and epoch, augmentation identical on image and mask (checked against numpy's
// rot90/flip, fixtures from test/data/reference/png_reference.py), prefetching,
// normalisation, and flat tensor count and memory over epochs.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as v8 from "node:v8";
import * as vm from "node:vm";
import * as tf from "@tensorflow/tfjs";
import { onBackend } from "../helpers";
import { openSplit } from "../../src/data/dataset";
import { augmentPixels, createLoader, normalize, readSample, type AugmentOp } from "../../src/data/loader";
import { readImage, readMask, resizeMaskNearest } from "../../src/data/image";
import { encodePalettePng, encodeRgbPng } from "../../src/data/png";
import { SMALL, smallSet, copyDir, tmpDir } from "./small-set";
import type { Batch } from "../../src/data/types";

const FIX = path.join(__dirname, "fixtures");

async function collect(it: AsyncIterable<Batch>): Promise<{ images: Float32Array; labels: Float32Array; masks?: Int32Array; ids: string[] }[]> {
  const out = [];
  for await (const b of it) {
    out.push({ images: b.images.dataSync() as Float32Array, labels: b.labels.dataSync() as Float32Array, masks: b.masks?.dataSync() as Int32Array | undefined, ids: b.ids });
    tf.dispose(b.masks ? [b.images, b.labels, b.masks] : [b.images, b.labels]);
  }
  return out;
}

test("augmentPixels matches numpy's rot90 and flips for all 16 combinations", () => {
  const e = JSON.parse(fs.readFileSync(path.join(FIX, "expected.json"), "utf8")) as { augment_input: number[]; augment: Record<string, number[]> };
  const src = Int32Array.from(e.augment_input);
  for (let k = 0; k < 4; k++) {
    for (const h of [0, 1]) {
      for (const v of [0, 1]) {
        const op: AugmentOp = { k, hflip: h === 1, vflip: v === 1 };
        assert.deepEqual(Array.from(augmentPixels(src, 4, 4, 2, op)), e.augment[`${k}${h}${v}`], JSON.stringify(op));
      }
    }
  }
  assert.throws(() => augmentPixels(new Uint8Array(6), 2, 3, 1, { k: 1, hflip: false, vflip: false }), /square/);
});

test("batches: NHWC float32 in [0,1], multi-hot labels, int32 masks, ids; last batch partial unless dropLast", async () => {
  const { out } = await smallSet();
  await onBackend("cpu", async () => {
    const val = openSplit(out, { dataset: "synthetic", split: "val" });
    const loader = createLoader(val, { batchSize: 4 });
    assert.equal(loader.batchesPerEpoch, 2);
    const first = val.samples[0]!;
    let seen = 0;
    for await (const b of loader.epoch(0)) {
      assert.equal(b.images.dtype, "float32");
      assert.equal(b.labels.dtype, "float32");
      assert.equal(b.masks?.dtype, "int32");
      assert.deepEqual(b.images.shape.slice(1), [SMALL.size, SMALL.size, 3]);
      assert.deepEqual(b.labels.shape[1], 4);
      assert.deepEqual(b.masks?.shape.slice(1), [SMALL.size, SMALL.size]);
      if (seen === 0) {
        // Not shuffled (val), not augmented: the first sample is exactly the file.
        assert.equal(b.ids[0], first.id);
        const img = await readImage(first.imagePath);
        const px = b.images.slice([0, 0, 0, 0], [1, -1, -1, -1]).dataSync();
        assert.ok(px.every((v, i) => Math.abs(v - img.data[i]! / 255) < 1e-7));
        assert.deepEqual(Array.from(b.labels.slice([0, 0], [1, -1]).dataSync()), first.label);
        assert.deepEqual(Array.from(b.masks!.slice([0, 0, 0], [1, -1, -1]).dataSync()), Array.from(readMask(first.maskPath!, val.dataset).ids));
      }
      seen += b.ids.length;
      tf.dispose([b.images, b.labels, b.masks!]);
    }
    assert.equal(seen, SMALL.val);
    assert.equal(createLoader(val, { batchSize: 4, dropLast: true }).batchesPerEpoch, 1);
    const train = openSplit(out, { dataset: "synthetic", split: "train" });
    assert.throws(() => createLoader(train, { batchSize: 0 }), /batchSize/);
  });
});

test("same seed and epoch, same batches; another epoch or seed, another order", async () => {
  const { out } = await smallSet();
  await onBackend("cpu", async () => {
    const train = openSplit(out, { dataset: "synthetic", split: "train" });
    const opts = { batchSize: 5, seed: 3, augment: true, withMasks: true };
    const a = await collect(createLoader(train, opts).epoch(0));
    const b = await collect(createLoader(train, { ...opts, prefetch: 0 }).epoch(0));
    assert.equal(a.length, 5);
    a.forEach((x, i) => {
      assert.deepEqual(x.ids, b[i]!.ids);
      assert.deepEqual(x.images, b[i]!.images);
      assert.deepEqual(x.masks, b[i]!.masks);
    });
    const l = createLoader(train, opts);
    assert.notDeepEqual(l.order(0), l.order(1));
    assert.notDeepEqual(l.order(0), createLoader(train, { ...opts, seed: 4 }).order(0));
    assert.deepEqual([...l.order(0)].sort((x, y) => x - y), train.samples.map((_, i) => i));
    // Every augmentation occurs across the epoch's samples.
    const ops = new Set(train.samples.map((_, p) => JSON.stringify(l.augmentation(0, p))));
    assert.ok(ops.size >= 8, `${ops.size} distinct augmentations`);
    assert.deepEqual(createLoader(train, { batchSize: 5 }).augmentation(0, 3), { k: 0, hflip: false, vflip: false });
    // Train batches carry no masks unless asked (real WSSS training sets have none).
    const [plain] = await collect(createLoader(train, { batchSize: 5 }).epoch(0));
    assert.equal(plain!.masks, undefined);
  });
});

test("augmentation is applied identically to image and mask", async () => {
  const { out } = await smallSet();
  await onBackend("cpu", async () => {
    const train = openSplit(out, { dataset: "synthetic", split: "train" });
    const loader = createLoader(train, { batchSize: 8, seed: 9, augment: { hflip: true, vflip: true, rot90: true }, withMasks: true });
    const batches = await collect(loader.epoch(2));
    const order = loader.order(2);
    const S = SMALL.size;
    let pos = 0;
    let nonIdentity = 0;
    for (const b of batches) {
      for (let j = 0; j < b.ids.length; j++, pos++) {
        const sample = train.samples[order[pos]!]!;
        assert.equal(b.ids[j], sample.id);
        const op = loader.augmentation(2, pos);
        if (op.k || op.hflip || op.vflip) nonIdentity++;
        const { rgb, ids } = await readSample(train, sample, { withMask: true });
        const wantImg = augmentPixels(rgb, S, S, 3, op);
        const wantMask = augmentPixels(ids!, S, S, 1, op);
        const gotImg = b.images.subarray(j * S * S * 3, (j + 1) * S * S * 3);
        assert.ok(gotImg.every((v, i) => Math.round(v * 255) === wantImg[i]), `${sample.id} image`);
        assert.deepEqual(Array.from(b.masks!.subarray(j * S * S, (j + 1) * S * S)), Array.from(wantMask), `${sample.id} mask`);
      }
    }
    assert.ok(nonIdentity > 10);
  });
});

test("resizeMaskNearest by hand: each output pixel takes the source pixel under its centre", () => {
  // 4x4 ids r*4+c -> 2x2: centres at source (1, 1), (1, 3), (3, 1), (3, 3).
  const sq = resizeMaskNearest({ ids: Uint8Array.from({ length: 16 }, (_, i) => i), width: 4, height: 4 }, 2);
  assert.deepEqual(Array.from(sq.ids), [5, 7, 13, 15]);
  // 6 wide x 3 high ids r*6+c -> 3x3: columns 1, 3, 5 of rows 0, 1, 2 (not transposed).
  const wide = resizeMaskNearest({ ids: Uint8Array.from({ length: 18 }, (_, i) => i), width: 6, height: 3 }, 3);
  assert.deepEqual(Array.from(wide.ids), [1, 3, 5, 7, 9, 11, 13, 15, 17]);
});

test("inputSize resizes images (bilinear) and masks (nearest) in register with each other", async () => {
  const { out } = await smallSet();
  const dir = copyDir(out, path.join(tmpDir(), "set"));
  // Val patch 0 becomes an L shape that a transpose would move: red where column < 16 or row < 8
  // (mask id 0), white elsewhere (id 1); 64 px, loaded at 24 (a ratio of 2.67).
  const S = SMALL.size;
  const red = (i: number) => i % S < 16 || Math.floor(i / S) < 8;
  const val0 = openSplit(dir, { dataset: "synthetic", split: "val" }).samples[0]!;
  const rgb = new Uint8Array(S * S * 3);
  for (let i = 0; i < S * S; i++) rgb.set(red(i) ? [255, 0, 0] : [255, 255, 255], i * 3);
  fs.writeFileSync(val0.imagePath, encodeRgbPng(rgb, S, S));
  const spec = openSplit(dir, { dataset: "synthetic", split: "val" }).dataset;
  fs.writeFileSync(val0.maskPath!, encodePalettePng(Uint8Array.from({ length: S * S }, (_, i) => (red(i) ? 0 : 1)), S, S, spec.palette));
  await onBackend("cpu", async () => {
    const val = openSplit(dir, { dataset: "synthetic", split: "val" });
    const [b] = await collect(createLoader(val, { batchSize: 6, inputSize: 24 }).epoch(0));
    assert.equal(b!.images.length, 6 * 24 * 24 * 3);
    assert.equal(b!.masks!.length, 6 * 24 * 24);
    const j = b!.ids.indexOf(val0.id);
    assert.ok(j >= 0);
    const mask = b!.masks!.subarray(j * 576, (j + 1) * 576);
    const img = b!.images.subarray(j * 576 * 3, (j + 1) * 576 * 3);
    // Reddish (green below half) where the mask says 0, whitish where it says 1; only pixels on
    // the L's edge may disagree. A transposed mask would disagree on ~19 % of them.
    let agree = 0;
    for (let p = 0; p < 576; p++) if ((img[p * 3 + 1]! < 0.5) === (mask[p] === 0)) agree++;
    assert.ok(agree / 576 > 0.95, `image and mask agree on ${agree} of 576 pixels`);
    assert.deepEqual([mask[0], mask[23], mask[23 * 24], mask[23 * 24 + 23]], [0, 0, 0, 1], "corners of the L");
    assert.ok(b!.masks!.every((v) => v >= 0 && v <= 4));
  });
});

test("prefetching decodes ahead while the consumer holds a batch", async () => {
  const { out } = await smallSet();
  await onBackend("cpu", async () => {
    const train = openSplit(out, { dataset: "synthetic", split: "train" });
    const loader = createLoader(train, { batchSize: 4, prefetch: 2 });
    const it = loader.epoch(0)[Symbol.asyncIterator]();
    const first = await it.next();
    const deadline = Date.now() + 5000;
    while (loader.decodedBatches() < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.equal(loader.decodedBatches(), 3, "batch 1 handed out, batches 2 and 3 decoded ahead");
    tf.dispose([first.value.images, first.value.labels]);
    await it.return?.();
    // Nothing beyond the prefetch window is decoded.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(loader.decodedBatches(), 3);
  });
});

test("tensor count and memory stay flat over epochs", async () => {
  const { out } = await smallSet();
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  await onBackend("cpu", async () => {
    const train = openSplit(out, { dataset: "synthetic", split: "train" });
    const loader = createLoader(train, { batchSize: 4, augment: true, withMasks: true, prefetch: 3 });
    const tensors0 = tf.memory().numTensors;
    const rss: number[] = [];
    for (let e = 0; e < 6; e++) {
      for await (const b of loader.epoch(e)) tf.dispose([b.images, b.labels, b.masks!]);
      assert.equal(tf.memory().numTensors, tensors0, `epoch ${e}`);
      gc();
      rss.push(process.memoryUsage().rss);
    }
    const growth = (rss[5]! - rss[1]!) / 2 ** 20;
    assert.ok(growth < 24, `rss grew by ${growth.toFixed(1)} MiB from epoch 1 to 5 (${rss.map((r) => (r / 2 ** 20).toFixed(0)).join(", ")} MiB)`);
  });
});

test("normalize: (x - mean) / std per channel, no tensors left behind", async () => {
  await onBackend("cpu", () => {
    const x = tf.tensor4d([0, 0.5, 1, 0.2, 0.4, 0.6], [1, 1, 2, 3]);
    const before = tf.memory().numTensors;
    const y = normalize(x, { mean: [0.6679, 0.4779, 0.7062], std: [0.1737, 0.2256, 0.1982] });
    const want = [(0 - 0.6679) / 0.1737, (0.5 - 0.4779) / 0.2256, (1 - 0.7062) / 0.1982, (0.2 - 0.6679) / 0.1737, (0.4 - 0.4779) / 0.2256, (0.6 - 0.7062) / 0.1982];
    const got = y.dataSync();
    want.forEach((w, i) => assert.ok(Math.abs(got[i]! - w) < 1e-5));
    assert.equal(tf.memory().numTensors, before + 1);
    tf.dispose([x, y]);
    assert.throws(() => normalize(x, { mean: [0, 0], std: [1, 1, 1] }), /three values/);
  });
});

test("withMasks on a split without masks, and an empty split, are clear errors", async () => {
  const { out } = await smallSet();
  const train = openSplit(out, { dataset: "synthetic", split: "train" });
  const noMasks = { ...train, samples: train.samples.map((s) => ({ ...s, maskPath: undefined })), hasMasks: false };
  assert.throws(() => createLoader(noMasks, { batchSize: 2, withMasks: true }), /withMasks asked for/);
  assert.equal(createLoader(noMasks, { batchSize: 2 }).batchesPerEpoch, 12);
  assert.throws(() => createLoader({ ...train, samples: [] }, { batchSize: 2 }), /has no samples/);
});

test("a batch larger than the split (last batch dropped) is an error naming both numbers", async () => {
  const { out } = await smallSet();
  const train = openSplit(out, { dataset: "synthetic", split: "train" });
  assert.throws(() => createLoader(train, { batchSize: 64, dropLast: true }), new RegExp(`has ${SMALL.train} patches, fewer than one batch of 64 .*--batch\\) to at most ${SMALL.train}`));
  assert.equal(createLoader(train, { batchSize: 64 }).batchesPerEpoch, 1, "kept when the last batch is not dropped");
});
