// The synthetic benchmark: deterministic bytes (also across worker counts),
// LUAD-HistoSeg layout and names, labels consistent with the masks, textured
// (not flat) tissue, and a card whose statistics agree with an independent
// recomputation from the files on disk (decoded by sharp) and whose baselines
// equal computeBaselines run on those files (computeBaselines itself is checked
// by hand in baselines.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { generateSynthetic } from "../../src/data/synthetic/generate";
import { paintPatch, SYNTH_VARIANTS, paintDefaults } from "../../src/data/synthetic/paint";
import { openDataset } from "../../src/data/dataset";
import { parseLabelFromName } from "../../src/data/labels";
import { readMask, labelFromMask, idHistogram } from "../../src/data/image";
import { decodePng } from "../../src/data/png";
import { computeBaselines } from "../../src/data/baselines";
import type { SynthCard } from "../../src/data/synthetic/card";
import { FileError } from "../../src/util/errors";
import { SMALL, smallSet, tmpDir } from "./small-set";

function listFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const f of fs.readdirSync(d).sort()) {
      const p = path.join(d, f);
      if (fs.statSync(p).isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out;
}

test("same seed, same bytes; also with two worker threads; another seed differs", async () => {
  const a = await smallSet();
  const dir = tmpDir();
  const b = await generateSynthetic({ ...SMALL, out: path.join(dir, "b"), workers: 2 });
  assert.equal(b.workers, 2, "two worker threads really ran");
  assert.equal(a.workers, 1);
  const fa = listFiles(a.out);
  assert.deepEqual(listFiles(b.out), fa);
  for (const f of fa) assert.ok(fs.readFileSync(path.join(a.out, f)).equals(fs.readFileSync(path.join(b.out, f))), `${f} differs`);
  assert.equal(b.card.contentSha256, a.card.contentSha256);
  const c = await generateSynthetic({ ...SMALL, train: 4, val: 1, test: 1, seed: SMALL.seed + 1, out: path.join(dir, "c"), workers: 1 });
  assert.notEqual(fs.readFileSync(path.join(c.out, "test/img/synth-test-0000.png")).toString("hex"), fs.readFileSync(path.join(a.out, "test/img/synth-test-0000.png")).toString("hex"));
  fs.rmSync(dir, { recursive: true });
});

test("LUAD-HistoSeg layout: train names parse, masks are palette PNGs, labels are the classes in the masks", async () => {
  const { out, card } = await smallSet();
  const train = fs.readdirSync(path.join(out, "train")).sort();
  assert.equal(train.length, SMALL.train);
  const minPx = paintDefaults.minArea * SMALL.size * SMALL.size;
  for (const f of train) {
    const label = parseLabelFromName(f, "luad", 4);
    const mask = readMask(path.join(out, "train-mask", f), card.spec);
    assert.deepEqual(labelFromMask(mask.ids, 4), label, f);
    const h = idHistogram(mask.ids);
    label.forEach((v, c) => v && assert.ok(h[c]! >= minPx, `${f}: class ${c} covers ${h[c]} px < minArea`));
  }
  for (const split of ["val", "test"]) {
    const imgs = fs.readdirSync(path.join(out, split, "img")).sort();
    assert.deepEqual(fs.readdirSync(path.join(out, split, "mask")).sort(), imgs);
    assert.equal(imgs.length, SMALL[split as "val" | "test"]);
    const d = decodePng(fs.readFileSync(path.join(out, split, "mask", imgs[0]!)));
    assert.equal(d.colorType, 3);
    assert.deepEqual(d.palette, card.spec.palette);
    assert.deepEqual([d.width, d.height], [SMALL.size, SMALL.size]);
  }
  for (const f of ["card.json", "card.md", "card.png"]) assert.ok(fs.existsSync(path.join(out, f)), f);
  const onDisk = JSON.parse(fs.readFileSync(path.join(out, "card.json"), "utf8")) as SynthCard;
  assert.equal(onDisk.contentSha256, card.contentSha256);
  assert.equal(onDisk.spec.patchSize, SMALL.size);
  const md = fs.readFileSync(path.join(out, "card.md"), "utf8");
  assert.match(md, /stand-in/);
  assert.match(md, /card\.png/);
  const pic = await sharp(path.join(out, "card.png")).metadata();
  assert.ok((pic.width ?? 0) > 8 * SMALL.size && (pic.height ?? 0) > 3 * SMALL.size);
});

test("card statistics and normalisation agree with the files decoded by sharp", async () => {
  const { out, card } = await smallSet();
  const files = fs.readdirSync(path.join(out, "train")).sort();
  const sum = [0, 0, 0];
  const sq = [0, 0, 0];
  let n = 0;
  for (const f of files) {
    const px = await sharp(path.join(out, "train", f)).raw().toBuffer();
    for (let i = 0; i < px.length; i += 3) {
      for (let c = 0; c < 3; c++) {
        const v = px[i + c]! / 255;
        sum[c]! += v;
        sq[c]! += v * v;
      }
      n++;
    }
  }
  for (let c = 0; c < 3; c++) {
    const mean = sum[c]! / n;
    const std = Math.sqrt(sq[c]! / n - mean * mean);
    assert.ok(Math.abs(mean - card.normalization.mean[c]!) < 6e-5, `mean ${c}: ${mean} vs ${card.normalization.mean[c]}`);
    assert.ok(Math.abs(std - card.normalization.std[c]!) < 6e-5, `std ${c}: ${std} vs ${card.normalization.std[c]}`);
  }
  const st = card.stats.train;
  assert.equal(st.patches, SMALL.train);
  assert.equal(st.labelCardinality.reduce((a, b) => a + b, 0), SMALL.train);
  assert.ok(Math.abs(st.pixelFraction.reduce((a, b) => a + b, 0) - 1) < 1e-3);
  const withClass = [0, 0, 0, 0];
  for (const f of files) parseLabelFromName(f, "luad", 4).forEach((v, c) => (withClass[c]! += v));
  assert.deepEqual(st.patchesWithClass, withClass);
});

test("the card's baselines equal computeBaselines on the files written, under the 55% bound for (b) on this small set", async () => {
  const { out, card } = await smallSet();
  const ds = openDataset(out, { dataset: "synthetic" });
  const r = await computeBaselines(ds.split("train"), ds.split("test"));
  const b = card.baselines!;
  assert.ok(b, "card has baselines");
  for (const [x, y] of [
    [r.mostFrequent, b.mostFrequent],
    [r.nearestMeanRgb, b.nearestMeanRgb],
    [r.nearestMeanOd, b.nearestMeanOd],
  ] as const) {
    assert.ok(Math.abs(x.mIoU - y.mIoU) < 1e-4, `${x.name}: ${x.mIoU} vs ${y.mIoU}`);
  }
  assert.ok(b.nearestMeanRgb.mIoU < 0.55 && b.nearestMeanOd.mIoU < 0.55);
  assert.match(b.convention, /background pixels are kept/);
});

test("patches are textured tissue, not flat colour, and every sub-appearance occurs", () => {
  const seen = SYNTH_VARIANTS.map(() => new Set<string>());
  for (let k = 0; k < 40; k++) {
    const p = paintPatch(900 + k, { size: 96 });
    p.variants.forEach((v, c) => v && seen[c]!.add(v));
    // Within every class region, grey levels vary (nuclei, fibres, debris) far beyond the
    // sensor noise (triangular +-4 levels, sd 1.6): a flat-colour painting would give sd < 2.
    for (let c = 0; c < 4; c++) {
      if (!p.label[c]) continue;
      let s = 0;
      let s2 = 0;
      let n = 0;
      for (let i = 0; i < p.mask.length; i++) {
        if (p.mask[i] !== c) continue;
        const g = 0.299 * p.rgb[3 * i]! + 0.587 * p.rgb[3 * i + 1]! + 0.114 * p.rgb[3 * i + 2]!;
        s += g;
        s2 += g * g;
        n++;
      }
      const sd = Math.sqrt(s2 / n - (s / n) ** 2);
      assert.ok(sd > 6, `patch ${k} class ${c} ${p.variants[c]}: grey-level sd ${sd.toFixed(1)}`);
    }
  }
  seen.forEach((s, c) => assert.deepEqual([...s].sort(), [...SYNTH_VARIANTS[c]!].sort(), `class ${c}`));
  // Pure function of the seed.
  const a = paintPatch(5, { size: 48 });
  const b = paintPatch(5, { size: 48 });
  assert.deepEqual(Buffer.from(a.rgb), Buffer.from(b.rgb));
  assert.deepEqual(Buffer.from(a.mask), Buffer.from(b.mask));
});

test("generation refuses to replace a folder that is not a synthetic set", async () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, "precious.txt"), "keep me");
  await assert.rejects(generateSynthetic({ out: dir, train: 1, val: 0, test: 0, size: 32, workers: 1 }), (e: unknown) => e instanceof FileError && /not a pbip synthetic set/.test(e.message));
  assert.equal(fs.readFileSync(path.join(dir, "precious.txt"), "utf8"), "keep me");
  await assert.rejects(generateSynthetic({ out: path.join(dir, "x"), train: 0, val: 0, test: 0 }), /nothing to generate/);
  fs.rmSync(dir, { recursive: true });
});
