// openRun on a user's dataset: verified against its manifest first; split sizes other than the
// published ones (a subset, a re-split, your own data) pass only with checkCounts: false.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { openRun } from "../../src/pipeline/run";
import { generateSynthetic } from "../../src/data/synthetic/generate";
import { formatVerifyReport, verifyDataset } from "../../src/data/verify";
import { tmpDir } from "../tmp";
import sharp from "sharp";
import { fetchRealSamples } from "../../src/data/real-samples";

test("openRun: a LUAD-layout subset fails on split sizes only, with the hint; --no-counts (checkCounts: false) opens it", { timeout: 120_000 }, async () => {
  const dir = tmpDir("pbip-openrun-");
  const data = path.join(dir, "LUAD-subset");
  await generateSynthetic({ out: data, train: 4, val: 2, test: 2, size: 224, seed: 2, workers: 1 });
  fs.rmSync(path.join(data, "card.json")); // a user's folder: no card
  const cache = path.join(dir, "cache");
  const old = process.env.PBIP_CACHE;
  process.env.PBIP_CACHE = cache; // the verification stamp goes here, not into the user's cache
  try {
    const report = await verifyDataset(data, { dataset: "luad-histoseg" });
    assert.ok(report.problems.length > 0 && report.problems.every((p) => p.kind === "count"), JSON.stringify(report.problems));
    assert.match(formatVerifyReport(report), /add --no-counts/);
    await assert.rejects(
      openRun({ root: path.join(dir, "run-a"), dataset: "luad-histoseg", data, verbose: false }),
      /failed verification[\s\S]*4 images, expected 16678[\s\S]*only split sizes differ from the published ones: .* pass --no-counts/,
    );
    const run = await openRun({ root: path.join(dir, "run-b"), dataset: "luad-histoseg", data, checkCounts: false, verbose: false });
    assert.equal(run.dataset.spec.name, "luad-histoseg");
    assert.equal(run.dataset.split("train").samples.length, 4);
    // The pass without counts is not remembered as a full verification.
    await assert.rejects(openRun({ root: path.join(dir, "run-c"), dataset: "luad-histoseg", data, verbose: false }), /only split sizes differ/);
  } finally {
    if (old === undefined) delete process.env.PBIP_CACHE;
    else process.env.PBIP_CACHE = old;
  }
});

test("openRun: a download whose glass is grey below the run's white level is opened, with the glass note printed", { timeout: 120_000 }, async () => {
  const samples = await fetchRealSamples();
  const dir = tmpDir("pbip-openrun-");
  const data = path.join(dir, "LUAD-grey-glass");
  await generateSynthetic({ out: data, train: 4, val: 2, test: 2, size: 224, seed: 3, workers: 1 });
  fs.rmSync(path.join(data, "card.json"));
  // The training patches become tiles of the real Visium scan (grey glass at about 187).
  for (const f of fs.readdirSync(path.join(data, "train"))) fs.rmSync(path.join(data, "train", f));
  fs.rmSync(path.join(data, "train-mask"), { recursive: true, force: true });
  for (const [x, y] of [[0, 0], [224, 0], [0, 224], [376, 375]] as const) {
    await sharp(samples.paths["visium-he"]).extract({ left: x, top: y, width: 224, height: 224 }).png().toFile(path.join(data, "train", `v-${x}-${y}-[1 0 0 0].png`));
  }
  const old = process.env.PBIP_CACHE;
  process.env.PBIP_CACHE = path.join(dir, "cache");
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    const run = await openRun({ root: path.join(dir, "run"), dataset: "luad-histoseg", data, checkCounts: false, overrides: { cam: { background: { whiteGrey: 200 } } } });
    assert.equal(run.config.cam.background.mode, "white");
  } finally {
    console.log = log;
    if (old === undefined) delete process.env.PBIP_CACHE;
    else process.env.PBIP_CACHE = old;
  }
  const note = lines.find((l) => l.startsWith(`note on ${data}: `));
  assert.ok(note, lines.join("\n"));
  // Otsu's split of this mix of dark synthetic and pale real patches falls in the tissue (120); the suggestion must not.
  const level = Number(/--set cam\.background\.whiteGrey=(\d+)/.exec(note)?.[1]);
  assert.ok(level >= 155 && level <= 185, note);
  assert.match(note, /likely glass, and only [0-9]% of them are above the white level 200/);
});
