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
