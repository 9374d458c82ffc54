import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr, finiteDiff } from "../helpers";
import { readSafetensors, writeSafetensors } from "../../src/io";
import {
  SwinModel,
  buildSwinParams,
  createSwinEncoder,
  SWIN_IMAGENET_PREPROCESSING,
} from "../../src/encoders/swin";
import {
  PROJECTION_KEY,
  readSwinProjection,
  readSwinWeights,
  relativePositionIndex,
  swinParameterSpecs,
  SWIN_T_CONFIG,
  type SwinConfig,
} from "../../src/encoders/swin-weights";
import { tmpDir } from "../tmp";

// The tiny configuration of test/reference/swin_reference.py (--config tiny): window 3 on a
// 72x96 input gives maps 18x24, 9x12, 5x6 (padded to 6x6, shifted with the mask), 3x3
// (= the window: no shift), and odd maps before both late merges.
const TINY: SwinConfig = { patchSize: 4, inChannels: 3, embedDim: 4, depths: [2, 2, 2, 2], numHeads: [1, 2, 2, 4], windowSize: 3, mlpRatio: 4, layerNormEps: 1e-5 };
const FIX = path.join(__dirname, "..", "fixtures", "swin");
const IN_SHAPE: [number, number, number, number] = [2, 72, 96, 3];
const INPUT = randomArray(IN_SHAPE.reduce((a, b) => a * b), 11);
const io = readSafetensors(path.join(FIX, "io.safetensors"));

function tinyModel(): SwinModel {
  const w = readSwinWeights([path.join(FIX, "weights.safetensors"), path.join(FIX, "projection.safetensors")], TINY, { projection: true });
  assert.deepEqual(w.report.missing, []);
  assert.deepEqual(w.report.unexpected, []);
  assert.deepEqual(w.report.misshaped, []);
  return new SwinModel(buildSwinParams(TINY, w.tensors, w.tensors.get(PROJECTION_KEY)));
}

function ref(name: string): Float32Array {
  const t = io.get(name);
  assert.ok(t, `io.safetensors has ${name}`);
  return t.data;
}

test("parameter names are Hugging Face SwinModel's; the index buffer is Swin's", () => {
  const names = swinParameterSpecs({ ...SWIN_T_CONFIG, depths: [...SWIN_T_CONFIG.depths], numHeads: [...SWIN_T_CONFIG.numHeads] }).map((s) => s.name);
  for (const n of [
    "embeddings.patch_embeddings.projection.weight",
    "embeddings.norm.bias",
    "encoder.layers.0.blocks.0.attention.self.query.weight",
    "encoder.layers.0.blocks.1.attention.self.relative_position_bias_table",
    "encoder.layers.2.blocks.5.output.dense.bias",
    "encoder.layers.0.downsample.reduction.weight",
    "encoder.layers.2.downsample.norm.weight",
    "layernorm.weight",
  ]) assert.ok(names.includes(n), n);
  assert.ok(!names.some((n) => n.startsWith("encoder.layers.3.downsample")), "no merging after the last stage");
  // 4 embedding tensors + 17 per block * 12 blocks + 3 per merging * 3 + 2 final = 219.
  assert.equal(names.length, 4 + 17 * 12 + 9 + 2);
  // Hand-worked 2x2 window: tokens (0,0),(0,1),(1,0),(1,1); offset (dy,dx) -> (dy+1)*3 + dx+1.
  assert.deepEqual([...relativePositionIndex(2)], [4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4]);
});

for (const backend of ["wasm", "cpu"] as const) {
  test(`tiny Swin matches the PyTorch reference on ${backend} (pooled, projected, tokens; max relative error 1e-4)`, async (t) => {
    await onBackend(backend, () => {
      const before = tf.memory().numTensors;
      const model = tinyModel();
      const afterBuild = tf.memory().numTensors;
      const x = tf.tensor4d(INPUT, IN_SHAPE);
      for (const differentiable of [false, true]) {
        const out = model.forward(x, { tokens: true, differentiable });
        const projected = model.project(out.pooled);
        const errs = {
          pooled: maxRelErr(out.pooled.dataSync(), ref("pooled")),
          projected: maxRelErr(projected.dataSync(), ref("projected")),
          tokens: maxRelErr(out.tokens!.dataSync(), ref("tokens")),
        };
        assert.deepEqual(out.tokens!.shape, [2, 3, 3, 32]);
        t.diagnostic(`${differentiable ? "custom-gradient ops" : "plain forward"}: ${JSON.stringify(errs)}`);
        for (const [k, e] of Object.entries(errs)) assert.ok(e < 1e-4, `${k}: max relative error ${e.toExponential(2)}`);
        tf.dispose([out.pooled, out.tokens!, projected]);
      }
      x.dispose();
      // The bias/mask cache is built once per geometry and kept until dispose.
      assert.ok(tf.memory().numTensors > afterBuild);
      model.dispose();
      assert.equal(tf.memory().numTensors, before, "no tensors left after dispose");
    });
  });
}

for (const [backend, memory] of [["wasm", "fast"], ["wasm", "lean"], ["cpu", "fast"], ["cpu", "lean"]] as const) {
test(`input gradient on ${backend} (${memory} memory) matches PyTorch autograd (1e-4)${backend === "cpu" && memory === "fast" ? " and central finite differences" : ""}`, async (t) => {
  await onBackend(backend, () => {
    const before = tf.memory().numTensors;
    const model = tinyModel();
    const r = tf.tensor2d(ref("grad_weights"), [2, 8]);
    const loss = (x: tf.Tensor4D) => tf.sum(tf.mul(model.project(model.forward(x, { memory }).pooled), r)) as tf.Scalar;
    const x = tf.tensor4d(INPUT, IN_SHAPE);
    const g = tf.grad((xx: tf.Tensor) => loss(xx as tf.Tensor4D))(x);
    const gAll = g.dataSync();
    const n0 = 72 * 96 * 3;
    const g0 = gAll.slice(0, n0);
    const err = maxRelErr(g0, ref("grad_input0"));
    t.diagnostic(`d loss / d input[0]: max relative error vs torch ${err.toExponential(2)}`);
    assert.ok(err < 1e-4, `gradient vs torch: ${err.toExponential(2)}`);
    // Image 1 does not reach image 0's features and vice versa: the loss is separable, so
    // the gradient of image 1 is non-zero, finite, and the same when image 0 changes.
    const g1 = gAll.slice(n0);
    assert.ok(g1.every(Number.isFinite) && g1.some((v) => v !== 0));
    const other = Float32Array.from(INPUT, (v, i) => (i < n0 ? 0.5 * v + 0.1 : v));
    const x2 = tf.tensor4d(other, IN_SHAPE);
    const g2 = tf.grad((xx: tf.Tensor) => loss(xx as tf.Tensor4D))(x2);
    const g2All = g2.dataSync();
    assert.ok(maxRelErr(g2All.slice(0, n0), g0) > 1e-3, "image 0's own gradient changed with it");
    const sep = maxRelErr(g2All.slice(n0), g1);
    assert.ok(sep < 1e-5, `image 1's gradient moved by ${sep.toExponential(2)} when only image 0 changed`);
    tf.dispose([x2, g2]);
    if (backend === "cpu" && memory === "fast") {
    // Finite differences on sampled coordinates (float32: eps 1e-2, tolerance 2e-2 of the largest gradient).
    const f = (arr: Float32Array) => tf.tidy(() => loss(tf.tensor4d(arr, IN_SHAPE)).dataSync()[0]!);
    const coords = [5, 1000, 4321, 9999, 20735, 12345 + 3, 700 * 3 + 1];
    const fd = finiteDiff(f, INPUT, coords, 1e-2);
    const scale = Math.max(...g0.map(Math.abs));
    coords.forEach((c, i) => {
      const diff = Math.abs(fd[i]! - gAll[c]!);
      assert.ok(diff < 2e-2 * scale, `coordinate ${c}: finite difference ${fd[i]} vs gradient ${gAll[c]} (scale ${scale})`);
    });
    }
    tf.dispose([r, x, g]);
    model.dispose();
    assert.equal(tf.memory().numTensors, before, "no tensors left");
  });
});
}

test("weights report names missing, unexpected and mis-shaped keys; wrong index buffers are refused", async () => {
  const dir = tmpDir("pbip-swin-");
  const src = readSafetensors(path.join(FIX, "weights.safetensors"));
  const bad = new Map(src);
  bad.delete("swin.encoder.layers.1.blocks.0.attention.self.key.bias");
  bad.set("swin.encoder.layers.0.blocks.0.extra.weight", { dtype: "float32", shape: [2], data: new Float32Array(2) });
  const q = src.get("swin.encoder.layers.0.blocks.1.attention.self.query.weight")!;
  bad.set("swin.encoder.layers.0.blocks.1.attention.self.query.weight", { dtype: "float32", shape: [2, 8], data: q.data });
  const file = path.join(dir, "bad.safetensors");
  writeSafetensors(file, bad);
  const r = readSwinWeights([file], TINY, { projection: true });
  assert.deepEqual(r.report.missing, ["encoder.layers.1.blocks.0.attention.self.key.bias", PROJECTION_KEY]);
  assert.deepEqual(r.report.unexpected, ["swin.encoder.layers.0.blocks.0.extra.weight"]);
  assert.equal(r.report.misshaped.length, 1);
  assert.match(r.report.misshaped[0]!, /query\.weight: file \[2, 8\] vs model \[4, 4\]/);
  await assert.rejects(createSwinEncoder({ weights: file, config: TINY }), (e: Error) => {
    assert.match(e.message, /bad\.safetensors: weights do not match the model/);
    assert.match(e.message, /missing \(1\): encoder\.layers\.1\.blocks\.0\.attention\.self\.key\.bias/);
    assert.match(e.message, /unexpected \(1\)/);
    assert.match(e.message, /mis-shaped \(1\)/);
    return true;
  });
  // A weights file that is not there says how to make one (the paper profile names weights/swin-t-medclip.safetensors).
  await assert.rejects(createSwinEncoder({ weights: path.join(dir, "swin-t-medclip.safetensors"), config: TINY }), /swin-t-medclip\.safetensors: file not found\. .*export_swin_weights\.py medclip/);
  // The fixture's int64 relative_position_index buffers are checked against a 3x3 window; a 2x2 config refuses them.
  const ok = readSwinWeights([path.join(FIX, "weights.safetensors")], TINY);
  assert.equal(ok.checkedIndexBuffers, 8);
  assert.throws(() => readSwinWeights([path.join(FIX, "weights.safetensors")], { ...TINY, windowSize: 2 }), /relative position index of a 2x2 window/);
});

test("encoder: identity, stand-in labels, preprocessing, dense map pools to the pooled vector", async () => {
  await onBackend("wasm", async () => {
    const before = tf.memory().numTensors;
    const enc = await createSwinEncoder({ weights: path.join(FIX, "weights.safetensors"), projection: path.join(FIX, "projection.safetensors"), config: TINY, preprocessing: { inputSize: 72 }, batchSize: 2 });
    assert.equal(enc.identity.dim, 8);
    assert.match(enc.identity.weightsHash, /^[0-9a-f]{16}$/);
    assert.deepEqual(enc.identity.preprocessing, { ...SWIN_IMAGENET_PREPROCESSING, inputSize: 72 });
    assert.ok(enc.isStandIn, "weights without a sidecar are not called MedCLIP");
    assert.match(enc.standInNote!, /no sidecar JSON/);
    assert.match(enc.info.projection, /projection\.weight \[8, 32\] from the weights file/);
    const images = tf.tensor4d(randomArray(3 * 80 * 80 * 3, 5).map((v) => (v + 1) / 2), [3, 80, 80, 3]);
    const a = enc.apply(images, { dense: true });
    const b = await enc.encode(images, { dense: true }); // 2 chunks (batchSize 2)
    assert.deepEqual(a.pooled.shape, [3, 8]);
    assert.deepEqual(a.dense!.shape, [3, 3, 3, 8]);
    assert.ok(maxRelErr(b.pooled.dataSync(), a.pooled.dataSync()) < 1e-5, "encode (chunked, no gradients) = apply");
    assert.ok(maxRelErr(b.dense!.dataSync(), a.dense!.dataSync()) < 1e-5);
    const pooledFromDense = tf.mean(a.dense!, [1, 2]);
    assert.ok(maxRelErr(pooledFromDense.dataSync(), a.pooled.dataSync()) < 1e-5, "mean of the projected token map = projected pooled vector");
    tf.dispose([images, a.pooled, a.dense!, b.pooled, b.dense!, pooledFromDense]);
    enc.dispose();
    assert.equal(tf.memory().numTensors, before);

    const rnd = await createSwinEncoder({ randomSeed: 3, config: TINY, preprocessing: { inputSize: 72 } });
    assert.ok(rnd.isStandIn);
    assert.match(rnd.standInNote!, /TEST STAND-IN: Swin with random weights \(seed 3\)/);
    assert.match(rnd.identity.name, /^swin-t-medclip-release:random-seed3$/);
    assert.equal(rnd.identity.dim, 512);
    const again = await createSwinEncoder({ randomSeed: 3, config: TINY, preprocessing: { inputSize: 72 } });
    assert.equal(again.identity.weightsHash, rnd.identity.weightsHash, "seeded weights hash is reproducible");
    rnd.dispose();
    again.dispose();
    await assert.rejects(createSwinEncoder({}), /needs weights: write them with kernel-setup\/export_swin_weights\.py/);
    // Too small an input for the window is a clear error.
    const small = await createSwinEncoder({ randomSeed: 1, config: TINY, preprocessing: { inputSize: 40 } });
    const img = tf.zeros([1, 40, 40, 3]) as tf.Tensor4D;
    assert.throws(() => small.apply(img), /smaller than the 3x3 attention window/);
    img.dispose();
    small.dispose();
  });
});

test("a sidecar JSON beside the weights sets the preprocessing, the name and the stand-in label", async () => {
  const dir = tmpDir("pbip-swin-sidecar-");
  const weights = path.join(dir, "tiny.safetensors");
  fs.copyFileSync(path.join(FIX, "weights.safetensors"), weights);
  const side = { name: "swin-tiny-test", inputSize: 72, channelOrder: "RGB", scale: 1, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25], dim: 8, source: "medclip: test" };
  fs.writeFileSync(path.join(dir, "tiny.json"), JSON.stringify(side));
  await onBackend("wasm", async () => {
    const enc = await createSwinEncoder({ weights, projection: path.join(FIX, "projection.safetensors"), config: TINY });
    assert.equal(enc.identity.name, "swin-t-medclip-release:swin-tiny-test");
    assert.deepEqual(enc.identity.preprocessing, { inputSize: 72, channelOrder: "RGB", scale: 1, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] });
    assert.equal(enc.isStandIn, false, "a sidecar without standInNote (MedCLIP's own weights) is not a stand-in");
    assert.equal(enc.info.source, "medclip: test");
    enc.dispose();
    fs.writeFileSync(path.join(dir, "tiny.json"), JSON.stringify({ ...side, standInNote: "the release's MedCLIP: ImageNet Swin-T under a seeded projection" }));
    const enc2 = await createSwinEncoder({ weights, projection: path.join(FIX, "projection.safetensors"), config: TINY });
    assert.equal(enc2.isStandIn, true);
    assert.match(enc2.standInNote!, /ImageNet Swin-T under a seeded projection/);
    enc2.dispose();
  });
});

// --------------------------------------------------------------- full Swin-T
const PY = "/usr/bin/python3";
function torchAvailable(): boolean {
  if (!fs.existsSync(PY)) return false;
  const { spawnSync } = require("node:child_process") as typeof import("node:child_process");
  return spawnSync(PY, ["-c", "import torch, numpy"], { stdio: "ignore" }).status === 0;
}

test("Swin-T at 224 px (random weights) matches the PyTorch reference: pooled, projected, tokens, input gradient (1e-4)", async (t) => {
  if (!torchAvailable()) {
    t.skip(`${PY} cannot import torch: the full Swin-T comparison is skipped (the tiny fixture tests still ran)`);
    return;
  }
  const { spawnSync } = require("node:child_process") as typeof import("node:child_process");
  const { cacheDir, sha256File } = require("../../src/util") as typeof import("../../src/util");
  const script = path.join(__dirname, "..", "reference", "swin_reference.py");
  const dir = cacheDir("swin-reference", `swin-t-224-${sha256File(script).slice(0, 12)}`);
  if (!fs.existsSync(path.join(dir, "io.safetensors"))) {
    const r = spawnSync(PY, [script, "--config", "swin-t", "--seed", "3", "--input", "2,224,224", "--input-seed", "21", "--grad", "--out-dir", dir], { encoding: "utf8" });
    assert.equal(r.status, 0, `reference failed: ${r.stderr}`);
  }
  const ioT = readSafetensors(path.join(dir, "io.safetensors"));
  const get = (n: string) => ioT.get(n)!.data;
  await onBackend("wasm", () => {
    const before = tf.memory().numTensors;
    const cfg = { ...SWIN_T_CONFIG, depths: [...SWIN_T_CONFIG.depths], numHeads: [...SWIN_T_CONFIG.numHeads] };
    const w = readSwinWeights([path.join(dir, "weights.safetensors")], cfg, { projection: true });
    assert.deepEqual([w.report.missing, w.report.unexpected, w.report.misshaped], [[], [], []]);
    assert.equal(w.checkedIndexBuffers, 12);
    const model = new SwinModel(buildSwinParams(cfg, w.tensors, w.tensors.get(PROJECTION_KEY)));
    const x = tf.tensor4d(randomArray(2 * 224 * 224 * 3, 21), [2, 224, 224, 3]);
    const out = model.forward(x, { tokens: true, differentiable: false });
    const projected = model.project(out.pooled);
    assert.deepEqual(out.tokens!.shape, [2, 7, 7, 768]);
    assert.deepEqual(projected.shape, [2, 512]);
    const errs: Record<string, number> = {
      pooled: maxRelErr(out.pooled.dataSync(), get("pooled")),
      projected: maxRelErr(projected.dataSync(), get("projected")),
      tokens: maxRelErr(out.tokens!.dataSync(), get("tokens")),
    };
    const r = tf.tensor2d(get("grad_weights"), [2, 512]);
    const g = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(model.project(model.forward(xx as tf.Tensor4D).pooled), r)))(x);
    errs.gradInput0 = maxRelErr(g.dataSync().slice(0, 224 * 224 * 3), get("grad_input0"));
    t.diagnostic(JSON.stringify(errs));
    for (const [k, e] of Object.entries(errs)) assert.ok(e < 1e-4, `${k}: max relative error ${e.toExponential(2)}`);
    tf.dispose([x, out.pooled, out.tokens!, projected, r, g]);
    model.dispose();
    assert.equal(tf.memory().numTensors, before);
  });
});

test("kernel-setup/export_swin_weights.py --projection-only writes the seeded nn.Linear(768, 512) pbip loads", async (t) => {
  if (!torchAvailable()) {
    t.skip(`${PY} cannot import torch: the export script is not exercised`);
    return;
  }
  const { spawnSync } = require("node:child_process") as typeof import("node:child_process");
  const dir = tmpDir("pbip-swin-export-");
  const out = path.join(dir, "proj.safetensors");
  const script = path.join(__dirname, "..", "..", "kernel-setup", "export_swin_weights.py");
  const r = spawnSync(PY, [script, "imagenet", "--projection-only", "--seed", "42", "--out", out], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const side = JSON.parse(fs.readFileSync(path.join(dir, "proj.json"), "utf8")) as Record<string, unknown>;
  assert.equal(side.inputSize, 224);
  assert.deepEqual(side.mean, [0.485, 0.456, 0.406]);
  assert.match(String(side.projection), /torch\.manual_seed\(42\)/);
  // torch.manual_seed(42); nn.Linear(768, 512, bias=False).weight[0, :4], computed by torch here too.
  const expect = spawnSync(PY, ["-c", "import torch; torch.manual_seed(42); print(' '.join(repr(float(v)) for v in torch.nn.Linear(768, 512, bias=False).weight[0, :4]))"], { encoding: "utf8" });
  const first = expect.stdout.trim().split(" ").map(Number);
  const proj = readSwinProjection(out, 768);
  assert.deepEqual(proj.shape, [512, 768]);
  assert.deepEqual([...proj.data.slice(0, 4)], first.map((v) => Math.fround(v)));
  assert.ok(proj.data.every((v) => Math.abs(v) <= 1 / Math.sqrt(768)), "U(-1/sqrt(768), 1/sqrt(768))");
  assert.throws(() => readSwinProjection(out, 32), /proj\.safetensors: projection matrix is \[512, 768\], expected \[d, 32\]/);
});
