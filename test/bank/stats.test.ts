/**
 * Bank statistics and helpers on hand cases: white filter, candidate selection,
 * PCA and the small eigen-solver, within/across prototype cosine, spread vs K,
 * prototype classification and the zero-shot scores.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray } from "../helpers";
import { whiteFraction, whiteFractionTensor, isMostlyWhite, selectCandidates, recordWhiteStep } from "../../src/bank/select";
import { pca, symmetricEigen, withinAcrossCosine, prototypeCosineMatrix, spreadByK, nearestToCentres, assignSubclasses } from "../../src/bank/stats";
import { classifyByPrototypes, zeroShotReport } from "../../src/bank/zeroshot";
import { bankFromFeatures } from "../../src/bank/build";
import { l2NormalizeRows, row, dot } from "../../src/bank/matrix";
import type { ImageBank } from "../../src/bank/bank";
import type { Sample } from "../../src/data/types";
import { handFeatures, TEST_ENCODER } from "./fixtures";

test("white filter: ITU-R 601 grey > 200, a grey of exactly 200 is not white; tensor version agrees", async () => {
  // Greys: 201 (white), 200 (not), 76.2 (red, not), 178.8 (cyan, not), 225.9 (yellow, white), 255 (white).
  const px = [201, 201, 201, 200, 200, 200, 255, 0, 0, 0, 255, 255, 255, 255, 0, 255, 255, 255];
  assert.equal(whiteFraction(Uint8Array.from(px)), 3 / 6);
  assert.equal(whiteFraction(Uint8Array.from(px), 230), 1 / 6);
  assert.ok(isMostlyWhite(0.51, { whiteGrey: 200, whiteMaxFraction: 0.5 }));
  assert.ok(!isMostlyWhite(0.5, { whiteGrey: 200, whiteMaxFraction: 0.5 }));
  assert.ok(!isMostlyWhite(1, { whiteGrey: 200, whiteMaxFraction: 1 }), "whiteMaxFraction 1 switches the filter off");
  await onBackend("cpu", () => {
    // Random bytes avoiding exact ties: compare the byte and tensor versions.
    const r = randomArray(3 * 16 * 16 * 3, 3);
    const bytes = Uint8Array.from(r, (v) => Math.round(((v + 1) / 2) * 255));
    const x = tf.tensor4d(Float32Array.from(bytes, (b) => b / 255), [3, 16, 16, 3]);
    const t = whiteFractionTensor(x, 150.5);
    const got = Array.from(t.dataSync());
    for (let i = 0; i < 3; i++) assert.ok(Math.abs(got[i]! - whiteFraction(bytes.subarray(i * 768, (i + 1) * 768), 150.5)) < 1e-6);
    tf.dispose([x, t]);
  });
});

test("candidate selection counts per class and step, keeps single-label patches, subsamples seeded", () => {
  const labels = [
    [1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0],
  ];
  const samples: Sample[] = labels.map((label, i) => ({ id: `s${9 - i}`, imagePath: `/x/s${9 - i}.png`, label }));
  const c = selectCandidates(samples, ["A", "B", "C"], { whiteGrey: 200, whiteMaxFraction: 0.5 });
  assert.deepEqual(c.stats.steps.map((s) => [s.step, s.perClass, s.total]), [
    ["train", [4, 3, 4], 9],
    ["single-label", [2, 1, 3], 6],
  ]);
  // Grouped by class, sorted by id within a class.
  assert.deepEqual(c.samples.map((s) => s.id), ["s8", "s9", "s6", "s3", "s4", "s5"]);
  assert.deepEqual(c.classIndex, [0, 0, 1, 2, 2, 2]);
  const sub = selectCandidates(samples, ["A", "B", "C"], { whiteGrey: 200, whiteMaxFraction: 0.5, maxPerClass: 2, seed: 3 });
  assert.deepEqual(sub.stats.steps[2]!.perClass, [2, 1, 2]);
  assert.deepEqual(selectCandidates(samples, ["A", "B", "C"], { whiteGrey: 200, whiteMaxFraction: 0.5, maxPerClass: 2, seed: 3 }).samples, sub.samples);
  const w = recordWhiteStep(c.stats, [2, 1, 1]);
  assert.deepEqual(w.steps[2], { step: "not white", description: "not mostly white: at most 50% of pixels with grey level > 200", perClass: [2, 1, 1], total: 4 });
  assert.throws(() => selectCandidates([{ id: "x", imagePath: "x", label: [1, 0] }], ["A", "B", "C"], { whiteGrey: 200, whiteMaxFraction: 0.5 }), /label of 2 classes/);
});

test("symmetricEigen and PCA on hand cases", () => {
  const e = symmetricEigen([[2, 1], [1, 2]]);
  assert.ok(Math.abs(e.values[0]! - 3) < 1e-12 && Math.abs(e.values[1]! - 1) < 1e-12);
  assert.ok(Math.abs(Math.abs(e.vectors[0]![0]!) - Math.SQRT1_2) < 1e-12 && Math.abs(e.vectors[0]![0]! - e.vectors[0]![1]!) < 1e-12);
  // Points a*u + b*v + m in 5-D with a in {+-3}, b in {+-1}, all four combinations, 5 times each:
  // covariance (n/(n-1)) (9 u u^T + v v^T), so variances 9n/(n-1) and n/(n-1), explained 0.9 and 0.1.
  const u = [1, 2, 0, 2, 0].map((x) => x / 3);
  const v = [0, 0, 3, 0, 4].map((x) => x / 5);
  const m = [10, -4, 2, 0, 1];
  const rows: number[][] = [];
  const ab: [number, number][] = [];
  for (let rep = 0; rep < 5; rep++) for (const a of [3, -3]) for (const b of [1, -1]) {
    rows.push(m.map((mj, j) => mj + a * u[j]! + b * v[j]!));
    ab.push([a, b]);
  }
  const n = rows.length;
  const r = pca({ rows: n, dim: 5, data: Float32Array.from(rows.flat()) }, 2, { seed: 3 });
  assert.ok(Math.abs(r.variances[0]! - (9 * n) / (n - 1)) < 1e-4, `variance 1: ${r.variances[0]}`);
  assert.ok(Math.abs(r.variances[1]! - n / (n - 1)) < 1e-4, `variance 2: ${r.variances[1]}`);
  assert.ok(Math.abs(r.explained[0]! - 0.9) < 1e-5 && Math.abs(r.explained[1]! - 0.1) < 1e-5);
  // Sign convention: largest-magnitude entry positive, so the components are +u and +v.
  u.forEach((x, j) => assert.ok(Math.abs(r.components[0]![j]! - x) < 1e-5));
  v.forEach((x, j) => assert.ok(Math.abs(r.components[1]![j]! - x) < 1e-5));
  r.projected.forEach((p, i) => {
    assert.ok(Math.abs(p[0]! - ab[i]![0]) < 1e-4 && Math.abs(p[1]! - ab[i]![1]) < 1e-4);
  });
  m.forEach((x, j) => assert.ok(Math.abs(r.mean[j]! - x) < 1e-5));

  // Full-rank random data: PCA's subspace iteration vs the eigen-decomposition of the explicit covariance.
  const nn = 40;
  const dd = 6;
  const data = randomArray(nn * dd, 17).map((val, i) => val * (1 + (i % dd)));
  const mu = Array.from({ length: dd }, (_, j) => data.filter((_, i) => i % dd === j).reduce((a, b) => a + b, 0) / nn);
  const cov = Array.from({ length: dd }, (_, a) =>
    Array.from({ length: dd }, (_, b) => {
      let s = 0;
      for (let i = 0; i < nn; i++) s += (data[i * dd + a]! - mu[a]!) * (data[i * dd + b]! - mu[b]!);
      return s / (nn - 1);
    }),
  );
  const eig = symmetricEigen(cov);
  const p3 = pca({ rows: nn, dim: dd, data }, 3, { seed: 1 });
  for (let k = 0; k < 3; k++) {
    assert.ok(Math.abs(p3.variances[k]! - eig.values[k]!) < 1e-6 * eig.values[0]!, `variance ${k}: ${p3.variances[k]} vs ${eig.values[k]}`);
    const c = Math.abs(dot(p3.components[k]!, eig.vectors[k]!));
    assert.ok(Math.abs(c - 1) < 1e-6, `component ${k} vs eigenvector: |cos| = ${c}`);
  }
});

test("within- vs across-class prototype cosine on a hand bank", () => {
  // Class 0: rows at 0 and 60 degrees; class 1: rows at 90 and 180 degrees (2-D).
  const deg = [0, 60, 90, 180];
  const bank = {
    meta: { classes: ["A", "B"], codes: ["A", "B"], k: [2, 2], offsets: [0, 2, 4], dim: 2, subclasses: [0, 1, 0, 1].map((s, i) => ({ classIndex: i < 2 ? 0 : 1, subclass: s, members: [] })) },
    prototypes: Float32Array.from(deg.flatMap((a) => [2 * Math.cos((a * Math.PI) / 180), 2 * Math.sin((a * Math.PI) / 180)])),
  } as unknown as ImageBank;
  const cosd = (a: number, b: number) => Math.cos(((a - b) * Math.PI) / 180);
  const w = withinAcrossCosine(bank);
  assert.ok(Math.abs(w.within - (cosd(0, 60) + cosd(90, 180)) / 2) < 1e-6);
  assert.ok(Math.abs(w.across - (cosd(0, 90) + cosd(0, 180) + cosd(60, 90) + cosd(60, 180)) / 4) < 1e-6);
  assert.equal(w.withinPairs, 2);
  assert.equal(w.acrossPairs, 4);
  assert.ok(Math.abs(w.perClassWithin[1]! - 0) < 1e-6);
  assert.deepEqual(w.labels, ["A.0", "A.1", "B.0", "B.1"]);
  assert.ok(Math.abs(prototypeCosineMatrix(bank)[1]![2]! - cosd(60, 90)) < 1e-6);
});

test("spread vs K: K = 1 is the mean cosine distance to the class direction, and more subclasses spread less", () => {
  const f = handFeatures(4);
  const s = spreadByK(f, [1, 2, 3]);
  const x = l2NormalizeRows(f.features);
  let total = 0;
  for (let c = 0; c < 3; c++) {
    const idx = [...f.classIndex.keys()].filter((i) => f.classIndex[i] === c);
    const mean = new Array<number>(8).fill(0);
    for (const i of idx) row(x, i).forEach((v, j) => (mean[j]! += v));
    const l = Math.hypot(...mean);
    for (const i of idx) total += 1 - dot(row(x, i), mean) / l;
  }
  assert.ok(Math.abs(s[0]!.spread - total / x.rows) < 1e-6, `K=1 spread ${s[0]!.spread} vs ${total / x.rows}`);
  assert.ok(s[1]!.spread < 0.5 * s[0]!.spread, `two true sub-groups: K=2 spread ${s[1]!.spread} should be well below K=1 ${s[0]!.spread}`);
  assert.ok(s[2]!.spread <= s[1]!.spread + 1e-9);
});

test("classification by the most similar prototype and the zero-shot scores", () => {
  const f = handFeatures(5);
  const bank = bankFromFeatures(f, { config: { k: 2, seed: 2 } });
  // The bank's own patches are classified into their class, and into their own subclass.
  const cl = classifyByPrototypes(bank, f.features);
  assert.deepEqual(Array.from(cl.predicted), Array.from(f.classIndex));
  const sub = assignSubclasses(bank, f);
  for (let i = 0; i < f.features.rows; i++) assert.equal(cl.prototype[i]! - bank.meta.offsets[f.classIndex[i]!]!, sub[i]);
  const near = nearestToCentres(bank, f, 3);
  assert.equal(near.length, 6);
  assert.deepEqual(near[0]!.imagePaths, near[0]!.ids.map((id) => `/nowhere/${id}.png`));
  assert.throws(() => classifyByPrototypes(bank, { rows: 1, dim: 4, data: new Float32Array(4) }), /d = 4/);

  // Hand-scored case. truth 0 0 1 1 2 2 2, predicted 0 1 1 1 0 2 2.
  const r = zeroShotReport([0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 0, 2, 2], ["A", "B", "C"]);
  const rows = r.table.objects() as { class: string; support: number; precision: number; recall: number; f1: number }[];
  const f1 = (p: number, q: number) => (2 * p * q) / (p + q);
  assert.deepEqual(rows.map((x) => x.support), [2, 2, 3]);
  assert.deepEqual(rows.map((x) => x.precision), [1 / 2, 2 / 3, 1]);
  assert.deepEqual(rows.map((x) => x.recall), [1 / 2, 1, 2 / 3]);
  [f1(1 / 2, 1 / 2), f1(2 / 3, 1), f1(1, 2 / 3)].forEach((v, i) => assert.ok(Math.abs(rows[i]!.f1 - v) < 1e-12));
  assert.equal(r.accuracy, 5 / 7);
  assert.ok(Math.abs(r.macroF1 - (f1(1 / 2, 1 / 2) + f1(2 / 3, 1) + f1(1, 2 / 3)) / 3) < 1e-12);
  assert.equal(r.chanceAccuracy, 1 / 3);
  assert.equal(r.majorityAccuracy, 3 / 7);
  // Uniform guessing: precision p_c, recall 1/3.
  const chance = [2 / 7, 2 / 7, 3 / 7].map((p) => f1(p, 1 / 3));
  assert.ok(Math.abs(r.chanceMacroF1 - chance.reduce((a, b) => a + b) / 3) < 1e-12);
  assert.deepEqual(r.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 2]]);
  void TEST_ENCODER;
});
