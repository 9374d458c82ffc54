import { test } from "node:test";
import assert from "node:assert/strict";
import { ablationTable, formatAblationTable, ABLATIONS, type AblationRecord } from "../../src/pipeline/ablation";
import { resolveConfig, parseSetOverrides, PROFILES } from "../../src/config/profiles";

function rec(variant: string, seed: number, miou: number, perImage: number[]): AblationRecord {
  return { variant, seed, test: { miou, fwiou: miou, mbiou: miou / 2, mdice: miou }, perImage: Object.fromEntries(perImage.map((v, i) => [`p${i}`, v])) };
}

test("ablation table: mean and sample std over seeds, paired t-test against the reference on seed-matched images", () => {
  const records = [
    rec("pbip", 0, 0.6, [0.6, 0.7, 0.5]),
    rec("pbip", 1, 0.7, [0.7, 0.8, 0.6]),
    rec("cls-only", 0, 0.4, [0.5, 0.5, 0.4]),
    rec("cls-only", 1, 0.6, [0.6, 0.6, 0.6]),
  ];
  const rows = ablationTable(records, "pbip");
  const pbip = rows.find((r) => r.variant === "pbip")!;
  const cls = rows.find((r) => r.variant === "cls-only")!;
  assert.ok(Math.abs(pbip.miou.mean - 0.65) < 1e-12);
  assert.ok(Math.abs(pbip.miou.std - Math.sqrt(0.005)) < 1e-12, `std ${pbip.miou.std}`); // sample std of 0.6, 0.7
  assert.equal(pbip.vsReference, undefined);
  // Differences cls - pbip per image: [-0.1, -0.2, -0.1, -0.1, -0.2, 0]; mean -0.1167.
  const d = [-0.1, -0.2, -0.1, -0.1, -0.2, 0];
  const mean = d.reduce((a, b) => a + b, 0) / d.length;
  const sd = Math.sqrt(d.reduce((a, b) => a + (b - mean) ** 2, 0) / (d.length - 1));
  assert.ok(Math.abs(cls.vsReference!.meanDiff - mean) < 1e-12);
  assert.ok(Math.abs(cls.vsReference!.t - mean / (sd / Math.sqrt(6))) < 1e-9);
  assert.equal(cls.vsReference!.n, 6);
  const text = formatAblationTable(rows);
  assert.match(text, /pbip\s+2\s+65\.00 ± 7\.07/);
  assert.match(text, /cls-only\s+2\s+50\.00 ± 14\.14/);
});

test("every ablation variant is a valid override of the notebook profile", () => {
  for (const [name, v] of Object.entries(ABLATIONS)) {
    const cfg = resolveConfig("notebook", v.overrides);
    assert.ok(cfg.profile === "notebook", name);
  }
  assert.equal(resolveConfig("notebook", ABLATIONS["k5"]!.overrides).bank.k, 5);
  assert.equal(resolveConfig("notebook", ABLATIONS["cls-only"]!.overrides).loss.useFg, false);
  assert.equal(resolveConfig("notebook", ABLATIONS["conv1x1-head"]!.overrides).model.head, "conv1x1");
});

test("--set accepts the optional keys a profile leaves out, and names an unknown key", () => {
  const o = parseSetOverrides(["encoder.featureLayer=block_4_add", "optim.clipGradNorm=1", "model.backboneWeights=w.safetensors"], PROFILES["notebook"]);
  const cfg = resolveConfig("notebook", o);
  assert.equal(cfg.encoder.featureLayer, "block_4_add");
  assert.equal(cfg.encoder.inputSize, 112);
  assert.equal(cfg.optim.clipGradNorm, 1);
  assert.equal(cfg.model.backboneWeights, "w.safetensors");
  assert.throws(() => parseSetOverrides(["encoder.featureLayr=block_4_add"], PROFILES["notebook"]), /unknown config key "encoder.featureLayr"/);
  // An optional key is optional only where it belongs.
  assert.throws(() => parseSetOverrides(["model.featureLayer=x"], PROFILES["notebook"]), /unknown config key "model.featureLayer"/);
});
