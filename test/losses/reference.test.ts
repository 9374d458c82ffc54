// src/losses against an independent PyTorch implementation of the release's formulas
// (test/reference/losses_reference.py, float64, written from METHOD.md and the paper):
// values and input gradients agree to 1e-5 relative on random inputs.
// Regenerate the fixtures with: /usr/bin/python3 test/reference/losses_reference.py
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend, maxRelErr } from "../helpers";
import {
  mergeSubclassLogits,
  classificationLoss,
  foregroundContrastiveLoss,
  backgroundContrastiveLoss,
  pbipLoss,
  type PbipLossWeights,
} from "../../src/losses";

const TOL = 1e-5;
const dir = join(__dirname, "..", "fixtures", "losses");
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const load = (name: string): { cases: any[] } => JSON.parse(readFileSync(join(dir, name), "utf8"));

interface MergeCase { name: string; k: number[]; mode: "mean" | "softmax"; logits: number[]; shape: [number, number]; out: number[]; objWeights: number[]; gradLogits: number[] }
interface ClsCase { name: string; k: number[]; merge: "mean" | "softmax"; stageWeights: number[]; shape: [number, number]; stageLogits: number[][]; labels: number[]; total: number; perStage: number[]; gradStageLogits: number[][] }
interface ConCase { name: string; loss: "fg" | "bg"; reduction: "batch" | "pair"; temperature: number; features: number[]; featureShape: [number, number]; prototypes: number[]; prototypeShape: [number, number]; positives: number[]; value: number; gradFeatures: number[]; gradPrototypes: number[] }
interface TotalCase { name: string; weights: PbipLossWeights; cls: number; fg: number; bg: number; cam: number[]; camShape: number[]; total: number; grads: { cls: number; fg: number; bg: number; cam: number[] } }

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
function agree(what: string, got: ArrayLike<number> | number, want: ArrayLike<number> | number) {
  const err = typeof want === "number" ? rel(got as number, want) : maxRelErr(got as ArrayLike<number>, want);
  assert.ok(err < TOL, `${what}: relative error ${err.toExponential(2)} >= ${TOL}`);
}

for (const backend of ["cpu", "wasm"] as const) {
  test(`[${backend}] mergeSubclassLogits agrees with PyTorch`, async () => {
    await onBackend(backend, () => undefined);
    for (const c of load("merge.json").cases as MergeCase[]) {
      const x = tf.tensor2d(c.logits, c.shape);
      const w = tf.tensor(c.objWeights, [c.shape[0], c.k.length]);
      const before = tf.memory().numTensors;
      const out = mergeSubclassLogits(x, c.k, c.mode);
      const [g] = tf.grads((t: tf.Tensor) => tf.sum(tf.mul(mergeSubclassLogits(t as tf.Tensor2D, c.k, c.mode), w)))([x]);
      agree(`${c.name} value`, out.dataSync(), c.out);
      agree(`${c.name} gradient`, g!.dataSync(), c.gradLogits);
      tf.dispose([out, g!]);
      assert.equal(tf.memory().numTensors, before, `${c.name}: no tensors leak`);
      tf.dispose([x, w]);
    }
  });

  test(`[${backend}] classificationLoss agrees with PyTorch's multilabel_soft_margin_loss`, async () => {
    await onBackend(backend, () => undefined);
    for (const c of load("classification.json").cases as ClsCase[]) {
      const stages = c.stageLogits.map((a) => tf.tensor2d(a, c.shape));
      const y = tf.tensor2d(c.labels, [c.shape[0], c.k.length]);
      const opts = { k: c.k, stageWeights: c.stageWeights, merge: c.merge };
      const before = tf.memory().numTensors;
      const r = classificationLoss(stages, y, opts);
      agree(`${c.name} total`, r.total.dataSync()[0]!, c.total);
      r.perStage.forEach((p, i) => agree(`${c.name} stage ${i}`, p.dataSync()[0]!, c.perStage[i]!));
      const grads = tf.grads((...xs: tf.Tensor[]) => classificationLoss(xs as tf.Tensor2D[], y, opts).total)(stages);
      grads.forEach((g, i) => {
        // a stage of weight 0 has an exactly zero gradient, in PyTorch too
        if (c.stageWeights[i] === 0) assert.ok(g.dataSync().every((v) => v === 0), `${c.name}: weight-0 stage has zero gradient`);
        else agree(`${c.name} gradient of stage ${i}`, g.dataSync(), c.gradStageLogits[i]!);
      });
      tf.dispose([r.total, ...r.perStage, ...grads]);
      assert.equal(tf.memory().numTensors, before, `${c.name}: no tensors leak`);
      tf.dispose([...stages, y]);
    }
  });

  test(`[${backend}] L_FGS and L_BGS agree with PyTorch (release form, both reductions)`, async () => {
    await onBackend(backend, () => undefined);
    const cases = load("contrastive.json").cases as ConCase[];
    assert.ok(cases.length >= 12);
    for (const c of cases) {
      const f = tf.tensor2d(c.features, c.featureShape);
      const p = tf.tensor2d(c.prototypes, c.prototypeShape);
      const fn = c.loss === "fg" ? foregroundContrastiveLoss : backgroundContrastiveLoss;
      const opts = { temperature: c.temperature, reduction: c.reduction };
      const before = tf.memory().numTensors;
      const { value, grads } = tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) => fn(a as tf.Tensor2D, c.positives, b as tf.Tensor2D, opts))([f, p]);
      agree(`${c.name} value`, value.dataSync()[0]!, c.value);
      agree(`${c.name} d/dfeatures`, grads[0]!.dataSync(), c.gradFeatures);
      agree(`${c.name} d/dprototypes`, grads[1]!.dataSync(), c.gradPrototypes);
      tf.dispose([value, ...grads]);
      assert.equal(tf.memory().numTensors, before, `${c.name}: no tensors leak`);
      tf.dispose([f, p]);
    }
  });

  test(`[${backend}] pbipLoss agrees with PyTorch`, async () => {
    await onBackend(backend, () => undefined);
    for (const c of load("total.json").cases as TotalCase[]) {
      const ins = [tf.scalar(c.cls), tf.scalar(c.fg), tf.scalar(c.bg), tf.tensor(c.cam, c.camShape)] as const;
      const before = tf.memory().numTensors;
      const r = pbipLoss({ cls: ins[0], fg: ins[1], bg: ins[2], camReg: ins[3] }, c.weights);
      agree(`${c.name} total`, r.total.dataSync()[0]!, c.total);
      const g = tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor, m: tf.Tensor) =>
        pbipLoss({ cls: a as tf.Scalar, fg: b as tf.Scalar, bg: d as tf.Scalar, camReg: m }, c.weights).total,
      )([...ins]);
      agree(`${c.name} dL/dcls`, g[0]!.dataSync()[0]!, c.grads.cls);
      agree(`${c.name} dL/dfg`, g[1]!.dataSync()[0]!, c.grads.fg);
      agree(`${c.name} dL/dbg`, g[2]!.dataSync()[0]!, c.grads.bg);
      if (c.weights.camRegWeight === 0) assert.ok(g[3]!.dataSync().every((v) => v === 0));
      else agree(`${c.name} dL/dM4`, g[3]!.dataSync(), c.grads.cam);
      tf.dispose([r, g]);
      assert.equal(tf.memory().numTensors, before, `${c.name}: no tensors leak`);
      tf.dispose([...ins]);
    }
  });
}
