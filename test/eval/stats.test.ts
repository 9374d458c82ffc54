import { test } from "node:test";
import assert from "node:assert/strict";
import {
  meanStd,
  formatMeanStd,
  lnGamma,
  regularizedIncompleteBeta,
  studentTCdf,
  studentTTwoSided,
  pairedTTest,
  aggregateSeeds,
  comparePerImage,
  worstImages,
  evaluateMasks,
  evalSummaryRecord,
  formatSeedSummary,
} from "../../src/eval";

const close = (a: number, b: number, tol: number, what = "") => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b} (tol ${tol})`);

test("lnGamma against exact factorials and Γ(1/2) = sqrt(pi)", () => {
  close(lnGamma(1), 0, 1e-14, "Γ(1)");
  close(lnGamma(5), Math.log(24), 1e-13, "Γ(5)");
  close(lnGamma(0.5), 0.5 * Math.log(Math.PI), 1e-13, "Γ(1/2)");
  close(lnGamma(20), Math.log(121645100408832000), 1e-12, "Γ(20)");
});

test("incomplete beta: closed forms and scipy.special.betainc values", () => {
  // I_x(1, 1) = x; I_x(a, 1) = x^a; I_x(1, b) = 1 - (1 - x)^b; I_x(1/2, 1/2) = (2/pi) asin(sqrt x).
  close(regularizedIncompleteBeta(0.37, 1, 1), 0.37, 1e-14, "uniform");
  close(regularizedIncompleteBeta(0.6, 3, 1), 0.6 ** 3, 1e-14, "x^a");
  close(regularizedIncompleteBeta(0.2, 1, 4), 1 - 0.8 ** 4, 1e-14, "1-(1-x)^b");
  close(regularizedIncompleteBeta(0.3, 0.5, 0.5), (2 / Math.PI) * Math.asin(Math.sqrt(0.3)), 1e-13, "arcsine");
  // Hand-worked: I_0.3(2, 3) = sum_{j=2}^{4} C(4,j) 0.3^j 0.7^(4-j) = 0.2646 + 0.0756 + 0.0081 = 0.3483.
  close(regularizedIncompleteBeta(0.3, 2, 3), 0.3483, 1e-14, "binomial identity");
  // scipy.special.betainc (scipy 1.10.1), test/eval/reference/eval_reference.py:
  close(regularizedIncompleteBeta(0.9, 0.5, 0.5), 0.7951672353008662, 1e-13, "betainc(.5,.5,.9)");
  close(regularizedIncompleteBeta(0.05, 10, 0.5), 1.7611787432590984e-14, 1e-25, "betainc(10,.5,.05)");
  close(regularizedIncompleteBeta(0.7, 50, 40), 0.9979524488148463, 1e-12, "betainc(50,40,.7)");
  assert.throws(() => regularizedIncompleteBeta(1.5, 1, 1), /\[0, 1\]/);
});

test("Student t CDF: Cauchy (df 1) and df 2 closed forms, scipy.stats.t.cdf values", () => {
  for (const t of [-3, -0.4, 0, 0.8, 7]) {
    close(studentTCdf(t, 1), 0.5 + Math.atan(t) / Math.PI, 1e-13, `df1 t=${t}`);
    close(studentTCdf(t, 2), 0.5 + t / (2 * Math.sqrt(2 + t * t)), 1e-13, `df2 t=${t}`);
  }
  // scipy.stats.t.cdf (scipy 1.10.1), test/eval/reference/eval_reference.py:
  const ref: [number, number, number][] = [
    [0.5, 3, 0.6742760175759246],
    [-1.7, 7, 0.06646444839127759],
    [2.3, 29, 0.985581383791173],
    [4.0, 2.5, 0.9804935120793409],
    [-0.1, 100, 0.4602722655479256],
    [10.0, 5, 0.9999145262121285],
  ];
  for (const [t, df, p] of ref) close(studentTCdf(t, df), p, 1e-12, `t=${t} df=${df}`);
  close(studentTTwoSided(-1.7, 7), 2 * 0.06646444839127759, 1e-12, "two-sided");
  assert.equal(studentTCdf(Infinity, 4), 1);
});

test("paired t-test: scipy.stats.ttest_rel and a hand-worked case", () => {
  const a = [0.61, 0.72, 0.55, 0.8, 0.67, 0.59, 0.74, 0.7];
  const b = [0.58, 0.7, 0.56, 0.71, 0.6, 0.57, 0.69, 0.71];
  const r = pairedTTest(a, b);
  // scipy.stats.ttest_rel(a, b) (scipy 1.10.1): statistic 2.5707855895593537, pvalue 0.036965518543733124.
  close(r.t, 2.5707855895593537, 1e-12, "t");
  close(r.p, 0.036965518543733124, 1e-12, "p");
  assert.equal(r.df, 7);
  // Hand-worked: d = [1, 2, 3] -> mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3, df 2;
  // two-sided p for df 2 is 1 - |t| / sqrt(2 + t^2) = 1 - 2 sqrt3 / sqrt 14.
  const h = pairedTTest([3, 5, 7, 9], [2, 3, 4, NaN]);
  assert.equal(h.n, 3);
  assert.equal(h.dropped, 1);
  close(h.t, 2 * Math.sqrt(3), 1e-14, "t hand");
  close(h.p, 1 - (2 * Math.sqrt(3)) / Math.sqrt(14), 1e-13, "p hand");
  assert.equal(pairedTTest([1, 2], [0, 1]).p, 0); // constant non-zero difference
  assert.ok(Number.isNaN(pairedTTest([1, 2], [1, 2]).p));
  assert.throws(() => pairedTTest([1, 2], [1]), /paired/);
});

test("mean and sample standard deviation over seeds", () => {
  const m = meanStd([0.61, 0.72, 0.55, 0.8, 0.67, 0.59, 0.74, 0.7]);
  close(m.mean, 0.6725000000000001, 1e-15, "mean"); // numpy mean
  close(m.std, 0.08413424646700907, 1e-15, "std"); // numpy std(ddof=1)
  assert.deepEqual(meanStd([2]), { mean: 2, std: 0, n: 1 });
  assert.equal(formatMeanStd({ mean: 0.675, std: 0.0123, n: 3 }), "67.50 ± 1.23");
});

test("aggregateSeeds and comparePerImage read evaluation reports", () => {
  const space = { classes: ["a", "b"], backgroundId: 2, band: 1, convention: "count-bg" as const };
  const gt = [0, 0, 1, 1];
  const mk = (preds: number[][]) => evaluateMasks(preds.map((p, i) => ({ id: `i${i}`, gt, pred: p, height: 2, width: 2 })), space);
  const r1 = mk([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]]);
  const r2 = mk([[0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]]);
  const s = aggregateSeeds([r1, r2]);
  assert.equal(s.runs, 2);
  close(s.metrics.miou.mean, (r1.scores.miou + r2.scores.miou) / 2, 1e-15, "mean miou");
  const c = comparePerImage(r2, r1, "miou");
  assert.equal(c.n, 3);
  assert.ok(c.meanDiff > 0);
  assert.equal(c.convention, "count-bg");
  assert.deepEqual(worstImages(r1, "miou", 1).map((im) => im.id), ["i2"]);
  assert.match(formatSeedSummary(s), /^2 runs, convention count-bg/);
  assert.match(formatSeedSummary(s), /IoU a\s+\d+\.\d\d ± \d+\.\d\d/);
  // Image-wise reduction: the mean of per-image mIoU, next to the pooled one.
  close(r1.imageMean.miou, r1.perImage.reduce((acc, im) => acc + im.miou, 0) / 3, 1e-15, "image mean");
  assert.notEqual(r1.imageMean.miou, r1.scores.miou);
  const rec = evalSummaryRecord(r1, "seed 1");
  assert.equal(rec.run, "seed 1");
  assert.equal(rec.miou, r1.scores.miou);
  assert.equal(rec["IoU b"], r1.scores.iou[1]);
  const other = evaluateMasks([{ id: "i0", gt, pred: gt, height: 2, width: 2 }], { ...space, convention: "ignore-bg" });
  assert.throws(() => comparePerImage(r1, other), /conventions differ/);
});
