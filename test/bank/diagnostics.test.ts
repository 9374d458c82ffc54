import { test } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend } from "../helpers";
import { prototypeSegmentation, oracleDense, oraclePrototypes } from "../../src/bank/diagnostics";
import type { ImageBank } from "../../src/bank";
import type { ImageEncoder, EncoderOutput } from "../../src/encoders/types";
import type { DatasetSpec, Split } from "../../src/data/types";
import { writeImage, writeMask } from "../../src/data/image";
import { tmpDir } from "../tmp";

/** An "encoder" whose dense features are the mean RGB of each 4x4 cell: exact and readable. */
const colourEncoder: ImageEncoder = {
  identity: { name: "mean-rgb", dim: 3, weightsHash: "x", preprocessing: { inputSize: 16, channelOrder: "RGB", scale: 1, mean: [0, 0, 0], std: [1, 1, 1] } },
  isStandIn: true,
  differentiable: false,
  hasDense: true,
  async encode(images, o) {
    return tf.tidy(() => {
      const dense = tf.avgPool(images, 4, 4, "valid") as tf.Tensor4D;
      const out: EncoderOutput = { pooled: tf.mean(dense, [1, 2]) as tf.Tensor2D };
      if (o?.dense) out.dense = dense;
      return out;
    });
  },
  dispose() {},
};

test("prototype segmentation by hand: nearest prototype per dense cell, gated by the image label, white prior", async () => {
  await onBackend("cpu", () => undefined);
  const dir = tmpDir("pbip-protoseg-");
  const spec: DatasetSpec = {
    name: "toy", classes: ["red", "green", "blue"], codes: ["R", "G", "B"], palette: [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]],
    backgroundId: 3, labelFormat: "csv", patchSize: 16, normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] },
  };
  // Patch: left half red-ish, right half green-ish, bottom-right 4x4 white glass. Label R + G.
  const rgb = new Uint8Array(16 * 16 * 3);
  const ids = new Uint8Array(16 * 16);
  for (let y = 0; y < 16; y++) for (let x = 0; x < 16; x++) {
    const i = y * 16 + x;
    const white = y >= 12 && x >= 12;
    const c = white ? [250, 250, 250] : x < 8 ? [200, 40, 40] : [40, 200, 40];
    rgb.set(c, 3 * i);
    ids[i] = white ? 3 : x < 8 ? 0 : 1;
  }
  writeImage(path.join(dir, "a.png"), { width: 16, height: 16, data: rgb });
  writeMask(path.join(dir, "a-mask.png"), ids, 16, 16, spec.palette);
  const split: Split = { dataset: spec, name: "val", root: dir, samples: [{ id: "a.png", imagePath: path.join(dir, "a.png"), maskPath: path.join(dir, "a-mask.png"), label: [1, 1, 0] }] };
  // Prototypes (one per class): red, green, and a blue one that is nearest to nothing here.
  const bank = { meta: { classes: ["red", "green", "blue"], k: [1, 1, 1], offsets: [0, 1, 2, 3], dim: 3 }, prototypes: Float32Array.from([0.8, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.9]) } as unknown as ImageBank;
  const r = await prototypeSegmentation(colourEncoder, bank, split, { inputSize: 16, whiteGrey: 200 });
  assert.equal(r.denseGrid, 4);
  assert.equal(r.patches, 1);
  assert.ok(Math.abs(r.miou - 1) < 1e-9, `every pixel right: mIoU ${r.miou}`);
  // Without the white prior the glass goes to the nearest labelled class and costs IoU.
  const noWhite = await prototypeSegmentation(colourEncoder, bank, split, { inputSize: 16 });
  assert.ok(noWhite.miou < 1 && noWhite.miou > 0.8, `${noWhite.miou}`);
  // Gating: with the label R + B only, green cells cannot be G.
  const gated = await prototypeSegmentation(colourEncoder, bank, { ...split, samples: [{ ...split.samples[0]!, label: [1, 0, 1] }] }, { inputSize: 16, whiteGrey: 200 });
  assert.equal(gated.iou[1], 0, `G is never predicted: ${gated.iou}`);
});

test("oracle dense map: one-hot of the mask, area-averaged per cell, worked by hand", async () => {
  await onBackend("cpu", () => undefined);
  // One 4x4 mask over ids {0, 1, 2}; cells of 2x2 at grid 2.
  const mask = tf.tensor3d([0, 0, 1, 1, 0, 2, 1, 1, 2, 2, 0, 1, 2, 2, 2, 2], [1, 4, 4], "int32");
  const full = oracleDense(mask, 3, 0);
  assert.deepEqual(full.shape, [1, 4, 4, 3]);
  assert.deepEqual(Array.from(full.dataSync().slice(0, 6)), [1, 0, 0, 1, 0, 0]);
  assert.deepEqual(Array.from(full.dataSync().slice(5 * 3, 6 * 3)), [0, 0, 1]);
  const cells = oracleDense(mask, 3, 2);
  assert.deepEqual(cells.shape, [1, 2, 2, 3]);
  // top-left {0,0,0,2}, top-right {1,1,1,1}, bottom-left {2,2,2,2}, bottom-right {0,1,2,2}
  assert.deepEqual(Array.from(cells.dataSync()), [0.75, 0, 0.25, 0, 1, 0, 0, 0, 1, 0.25, 0.25, 0.5]);
  assert.throws(() => oracleDense(mask, 2, 0), /mask value 2 outside \[0, 2\)/);
  // A 3x3 grid on 4 pixels: cell borders at 4/3 and 8/3 cut pixels 1 and 2; the middle
  // cell of row 0 covers a third of pixel 1... (4/3 - 1 = 1/3 of it) etc.: weights per axis
  // [3/4, 1/4, 0, 0], [0, 1/2, 1/2, 0], [0, 0, 1/4, 3/4]. Middle cell (1, 1) covers pixels
  // (1,1), (1,2), (2,1), (2,2) with weight 1/4 each: ids 2, 1, 2, 0.
  const third = oracleDense(mask, 3, 3);
  assert.deepEqual(third.shape, [1, 3, 3, 3]);
  const t = third.dataSync();
  [0.25, 0.25, 0.5].forEach((v, i) => assert.ok(Math.abs(t[(1 * 3 + 1) * 3 + i]! - v) < 1e-6, `cell (1,1) id ${i}: ${t[(1 * 3 + 1) * 3 + i]}`));
  // Cell (0, 0): pixels (0,0) 9/16, (0,1) 3/16, (1,0) 3/16, (1,1) 1/16 -> ids 0, 0, 0, 2.
  [15 / 16, 0, 1 / 16].forEach((v, i) => assert.ok(Math.abs(t[i]! - v) < 1e-6, `cell (0,0) id ${i}: ${t[i]}`));
  // Every cell is a composition: its shares sum to 1.
  for (let c = 0; c < 9; c++) assert.ok(Math.abs(t[c * 3]! + t[c * 3 + 1]! + t[c * 3 + 2]! - 1) < 1e-6);
  const protos = oraclePrototypes([2, 1], 3);
  assert.deepEqual(protos.arraySync(), [[1, 0, 0], [1, 0, 0], [0, 1, 0]]);
  tf.dispose([mask, full, cells, third, protos]);
});
