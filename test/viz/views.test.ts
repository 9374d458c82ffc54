import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import {
  paletteOf,
  overlayMaskRgb,
  maskOverlay,
  foregroundImages,
  camHeatmaps,
  imageGrid,
  compareModels,
  errorPixels,
  errorView,
  errorViewRgb,
  foregroundRegions,
  regionImages,
  toRgbImage,
  toIdMask,
  colormap,
  hex,
  pngDimensions,
  isPngBuffer,
  rgbToPng,
  decodeToRgb,
} from "../../src/viz";

// LUAD-HistoSeg palette (METHOD.md section 7).
const SPEC = {
  palette: [
    [205, 51, 51],
    [0, 255, 0],
    [65, 105, 225],
    [255, 165, 0],
    [255, 255, 255],
  ] as [number, number, number][],
  codes: ["TE", "NEC", "LYM", "TAS"],
  backgroundId: 4,
};
const PAL = paletteOf(SPEC);
const H = 20;
const W = 24;

/** A grey patch and a mask: TE left half, NEC top right, background bottom right, one ignore pixel. */
function fixture() {
  const img = new Uint8Array(H * W * 3).fill(100);
  const mask = new Uint8Array(H * W);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) mask[y * W + x] = x < 12 ? 0 : y < 10 ? 1 : 4;
  mask[5 * W + 3] = 255;
  return { img: { width: W, height: H, data: img }, mask: { width: W, height: H, data: mask } };
}

async function rawOf(png: Buffer): Promise<{ data: Buffer; info: sharp.OutputInfo; at: (x: number, y: number) => number[] }> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  return { data, info, at: (x: number, y: number) => Array.from(data.subarray((y * info.width + x) * info.channels, (y * info.width + x) * info.channels + 3)) };
}

test("palette info names ids by code, background last", () => {
  assert.deepEqual(PAL.names, ["TE", "NEC", "LYM", "TAS", "background"]);
  assert.throws(() => paletteOf({ ...SPEC, codes: ["TE"] }), /codes \+ 1/);
});

test("overlay pixels carry the palette colour blended with the patch where the mask says", () => {
  const { img, mask } = fixture();
  const o = overlayMaskRgb(img, mask, PAL, { alpha: 0.5, contours: false });
  const px = (x: number, y: number) => Array.from(o.data.subarray((y * W + x) * 3, (y * W + x) * 3 + 3));
  assert.deepEqual(px(2, 2), [153, 76, 76]); // round(0.5*100 + 0.5*[205, 51, 51])
  assert.deepEqual(px(20, 3), [50, 178, 50]); // NEC
  assert.deepEqual(px(20, 15), [100, 100, 100]); // background is not tinted
  assert.deepEqual(px(3, 5), [100, 100, 100]); // ignore id 255 untouched
  const full = overlayMaskRgb(img, mask, PAL, { alpha: 1, contours: false });
  assert.deepEqual(Array.from(full.data.subarray((2 * W + 2) * 3, (2 * W + 2) * 3 + 3)), SPEC.palette[0]);
  const bg = overlayMaskRgb(img, mask, PAL, { alpha: 1, contours: false, showBackground: true });
  assert.deepEqual(Array.from(bg.data.subarray((15 * W + 20) * 3, (15 * W + 20) * 3 + 3)), [255, 255, 255]);
  // Contours: the pixel left of the TE/NEC border is drawn in pure TE colour.
  const c = overlayMaskRgb(img, mask, PAL, { alpha: 0.5 });
  assert.deepEqual(Array.from(c.data.subarray((2 * W + 11) * 3, (2 * W + 11) * 3 + 3)), SPEC.palette[0]);
});

test("maskOverlay: a valid PNG, the patch at the top-left, the legend on the right", async () => {
  const { img, mask } = fixture();
  const png = await maskOverlay(img, mask, PAL, { alpha: 1, contours: false, scale: 2 });
  assert.ok(isPngBuffer(png));
  const { width, height } = pngDimensions(png);
  assert.ok(width > 2 * W + 40, `legend widens the figure (${width})`);
  assert.ok(height >= 2 * H);
  const r = await rawOf(png);
  assert.equal(r.info.width, width);
  // Grid gap is 6 px: the 2x upscaled patch starts at (6, 6).
  assert.deepEqual(r.at(6 + 4, 6 + 4), SPEC.palette[0]);
  assert.deepEqual(r.at(6 + 2 * 20, 6 + 2 * 3), SPEC.palette[1]);
  // A legend swatch in TE's colour exists right of the patch.
  let found = false;
  for (let y = 0; y < height && !found; y++) for (let x = 6 + 2 * W + 6; x < width; x++) if (r.at(x, y).join() === SPEC.palette[0]!.join()) found = true;
  assert.ok(found, "TE swatch in the legend");
});

test("tensor inputs: float [0,1] patches (values above 1 clamp), int masks; no tensors leak", async () => {
  const before = tf.memory().numTensors;
  const t = tf.tensor3d(new Float32Array(H * W * 3).fill(1.2), [H, W, 3]);
  const m = tf.tensor2d(Int32Array.from(fixture().mask.data), [H, W], "int32");
  const rgb = toRgbImage(t);
  assert.equal(rgb.data[0], 255);
  assert.deepEqual(toIdMask(m).data.length, H * W);
  const png = await maskOverlay(t, m, PAL);
  assert.ok(isPngBuffer(png));
  t.dispose();
  m.dispose();
  assert.equal(tf.memory().numTensors, before);
  assert.throws(() => toRgbImage(tf.zeros([2, 4, 4, 3])), /batch 2/);
});

test("foreground images X_FG = b·M·X and X_BG = (1-b)(1-M)X per class", async () => {
  const img = { width: 4, height: 2, data: new Uint8Array(4 * 2 * 3).fill(200) };
  // Two classes: class 0's map is 1 on the left half and 0 on the right; class 1's is 0.5 everywhere.
  const maps = new Float32Array(4 * 2 * 2);
  for (let i = 0; i < 8; i++) {
    maps[i * 2] = i % 4 < 2 ? 1 : 0;
    maps[i * 2 + 1] = 0.5;
  }
  const M = { width: 4, height: 2, channels: 2, data: maps };
  const px = (im: { data: Uint8Array }, i: number) => Array.from(im.data.subarray(3 * i, 3 * i + 3));
  const { fg, bg } = foregroundRegions(img, M, { classes: ["A", "B"], threshold: 0.4 });
  assert.deepEqual(px(fg[0]!, 0), [200, 200, 200]); // b = 1, M = 1
  assert.deepEqual(px(fg[0]!, 3), [0, 0, 0]); // M = 0
  assert.deepEqual(px(bg[0]!, 3), [200, 200, 200]); // b = 0, 1 - M = 1
  assert.deepEqual(px(bg[0]!, 0), [0, 0, 0]);
  assert.deepEqual(px(fg[1]!, 5), [100, 100, 100]); // b = 1 (0.5 > 0.4), M = 0.5
  assert.deepEqual(px(bg[1]!, 5), [0, 0, 0]);
  // Explicit binary masks override the threshold: b = 0 gives X_BG = (1 - M) X.
  const zeros = { width: 4, height: 2, channels: 2, data: new Float32Array(16) };
  const r2 = foregroundRegions(img, M, { classes: ["A", "B"], binary: zeros });
  assert.deepEqual(px(r2.fg[1]!, 5), [0, 0, 0]);
  assert.deepEqual(px(r2.bg[1]!, 5), [100, 100, 100]);
  const png = await foregroundImages(img, M, { classes: ["A", "B"], threshold: 0.4, scale: 4 });
  const d = pngDimensions(png);
  assert.ok(d.width > 3 * 16 && d.height > 2 * 16, `${d.width}x${d.height}`);
  assert.throws(() => foregroundRegions(img, M, { classes: ["A"] }), /1 class names for 2/);
});

test("CAM heatmaps, grids and model comparison return PNGs of the expected size", async () => {
  const { img, mask } = fixture();
  const cams = { width: W, height: H, channels: 4, data: new Float32Array(W * H * 4).map((_, i) => (i % 4) / 3) };
  const heat = await camHeatmaps(img, cams, { classes: SPEC.codes, colormap: "viridis", labels: [1, 0, 1, 1] });
  const hd = pngDimensions(heat);
  assert.ok(hd.width > 5 * W && hd.height > H, `${hd.width}x${hd.height}`);
  await assert.rejects(camHeatmaps(img, cams, { classes: ["a"] }), /1 class names for 4/);
  const grid = await imageGrid(
    [
      [img, null, await rgbToPng(toRgbImage(img))],
      [img, img, img],
    ],
    { rowLabels: ["TE-0", "TE-1"], colLabels: ["a", "b", "c"], cellSize: { width: 30, height: 30 }, gap: 4 },
  );
  const gd = pngDimensions(grid);
  assert.ok(gd.width >= 3 * 30 + 4 * 4 && gd.height >= 2 * 30 + 3 * 4);
  const cmp = await compareModels([{ id: "x.png", image: img, gt: mask, a: mask, b: mask, scores: [0.5, 0.75] }], PAL, { names: ["PBIP", "CLS"] });
  assert.ok(isPngBuffer(cmp));
  const dec = await decodeToRgb(cmp);
  assert.equal(dec.width, pngDimensions(cmp).width);
});

test("error view: pixels where prediction and ground truth disagree, coloured by the wrong class, per convention", async () => {
  const gt = { width: 3, height: 2, data: [0, 0, 4, 4, 255, 1] };
  const pred = { width: 3, height: 2, data: [0, 2, 4, 3, 3, 1] };
  const counted = errorPixels(gt, pred, { backgroundId: 4, convention: "count-bg" });
  assert.deepEqual(Array.from(counted.mask), [0, 1, 0, 1, 0, 0]);
  assert.equal(counted.errors, 2);
  assert.equal(counted.counted, 5);
  const ignored = errorPixels(gt, pred, { backgroundId: 4, convention: "ignore-bg" });
  assert.deepEqual(Array.from(ignored.mask), [0, 1, 0, 0, 0, 0]);
  assert.equal(ignored.counted, 3);
  const img = { width: 3, height: 2, data: new Uint8Array(18).fill(120) };
  const ev = errorViewRgb(img, gt, pred, PAL);
  assert.deepEqual(Array.from(ev.image.data.subarray(3, 6)), SPEC.palette[2]); // predicted LYM where GT is TE
  assert.deepEqual(Array.from(ev.image.data.subarray(9, 12)), SPEC.palette[3]); // predicted TAS on GT background (count-bg)
  assert.deepEqual(Array.from(ev.image.data.subarray(0, 3)), [60, 60, 60]); // correct: grey 120 dimmed by 0.5
  assert.deepEqual(Array.from(ev.image.data.subarray(12, 15)), [60, 60, 60]); // ignore pixel: not an error
  assert.deepEqual(ev.wrongIds, [2, 3]);
  const evIgn = errorViewRgb(img, gt, pred, PAL, { convention: "ignore-bg" });
  assert.deepEqual(Array.from(evIgn.image.data.subarray(9, 12)), [60, 60, 60]);
  const png = await errorView(img, gt, pred, PAL, { scale: 10, title: "x.png" });
  const d = pngDimensions(png);
  assert.ok(d.width > 4 * 30 && d.height > 20, `${d.width}x${d.height}`);
});

test("colormaps: viridis endpoints and midpoint, jet's known values", () => {
  assert.equal(hex(colormap("viridis", 0)), "#440154");
  assert.equal(hex(colormap("viridis", 1)), "#fde725");
  assert.equal(hex(colormap("viridis", 0.5)), "#21918c");
  assert.deepEqual(colormap("jet", 0), [0, 0, 128]);
  assert.deepEqual(colormap("jet", 0.5), [128, 255, 128]);
  assert.deepEqual(colormap("jet", 1), [128, 0, 0]);
  assert.deepEqual(colormap("gray", 2), [255, 255, 255]);
  assert.deepEqual(colormap("viridis", NaN), colormap("viridis", 0));
});

test("region images from the matching stage's [P, H, W, 3] tensors", async () => {
  const before = tf.memory().numTensors;
  const fg = tf.ones([3, 8, 8, 3]);
  const bg = tf.zeros([3, 8, 8, 3]);
  const png = await regionImages(fg, bg, { captions: ["TE-0", "NEC-1", "LYM-2"], scale: 2 });
  const d = pngDimensions(png);
  assert.ok(d.width >= 3 * 16 && d.height >= 2 * 16, `${d.width}x${d.height}`);
  const two = tf.zeros([2, 8, 8, 3]);
  await assert.rejects(regionImages(fg, two), /3 foreground images but 2/);
  tf.dispose([fg, bg, two]);
  assert.equal(tf.memory().numTensors, before, "the view creates no tensors");
});
