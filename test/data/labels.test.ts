// Label suffixes of the two published formats, the CSV cell format, and the
// data manifests (classes, order, palettes and counts as in METHOD.md section 7).
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseLabelFromName, tryParseLabelFromName, formatLabelName, parseLabelText } from "../../src/data/labels";
import { listManifests, loadManifest, specProblems } from "../../src/data/manifest";
import { FileError, UsageError } from "../../src/util/errors";

test("LUAD-HistoSeg names: digits separated by spaces", () => {
  assert.deepEqual(parseLabelFromName("1031280-2300-27920-[1 0 0 1].png", "luad", 4), [1, 0, 0, 1]);
  assert.deepEqual(parseLabelFromName("/data/LUAD/train/x-[0 1 1 0].png", "luad"), [0, 1, 1, 0]);
  assert.deepEqual(parseLabelFromName("x-[0  0 0 1].PNG", "luad", 4), [0, 0, 0, 1]);
});

test("BCSS-WSSS names: digits without spaces after +index", () => {
  assert.deepEqual(parseLabelFromName("TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+0[1101].png", "bcss", 4), [1, 1, 0, 1]);
  assert.deepEqual(parseLabelFromName("a+12[0010].png", "bcss"), [0, 0, 1, 0]);
});

test("bad names are FileErrors naming the file and what is wrong", () => {
  const cases: [string, "luad" | "bcss", RegExp][] = [
    ["1031280-2300-27920.png", "luad", /no LUAD-HistoSeg label suffix like \.\.\.-\[1 0 0 1\]\.png/],
    ["x-[1 0 2 1].png", "luad", /no LUAD-HistoSeg label suffix/],
    ["x-[1 0 0].png", "luad", /has 3 entries, the dataset has 4 classes/],
    ["x-[0 0 0 0].png", "luad", /has no class/],
    ["a+0[1101].png", "luad", /looks like the bcss format/],
    ["x-[1 0 0 1].png", "bcss", /looks like the luad format/],
    ["a+0[11011].png", "bcss", /5 entries/],
  ];
  for (const [name, fmt, re] of cases) {
    assert.throws(
      () => parseLabelFromName(name, fmt, 4),
      (e: unknown) => e instanceof FileError && e.file === name && re.test(e.message),
      name,
    );
    const r = tryParseLabelFromName(name, fmt, 4);
    assert.ok("problem" in r, name);
  }
});

test("formatLabelName writes names that parse back", () => {
  for (const label of [
    [1, 0, 0, 1],
    [0, 1, 1, 1],
    [0, 0, 1, 0],
  ]) {
    assert.deepEqual(parseLabelFromName(formatLabelName("p-12", label, "luad"), "luad", 4), label);
    assert.deepEqual(parseLabelFromName(formatLabelName("p+0", label, "bcss"), "bcss", 4), label);
  }
  assert.equal(formatLabelName("a", [1, 0, 0, 1], "luad"), "a-[1 0 0 1].png");
  assert.equal(formatLabelName("a+0", [1, 1, 0, 1], "bcss"), "a+0[1101].png");
  assert.throws(() => formatLabelName("a", [2, 0, 0, 1], "luad"), /0\/1/);
});

test("CSV label cells in every accepted spelling", () => {
  for (const s of ["1 0 0 1", "[1 0 0 1]", "1001", "1,0,0,1", "1;0;0;1", " 1  0 0 1 "]) assert.deepEqual(parseLabelText(s, 4), [1, 0, 0, 1], s);
  for (const s of ["1 0 1", "1 0 2 1", "yes", ""]) assert.equal(parseLabelText(s, 4), undefined, s);
});

test("every manifest loads and its spec is valid", () => {
  const names = listManifests();
  for (const n of ["luad-histoseg", "bcss-wsss", "gcss", "bcss", "synthetic"]) assert.ok(names.includes(n), n);
  for (const n of names) {
    const m = loadManifest(n);
    assert.deepEqual(specProblems(m.spec), [], n);
    assert.equal(m.name, n);
    assert.equal(m.spec.name, n);
    assert.ok(m.source?.citation || n === "synthetic", `${n} has a citation`);
  }
  assert.throws(() => loadManifest("nope"), UsageError);
});

test("manifests carry METHOD.md section 7: class order, palettes, mask ids, counts", () => {
  const luad = loadManifest("luad-histoseg");
  assert.deepEqual(luad.spec.codes, ["TE", "NEC", "LYM", "TAS"]);
  assert.deepEqual(luad.spec.palette, [
    [205, 51, 51],
    [0, 255, 0],
    [65, 105, 225],
    [255, 165, 0],
    [255, 255, 255],
  ]);
  assert.equal(luad.spec.backgroundId, 4);
  assert.equal(luad.spec.labelFormat, "luad");
  assert.equal(luad.splits.train?.count, 16678);
  assert.equal(luad.splits.val?.count, 300);
  assert.deepEqual(luad.splits.val?.alsoReported, [306]);
  assert.equal(luad.splits.test?.count, 307);

  const bcss = loadManifest("bcss-wsss");
  assert.deepEqual(bcss.spec.codes, ["TUM", "STR", "LYM", "NEC"]);
  assert.deepEqual(bcss.spec.palette, [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [153, 0, 255],
    [255, 255, 255],
  ]);
  assert.equal(bcss.spec.labelFormat, "bcss");
  assert.deepEqual([bcss.splits.train?.count, bcss.splits.val?.count, bcss.splits.test?.count], [23422, 3418, 4986]);
  assert.deepEqual(bcss.spec.normalization, { mean: [0.6679, 0.4779, 0.7062], std: [0.1737, 0.2256, 0.1982] });
  assert.ok(bcss.layout.folders?.val?.includes("valid"));

  const syn = loadManifest("synthetic");
  assert.deepEqual(syn.spec.palette, luad.spec.palette);
  assert.deepEqual(syn.spec.codes, luad.spec.codes);
});
