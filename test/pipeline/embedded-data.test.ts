// The embedded dataset is reused only when it is what this version of the
// generator paints: a set from another generator version is regenerated, so a
// demo never measures a stale benchmark.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { ensureSyntheticDataset } from "../../src/pipeline/run";
import { SYNTH_GENERATOR_VERSION } from "../../src/data/synthetic/generate";
import { tmpDir } from "../tmp";

test("ensureSyntheticDataset reuses a current set and regenerates one from another generator version", { timeout: 120_000 }, async () => {
  const dir = path.join(tmpDir("pbip-embedded-"), "synthetic");
  await ensureSyntheticDataset(dir, true, false);
  const cardFile = path.join(dir, "card.json");
  const mtime = fs.statSync(cardFile).mtimeMs;
  await ensureSyntheticDataset(dir, true, false);
  assert.equal(fs.statSync(cardFile).mtimeMs, mtime, "a current set is reused as it is");

  const card = JSON.parse(fs.readFileSync(cardFile, "utf8"));
  card.generator.version = "0.0.1";
  fs.writeFileSync(cardFile, JSON.stringify(card));
  await ensureSyntheticDataset(dir, true, false);
  assert.equal(JSON.parse(fs.readFileSync(cardFile, "utf8")).generator.version, SYNTH_GENERATOR_VERSION);
});
