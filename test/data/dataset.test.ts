// Dataset readers: the published layouts (LUAD-HistoSeg, BCSS-WSSS names, val
// vs valid), the generic CSV layout, specs from the synthetic card, and errors
// that name the file for every kind of bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { openDataset, openSplit, parseCsv, scanSplit, findSplits } from "../../src/data/dataset";
import { readMask, labelFromMask } from "../../src/data/image";
import { loadManifest } from "../../src/data/manifest";
import { FileError, UsageError } from "../../src/util/errors";
import { SMALL, smallSet, copyDir, tmpDir } from "./small-set";

test("the synthetic set opens as LUAD-HistoSeg: splits, labels, masks, spec from the card", async () => {
  const { out } = await smallSet();
  const ds = openDataset(out, { dataset: "synthetic" });
  assert.equal(ds.layout, "luad");
  assert.deepEqual(ds.splits, ["train", "val", "test"]);
  assert.equal(ds.spec.patchSize, SMALL.size, "patch size comes from card.json");
  const train = ds.split("train");
  assert.equal(train.samples.length, SMALL.train);
  assert.ok(train.hasMasks, "train-mask/ gives train samples masks");
  for (const s of train.samples) assert.match(s.id, /-\[[01] [01] [01] [01]\]\.png$/);
  const val = ds.split("valid");
  assert.equal(val.name, "val");
  assert.equal(val.samples.length, SMALL.val);
  for (const s of val.samples) assert.deepEqual(s.label, labelFromMask(readMask(s.maskPath!, ds.spec).ids, 4), s.id);
  assert.throws(() => ds.split("dev" as "val"), UsageError);
});

test("`valid` instead of `val`, as in the PBIP release's BCSS-WSSS layout", async () => {
  const { out } = await smallSet();
  const dir = copyDir(out, path.join(tmpDir(), "set"));
  fs.renameSync(path.join(dir, "val"), path.join(dir, "valid"));
  const s = openSplit(dir, { dataset: "synthetic", split: "val" });
  assert.equal(s.samples.length, SMALL.val);
  assert.equal(path.basename(s.root), "valid");
  fs.rmSync(path.dirname(dir), { recursive: true });
});

test("BCSS-WSSS names (+0[1101]) with the bcss-wsss spec; another patch size needs resize", async () => {
  const { out } = await smallSet();
  const dir = copyDir(out, path.join(tmpDir(), "bcss"));
  fs.rmSync(path.join(dir, "card.json"));
  fs.rmSync(path.join(dir, "train-mask"), { recursive: true });
  const names = fs.readdirSync(path.join(dir, "train"));
  for (const f of names) {
    const m = /^(.*)-\[(\d) (\d) (\d) (\d)\]\.png$/.exec(f)!;
    fs.renameSync(path.join(dir, "train", f), path.join(dir, "train", `TCGA-XX_${m[1]}+0[${m[2]}${m[3]}${m[4]}${m[5]}].png`));
  }
  // The bcss-wsss patches are 224 px; these are 64 px.
  assert.throws(
    () => openSplit(dir, { dataset: "bcss-wsss", split: "train" }),
    (e: unknown) => e instanceof FileError && /train\/TCGA-XX_synth-0000\+0\[\d{4}\]\.png$/.test(e.file) && /64x64, bcss-wsss patches are 224x224.*resize/.test(e.message),
  );
  const train = openSplit(dir, { dataset: "bcss-wsss", split: "train", resize: SMALL.size });
  assert.equal(train.samples.length, SMALL.train);
  assert.equal(train.resize, SMALL.size);
  const orig = openSplit(out, { dataset: "synthetic", split: "train" });
  assert.deepEqual(
    train.samples.map((s) => s.label),
    orig.samples.map((s) => s.label),
  );
  // The LUAD format does not read these names, and says why.
  assert.throws(() => openSplit(dir, { dataset: "luad-histoseg", split: "train", resize: 64 }), /looks like the bcss format.*and 23 more problems/);
  // Masks carry ids; the LUAD palette of the files does not match bcss-wsss, so indices are trusted.
  const test_ = openSplit(dir, { dataset: "bcss-wsss", split: "test", resize: SMALL.size });
  assert.equal(test_.samples.length, SMALL.test);
  fs.rmSync(path.dirname(dir), { recursive: true });
});

test("generic layout: images + labels.csv (split column, per-class columns or a label column) + masks", async () => {
  const { out } = await smallSet();
  const dir = path.join(tmpDir(), "generic");
  fs.mkdirSync(path.join(dir, "images"), { recursive: true });
  fs.mkdirSync(path.join(dir, "masks"));
  const rows = ["image,split,TE,NEC,LYM,TAS"];
  const train = openSplit(out, { dataset: "synthetic", split: "train" });
  train.samples.slice(0, 6).forEach((s, k) => {
    fs.copyFileSync(s.imagePath, path.join(dir, "images", `t${k}.png`));
    rows.push(`t${k}.png,train,${s.label.join(",")}`);
  });
  const test_ = openSplit(out, { dataset: "synthetic", split: "test" });
  test_.samples.slice(0, 3).forEach((s, k) => {
    fs.copyFileSync(s.imagePath, path.join(dir, "images", `x${k}.png`));
    fs.copyFileSync(s.maskPath!, path.join(dir, "masks", `x${k}.png`));
    rows.push(`"x${k}.png",test,,,,`); // no label: taken from the mask
  });
  fs.writeFileSync(path.join(dir, "labels.csv"), rows.join("\n") + "\n");
  const ds = openDataset(dir, { dataset: "luad-histoseg", resize: SMALL.size });
  assert.equal(ds.layout, "csv");
  assert.deepEqual(ds.splits, ["train", "test"]);
  const tr = ds.split("train");
  assert.deepEqual(
    tr.samples.map((s) => s.label),
    train.samples.slice(0, 6).map((s) => s.label),
  );
  const te = ds.split("test");
  assert.ok(te.hasMasks);
  assert.deepEqual(
    te.samples.map((s) => s.label),
    test_.samples.slice(0, 3).map((s) => s.label),
  );
  // A "label" column works too, and bad rows are named.
  fs.writeFileSync(path.join(dir, "labels.csv"), "file;label\nt0.png;1 0 0 1\nt1.png;[0 1 0 0]\nmissing.png;1 0 0 0\nt2.png;1 2 0 0\n");
  const scan = scanSplit(dir, loadManifest("luad-histoseg").spec, "csv", "train");
  assert.deepEqual(
    scan.samples.map((s) => [s.id, s.label.join("")]),
    [
      ["t0.png", "1001"],
      ["t1.png", "0100"],
    ],
  );
  assert.deepEqual(scan.problems.map((p) => [path.basename(p.file), p.kind]), [
    ["missing.png", "unreadable"],
    ["t2.png", "label"],
  ]);
  assert.deepEqual(findSplits(dir, "csv"), ["train"]);
  fs.rmSync(path.dirname(dir), { recursive: true });
});

test("parseCsv: quotes, escaped quotes, CRLF, semicolons, blank lines", () => {
  assert.deepEqual(parseCsv('A,b\r\n"x,1","say ""hi"""\r\n\r\n2,3'), {
    header: ["a", "b"],
    rows: [
      ["x,1", 'say "hi"'],
      ["2", "3"],
    ],
  });
  assert.deepEqual(parseCsv("image;label\na.png;1 0 0 1\n").rows, [["a.png", "1 0 0 1"]]);
});

test("bad input: each problem is an error naming the file; scanSplit lists them all", async () => {
  const { out, card } = await smallSet();
  const dir = copyDir(out, path.join(tmpDir(), "bad"));
  const trainFiles = fs.readdirSync(path.join(dir, "train")).sort();
  fs.renameSync(path.join(dir, "train", trainFiles[0]!), path.join(dir, "train", "nolabel.png"));
  fs.renameSync(path.join(dir, "train", trainFiles[1]!), path.join(dir, "train", "x-[1 1 0].png"));
  assert.throws(
    () => openSplit(dir, { dataset: "synthetic", split: "train" }),
    (e: unknown) => e instanceof FileError && e.file.endsWith("nolabel.png") && /no LUAD-HistoSeg label suffix.*\(and 1 more problem; run `pbip data verify/.test(e.message),
  );
  const scan = scanSplit(dir, card.spec, "luad", "train");
  assert.deepEqual(scan.problems.map((p) => [path.basename(p.file), p.kind]).sort(), [
    ["nolabel.png", "label"],
    ["x-[1 1 0].png", "label"],
  ]);
  assert.equal(scan.samples.length, SMALL.train - 2);
  // Missing mask for a test image, and an empty val split.
  const testMasks = fs.readdirSync(path.join(dir, "test", "mask")).sort();
  fs.rmSync(path.join(dir, "test", "mask", testMasks[0]!));
  assert.throws(() => openSplit(dir, { dataset: "synthetic", split: "test" }), (e: unknown) => e instanceof FileError && e.file.endsWith(path.join("test", "img", testMasks[0]!)) && /no mask/.test(e.message));
  for (const f of fs.readdirSync(path.join(dir, "val", "img"))) fs.rmSync(path.join(dir, "val", "img", f));
  assert.throws(() => openSplit(dir, { dataset: "synthetic", split: "val" }), (e: unknown) => e instanceof FileError && /val.img$/.test(e.file) && /no images/.test(e.message));
  fs.rmSync(path.join(dir, "val"), { recursive: true });
  assert.throws(() => openSplit(dir, { dataset: "synthetic", split: "val" }), /no val folder \(looked for val, valid, validation\)/);
  assert.throws(() => openDataset(path.join(dir, "nowhere"), { dataset: "synthetic" }), (e: unknown) => e instanceof FileError && /dataset folder not found/.test(e.message));
  assert.throws(() => openDataset(dir, { dataset: "no-such-dataset" }), UsageError);
  fs.rmSync(path.dirname(dir), { recursive: true });
});
