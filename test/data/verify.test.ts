// `pbip data verify` and `pbip data synth` as a user runs them: verify passes on
// a generated set and, on a damaged copy, lists every problem with its file
// name and exits 1; synth twice with the same seed writes identical files.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { verifyDataset, formatVerifyReport } from "../../src/data/verify";
import { encodePalettePng } from "../../src/data/png";
import { commands } from "../../src/cli/commands/data";
import { SMALL, smallSet, copyDir, tmpDir } from "./small-set";
import { fetchRealSamples } from "../../src/data/real-samples";

/** Run a `pbip data ...` command, capturing what it prints. */
async function run(words: string[], argv: string[]): Promise<{ code: number; out: string }> {
  const cmd = commands.find((c) => c.name.join(" ") === words.join(" "))!;
  const lines: string[] = [];
  const log = console.log;
  const err = process.stderr.write.bind(process.stderr);
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    const code = (await cmd.run(argv)) ?? 0;
    return { code, out: lines.join("\n") };
  } finally {
    console.log = log;
    process.stderr.write = err;
  }
}

test("verify passes on a generated set", async () => {
  const { out } = await smallSet();
  const r = await verifyDataset(out, { dataset: "synthetic" });
  assert.deepEqual(r.problems, []);
  assert.ok(r.ok);
  assert.deepEqual(
    r.rows.map((x) => [x.split, x.images, x.expected, x.masks, x.badFiles]),
    [
      ["train", SMALL.train, SMALL.train, SMALL.train, 0],
      ["val", SMALL.val, SMALL.val, SMALL.val, 0],
      ["test", SMALL.test, SMALL.test, SMALL.test, 0],
    ],
  );
  const { code, out: text } = await run(["data", "verify"], [out, "--dataset", "synthetic", "--quiet"]);
  assert.equal(code, 0);
  assert.match(text, /OK: no problems found/);
  assert.match(text, /split\s+folder\s+images\s+expected\s+masks\s+bad files/);
});

test("verify lists every problem of a damaged copy, naming each file, and exits 1", async () => {
  const { out, card } = await smallSet();
  const dir = copyDir(out, path.join(tmpDir(), "damaged"));
  const train = fs.readdirSync(path.join(dir, "train")).sort();
  // 1. a truncated PNG
  const truncated = path.join(dir, "train", train[2]!);
  const bytes = fs.readFileSync(truncated);
  fs.writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  // 2. a bad label suffix
  const badLabel = path.join(dir, "train", "synth-0005-[1 0 1].png");
  fs.renameSync(path.join(dir, "train", train[5]!), badLabel);
  // 3. an out-of-palette mask value (the file itself is a valid palette PNG)
  const valMasks = fs.readdirSync(path.join(dir, "val", "mask")).sort();
  const badMask = path.join(dir, "val", "mask", valMasks[1]!);
  const ids = new Uint8Array(SMALL.size * SMALL.size).fill(2);
  ids[100] = 9;
  fs.writeFileSync(badMask, encodePalettePng(ids, SMALL.size, SMALL.size, [...card.spec.palette, ...Array.from({ length: 5 }, (): [number, number, number] => [9, 9, 9])]));
  // 4. a patch of the wrong size
  const testImgs = fs.readdirSync(path.join(dir, "test", "img")).sort();
  const wrongSize = path.join(dir, "test", "img", testImgs[0]!);
  await sharp(Buffer.alloc(32 * 32 * 3, 128), { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(wrongSize + ".tmp.png");
  fs.renameSync(wrongSize + ".tmp.png", wrongSize);
  // 5. a test image without its mask
  const noMask = path.join(dir, "test", "img", testImgs[3]!);
  fs.rmSync(path.join(dir, "test", "mask", testImgs[3]!));
  // 6. an unreadable (not an image) file
  const junk = path.join(dir, "test", "img", testImgs[4]!);
  fs.writeFileSync(junk, "this is not an image");

  const r = await verifyDataset(dir, { dataset: "synthetic" });
  assert.equal(r.ok, false);
  const got = r.problems.map((p) => [p.kind, p.file]);
  const want: [string, string][] = [
    ["corrupt", truncated],
    ["label", badLabel],
    ["mask-value", badMask],
    ["size", wrongSize],
    ["mask-missing", noMask],
    ["unreadable", junk],
  ];
  for (const w of want) assert.ok(got.some((g) => g[0] === w[0] && g[1] === w[1]), `missing ${w.join(" ")} in ${JSON.stringify(got, null, 1)}`);
  assert.equal(r.problems.length, want.length, JSON.stringify(got, null, 1));
  const text = formatVerifyReport(r);
  for (const [, f] of want) assert.ok(text.includes(f), `report names ${f}`);
  assert.match(text, /FAILED: 6 problems/);
  assert.match(r.problems.find((p) => p.kind === "mask-value")!.problem, /value 9 \(1 px\) outside the synthetic palette/);

  const { code, out: printed } = await run(["data", "verify"], [dir, "--dataset", "synthetic", "--quiet"]);
  assert.equal(code, 1);
  for (const [, f] of want) assert.ok(printed.includes(f), `CLI output names ${f}`);

  // An empty split and a missing split are problems too.
  for (const f of fs.readdirSync(path.join(dir, "val", "img"))) fs.rmSync(path.join(dir, "val", "img", f));
  fs.rmSync(path.join(dir, "test"), { recursive: true });
  const r2 = await verifyDataset(dir, { dataset: "synthetic", splits: ["val", "test"] });
  assert.ok(r2.problems.some((p) => p.kind === "empty-split" && p.file.endsWith(path.join("val", "img"))));
  assert.ok(r2.problems.some((p) => p.kind === "missing-folder" && /no test folder/.test(p.problem)));
  fs.rmSync(path.dirname(dir), { recursive: true });
});

test("count check against the published sizes accepts known discrepancies (LUAD val 300 or 306)", async () => {
  const { out } = await smallSet();
  const dir = copyDir(out, path.join(tmpDir(), "luadlike"));
  fs.rmSync(path.join(dir, "card.json"));
  const r = await verifyDataset(dir, { dataset: "luad-histoseg", splits: ["val"] });
  // 64 px patches and 6 instead of 300 (or 306) patches: both reported.
  assert.ok(r.problems.some((p) => p.kind === "count" && /6 images, expected 300 \(or 306\)/.test(p.problem)));
  assert.ok(r.problems.some((p) => p.kind === "size" && /64x64, expected 224x224/.test(p.problem)));
  const r2 = await verifyDataset(dir, { dataset: "luad-histoseg", splits: ["val"], checkCounts: false });
  assert.ok(!r2.problems.some((p) => p.kind === "count"));
  fs.rmSync(path.dirname(dir), { recursive: true });
});

test("pbip data synth twice with the same seed gives identical files", async () => {
  const dir = tmpDir();
  const args = ["--train", "6", "--val", "2", "--test", "2", "--size", "48", "--seed", "5", "--workers", "1", "--quiet"];
  const a = await run(["data", "synth"], ["--out", path.join(dir, "a"), ...args]);
  const b = await run(["data", "synth"], ["--out", path.join(dir, "b"), ...args]);
  assert.equal(a.code, 0);
  assert.equal(b.code, 0);
  const hash = (t: string): string => /content sha256: ([0-9a-f]{64})/.exec(t)![1]!;
  assert.equal(hash(a.out), hash(b.out));
  assert.match(a.out, /baselines on test/);
  const files = (d: string): string[] => fs.readdirSync(d, { recursive: true }).map(String).sort();
  assert.deepEqual(files(path.join(dir, "a")), files(path.join(dir, "b")));
  for (const f of files(path.join(dir, "a"))) {
    const p = path.join(dir, "a", f);
    if (fs.statSync(p).isFile()) assert.ok(fs.readFileSync(p).equals(fs.readFileSync(path.join(dir, "b", f))), f);
  }
  // Regenerating into an existing synthetic set replaces it.
  const again = await run(["data", "synth"], ["--out", path.join(dir, "a"), ...args]);
  assert.equal(hash(again.out), hash(a.out));
  fs.rmSync(dir, { recursive: true });
});

test("a palette mask coloured otherwise than the dataset's palette is a note (its ids are read as class ids); a reordered palette is read by colour, silently", async () => {
  const { out, card } = await smallSet();
  const dir = copyDir(out, path.join(tmpDir(), "palette"));
  const masks = fs.readdirSync(path.join(dir, "val", "mask")).sort();
  const ids = new Uint8Array(SMALL.size * SMALL.size).map((_, i) => i % 3);
  const grey = card.spec.palette.map((_, k): [number, number, number] => [10 * k, 10 * k, 10 * k]);
  const other = path.join(dir, "val", "mask", masks[0]!);
  fs.writeFileSync(other, encodePalettePng(ids, SMALL.size, SMALL.size, grey));
  // The same colours in another order: the file's id 0 is the dataset's colour 1, and so on.
  const order = card.spec.palette.map((_, k) => (k + 1) % card.spec.palette.length);
  const reordered = path.join(dir, "val", "mask", masks[1]!);
  fs.writeFileSync(reordered, encodePalettePng(ids, SMALL.size, SMALL.size, order.map((j) => card.spec.palette[j]!)));
  const r = await verifyDataset(dir, { dataset: "synthetic" });
  assert.equal(r.ok, true, "notes do not fail the check");
  assert.deepEqual(r.problems.map((p) => [p.kind, p.file]), [["mask-palette", other]]);
  assert.match(r.problems[0]!.problem, /palette colours ids 0, 1, 2 differently from the synthetic palette \(id 0: #000000 in the file, TE is #[0-9a-f]{6}\)/);
  assert.match(formatVerifyReport(r), /OK: no problems found \(1 note below\)[\s\S]*\[note\] .*palette colours ids/);
});

test("patches stored as greyscale, with alpha, or as JPEG are noted (they read, as RGB) and the check still passes", async () => {
  const { out } = await smallSet();
  const dir = copyDir(out, path.join(tmpDir(), "formats"));
  const train = fs.readdirSync(path.join(dir, "train")).filter((f) => f.endsWith(".png")).sort();
  const S = SMALL.size;
  const write = async (name: string, img: sharp.Sharp) => {
    const f = path.join(dir, "train", name);
    await img.toFile(f + ".tmp");
    fs.renameSync(f + ".tmp", f);
    return f;
  };
  const grey = await write(train[0]!, sharp(Buffer.alloc(S * S, 120), { raw: { width: S, height: S, channels: 1 } }).toColourspace("b-w").png());
  const rgba = await write(train[1]!, sharp(Buffer.alloc(S * S * 4, 200), { raw: { width: S, height: S, channels: 4 } }).png());
  const jpeg = await write(train[2]!, sharp(Buffer.alloc(S * S * 3, 90), { raw: { width: S, height: S, channels: 3 } }).jpeg());
  const r = await verifyDataset(dir, { dataset: "synthetic", splits: ["train"] });
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  const notes = new Map(r.problems.filter((p) => p.kind === "image-format").map((p) => [p.file, p.problem]));
  assert.match(notes.get(grey) ?? "", /greyscale/);
  assert.match(notes.get(rgba) ?? "", /alpha channel/);
  assert.match(notes.get(jpeg) ?? "", /not a PNG/);
  assert.equal(notes.size, 3, "the other patches are plain RGB PNGs");
  assert.match(formatVerifyReport(r), /\[note\] .*greyscale/);
});

test("real H&E with grey glass (Visium tiles in the LUAD layout): verify notes that the white level 200 misses the glass and suggests a level", async () => {
  const samples = await fetchRealSamples();
  const dir = path.join(tmpDir(), "visium-luad");
  fs.mkdirSync(path.join(dir, "train"), { recursive: true });
  for (const [x, y] of [
    [0, 0],
    [224, 0],
    [0, 224],
    [224, 224],
    [376, 375],
  ] as const) {
    await sharp(samples.paths["visium-he"]).extract({ left: x, top: y, width: 224, height: 224 }).png().toFile(path.join(dir, "train", `visium-${x}-${y}-[1 0 0 0].png`));
  }
  const r = await verifyDataset(dir, { dataset: "luad-histoseg", splits: ["train"], checkCounts: false });
  assert.equal(r.ok, true, JSON.stringify(r.problems));
  const note = r.problems.find((p) => p.kind === "glass-level");
  assert.ok(note, `no glass-level note: ${JSON.stringify(r.glass)}`);
  assert.equal(note.file, dir);
  assert.ok(r.glass.missed && r.glass.whiteGrey === 200);
  const level = r.glass.suggestedWhiteGrey!;
  assert.ok(level > 140 && level < 185, `suggested ${level}`);
  assert.match(note.problem, new RegExp(`pbip bank build --white-grey ${level}\`[\\s\\S]*--set cam\\.background\\.whiteGrey=${level}\``));
  const { code, out } = await run(["data", "verify"], [dir, "--dataset", "luad-histoseg", "--split", "train", "--no-counts", "--quiet"]);
  assert.equal(code, 0);
  assert.match(out, /OK: no problems found \(1 note below\)[\s\S]*\[note\] .*above the white level 200/);
  // A white level under the glass finds it: no note.
  const low = await run(["data", "verify"], [dir, "--dataset", "luad-histoseg", "--split", "train", "--no-counts", "--quiet", "--white-grey", "175", "--json"]);
  const lowReport = JSON.parse(low.out) as { problems: { kind: string }[]; glass: { missed: boolean; whiteGrey: number } };
  assert.deepEqual([lowReport.glass.missed, lowReport.glass.whiteGrey, lowReport.problems.length], [false, 175, 0]);
  for (const bad of ["300", "", "abc"]) await assert.rejects(run(["data", "verify"], [dir, "--dataset", "luad-histoseg", "--white-grey", bad]), new RegExp(`--white-grey must be a grey level 0-255, got "${bad}"`));
  await assert.rejects(verifyDataset(dir, { dataset: "luad-histoseg", whiteGrey: Number.NaN }), /whiteGrey must be a grey level in \[0, 255\], got NaN/);
});
