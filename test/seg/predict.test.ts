// Stage-2 inference and evaluation: predicted masks are palette PNGs in the
// dataset palette with mask ids only; a rerun skips valid masks and redoes missing
// or corrupt ones; the metrics match a count done by hand; and the `pbip seg
// train` / `pbip seg predict` commands run end to end on a tiny set.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { initBackend } from "../../src/runtime";
import { openDataset, decodePng, readMask, writeMask } from "../../src/data";
import { predictSegmentation, evaluateSegmentation, isValidPredictionFile, sampleStem } from "../../src/seg";
import { commands } from "../../src/cli/commands/seg";
import { tinyDataset, tinySegFormer, type TinyData } from "./fixtures";
import { tmpDir } from "../tmp";

let data: TinyData;
before(async () => {
  await initBackend({ backend: "wasm" });
  data = await tinyDataset();
});

test("predictSegmentation writes palette PNGs with palette ids only, resumes, and refuses a folder of other weights", async () => {
  const out = tmpDir("pbip-seg-pred-");
  const split = openDataset(data.root, { dataset: data.spec }).split("test");
  const model = await tinySegFormer(data.spec, 4);
  try {
    const progress: number[] = [];
    const r1 = await predictSegmentation(model, split, { outDir: out, batchSize: 2, source: "weights-A", onProgress: (d) => progress.push(d) });
    assert.deepEqual([r1.total, r1.written, r1.skipped], [3, 3, 0]);
    assert.deepEqual(progress, [0, 2, 3]);
    const files = split.samples.map((s) => path.join(out, `${sampleStem(s.id)}.png`));
    for (const f of files) {
      const d = decodePng(fs.readFileSync(f), f);
      assert.equal(d.colorType, 3, "palette PNG");
      assert.deepEqual(d.palette!.slice(0, 5), data.spec.palette);
      assert.equal(d.width, 64);
      for (const v of d.data) assert.ok(v <= data.spec.backgroundId, `id ${v}`);
      assert.ok(isValidPredictionFile(f, data.spec.palette, 64));
    }
    // Resume: one mask deleted, one corrupted, one kept (its bytes and mtime unchanged).
    fs.rmSync(files[0]!);
    fs.writeFileSync(files[1]!, "not a png");
    const keptBefore = fs.statSync(files[2]!).mtimeMs;
    const r2 = await predictSegmentation(model, split, { outDir: out, batchSize: 2, source: "weights-A" });
    assert.deepEqual([r2.written, r2.skipped], [2, 1]);
    assert.equal(fs.statSync(files[2]!).mtimeMs, keptBefore);
    assert.ok(files.every((f) => isValidPredictionFile(f, data.spec.palette, 64)));
    await assert.rejects(predictSegmentation(model, split, { outDir: out, source: "weights-B" }), (e: Error) => e.message.includes("predictions.json") && /other weights/.test(e.message));
    const r3 = await predictSegmentation(model, split, { outDir: out, source: "weights-B", overwrite: true });
    assert.equal(r3.written, 3);
    // An overwrite stopped after its first batch and resumed redoes the rest, keeping no mask of the old weights.
    const stopAt = (d: number) => {
      if (d >= 2) throw new Error("stopped");
    };
    await assert.rejects(predictSegmentation(model, split, { outDir: out, batchSize: 2, source: "weights-C", overwrite: true, onProgress: stopAt }), /stopped/);
    const r4 = await predictSegmentation(model, split, { outDir: out, batchSize: 2, source: "weights-C" });
    assert.deepEqual([r4.written, r4.skipped], [1, 2]);
    // Never into a folder pbip did not write (the test images here), even with overwrite.
    const imgDir = path.dirname(split.samples[0]!.imagePath);
    await assert.rejects(predictSegmentation(model, split, { outDir: imgDir, overwrite: true }), (e: Error) => e.message.startsWith(imgDir) && /but no predictions\.json/.test(e.message));
    // A model of another dataset's classes is refused, naming both.
    const other = { ...split, dataset: { ...split.dataset, name: "other", codes: ["A", "B", "C", "D"] } };
    await assert.rejects(predictSegmentation(model, other, { outDir: tmpDir("pbip-seg-pred-other-") }), /trained for classes .* other has A, B, C, D/);
  } finally {
    model.dispose();
  }
});

test("evaluateSegmentation: count-bg metrics equal a confusion count by hand; a missing prediction is named", () => {
  const split = openDataset(data.root, { dataset: data.spec }).split("test");
  const out = tmpDir("pbip-seg-eval-");
  // Predictions: the ground truth with a deterministic corruption (every 7th pixel -> class 0).
  const n = data.spec.classes.length + 1;
  const tp = new Array<number>(n).fill(0);
  const fp = new Array<number>(n).fill(0);
  const fn = new Array<number>(n).fill(0);
  for (const s of split.samples) {
    const g = readMask(s.maskPath!, data.spec).ids;
    const p = Uint8Array.from(g, (v, i) => (i % 7 === 0 ? 0 : v));
    writeMask(path.join(out, `${sampleStem(s.id)}.png`), p, 64, 64, data.spec.palette);
    g.forEach((v, i) => {
      if (v === p[i]) tp[v]!++;
      else {
        fn[v]!++;
        fp[p[i]!]!++;
      }
    });
  }
  const fg = [0, 1, 2, 3];
  const iou = fg.map((c) => (tp[c]! + fp[c]! + fn[c]! > 0 ? tp[c]! / (tp[c]! + fp[c]! + fn[c]!) : NaN));
  const present = iou.filter((v) => !Number.isNaN(v));
  const miou = present.reduce((a, b) => a + b, 0) / present.length;
  const r = evaluateSegmentation(split, out);
  assert.equal(r.convention, "count-bg");
  assert.match(r.conventionNote, /ground-truth background pixels are counted/);
  assert.equal(r.images, 3);
  assert.ok(Math.abs(r.scores.miou - miou) < 1e-12, `${r.scores.miou} vs ${miou}`);
  r.scores.iou.forEach((v, i) => (Number.isNaN(iou[i]!) ? assert.ok(Number.isNaN(v)) : assert.ok(Math.abs(v - iou[i]!) < 1e-12)));
  for (const k of ["fwiou", "mdice", "mbiou"] as const) assert.ok(r.scores[k] > 0 && r.scores[k] <= 1, `${k} ${r.scores[k]}`);
  fs.rmSync(path.join(out, `${sampleStem(split.samples[1]!.id)}.png`));
  assert.throws(() => evaluateSegmentation(split, out), (e: Error) => e.message.includes(out) && /no prediction for 1 of 3/.test(e.message));
});

test("pbip seg train, then pbip seg predict: checkpoints, masks, the metrics table and its JSON", async () => {
  const base = tmpDir("pbip-seg-cli-");
  const run = (name: string, argv: string[]) => commands.find((c) => c.name.join(" ") === name)!.run(argv);
  const logs: string[] = [];
  const log = console.log;
  const err = console.error;
  console.log = (...a: unknown[]) => void logs.push(a.join(" "));
  console.error = () => undefined;
  try {
    const out = path.join(base, "stage2");
    assert.equal(
      await run("seg train", ["--data", data.root, "--pseudo", data.pseudo, "--out", out, "--size", "64", "--batch", "2", "--epochs", "1", "--backend", "wasm", "--set", "train.valLimit=2"]),
      0,
    );
    assert.ok(fs.existsSync(path.join(out, "best.safetensors")));
    assert.ok(fs.existsSync(path.join(out, "step-000002.safetensors")));
    const pred = path.join(base, "pred");
    assert.equal(await run("seg predict", ["--checkpoint", path.join(out, "best.safetensors"), "--data", data.root, "--split", "test", "--out", pred, "--backend", "wasm"]), 0);
    const report = JSON.parse(fs.readFileSync(path.join(pred, "eval-count-bg.json"), "utf8")) as { convention: string; images: number; scores: { miou: number } };
    assert.equal(report.convention, "count-bg");
    assert.equal(report.images, 3);
    assert.ok(logs.some((l) => /mIoU/.test(l) && /convention count-bg/.test(l)), logs.join("\n"));
    assert.equal(fs.readdirSync(pred).filter((f) => f.endsWith(".png")).length, 3);
    // A bad --model is a usage error.
    await assert.rejects(run("seg train", ["--data", data.root, "--pseudo", data.pseudo, "--out", out, "--model", "unet"]), /--model must be one of/);
  } finally {
    console.log = log;
    console.error = err;
  }
});
