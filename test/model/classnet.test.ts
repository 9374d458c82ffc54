import { test } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr } from "../helpers";
import { TinyBackbone } from "../tiny";
import { ClassNet } from "../../src/model/classnet";
import { similarityMaps, mergeSubclasses, poolLogits, l2Normalize } from "../../src/model/heads";
import { resolveConfig, type PbipConfig } from "../../src/config/profiles";
import { tmpDir } from "../tmp";

/** Central differences in float64 of a float32 function (the step suits float32 round-off). */
function fd(f: (x: Float32Array) => number, x: Float32Array, i: number, eps = 1e-2): number {
  const a = Float32Array.from(x);
  const b = Float32Array.from(x);
  a[i]! += eps;
  b[i]! -= eps;
  return (f(a) - f(b)) / (2 * eps);
}

test("eq. 2 by hand: release form (normalised pixel . prototype * s) and paper form (true cosine * s)", async () => {
  await onBackend("cpu", () => undefined);
  const F = [3, 4, 0, 0, 0, 2]; // two pixels, C = 3: (3,4,0) and (0,0,2)
  const P = [1, 0, 0, 0, 2, 2]; // two prototypes: (1,0,0) and (0,2,2)
  const f = tf.tensor4d(F, [1, 1, 2, 3]);
  const p = tf.tensor2d(P, [2, 3]);
  const rel = Array.from(await similarityMaps(f, p, 2, "release").data());
  // pixel 1 normalised (0.6, 0.8, 0): . (1,0,0) = 0.6, . (0,2,2) = 1.6; pixel 2 (0,0,1): 0, 2. Times s = 2.
  assert.deepEqual(rel.map((v) => +v.toFixed(5)), [1.2, 3.2, 0, 4]);
  const pap = Array.from(await similarityMaps(f, p, 2, "paper").data());
  // prototypes normalised: (1,0,0) and (0, .7071, .7071).
  assert.deepEqual(pap.map((v) => +v.toFixed(4)), [1.2, +(2 * 0.8 * Math.SQRT1_2).toFixed(4), 0, +(2 * Math.SQRT1_2).toFixed(4)]);
});

test("subclass merges by hand: mean while training, sum(softmax(s) * s) at inference", async () => {
  await onBackend("cpu", () => undefined);
  const x = tf.tensor2d([[1, 2, 3, 0, 10]], [1, 5]); // K = [3, 2]
  assert.deepEqual(Array.from(await mergeSubclasses(x, [3, 2], "mean").data()), [2, 5]);
  const sm = (v: number[]) => {
    const e = v.map(Math.exp);
    const z = e.reduce((a, b) => a + b, 0);
    return e.reduce((a, ei, i) => a + (ei / z) * v[i]!, 0);
  };
  const got = Array.from(await mergeSubclasses(x, [3, 2], "softmax").data());
  assert.ok(Math.abs(got[0]! - sm([1, 2, 3])) < 1e-5 && Math.abs(got[1]! - sm([0, 10])) < 1e-4, `${got}`);
  assert.throws(() => mergeSubclasses(x, [3, 3], "mean"), /sums to 6, but the input has 5 channels/);
});

test("similarity head and merges: gradients equal finite differences (features, projected prototypes, scale)", async () => {
  await onBackend("cpu", () => undefined);
  const fShape = [2, 3, 3, 4];
  const fx = randomArray(2 * 3 * 3 * 4, 1);
  const px = randomArray(6 * 4, 2);
  const w = tf.tensor2d(randomArray(2 * 2, 3), [2, 2]);
  const loss = (f: tf.Tensor, p: tf.Tensor, s: tf.Tensor, mode: "mean" | "softmax", form: "release" | "paper") =>
    tf.sum(tf.mul(mergeSubclasses(poolLogits(similarityMaps(f as tf.Tensor4D, p as tf.Tensor2D, s as tf.Scalar, form)), [3, 3], mode), w));
  for (const mode of ["mean", "softmax"] as const) {
    for (const form of ["release", "paper"] as const) {
      const [gf, gp, gs] = tf.grads((f: tf.Tensor, p: tf.Tensor, s: tf.Tensor) => loss(f, p, s, mode, form))([tf.tensor(fx, fShape), tf.tensor2d(px, [6, 4]), tf.scalar(3)]);
      const gfv = await gf!.data();
      const gpv = await gp!.data();
      const gsv = (await gs!.data())[0]!;
      const num = (xf: Float32Array, xp: Float32Array, s: number) => tf.tidy(() => loss(tf.tensor(xf, fShape), tf.tensor2d(xp, [6, 4]), tf.scalar(s), mode, form).dataSync()[0]!);
      for (const i of [0, 5, 17, 40, 71]) {
        const e = fd((v) => num(v, px, 3), fx, i);
        assert.ok(Math.abs(gfv[i]! - e) < 2e-3 * Math.max(1, Math.abs(e)), `${mode}/${form} dF[${i}] ${gfv[i]} vs ${e}`);
      }
      for (const i of [0, 7, 23]) {
        const e = fd((v) => num(fx, v, 3), px, i);
        assert.ok(Math.abs(gpv[i]! - e) < 2e-3 * Math.max(1, Math.abs(e)), `${mode}/${form} dP[${i}] ${gpv[i]} vs ${e}`);
      }
      const es = (num(fx, px, 3.01) - num(fx, px, 2.99)) / 0.02;
      assert.ok(Math.abs(gsv - es) < 2e-3 * Math.max(1, Math.abs(es)), `${mode}/${form} ds ${gsv} vs ${es}`);
    }
  }
});

test("l2Normalize has a finite gradient at an all-zero feature (ReLU features can be zero at a pixel)", async () => {
  await onBackend("cpu", () => undefined);
  const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(l2Normalize(x), tf.tensor2d([[1, 2, 3]]))))(tf.zeros([1, 3]));
  assert.ok(Array.from(await g.data()).every(Number.isFinite));
});

function cfg(head: "similarity" | "conv1x1" = "similarity"): PbipConfig {
  return resolveConfig("release", { model: { head, projectionHidden: 8, stages: [1, 2, 3, 4] } as PbipConfig["model"] });
}

function net(seed = 1, head: "similarity" | "conv1x1" = "similarity"): ClassNet {
  const protos = tf.tidy(() => tf.randomNormal([6, 5], 0, 1, "float32", 9) as tf.Tensor2D);
  const n = new ClassNet({ backbone: new TinyBackbone(seed), prototypes: protos, k: [2, 2, 2], model: cfg(head).model, normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] }, seed });
  protos.dispose();
  return n;
}

test("ClassNet: shapes per stage, summary, no tensor growth over forward/backward, both heads", async () => {
  await onBackend("wasm", () => undefined);
  for (const head of ["similarity", "conv1x1"] as const) {
    const before = tf.memory().numTensors;
    const n = net(1, head);
    const x = tf.randomUniform([2, 32, 32, 3], 0, 1, "float32", 4) as tf.Tensor4D;
    const vars = [...n.trainableVariables().values()];
    const counts: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { value, grads } = tf.variableGrads(() => {
        const o = n.forward(x, true);
        return tf.addN(o.logits.map((l) => tf.mean(mergeSubclasses(l, n.k, "mean")))) as tf.Scalar;
      }, vars);
      tf.dispose([value, ...Object.values(grads)]);
      counts.push(tf.memory().numTensors);
    }
    assert.equal(counts[2], counts[0], `${head}: tensors ${counts}`);
    const o = n.forward(x);
    assert.deepEqual(o.maps.map((m) => m.shape), [[2, 16, 16, 6], [2, 8, 8, 6], [2, 4, 4, 6], [2, 4, 4, 6]]);
    assert.deepEqual(o.logits.map((l) => l.shape), [[2, 6], [2, 6], [2, 6], [2, 6]]);
    tf.dispose([...o.features, ...o.maps, ...o.logits]);
    assert.match(n.summaryText(32), new RegExp(`head ${head}`));
    x.dispose();
    n.dispose();
    assert.equal(tf.memory().numTensors, before, `${head}: ClassNet construction and disposal leave nothing behind`);
  }
});

test("ClassNet weights: save and load round-trip exactly; a mismatched file is refused by name", async () => {
  await onBackend("wasm", () => undefined);
  const dir = tmpDir("pbip-classnet-");
  const a = net(1);
  const b = net(2);
  const file = path.join(dir, "w.safetensors");
  await a.saveWeights(file);
  b.loadWeights(file);
  for (const [name, v] of a.namedVariables()) assert.deepEqual(Array.from(b.namedVariables().get(name)!.dataSync()), Array.from(v.dataSync()), name);
  const c = net(3, "conv1x1");
  assert.throws(() => c.loadWeights(file), (e: Error) => e.message.includes(file) && /missing/.test(e.message) && /unexpected/.test(e.message));
  tf.dispose([]);
  a.dispose();
  b.dispose();
  c.dispose();
  void maxRelErr;
});
