// Stage-2 cross-entropy: a hand-computed case (ignore id, class weights, ignored
// background), stability at huge logits, the gradient against the closed form and
// finite differences (CPU and WASM), and PyTorch's CrossEntropyLoss when
// /usr/bin/python3 has torch.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, finiteDiff } from "../helpers";
import { pixelCrossEntropy, classWeightsFromCounts } from "../../src/seg";

const BACKENDS = ["cpu", "wasm"] as const;

// One image, 2x2 pixels, C = 3.
const LOGITS = [1, 2, 3, 0, 0, 0, 5, -1, 2, 0.5, 0.25, -3];
const TARGETS = [2, 0, 255, 1];
const nllA = Math.log(1 + Math.exp(-1) + Math.exp(-2)); // logits [1,2,3], target 2
const nllB = Math.log(3); // logits [0,0,0], target 0
const nllD = -(0.25 - Math.log(Math.exp(0.5) + Math.exp(0.25) + Math.exp(-3))); // target 1

function ce(backend: string, logits: number[], targets: number[], shape: [number, number, number, number], o = {}): number {
  return tf.tidy(() => pixelCrossEntropy(tf.tensor4d(logits, shape), tf.tensor3d(targets, shape.slice(0, 3) as [number, number, number], "int32"), o).dataSync()[0]!);
}

test("pixelCrossEntropy: hand-computed values with the ignore id, class weights and ignored background", async () => {
  for (const backend of BACKENDS) {
    await onBackend(backend, () => {
      const s: [number, number, number, number] = [1, 2, 2, 3];
      const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-5, `${backend} ${what}: ${a} vs ${b}`);
      close(ce(backend, LOGITS, TARGETS, s), (nllA + nllB + nllD) / 3, "mean over the 3 counted pixels (255 skipped)");
      close(ce(backend, LOGITS, TARGETS, s, { classWeights: [2, 1, 0.5] }), (0.5 * nllA + 2 * nllB + 1 * nllD) / 3.5, "weighted mean");
      close(ce(backend, LOGITS, TARGETS, s, { ignoreIds: [0] }), (nllA + nllD) / 2, "background id 0 ignored");
      close(ce(backend, LOGITS, [255, 255, 255, 7], s), 0, "nothing counted -> 0 (not NaN)");
      // Huge logits: log-softmax keeps it finite and exact.
      close(ce(backend, [1000, 0, -1000], [1], [1, 1, 1, 3]), 1000, "stable at |z| = 1000");
      const g = tf.tidy(() => tf.grad((z: tf.Tensor) => pixelCrossEntropy(z as tf.Tensor4D, tf.tensor3d([1], [1, 1, 1], "int32")))(tf.tensor4d([1000, 0, -1000], [1, 1, 1, 3])).dataSync().slice());
      assert.deepEqual(Array.from(g, (v) => Math.round(v * 1e6) / 1e6), [1, -1, 0]);
      assert.throws(() => ce(backend, LOGITS, TARGETS, s, { classWeights: [1, 1] }), /3 outputs/);
      assert.throws(() => tf.tidy(() => pixelCrossEntropy(tf.zeros([1, 2, 2, 3]), tf.zeros([1, 3, 2], "int32"))), /differ/);
    });
  }
});

test("pixelCrossEntropy gradient: closed form w_p (softmax - onehot) / sum w, and finite differences; no leak", async () => {
  const shape: [number, number, number, number] = [2, 3, 4, 5];
  const z0 = Float32Array.from(randomArray(2 * 3 * 4 * 5, 21), (v) => 3 * v);
  const t = Array.from(randomArray(24, 22), (v, i) => (i % 7 === 3 ? 255 : Math.floor((v + 1) * 2.5)));
  const w = [1, 0.5, 2, 1.5, 0.8];
  let wsum = 0;
  const closed = new Float32Array(z0.length);
  for (const y of t) if (y !== 255) wsum += w[y]!;
  t.forEach((y, p) => {
    if (y === 255) return;
    const zs = Array.from(z0.subarray(p * 5, p * 5 + 5));
    const m = Math.max(...zs);
    const e = zs.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    for (let k = 0; k < 5; k++) closed[p * 5 + k] = (w[y]! * (e[k]! / s - (k === y ? 1 : 0))) / wsum;
  });
  for (const backend of BACKENDS) {
    await onBackend(backend, () => {
      const before = tf.memory().numTensors;
      const loss = (z: tf.Tensor) => pixelCrossEntropy(z as tf.Tensor4D, tf.tensor3d(t, [2, 3, 4], "int32"), { classWeights: w });
      const g = tf.tidy(() => tf.grad(loss)(tf.tensor4d(z0, shape)).dataSync().slice());
      assert.equal(tf.memory().numTensors, before, "no leak");
      for (let i = 0; i < g.length; i++) assert.ok(Math.abs(g[i]! - closed[i]!) < 1e-6, `${backend} closed form [${i}]: ${g[i]} vs ${closed[i]}`);
      const coords = [0, 13, 37, 58, 99, 119];
      finiteDiff((z) => tf.tidy(() => loss(tf.tensor4d(z, shape)).dataSync()[0]!), z0, coords, 1e-2).forEach((v, i) =>
        assert.ok(Math.abs(v - g[coords[i]!]!) < 1e-3, `${backend} fd [${coords[i]}]: ${g[coords[i]!]} vs ${v}`),
      );
    });
  }
});

test("pixelCrossEntropy equals torch.nn.CrossEntropyLoss(weight, ignore_index=255) (skipped without torch)", async (t) => {
  const py = "/usr/bin/python3";
  if (!fs.existsSync(py)) return t.skip("no /usr/bin/python3");
  const z = Array.from(randomArray(2 * 3 * 3 * 4, 31), (v) => 4 * v);
  const y = Array.from(randomArray(18, 32), (v, i) => (i % 5 === 0 ? 255 : Math.floor((v + 1) * 2)));
  const w = [0.5, 1, 2, 1.25];
  const script = `
import json, sys, torch
d = json.load(sys.stdin)
z = torch.tensor(d["z"], dtype=torch.float64).reshape(2, 3, 3, 4).permute(0, 3, 1, 2)
y = torch.tensor(d["y"]).reshape(2, 3, 3)
print(json.dumps([torch.nn.CrossEntropyLoss(weight=torch.tensor(d["w"], dtype=torch.float64), ignore_index=255)(z, y).item(),
                  torch.nn.CrossEntropyLoss(ignore_index=255)(z, y).item()]))`;
  const r = spawnSync(py, ["-c", script], { input: JSON.stringify({ z, y, w }), encoding: "utf8" });
  if (r.status !== 0 && /No module named 'torch'/.test(r.stderr)) return t.skip("no torch in /usr/bin/python3");
  assert.equal(r.status, 0, r.stderr);
  const [weighted, plain] = JSON.parse(r.stdout) as [number, number];
  await onBackend("wasm", () => {
    const s: [number, number, number, number] = [2, 3, 3, 4];
    assert.ok(Math.abs(ce("wasm", z, y, s, { classWeights: w }) - weighted) < 1e-5);
    assert.ok(Math.abs(ce("wasm", z, y, s) - plain) < 1e-5);
  });
});

test("classWeightsFromCounts: inverse-frequency power, mean 1 over present ids, 0 for absent ones", () => {
  const w = classWeightsFromCounts([100, 400, 0, 100], 1);
  // total 600, 3 present: raw 2, 0.5, 0, 2 -> mean 1.5 -> 4/3, 1/3, 0, 4/3
  [4 / 3, 1 / 3, 0, 4 / 3].forEach((v, i) => assert.ok(Math.abs(w[i]! - v) < 1e-12));
  assert.throws(() => classWeightsFromCounts([0, 0]), /every count is 0/);
});
