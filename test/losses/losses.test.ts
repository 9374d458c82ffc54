// Hand-computed cases, finite-difference gradients, edge cases and tensor hygiene for src/losses.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr } from "../helpers";
import {
  mergeSubclassLogits,
  multilabelSoftMarginLoss,
  classificationLoss,
  foregroundContrastiveLoss,
  backgroundContrastiveLoss,
  pbipLoss,
  subclassOffsets,
  subclassToClass,
  l2NormalizeTensorRows,
} from "../../src/losses";
import { UsageError } from "../../src/util/errors";
import { toMat, merge64, cls64, fg64, bg64, centralDiff } from "./float64";

const close = (a: number, b: number, tol = 1e-6, what = "") =>
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what} ${a} vs ${b} (tol ${tol})`);
const read = (t: tf.Tensor) => Array.from(t.dataSync());
const softplus = (x: number) => Math.log1p(Math.exp(x));

for (const backend of ["cpu", "wasm"] as const) {
  test(`[${backend}] subclass bookkeeping and merge, by hand`, async () => {
    await onBackend(backend, () => undefined);
    assert.deepEqual(subclassOffsets([3, 3, 3, 3]), [0, 3, 6, 9, 12]);
    assert.deepEqual(subclassOffsets([2, 3, 1]), [0, 2, 5, 6]);
    assert.deepEqual(subclassToClass([2, 3, 1]), [0, 0, 1, 1, 1, 2]);
    const before = tf.memory().numTensors;
    // One row, k = [3, 3]: class 0 logits (1, 2, 3), class 1 logits (0, 0, 6).
    const x = tf.tensor2d([[1, 2, 3, 0, 0, 6]]);
    const mean = mergeSubclassLogits(x, [3, 3], "mean");
    assert.deepEqual(read(mean), [2, 2]); // (1+2+3)/3 and (0+0+6)/3
    // softmax merge: sum_j s_j e^{s_j} / sum_j e^{s_j}
    const softT = mergeSubclassLogits(x, [3, 3], "softmax");
    const soft = read(softT);
    const e = Math.exp;
    close(soft[0]!, (1 * e(1) + 2 * e(2) + 3 * e(3)) / (e(1) + e(2) + e(3)), 1e-6, "class 0"); // 2.5752...
    close(soft[1]!, (6 * e(6)) / (2 + e(6)), 1e-6, "class 1"); // 5.9704...
    // unequal k = [2, 3, 1] (slice path): a K = 1 class passes through in both modes
    const y = tf.tensor2d([[1, 3, -1, 0, 4, 7]]);
    const ym = mergeSubclassLogits(y, [2, 3, 1], "mean");
    const ys = mergeSubclassLogits(y, [2, 3, 1], "softmax");
    assert.deepEqual(read(ym), [2, 1, 7]);
    close(read(ys)[2]!, 7, 1e-7, "K=1 softmax");
    tf.dispose([x, mean, softT, y, ym, ys]);
    assert.equal(tf.memory().numTensors, before, "merge leaks no tensors");
    assert.throws(() => mergeSubclassLogits(tf.zeros([1, 5]) as tf.Tensor2D, [3, 3]), UsageError);
    assert.throws(() => subclassOffsets([3, 0]), UsageError);
  });

  test(`[${backend}] sigmoid BCE and the multi-stage L_CLS, by hand`, async () => {
    await onBackend(backend, () => undefined);
    const before = tf.memory().numTensors;
    // x = 0 -> log 2 for either label; x = 2, y = 1 -> log(1 + e^-2); x = -2, y = 1 -> log(1 + e^2)
    const inputs = [tf.tensor2d([[0, 2], [0, -2]]), tf.tensor2d([[1, 1], [0, 1]]), tf.tensor2d([[100, -100]]), tf.tensor2d([[0, 1]])] as const;
    const bce = multilabelSoftMarginLoss(inputs[0], inputs[1]);
    close(bce.dataSync()[0]!, (2 * Math.LN2 + softplus(-2) + softplus(2)) / 4, 1e-6, "bce");
    // stable for large logits: x = 100, y = 0 and x = -100, y = 1 each cost 100 (a naive form gives Infinity)
    const big = multilabelSoftMarginLoss(inputs[2], inputs[3]);
    close(big.dataSync()[0]!, 100, 1e-6, "large logits");
    // Two stages, weights [0.5, 2], K = 1 per class so the merge is the identity:
    // stage 0 logits (0, 0): log 2; stage 1 logits (2, -2) vs label (1, 0): log(1 + e^-2) = 0.126928
    // total = 0.5 * 0.693147 + 2 * 0.126928 = 0.600430
    const labels = tf.tensor2d([[1, 0]]);
    const s0 = tf.tensor2d([[0, 0]]);
    const s1 = tf.tensor2d([[2, -2]]);
    const r = classificationLoss([s0, s1], labels, { k: [1, 1], stageWeights: [0.5, 2] });
    close(r.perStage[0]!.dataSync()[0]!, Math.LN2, 1e-6, "stage 0");
    close(r.perStage[1]!.dataSync()[0]!, softplus(-2), 1e-6, "stage 1");
    close(r.total.dataSync()[0]!, 0.5 * Math.LN2 + 2 * softplus(-2), 1e-6, "total");
    close(r.total.dataSync()[0]!, 0.60043, 1e-5, "total (worked by hand)");
    tf.dispose([...inputs, bce, big, labels, s0, s1, r.total, ...r.perStage]);
    assert.equal(tf.memory().numTensors, before, "L_CLS leaks no tensors");
    const z = tf.zeros([1, 2]) as tf.Tensor2D;
    assert.throws(() => classificationLoss([z], z, { k: [1, 1], stageWeights: [1, 1] }), /2 stage weights/);
    assert.throws(() => classificationLoss([z], z, { k: [2, 1], stageWeights: [1] }), /S=3/);
    z.dispose();
  });

  test(`[${backend}] L_FGS and L_BGS, by hand`, async () => {
    await onBackend(backend, () => undefined);
    const before = tf.memory().numTensors;
    const opts = (temperature: number, reduction: "batch" | "pair") => ({ temperature, reduction });
    // S = 2 prototypes p0 = (1,0), p1 = (0,1); one pair f = (3,0) (normalised to (1,0)), positive 0, t = 1.
    // z = (1, 0): S+ = e, S- = 1 -> L_FGS = -log(e / (e + 1)) = log(1 + e^-1) = 0.313262
    // B- = mean over the one negative = 1, B+ = e -> L_BGS = -log(1 / (1 + e)) = log(1 + e) = 1.313262
    const p2 = tf.tensor2d([[1, 0], [0, 1]]);
    const f1 = tf.tensor2d([[3, 0]]);
    const a = foregroundContrastiveLoss(f1, [0], p2, opts(1, "batch"));
    const b = backgroundContrastiveLoss(f1, [0], p2, opts(1, "batch"));
    close(a.dataSync()[0]!, softplus(-1), 1e-6, "fg one pair");
    close(a.dataSync()[0]!, 0.313262, 1e-5, "fg one pair (by hand)");
    close(b.dataSync()[0]!, softplus(1), 1e-6, "bg one pair");
    // Two pairs, both with positive 0, t = 0.5: fA = (1,0) -> z = (2, 0); fB = (0,2) -> z = (0, 2).
    // batch: S+ = e^2 + 1, S- = 1 + e^2 -> -log(1/2) = log 2.
    // pair: mean(log(1 + e^-2), log(1 + e^2)) = mean(0.126928, 2.126928) = 1.126928.
    const f2 = tf.tensor2d([[1, 0], [0, 2]]);
    const c = foregroundContrastiveLoss(f2, [0, 0], p2, opts(0.5, "batch"));
    const posT = tf.tensor1d([0, 0], "int32"); // positives may also be an int32 tensor
    const d = foregroundContrastiveLoss(f2, posT, p2, opts(0.5, "pair"));
    close(c.dataSync()[0]!, Math.LN2, 1e-6, "fg batch");
    close(d.dataSync()[0]!, 1.126928, 1e-5, "fg pair");
    // BG mean over negatives: S = 3, p = (1,0), (0,1), (-1,0); g = (1,0), positive 1, t = 1: z = (1, 0, -1).
    // B- = (e + e^-1)/2 = cosh 1 = 1.543081, B+ = 1 -> L_BGS = log(1 + 1/cosh 1) = log(1.648054) = 0.499596
    // L_FGS for the same: S+ = 1, S- = e + 1/e -> log(1 + 2 cosh 1) = 1.407606
    const p3 = tf.tensor2d([[1, 0], [0, 1], [-1, 0]]);
    const g = tf.tensor2d([[1, 0]]);
    const bgv = backgroundContrastiveLoss(g, [1], p3, opts(1, "pair"));
    const fgv = foregroundContrastiveLoss(g, [1], p3, opts(1, "batch"));
    close(bgv.dataSync()[0]!, Math.log(1 + 1 / Math.cosh(1)), 1e-6, "bg mean");
    close(bgv.dataSync()[0]!, 0.499596, 1e-5, "bg mean (by hand)");
    close(fgv.dataSync()[0]!, 1.407606, 1e-5, "fg S=3 (by hand)");
    tf.dispose([p2, f1, a, b, f2, posT, c, d, p3, g, bgv, fgv]);
    assert.equal(tf.memory().numTensors, before, "contrastive losses leak no tensors");
  });

  test(`[${backend}] int32 tensor positives give the same losses as host arrays`, async () => {
    await onBackend(backend, () => undefined);
    const f = tf.tensor2d(randomArray(4 * 5, 31), [4, 5]);
    const p = tf.tensor2d(randomArray(6 * 5, 32), [6, 5]);
    const host = [5, 0, 2, 2];
    const dev = tf.tensor1d(host, "int32");
    for (const fn of [foregroundContrastiveLoss, backgroundContrastiveLoss]) {
      for (const reduction of ["batch", "pair"] as const) {
        const a = fn(f, host, p, { temperature: 0.07, reduction });
        const b = fn(f, dev, p, { temperature: 0.07, reduction });
        close(b.dataSync()[0]!, a.dataSync()[0]!, 1e-6, `${fn.name} ${reduction}`);
        tf.dispose([a, b]);
      }
    }
    tf.dispose([f, p, dev]);
  });

  test(`[${backend}] contrastive losses stay finite at tiny temperatures`, async () => {
    await onBackend(backend, () => undefined);
    // t = 0.001: logits of 1000, exp overflows float32; in log space FG ~ log(1 + e^-1000) = 0, BG ~ 1000.
    const p = tf.tensor2d([[1, 0], [0, 1]]);
    const f = tf.tensor2d([[5, 0]]);
    for (const reduction of ["batch", "pair"] as const) {
      const gf = tf.grads((x: tf.Tensor) => foregroundContrastiveLoss(x as tf.Tensor2D, [0], p, { temperature: 0.001, reduction }));
      const gb = tf.grads((x: tf.Tensor) => backgroundContrastiveLoss(x as tf.Tensor2D, [0], p, { temperature: 0.001, reduction }));
      const vf = foregroundContrastiveLoss(f, [0], p, { temperature: 0.001, reduction });
      const vb = backgroundContrastiveLoss(f, [0], p, { temperature: 0.001, reduction });
      close(vf.dataSync()[0]!, 0, 1e-6, `fg ${reduction}`);
      close(vb.dataSync()[0]!, 1000, 1e-5, `bg ${reduction}`);
      const [df] = gf([f]);
      const [db] = gb([f]);
      assert.ok(read(df!).every(Number.isFinite) && read(db!).every(Number.isFinite), "finite gradients");
      tf.dispose([vf, vb, df!, db!]);
    }
    tf.dispose([p, f]);
  });

  test(`[${backend}] no pairs: a zero loss with zero gradients`, async () => {
    await onBackend(backend, () => undefined);
    const protos = tf.tensor2d(randomArray(12, 3), [3, 4]);
    const empty = tf.zeros([0, 4]) as tf.Tensor2D;
    const before = tf.memory().numTensors;
    for (const fn of [foregroundContrastiveLoss, backgroundContrastiveLoss]) {
      const v = fn(empty, [], protos, { temperature: 0.07 });
      assert.equal(v.rank, 0);
      assert.ok(Object.is(v.dataSync()[0], 0), "exactly +0");
      const { value, grads } = tf.valueAndGrads((pr: tf.Tensor) => fn(empty, [], pr as tf.Tensor2D, { temperature: 0.07 }))([protos]);
      assert.ok(value.dataSync()[0] === 0);
      assert.deepEqual(grads[0]!.shape, [3, 4]);
      assert.ok(read(grads[0]!).every((x) => x === 0));
      tf.dispose([v, value, ...grads]);
    }
    assert.equal(tf.memory().numTensors, before);
    tf.dispose([protos, empty]);
  });

  test(`[${backend}] contrastive input validation names the problem`, async () => {
    await onBackend(backend, () => undefined);
    const protos = tf.zeros([3, 4]) as tf.Tensor2D;
    const f = tf.ones([2, 4]) as tf.Tensor2D;
    const o = { temperature: 0.07 };
    assert.throws(() => foregroundContrastiveLoss(f, [0, 3], protos, o), /positives\[1\] = 3/);
    assert.throws(() => foregroundContrastiveLoss(f, [0], protos, o), /1 positive indices for 2 pairs/);
    assert.throws(() => backgroundContrastiveLoss(f, [0, 1], protos, { temperature: 0 }), /temperature/);
    assert.throws(() => backgroundContrastiveLoss(f, [0, 0], tf.zeros([1, 4]) as tf.Tensor2D, o), /at least 2 prototypes/);
    assert.throws(() => backgroundContrastiveLoss(f, [0, 0], tf.zeros([3, 5]) as tf.Tensor2D, o), /d = 4 .* d = 5/);
    const floatPos = tf.tensor1d([0, 1]);
    assert.throws(() => foregroundContrastiveLoss(f, floatPos as tf.Tensor1D, protos, o), /must be int32/);
    tf.dispose([protos, f, floatPos]);
  });

  test(`[${backend}] pbipLoss: the total of METHOD.md, by hand`, async () => {
    await onBackend(backend, () => undefined);
    const before = tf.memory().numTensors;
    const cls = tf.scalar(0.5);
    const fg = tf.scalar(2);
    const bg = tf.scalar(3);
    const cam = tf.tensor2d([[1, 3]]);
    // release weights: 1*0.5 + 0.1*(1*2 + 1*3 + 0.0005*mean(1,3)=0.001) = 0.5 + 0.5001 = 1.0001
    const r = pbipLoss({ cls, fg, bg, camReg: cam }, { alpha: 1, beta: 0.1, theta1: 1, theta2: 1, camRegWeight: 0.0005 });
    close(r.total.dataSync()[0]!, 1.0001, 1e-6, "total");
    close(r.sim.dataSync()[0]!, 5.001, 1e-6, "sim");
    close(r.camReg.dataSync()[0]!, 2, 1e-7, "camReg");
    assert.equal(r.cls.dataSync()[0], 0.5);
    // classification only: absent terms count as zero
    const c = pbipLoss({ cls }, { alpha: 2, beta: 0.5, theta1: 1, theta2: 0.5, camRegWeight: 0 });
    close(c.total.dataSync()[0]!, 1, 1e-7, "cls only");
    assert.equal(c.fg.dataSync()[0], 0);
    // gradients: dL/dM_4 = beta * camRegWeight / numel, dL/dfg = beta * theta1
    const g = tf.grads((f: tf.Tensor, m: tf.Tensor) => {
      const res = pbipLoss({ cls, fg: f as tf.Scalar, bg, camReg: m }, { alpha: 1, beta: 0.1, theta1: 1, theta2: 1, camRegWeight: 0.0005 });
      return res.total;
    });
    const [dfg, dcam] = g([fg, cam]);
    close(dfg!.dataSync()[0]!, 0.1, 1e-7, "dL/dfg");
    close(dcam!.dataSync()[0]!, 0.1 * 0.0005 / 2, 1e-7, "dL/dM4");
    tf.dispose([cls, fg, bg, cam, r, c, dfg!, dcam!]);
    assert.equal(tf.memory().numTensors, before, "pbipLoss leaks no tensors (the caller disposes the result)");
  });
}

// ---------- gradients against central differences of the float64 formulas ----------

/** Compare a tf gradient (float32) with central differences of a float64 function at a few coordinates. */
function checkGrad(what: string, tfGrad: ArrayLike<number>, f64: (x: Float64Array) => number, x: Float32Array, tol: number) {
  const coords = Array.from(new Set(Array.from({ length: Math.min(12, x.length) }, (_, i) => Math.floor((i * x.length) / Math.min(12, x.length)))));
  const fd = centralDiff(f64, x, coords);
  const got = coords.map((i) => tfGrad[i]!);
  const err = maxRelErr(got, fd);
  assert.ok(err < tol, `${what}: gradient vs finite differences, rel err ${err.toExponential(2)} (tf ${got.slice(0, 4)}, fd ${fd.slice(0, 4)})`);
}

for (const backend of ["cpu", "wasm"] as const) {
  test(`[${backend}] merge and L_CLS gradients match finite differences`, async () => {
    await onBackend(backend, () => undefined);
    const k = [2, 3, 1];
    const B = 3;
    const S = 6;
    const x = randomArray(B * S, 11).map((v) => v * 4);
    const x2 = randomArray(B * S, 12).map((v) => v * 4);
    const wts = randomArray(B * 3, 13);
    const xT = tf.tensor2d(x, [B, S]);
    const x2T = tf.tensor2d(x2, [B, S]);
    const wT = tf.tensor2d(wts, [B, 3]);
    const labels = [1, 0, 1, 0, 1, 1, 0, 0, 1];
    const y = tf.tensor2d(labels, [B, 3]);
    const before = tf.memory().numTensors;
    for (const mode of ["mean", "softmax"] as const) {
      const [g] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(mergeSubclassLogits(t as tf.Tensor2D, k, mode), wT)))([xT]);
      const f64 = (v: Float64Array) => merge64(toMat(v, B, S), k, mode).flat().reduce((a, m, i) => a + m * wts[i]!, 0);
      checkGrad(`merge ${mode}`, g!.dataSync(), f64, x, 1e-4);
      g!.dispose();
    }
    const lm = toMat(labels, B, 3);
    const grads = tf.grads((a: tf.Tensor, b: tf.Tensor) => {
      const r = classificationLoss([a as tf.Tensor2D, b as tf.Tensor2D], y, { k, stageWeights: [0.3, 1.5], merge: "softmax" });
      return r.total;
    })([xT, x2T]);
    const f0 = (v: Float64Array) => cls64([toMat(v, B, S), toMat(x2, B, S)], lm, k, [0.3, 1.5], "softmax");
    const f1 = (v: Float64Array) => cls64([toMat(x, B, S), toMat(v, B, S)], lm, k, [0.3, 1.5], "softmax");
    checkGrad("L_CLS stage 0", grads[0]!.dataSync(), f0, x, 1e-4);
    checkGrad("L_CLS stage 1", grads[1]!.dataSync(), f1, x2, 1e-4);
    tf.dispose(grads);
    assert.equal(tf.memory().numTensors, before, "gradients of merge and L_CLS leak no tensors");
    tf.dispose([xT, x2T, wT, y]);
  });

  for (const [name, fn, ref] of [
    ["L_FGS", foregroundContrastiveLoss, fg64],
    ["L_BGS", backgroundContrastiveLoss, bg64],
  ] as const) {
    for (const reduction of ["batch", "pair"] as const) {
      test(`[${backend}] ${name} (${reduction}) gradients match finite differences, t = 0.07`, async () => {
        await onBackend(backend, () => undefined);
        const P = 5;
        const d = 6;
        const S = 7; // k = [3, 2, 2]
        const feats = randomArray(P * d, 21).map((v) => v * 2);
        const protos = randomArray(S * d, 22);
        const positives = [0, 4, 6, 4, 1];
        const t = 0.07;
        const fT = tf.tensor2d(feats, [P, d]);
        const pT = tf.tensor2d(protos, [S, d]);
        const before = tf.memory().numTensors;
        const { value, grads } = tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) => fn(a as tf.Tensor2D, positives, b as tf.Tensor2D, { temperature: t, reduction }))([fT, pT]);
        const v64 = ref(toMat(feats, P, d), positives, toMat(protos, S, d), t, reduction);
        close(value.dataSync()[0]!, v64, 2e-6, `${name} value`);
        checkGrad(`${name} d/dfeatures`, grads[0]!.dataSync(), (v) => ref(toMat(v, P, d), positives, toMat(protos, S, d), t, reduction), feats, 1e-4);
        checkGrad(`${name} d/dprototypes`, grads[1]!.dataSync(), (v) => ref(toMat(feats, P, d), positives, toMat(v, S, d), t, reduction), protos, 1e-4);
        tf.dispose([value, ...grads]);
        assert.equal(tf.memory().numTensors, before, `${name} and its gradients leak no tensors`);
        tf.dispose([fT, pT]);
      });
    }
  }

  test(`[${backend}] l2NormalizeTensorRows: unit rows, and a zero row stays zero with a finite gradient`, async () => {
    await onBackend(backend, () => undefined);
    const x = tf.tensor2d([[3, 4], [0, 0]]);
    const y = l2NormalizeTensorRows(x);
    assert.deepEqual(Array.from(y.dataSync()).map((v) => Math.round(v * 1e6) / 1e6), [0.6, 0.8, 0, 0]);
    const [g] = tf.grads((a: tf.Tensor) => tf.sum(l2NormalizeTensorRows(a as tf.Tensor2D)))([x]);
    assert.ok(read(g!).every(Number.isFinite));
    tf.dispose([x, y, g!]);
  });
}
