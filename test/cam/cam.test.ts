import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend } from "../helpers";
import { stageCam, fuseStageCams, camsToMasks, removeSmallBlobs, computeCams } from "../../src/cam";
import { TinyBackbone } from "../tiny";
import { ClassNet } from "../../src/model/classnet";
import { resolveConfig, RELEASE, type PbipConfig } from "../../src/config/profiles";
import { generateSynthetic, syntheticManifest } from "../../src/data/synthetic/generate";
import { openDataset } from "../../src/data/dataset";
import { decodePng } from "../../src/data/png";
import { writePseudoMasks, PSEUDO_MASK_RECORD } from "../../src/pipeline/core";
import { tmpDir } from "../tmp";

test("stage CAM by hand: merge (K = 1 is the map), ReLU, min-max per class, label gate", async () => {
  await onBackend("cpu", () => undefined);
  // One image, 1x3 pixels, 2 classes with K = 1: class 0 = [-1, 1, 3], class 1 = [2, 4, 6].
  const maps = tf.tensor4d([-1, 2, 1, 4, 3, 6], [1, 1, 3, 2]);
  const cam = await stageCam(maps, [1, 1], tf.tensor2d([[1, 0]]), [1, 3]).data();
  // class 0: relu -> [0,1,3], min-max -> [0, 1/3, 1]; class 1 gated off.
  const c0 = [cam[0]!, cam[2]!, cam[4]!];
  [0, 1 / 3, 1].forEach((v, i) => assert.ok(Math.abs(c0[i]! - v) < 1e-4, `class 0 px ${i}: ${c0[i]}`));
  assert.deepEqual([cam[1], cam[3], cam[5]], [0, 0, 0]);
});

test("stage fusion uses the weights of the stage numbers (release 0 / 0.3 / 0.3 / 0.4)", async () => {
  await onBackend("cpu", () => undefined);
  const ones = [2, 3, 4].map((s) => tf.fill([1, 1, 1, 1], s) as tf.Tensor4D);
  const f = await fuseStageCams(ones, [2, 3, 4], RELEASE.cam.stageWeights).data();
  assert.ok(Math.abs(f[0]! - (0.3 * 2 + 0.3 * 3 + 0.4 * 4)) < 1e-6);
});

test("pseudo-masks by hand: argmax (release), (1 - max)^p background channel, white-pixel prior with small blobs kept", async () => {
  await onBackend("cpu", () => undefined);
  // 1x4 image, 2 classes. CAMs: px0 (0.9, 0.1), px1 (0.2, 0.3), px2 (0.05, 0.1), px3 (0.6, 0.7).
  const cams = tf.tensor4d([0.9, 0.1, 0.2, 0.3, 0.05, 0.1, 0.6, 0.7], [1, 1, 4, 2]);
  const bg = { mode: "none" as const, power: 1, whiteGrey: 200, minBlob: 2 };
  assert.deepEqual(Array.from(await (await camsToMasks(cams, 2, bg)).data()), [0, 1, 1, 1]);
  // power 1: bg channel = 1 - max = (0.1, 0.7, 0.9, 0.3) -> px1 and px2 become background (id 2).
  assert.deepEqual(Array.from(await (await camsToMasks(cams, 2, { ...bg, mode: "power" })).data()), [0, 2, 2, 1]);
  // White prior: pixels 2 and 3 are white (a blob of 2 >= minBlob 2), pixel 0 alone is white but a blob of 1 < 2.
  const img = tf.tensor4d([1, 1, 1, 0.2, 0.2, 0.2, 0.95, 0.95, 0.95, 0.9, 0.9, 0.9], [1, 1, 4, 3]);
  assert.deepEqual(Array.from(await (await camsToMasks(cams, 2, { ...bg, mode: "white" }, img)).data()), [0, 1, 2, 2]);
  await assert.rejects(() => camsToMasks(cams, 2, { ...bg, mode: "white" }), /needs the images/);
});

test("removeSmallBlobs clears 4-connected blobs under the size and keeps the rest", () => {
  const m = Uint8Array.from([1, 1, 0, 1, 0, 0, 0, 1, 1, 0, 1, 1]); // 3 rows x 4
  removeSmallBlobs(m, 4, 3, 2);
  // Rows: 1 1 0 1 / 0 0 0 1 / 1 0 1 1. Blobs: {0,1} (2 px, kept), {3,7,11,10} (4 px, kept), {8} (1 px, cleared).
  assert.deepEqual(Array.from(m), [1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 1, 1]);
});

function tinyNet(): ClassNet {
  const cfg = resolveConfig("release", { model: { projectionHidden: 8 } as PbipConfig["model"] });
  const protos = tf.tidy(() => tf.randomNormal([8, 5], 0, 1, "float32", 9) as tf.Tensor2D);
  const n = new ClassNet({ backbone: new TinyBackbone(4), prototypes: protos, k: [2, 2, 2, 2], model: cfg.model, normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] }, seed: 3 });
  protos.dispose();
  return n;
}

/**
 * An independent CAM of a batch, in plain arrays from the network's stage maps: per stage the K
 * subclass maps of a class merge (`softmax`: sum(softmax(s) * s), `mean`), ReLU, min-max per image
 * and class (+1e-5), gate, bilinear upsampling (TF's op, half-pixel centres), fusion by stage
 * number; with TTA, every flip x intensity forward, the flipped ones flipped back, then averaged.
 */
async function referenceCams(net: ClassNet, x: tf.Tensor4D, gate: number[][], cfg: PbipConfig["cam"]): Promise<Float32Array> {
  const [B, H, W] = x.shape;
  const N = net.k.length;
  const total = new Float32Array(B * H * W * N);
  const flips = cfg.tta.hflip ? [false, true] : [false];
  const scales = cfg.tta.intensities.length ? cfg.tta.intensities : [1];
  for (const flip of flips) {
    for (const scale of scales) {
      const input = tf.tidy(() => (flip ? tf.reverse(tf.mul(x, scale), 2) : tf.mul(x, scale)) as tf.Tensor4D);
      const out = net.forward(input, false);
      const fused = new Float32Array(B * H * W * N);
      for (let si = 0; si < out.maps.length; si++) {
        const w = cfg.stageWeights[out.stages[si]! - 1] ?? 0;
        const [, h, wd, S] = out.maps[si]!.shape;
        const m = await out.maps[si]!.data();
        const cam = new Float32Array(B * h * wd * N);
        for (let b = 0; b < B; b++) {
          for (let n = 0; n < N; n++) {
            const first = net.k.slice(0, n).reduce((a, v) => a + v, 0);
            const vals: number[] = [];
            for (let p = 0; p < h * wd; p++) {
              const s = Array.from({ length: net.k[n]! }, (_, j) => m[(b * h * wd + p) * S + first + j]!);
              let v: number;
              if (cfg.merge === "mean") v = s.reduce((a, c) => a + c, 0) / s.length;
              else {
                const mx = Math.max(...s);
                const e = s.map((c) => Math.exp(c - mx));
                const z = e.reduce((a, c) => a + c, 0);
                v = s.reduce((a, c, j) => a + (e[j]! / z) * c, 0);
              }
              vals.push(Math.max(0, v));
            }
            const lo = Math.min(...vals);
            const hi = Math.max(...vals);
            vals.forEach((v, p) => (cam[(b * h * wd + p) * N + n] = ((v - lo) / (hi - lo + 1e-5)) * gate[b]![n]!));
          }
        }
        const up = tf.tidy(() => tf.image.resizeBilinear(tf.tensor4d(cam, [B, h, wd, N]), [H, W], false, true));
        const u = await up.data();
        up.dispose();
        for (let i = 0; i < u.length; i++) fused[i]! += w * u[i]!;
      }
      tf.dispose([input, ...out.features, ...out.maps, ...out.logits]);
      for (let b = 0; b < B; b++)
        for (let r = 0; r < H; r++)
          for (let c = 0; c < W; c++)
            for (let n = 0; n < N; n++) total[((b * H + r) * W + c) * N + n]! += fused[((b * H + r) * W + (flip ? W - 1 - c : c)) * N + n]!;
    }
  }
  const count = flips.length * scales.length;
  return total.map((v) => v / count);
}

test("computeCams equals an independent computation, with and without TTA, for both subclass merges; no tensors left", async () => {
  await onBackend("wasm", () => undefined);
  const net = tinyNet();
  const x = tf.randomUniform([2, 32, 32, 3], 0, 1, "float32", 2) as tf.Tensor4D;
  const labels = tf.tensor2d([[1, 0, 1, 0], [0, 1, 0, 0]]);
  const gate = [[1, 0, 1, 0], [0, 1, 0, 0]];
  const before = tf.memory().numTensors;
  const plain = { ...RELEASE.cam, tta: { hflip: false, intensities: [1] } };
  const cases: [string, PbipConfig["cam"]][] = [
    ["no TTA, softmax", plain],
    ["no TTA, mean", { ...plain, merge: "mean" }],
    ["release TTA (h-flip x 0.9/1/1.1), softmax", RELEASE.cam],
    ["h-flip only, mean", { ...plain, merge: "mean", tta: { hflip: true, intensities: [1] } }],
  ];
  const results: Float32Array[] = [];
  for (const [name, cfg] of cases) {
    const r = computeCams(net, x, labels, cfg);
    const got = (await r.cams.data()) as Float32Array;
    tf.dispose([r.cams, r.gate, r.probs]);
    const want = await referenceCams(net, x, gate, cfg);
    assert.equal(got.length, want.length, name);
    let worst = 0;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
    assert.ok(worst < 1e-5, `${name}: max |difference| ${worst}`);
    results.push(got);
  }
  // The cases are distinguishable, so the comparisons above could fail: each setting changes the CAMs.
  for (let i = 1; i < results.length; i++) assert.ok(results[i]!.some((v, j) => Math.abs(v - results[0]![j]!) > 1e-3), `${cases[i]![0]} differs from ${cases[0]![0]}`);
  const pred = computeCams(net, x, undefined, { ...plain, gate: "pred", gateThreshold: 2 });
  const g = await pred.gate.array();
  assert.ok(g.every((row) => row.reduce((s, v) => s + v, 0) === 1), `with an unreachable threshold only the top class remains: ${JSON.stringify(g)}`);
  tf.dispose([pred.cams, pred.gate, pred.probs]);
  assert.equal(tf.memory().numTensors, before);
  tf.dispose([x, labels]);
  net.dispose();
});

test("writePseudoMasks: palette PNGs in the dataset palette with only palette ids, one per patch; a rerun skips valid ones and redoes a corrupt one", async () => {
  await onBackend("wasm", () => undefined);
  const root = tmpDir("pbip-cam-");
  await generateSynthetic({ out: path.join(root, "data"), train: 4, val: 2, test: 5, size: 32, seed: 3, workers: 1 });
  const ds = openDataset(path.join(root, "data"), { dataset: syntheticManifest() });
  const net = tinyNet();
  const split = ds.split("test");
  const out = path.join(root, "masks");
  const cam = { ...RELEASE.cam, tta: { hflip: false, intensities: [1] }, background: { ...RELEASE.cam.background, mode: "power" as const } };
  const r1 = await writePseudoMasks({ net, split, cam, inputSize: 32, outDir: out, batchSize: 2 });
  assert.equal(r1.written, 5);
  const files = fs.readdirSync(out).filter((f) => f.endsWith(".png")).sort();
  assert.deepEqual(files, split.samples.map((s) => s.id).sort());
  for (const f of files) {
    const png = decodePng(fs.readFileSync(path.join(out, f)), f);
    assert.equal(png.colorType, 3, `${f} is palette-mode`);
    assert.deepEqual(png.palette!.slice(0, 5), ds.spec.palette);
    assert.ok(Array.from(png.data).every((v) => v <= ds.spec.backgroundId), `${f} has only palette ids`);
  }
  assert.ok(r1.matrix && r1.matrix.total() === 5 * 32 * 32, "scored against the test masks");
  fs.writeFileSync(path.join(out, files[0]!), Buffer.from("not a png"));
  const r2 = await writePseudoMasks({ net, split, cam, inputSize: 32, outDir: out, batchSize: 2 });
  assert.equal(r2.written, 1);
  assert.equal(r2.skipped, 4);
  // pseudo-masks.json records what made the masks: another checkpoint or other settings are an
  // error (the masks there are not this checkpoint's), unless overwrite, which makes them all again.
  assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, PSEUDO_MASK_RECORD), "utf8")).split, "test");
  await assert.rejects(writePseudoMasks({ net, split, cam, inputSize: 32, outDir: out, source: "sha256:other" }), /pseudo-masks\.json: the masks here were made by another checkpoint or with other settings \(source differs\)/);
  await assert.rejects(writePseudoMasks({ net, split, cam: { ...cam, merge: "mean" }, inputSize: 32, outDir: out }), /\(cam\.merge differs\)/);
  const r3 = await writePseudoMasks({ net, split, cam, inputSize: 32, outDir: out, source: "sha256:other", overwrite: true });
  assert.deepEqual([r3.written, r3.skipped], [5, 0]);
  // An overwrite stopped after its first batch, then resumed: the old checkpoint's masks are gone,
  // so the resume makes the other three (none kept under the new record).
  const stopAt = (d: number) => {
    if (d >= 2) throw new Error("stopped");
  };
  await assert.rejects(writePseudoMasks({ net, split, cam, inputSize: 32, outDir: out, batchSize: 2, source: "sha256:third", overwrite: true, onProgress: stopAt }), /stopped/);
  const r4 = await writePseudoMasks({ net, split, cam, inputSize: 32, outDir: out, batchSize: 2, source: "sha256:third" });
  assert.deepEqual([r4.written, r4.skipped], [3, 2]);
  // A folder of files pbip did not write (here the dataset's own masks) is never written into.
  const gt = path.join(root, "data", "test", "mask");
  const before = fs.readdirSync(gt).map((f) => fs.readFileSync(path.join(gt, f)).toString("base64"));
  await assert.rejects(writePseudoMasks({ net, split, cam, inputSize: 32, outDir: gt }), (e: Error) => e.message.startsWith(gt) && /holds 5 entries .* but no pseudo-masks\.json/.test(e.message));
  assert.deepEqual(fs.readdirSync(gt).map((f) => fs.readFileSync(path.join(gt, f)).toString("base64")), before, "untouched");
  net.dispose();
});
