import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { ablationTable, formatAblationTable, runAblation, ABLATIONS, type AblationRecord } from "../../src/pipeline/ablation";
import { commands } from "../../src/cli/commands/ablate";
import { openRun } from "../../src/pipeline/run";
import { onBackend } from "../helpers";
import { resolveConfig, parseSetOverrides, PROFILES } from "../../src/config/profiles";
import { tmpDir } from "../tmp";

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
  // No run recorded a val score: the val column stays empty, test mIoU follows.
  assert.match(text, /pbip\s+2\s+65\.00 ± 7\.07/);
  assert.match(text, /cls-only\s+2\s+50\.00 ± 14\.14/);
  assert.doesNotMatch(text, /best epoch/);
});

test("ablation table: val mIoU at the end of training over the seeds that have it, and the best epoch's only where it differs", () => {
  const withVal = (r: AblationRecord, valMiou?: number, bestValMiou?: number): AblationRecord => ({ ...r, valMiou, bestValMiou });
  // One validation per run: last = best, one val column.
  const once = [withVal(rec("pbip", 0, 0.6, [0.6]), 0.8, 0.8), withVal(rec("pbip", 1, 0.7, [0.7]), 0.9, 0.9), withVal(rec("cls-only", 0, 0.5, [0.5]), 0.7, 0.7)];
  const rows = ablationTable(once);
  const pbip = rows.find((r) => r.variant === "pbip")!;
  assert.ok(Math.abs(pbip.val!.mean - 0.85) < 1e-12 && Math.abs(pbip.val!.std - Math.sqrt(0.005)) < 1e-12 && pbip.val!.n === 2);
  const text = formatAblationTable(rows);
  assert.doesNotMatch(text, /best epoch/);
  assert.match(text, /pbip\s+2\s+85\.00 ± 7\.07\s+65\.00 ± 7\.07/);
  assert.match(text, /cls-only\s+1\s+70\.00\s+50\.00/);
  // Several epochs, the best not the last on one seed; a record without val (an older study) is left out of the mean.
  const many = [withVal(rec("pbip", 0, 0.6, [0.6]), 0.8, 0.85), withVal(rec("pbip", 1, 0.7, [0.7]), 0.9, 0.9), rec("pbip", 2, 0.8, [0.8])];
  const r2 = ablationTable(many)[0]!;
  assert.equal(r2.val!.n, 2);
  assert.ok(Math.abs(r2.bestVal!.mean - 0.875) < 1e-12);
  assert.match(formatAblationTable([r2]), /val, best epoch[\s\S]*pbip\s+3\s+85\.00 ± 7\.07 \(2 seeds\)\s+87\.50 ± 3\.54 \(2 seeds\)\s+70\.00 ± 10\.00/);
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

test("runAblation end to end on the quick embedded set: a scored record per run, per-image test mIoU, a rerun reuses them", { timeout: 900_000 }, async () => {
  await onBackend("wasm", () => undefined);
  const out = tmpDir("pbip-ablate-");
  const lines: string[] = [];
  const o = { out, variants: ["pbip", "cls-only"], seeds: [0], quick: true, log: (l: string) => lines.push(l) };
  const records = await runAblation(o);
  assert.deepEqual(records.map((r) => r.variant), ["pbip", "cls-only"]);
  const run = await openRun({ root: path.join(out, "pbip", "seed0"), quick: true, verbose: false });
  const testIds = run.dataset.split("test").samples.map((s) => s.id).sort();
  for (const r of records) {
    const dir = path.join(out, r.variant, "seed0");
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, "ablation-record.json"), "utf8")), r, "the record on disk is the one returned");
    assert.deepEqual(Object.keys(r.perImage).sort(), testIds, "one score per test patch");
    assert.ok(r.test.miou > 0 && r.test.miou <= 1, `test mIoU ${r.test.miou}`);
    assert.ok(r.valMiou !== undefined && r.valMiou > 0);
    assert.ok(r.bestValMiou !== undefined && r.bestValMiou >= r.valMiou, "the best validation is at least the last");
    // The variant's switch reached the run that was scored.
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "stage1", "model", "config.json"), "utf8")).config;
    assert.equal(cfg.loss.useFg, r.variant === "pbip");
  }
  // The two variants trained differently, so their pseudo-masks differ somewhere.
  assert.notDeepEqual(records[0]!.perImage, records[1]!.perImage);
  lines.length = 0;
  assert.deepEqual(await runAblation(o), records);
  assert.deepEqual(lines, ["pbip seed 0: done earlier", "cls-only seed 0: done earlier"]);
  assert.equal(records[1]!.config?.loss.useFg, false, "a record keeps the config it was made with");
  // A variant redefined (here through variantDefs) no longer matches its finished run:
  // the record is set aside, not reused, and the run is made again with the new config.
  lines.length = 0;
  const redefined = { "cls-only": { description: "L_CLS only, t = 1", overrides: { loss: { useFg: false, useBg: false, temperature: 1 } as never } } };
  const again = await runAblation({ ...o, variants: ["cls-only"], variantDefs: redefined });
  assert.match(lines[0]!, /^cls-only seed 0: the finished run was trained with another config \(loss\.temperature\); its record moved to .*ablation-record\.old-\d+\.json, running again$/);
  assert.equal(again[0]!.config?.loss.temperature, 1);
  const dir = path.join(out, "cls-only", "seed0");
  assert.equal(fs.readdirSync(dir).filter((f) => /^ablation-record\.old-\d+\.json$/.test(f)).length, 1, "the old record is kept");
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, "stage1", "model", "config.json"), "utf8")).config.loss.temperature, 1, "stage 1 trained again");
});

test("pbip ablate --variant: a variant of your own from key=value settings; malformed and clashing names are usage errors", async () => {
  const run = (args: string[]) => commands[0]!.run(args);
  await assert.rejects(run(["--out", "/nonexistent-pbip", "--variant", "t1"]), /--variant: expected NAME:key=value/);
  await assert.rejects(run(["--out", "/nonexistent-pbip", "--variant", "pbip:loss.temperature=1"]), /"pbip" is a built-in variant/);
  await assert.rejects(run(["--out", "/nonexistent-pbip", "--variant", "t1:loss.temprature=1"]), /^UsageError: --variant t1:loss\.temprature=1: unknown config key "loss\.temprature"/);
  await assert.rejects(run(["--out", "/nonexistent-pbip", "--variants", "t2"]), /unknown variant "t2".*--variant t2:key=value/);
});
