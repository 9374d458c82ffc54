// Training the Mix Transformer: custom gradients against finite differences, a full
// training step on WASM against CPU, gradients against PyTorch autograd (when torch
// is available), and no tensor growth across steps.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import * as tf from "@tensorflow/tfjs";
import { onBackend, maxRelErr, randomArray, finiteDiff } from "../helpers";
import { readSafetensors } from "../../src/io";
import { cacheDir, sha256File } from "../../src/util";
import { buildMiT, toPyTorchLayout, type MiTConfig, type MixTransformer } from "../../src/model/backbones";
import { layerNorm, geluErf, linearOp, batchMatMulOp, patchReduce, depthwise3x3Op, patchEmbedConvOp, sumRows } from "../../src/model/backbones/mit";

const FIX = path.join(__dirname, "..", "fixtures", "mit");
const TINY: Partial<MiTConfig> = {
  embedDims: [8, 16, 24, 32],
  numHeads: [1, 2, 3, 4],
  depths: [1, 1, 1, 1],
  srRatios: [8, 4, 2, 1],
  mlpRatios: [4, 2, 2, 2],
};
const io = readSafetensors(path.join(FIX, "io.safetensors"));
const input = io.get("input")!;

// 6 columns: TF.js kernels on every backend; 8: on WASM, the fused LayerNorm and GELU kernels.
for (const C of [6, 8]) test(`layerNorm and geluErf gradients match finite differences (CPU and WASM, ${C} channels)`, async () => {
  const x0 = Float32Array.from(randomArray(5 * C, 1), (v) => 2 * v);
  const g0 = Float32Array.from(randomArray(C, 2), (v) => 1 + 0.5 * v);
  const b0 = randomArray(C, 3);
  const r = randomArray(5 * C, 4);
  for (const backend of ["cpu", "wasm"] as const) {
    await onBackend(backend, () => {
      const ln = (x: Float32Array, g: Float32Array, b: Float32Array) =>
        tf.tidy(() => tf.sum(tf.mul(layerNorm(tf.tensor2d(x, [5, C]), tf.tensor1d(g), tf.tensor1d(b), 1e-5), tf.tensor2d(r, [5, C]))).dataSync()[0]!);
      const before = tf.memory().numTensors;
      const [dx, dg, db] = tf.tidy(() => {
        const grads = tf.grads((x: tf.Tensor, g: tf.Tensor, b: tf.Tensor) =>
          tf.sum(tf.mul(layerNorm(x as tf.Tensor2D, g as tf.Tensor1D, b as tf.Tensor1D, 1e-5), tf.tensor2d(r, [5, C]))),
        )([tf.tensor2d(x0, [5, C]), tf.tensor1d(g0), tf.tensor1d(b0)]);
        return grads.map((t) => t.dataSync().slice());
      });
      assert.equal(tf.memory().numTensors, before, "no leak");
      const coords = [0, 7, 13, 29];
      const fdx = finiteDiff((x) => ln(x, g0, b0), x0, coords, 1e-2);
      coords.forEach((c, i) => assert.ok(Math.abs(dx![c]! - fdx[i]!) < 3e-3, `${backend} LN dx[${c}] ${dx![c]} vs ${fdx[i]}`));
      const fdg = finiteDiff((g) => ln(x0, g, b0), g0, [0, 3, 5], 1e-2);
      [0, 3, 5].forEach((c, i) => assert.ok(Math.abs(dg![c]! - fdg[i]!) < 3e-3, `${backend} LN dgamma[${c}]`));
      const fdb = finiteDiff((b) => ln(x0, g0, b), b0, [1, 4], 1e-2);
      [1, 4].forEach((c, i) => assert.ok(Math.abs(db![c]! - fdb[i]!) < 3e-3, `${backend} LN dbeta[${c}]`));

      const gl = (x: Float32Array) => tf.tidy(() => tf.sum(tf.mul(geluErf(tf.tensor1d(x)), tf.tensor1d(r))).dataSync()[0]!);
      const dgx = tf.tidy(() => tf.grad((x: tf.Tensor) => tf.sum(tf.mul(geluErf(x), tf.tensor1d(r))))(tf.tensor1d(x0)).dataSync().slice());
      const fdgx = finiteDiff(gl, x0, coords, 1e-2);
      coords.forEach((c, i) => assert.ok(Math.abs(dgx[c]! - fdgx[i]!) < 2e-3, `${backend} GELU dx[${c}] ${dgx[c]} vs ${fdgx[i]}`));
      // The forward value against the erf definition at a few points (Abramowitz-Stegun erf in TF.js: |err| < 2e-7).
      const y = tf.tidy(() => geluErf(tf.tensor1d([-3, -1, 0, 0.5, 2])).dataSync());
      [-0.00404969, -0.15865525, 0, 0.34573123, 1.95449974].forEach((v, i) => assert.ok(Math.abs(y[i]! - v) < 1e-6, `GELU(${i})`));
    });
  }
});

test("on WASM, MiT's LayerNorm and GELU (one fused kernel per pass there) give the CPU backend's values and gradients", async () => {
  const N = 37;
  const C = 64;
  const run = () =>
    tf.tidy(() => {
      const x = tf.tensor2d(Float32Array.from(randomArray(N * C, 11), (v) => 3 * v + 0.5), [N, C]);
      const g = tf.tensor1d(Float32Array.from(randomArray(C, 12), (v) => 1 + 0.5 * v));
      const b = tf.tensor1d(randomArray(C, 13));
      const r = tf.tensor2d(randomArray(N * C, 14), [N, C]);
      const f = (xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => geluErf(layerNorm(xx as tf.Tensor2D, gg, bb, 1e-6));
      const y = f(x, g, b);
      const grads = tf.grads((xx: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(f(xx, gg, bb), r)))([x, g, b]);
      return [y, ...grads].map((t) => t.dataSync().slice() as Float32Array);
    });
  const want = await onBackend("cpu", run);
  const got = await onBackend("wasm", run);
  ["y", "dx", "dgamma", "dbeta"].forEach((name, i) => assert.ok(maxRelErr(got[i]!, want[i]!) < 2e-5, `${name}: ${maxRelErr(got[i]!, want[i]!)}`));
});

/** Value and gradients of sum(op(...inputs) * r) for random inputs, as plain arrays. */
function valueAndGrads(shapes: number[][], op: (...xs: tf.Tensor[]) => tf.Tensor, seed: number): Float32Array[] {
  return tf.tidy(() => {
    const xs = shapes.map((s, i) => tf.tensor(randomArray(s.reduce((a, b) => a * b, 1), seed + i), s));
    const y = op(...xs);
    const r = tf.tensor(randomArray(y.size, seed + 99), y.shape);
    const grads = tf.grads((...a: tf.Tensor[]) => tf.sum(tf.mul(op(...a), r)))(xs);
    return [y, ...grads].map((t) => t.dataSync() as Float32Array);
  });
}

interface OpCase {
  name: string;
  shapes: number[][];
  mine: (...xs: tf.Tensor[]) => tf.Tensor;
  plain: (...xs: tf.Tensor[]) => tf.Tensor;
}

const OP_CASES: OpCase[] = [
  {
    name: "linearOp with bias",
    shapes: [[7, 5], [5, 3], [3]],
    mine: (x, w, b) => linearOp(x as tf.Tensor2D, w as tf.Tensor2D, b),
    plain: (x, w, b) => tf.add(tf.matMul(x!, w!), b!),
  },
  { name: "linearOp without bias", shapes: [[4, 6], [6, 2]], mine: (x, w) => linearOp(x as tf.Tensor2D, w as tf.Tensor2D), plain: (x, w) => tf.matMul(x!, w!) },
  // Many tokens: on WASM the weight gradient x^T dy sums over them in blocks (B unpacked below 256 input features, packed from 256).
  { name: "linearOp, 700 tokens", shapes: [[700, 20], [20, 9], [9]], mine: (x, w, b) => linearOp(x as tf.Tensor2D, w as tf.Tensor2D, b), plain: (x, w, b) => tf.add(tf.matMul(x!, w!), b!) },
  { name: "linearOp, 600 tokens, 260 features", shapes: [[600, 260], [260, 7]], mine: (x, w) => linearOp(x as tf.Tensor2D, w as tf.Tensor2D), plain: (x, w) => tf.matMul(x!, w!) },
  { name: "batchMatMulOp rank 3", shapes: [[2, 5, 4], [2, 4, 3]], mine: (a, b) => batchMatMulOp(a!, b!), plain: (a, b) => tf.matMul(a!, b!) },
  { name: "batchMatMulOp rank 4", shapes: [[2, 3, 5, 4], [2, 3, 4, 6]], mine: (a, b) => batchMatMulOp(a!, b!), plain: (a, b) => tf.matMul(a!, b!) },
  {
    name: "patchReduce r=2 (divisible) vs conv2d",
    shapes: [[2, 6, 4, 3], [2, 2, 3, 5], [5]],
    mine: (x, f, b) => patchReduce(x as tf.Tensor4D, f as tf.Tensor4D, b!, 2),
    plain: (x, f, b) => tf.reshape(tf.add(tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 2, "valid"), b!), [-1, 5]),
  },
  {
    name: "patchReduce r=4 (7x9 input, cropped) vs conv2d",
    shapes: [[1, 7, 9, 2], [4, 4, 2, 3], [3]],
    mine: (x, f, b) => patchReduce(x as tf.Tensor4D, f as tf.Tensor4D, b!, 4),
    plain: (x, f, b) => tf.reshape(tf.add(tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, 4, "valid"), b!), [-1, 3]),
  },
  {
    name: "depthwise3x3Op vs depthwiseConv2d",
    shapes: [[2, 5, 4, 3], [3, 3, 3, 1], [3]],
    mine: (x, f, b) => depthwise3x3Op(x as tf.Tensor4D, f as tf.Tensor4D, b!),
    plain: (x, f, b) => tf.add(tf.depthwiseConv2d(x as tf.Tensor4D, f as tf.Tensor4D, 1, 1), b!),
  },
  ...(
    [
      [7, 4, 3, [1, 17, 13, 3]],
      [3, 2, 1, [2, 9, 8, 4]],
      [3, 1, 1, [1, 5, 6, 3]],
      [3, 2, 1, [1, 4, 4, 2]],
      [5, 3, 2, [1, 11, 7, 2]],
    ] as const
  ).map(
    ([k, s, p, xs]): OpCase => ({
      name: `patchEmbedConvOp ${k}x${k} stride ${s} pad ${p} on ${xs.join("x")} vs conv2d`,
      shapes: [[...xs], [k, k, xs[3], 5], [5]],
      mine: (x, f, b) => patchEmbedConvOp(x as tf.Tensor4D, f as tf.Tensor4D, b!, s, p),
      plain: (x, f, b) => tf.add(tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, s, p), b!),
    }),
  ),
  {
    name: "patchEmbedConvOp without input gradient (stage 1): filter and bias gradients",
    shapes: [[3, 3, 2, 4], [4]],
    mine: (f, b) => patchEmbedConvOp(tf.tensor4d(randomArray(2 * 9 * 7 * 2, 77), [2, 9, 7, 2]), f as tf.Tensor4D, b!, 2, 1, false),
    plain: (f, b) => tf.add(tf.conv2d(tf.tensor4d(randomArray(2 * 9 * 7 * 2, 77), [2, 9, 7, 2]), f as tf.Tensor4D, 2, 1), b!),
  },
  { name: "sumRows", shapes: [[9, 4]], mine: (x) => sumRows(x as tf.Tensor2D), plain: (x) => tf.sum(x!, 0) },
];

for (const c of OP_CASES) {
  test(`${c.name}: value and gradients equal TF.js's own op (CPU reference, WASM)`, async () => {
    const ref = await onBackend("cpu", () => valueAndGrads(c.shapes, c.plain, 5));
    for (const backend of ["cpu", "wasm"] as const) {
      await onBackend(backend, () => {
        const before = tf.memory().numTensors;
        const got = valueAndGrads(c.shapes, c.mine, 5);
        assert.equal(tf.memory().numTensors, before, "no leak");
        got.forEach((g, i) => assert.ok(maxRelErr(g, ref[i]!) < 1e-5, `${backend} ${i === 0 ? "value" : `grad ${i - 1}`}: ${maxRelErr(g, ref[i]!).toExponential(2)}`));
      });
    }
  });
}

test("the MiT has no gradient path to its input image (stage-1 embedding), by design", async () => {
  await onBackend("wasm", () => {
    const model = buildMiT("mit-b0", { config: TINY });
    const x = tf.tensor4d(input.data, input.shape as [number, number, number, number]);
    assert.throws(() => tf.grad((xi: tf.Tensor) => tf.sum(model.apply(xi as tf.Tensor4D, false)[0]!))(x), /Cannot compute gradient/);
    x.dispose();
    model.dispose();
  });
});

/** A training step's loss: sum over stages of sum(F_s * W_s), with fixed seeded weights W_s. */
function stepGrads(model: MixTransformer, training: boolean, lossWeights?: Float32Array[]): { loss: number; grads: Map<string, Float32Array> } {
  const vars = [...model.namedVariables()];
  let result: { loss: number; grads: Map<string, Float32Array> } | undefined;
  tf.tidy(() => {
    const x = tf.tensor4d(input.data, input.shape as [number, number, number, number]);
    const { value, grads } = tf.variableGrads(() => {
      const maps = model.apply(x, training);
      let loss = tf.scalar(0);
      maps.forEach((m, s) => {
        const w = lossWeights ? lossWeights[s]! : randomArray(m.size, 10 + s);
        loss = tf.add(loss, tf.sum(tf.mul(m, tf.tensor(w, m.shape))));
      });
      return loss as tf.Scalar;
    }, vars.map(([, v]) => v));
    const out = new Map<string, Float32Array>();
    for (const [name, v] of vars) {
      const g = grads[v.name];
      assert.ok(g, `gradient for ${name}`);
      out.set(name, g.dataSync() as Float32Array);
    }
    result = { loss: value.dataSync()[0]!, grads: out };
  });
  return result!;
}

test("a training step (stochastic depth on) gives the same gradients on WASM and CPU", async () => {
  const results: Record<string, { loss: number; grads: Map<string, Float32Array> }> = {};
  for (const backend of ["cpu", "wasm"] as const) {
    results[backend] = await onBackend(backend, () => {
      const model = buildMiT("mit-b0", { config: TINY, seed: 21, dropPathRate: 0.3 });
      model.loadWeights(path.join(FIX, "weights.safetensors"));
      const r = stepGrads(model, true);
      model.dispose();
      return r;
    });
  }
  const cpu = results.cpu!;
  const wasm = results.wasm!;
  assert.ok(Math.abs(cpu.loss - wasm.loss) <= 1e-5 * Math.abs(cpu.loss), `loss ${wasm.loss} vs ${cpu.loss}`);
  let nonzero = 0;
  for (const [name, g] of cpu.grads) {
    const err = maxRelErr(wasm.grads.get(name)!, g);
    assert.ok(err < 1e-3, `${name}: WASM vs CPU gradient max relative error ${err.toExponential(2)}`);
    if (g.some((v) => v !== 0)) nonzero++;
  }
  // Parameters of a branch that stochastic depth dropped for the whole batch get zero gradients.
  assert.ok(nonzero >= cpu.grads.size / 2, `${nonzero}/${cpu.grads.size} parameters get a non-zero gradient`);
});

test("gradient checkpointing changes memory, not gradients (stochastic depth on)", async () => {
  await onBackend("wasm", () => {
    const run = (checkpoint: boolean) => {
      const model = buildMiT("mit-b0", { config: TINY, seed: 8, dropPathRate: 0.3 });
      model.loadWeights(path.join(FIX, "weights.safetensors"));
      model.setGradientCheckpointing(checkpoint);
      const before = tf.memory().numTensors;
      const r = stepGrads(model, true);
      assert.equal(tf.memory().numTensors, before, `checkpoint ${checkpoint}: no tensors leaked`);
      model.dispose();
      return r;
    };
    const on = run(true);
    const off = run(false);
    assert.equal(on.loss, off.loss);
    for (const [name, g] of off.grads) {
      const err = maxRelErr(on.grads.get(name)!, g);
      assert.ok(err < 1e-6, `${name}: checkpointed vs plain gradient max relative error ${err.toExponential(2)}`);
    }
  });
});

test("tensor count does not grow across training steps (WASM, SGD)", async () => {
  await onBackend("wasm", () => {
    const model = buildMiT("mit-b0", { config: TINY, seed: 4, dropPathRate: 0.1 });
    const vars = [...model.namedVariables().values()];
    const opt = tf.train.sgd(1e-3);
    const x = tf.tensor4d(input.data, input.shape as [number, number, number, number]);
    const step = () =>
      tf.tidy(() => {
        const cost = opt.minimize(() => tf.addN(model.apply(x, true).map((m) => tf.mean(tf.square(m)))) as tf.Scalar, true, vars);
        return cost!.dataSync()[0]!;
      });
    const first = step();
    const after1 = tf.memory().numTensors;
    const losses = [first, step(), step(), step()];
    assert.equal(tf.memory().numTensors, after1, "no tensors accumulate across steps");
    assert.ok(losses.every(Number.isFinite));
    opt.dispose();
    x.dispose();
    model.dispose();
  });
});

const PY = "/usr/bin/python3";
test("gradients match PyTorch autograd on the tiny configuration", async (t) => {
  if (!fs.existsSync(PY) || spawnSync(PY, ["-c", "import torch, numpy"], { stdio: "ignore" }).status !== 0) {
    t.skip(`${PY} cannot import torch: the autograd comparison is skipped`);
    return;
  }
  const script = path.join(__dirname, "..", "reference", "mit_reference.py");
  const dir = cacheDir("mit-reference", `tiny-grad-${sha256File(script).slice(0, 12)}`);
  if (!fs.existsSync(path.join(dir, "grad.safetensors"))) {
    const r = spawnSync(
      PY,
      [script, "--config", "tiny", "--round", "bf16", "--weights-dtype", "F16", "--out-dir", dir, "--input", "2,64,40", "--case", "release:4,2,2,1", "--grad"],
      { encoding: "utf8" },
    );
    assert.equal(r.status, 0, `reference failed: ${r.stderr}`);
  }
  const ref = readSafetensors(path.join(dir, "grad.safetensors"));
  // Same weights and input as the committed fixture (same seed and rounding).
  assert.deepEqual(readSafetensors(path.join(dir, "io.safetensors")).get("input")!.data, input.data);
  // training=false runs the plain graph; training=true with drop-path 0 runs the checkpointed blocks.
  for (const training of [false, true]) {
    await onBackend("wasm", () => {
      const model = buildMiT("mit-b0", { config: TINY, dropPathRate: 0, weights: path.join(dir, "weights.safetensors") });
      const lw = [1, 2, 3, 4].map((s) => ref.get(`loss_weight.stage${s}`)!.data);
      const { loss, grads } = stepGrads(model, training, lw);
      const refLoss = ref.get("loss")!.data[0]!;
      assert.ok(Math.abs(loss - refLoss) < 1e-4 * Math.max(1, Math.abs(refLoss)), `loss ${loss} vs ${refLoss}`);
      let worst = 0;
      for (const [name, g] of grads) {
        const r = ref.get(`grad.${name}`)!;
        assert.ok(r, `reference gradient for ${name}`);
        const v = model.namedVariables().get(name)!;
        const mine = tf.tidy(() => toPyTorchLayout(name, tf.tensor(g, v.shape)).dataSync());
        const err = maxRelErr(mine, r.data);
        worst = Math.max(worst, err);
        assert.ok(err < 1e-3, `${name}: max relative error ${err.toExponential(2)} against autograd`);
      }
      t.diagnostic(`training=${training}: worst per-parameter max relative error against PyTorch autograd: ${worst.toExponential(2)}`);
      model.dispose();
    });
  }
});
