// The Mix Transformer against an independent PyTorch implementation
// (test/reference/mit_reference.py) on the same random weights, and its weight loading.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend, maxRelErr } from "../helpers";
import { readSafetensors, writeSafetensors, assertCleanLoad, type NamedTensors, type HostTensor } from "../../src/io";
import {
  buildBackbone,
  buildMiT,
  backboneStageFeatures,
  MixTransformer,
  MIT_CONFIGS,
  mitParamSpecs,
  originalToHfNames,
  hfToOriginalName,
  type MiTConfig,
} from "../../src/model/backbones";
import { tmpDir } from "../tmp";

const FIX = path.join(__dirname, "..", "fixtures", "mit");
/** The fixture's architecture: see the `tiny` entry of mit_reference.py. */
const TINY: Partial<MiTConfig> = {
  embedDims: [8, 16, 24, 32],
  numHeads: [1, 2, 3, 4],
  depths: [1, 1, 1, 1],
  srRatios: [8, 4, 2, 1],
  mlpRatios: [4, 2, 2, 2],
};

function tmpFile(name: string): string {
  return path.join(tmpDir("pbip-mit-"), name);
}

function tiny(strides: [number, number, number, number] = [4, 2, 2, 1]): MixTransformer {
  return buildMiT("mit-b0", { config: TINY, strides, seed: 3 });
}

function runStages(model: MixTransformer, input: HostTensor): Float32Array[] {
  return tf.tidy(() => {
    const x = tf.tensor4d(input.data, input.shape as [number, number, number, number]);
    return model.apply(x, false).map((t) => t.dataSync() as Float32Array);
  });
}

const io = readSafetensors(path.join(FIX, "io.safetensors"));

for (const [caseName, strides] of [
  ["release", [4, 2, 2, 1]],
  ["original", [4, 2, 2, 2]],
] as const) {
  test(`tiny MiT (strides ${strides}) matches the PyTorch reference on WASM and CPU`, async () => {
    for (const backend of ["wasm", "cpu"] as const) {
      await onBackend(backend, () => {
        const before = tf.memory().numTensors;
        const model = tiny([...strides]);
        const report = model.loadWeights(path.join(FIX, "weights.safetensors"));
        assertCleanLoad("weights.safetensors", report);
        assert.equal(report.loaded.length, model.namedVariables().size);
        const outs = tf.tidy(() => model.apply(tf.tensor4d(io.get("input")!.data, io.get("input")!.shape as [number, number, number, number]), false));
        for (let s = 0; s < 4; s++) {
          const ref = io.get(`${caseName}.stage${s + 1}`)!;
          assert.deepEqual(outs[s]!.shape, ref.shape, `stage ${s + 1} shape`);
          const err = maxRelErr(outs[s]!.dataSync(), ref.data);
          assert.ok(err < 1e-4, `${backend} stage ${s + 1}: max relative error ${err.toExponential(2)}`);
        }
        tf.dispose(outs);
        model.dispose();
        assert.equal(tf.memory().numTensors, before, "no tensors leaked");
      });
    }
  });
}

test("Hugging Face names load to the same model as the original names", async () => {
  await onBackend("wasm", () => {
    const a = tiny();
    const b = tiny();
    assertCleanLoad("weights.safetensors", a.loadWeights(path.join(FIX, "weights.safetensors")));
    const r = b.loadWeights(path.join(FIX, "weights_hf.safetensors"));
    assertCleanLoad("weights_hf.safetensors", r);
    assert.ok(r.loaded.includes("segformer.encoder.block.0.0.attention.self.key.weight"));
    assert.ok(r.loaded.includes("segformer.encoder.block.0.0.attention.self.value.weight"));
    const va = a.namedVariables();
    for (const [name, v] of b.namedVariables()) {
      assert.deepEqual(v.dataSync(), va.get(name)!.dataSync(), `${name} equal`);
    }
    const oa = runStages(a, io.get("input")!);
    const ob = runStages(b, io.get("input")!);
    for (let s = 0; s < 4; s++) assert.deepEqual(ob[s], oa[s], `stage ${s + 1} identical`);
    a.dispose();
    b.dispose();
  });
});

test("HF <-> original name mapping is a bijection on every parameter", () => {
  const model = tiny();
  for (const name of model.namedVariables().keys()) {
    const hf = originalToHfNames(name);
    assert.ok(hf.length === (name.includes(".attn.kv.") ? 2 : 1), name);
    for (const h of hf) assert.equal(hfToOriginalName(h)?.name, name, `${h} -> ${name}`);
    for (const h of originalToHfNames(name, "")) assert.equal(hfToOriginalName(h)?.name, name, `bare ${h}`);
  }
  model.dispose();
});

test("missing, unexpected and mis-shaped keys are reported by name; head.* is ignored", async () => {
  await onBackend("wasm", () => {
    const t: NamedTensors = readSafetensors(path.join(FIX, "weights.safetensors"));
    assert.ok(t.has("head.weight"), "fixture carries an ImageNet-style head");
    t.delete("block2.0.attn.kv.bias");
    t.set("block9.0.attn.extra.weight", { dtype: "float32", shape: [2], data: new Float32Array(2) });
    const q = t.get("block3.0.attn.q.weight")!;
    t.set("block3.0.attn.q.weight", { dtype: "float32", shape: [q.shape[0]! / 2, q.shape[1]! * 2], data: q.data });
    const file = tmpFile("broken.safetensors");
    writeSafetensors(file, t);
    const model = tiny();
    const r = model.loadWeights(file);
    assert.deepEqual(r.missing, ["block2.0.attn.kv.bias"]);
    assert.deepEqual(r.unexpected, ["block9.0.attn.extra.weight"]);
    assert.deepEqual(r.misshaped, ["block3.0.attn.q.weight: file [12, 48] vs model [24, 24]"]);
    assert.equal(r.loaded.length, model.namedVariables().size - 2);
    assert.throws(
      () => assertCleanLoad(file, r),
      (e: Error) =>
        e.message.includes(file) &&
        e.message.includes("block2.0.attn.kv.bias") &&
        e.message.includes("block9.0.attn.extra.weight") &&
        e.message.includes("block3.0.attn.q.weight: file [12, 48] vs model [24, 24]"),
    );
    model.dispose();
    const before = tf.memory().numTensors;
    assert.throws(() => buildMiT("mit-b0", { config: TINY, weights: file }), /block2\.0\.attn\.kv\.bias/);
    assert.equal(tf.memory().numTensors, before, "a failed build disposes its variables");
  });
});

test("a Hugging Face file with value but no key reports the HF key name", async () => {
  await onBackend("wasm", () => {
    const t = readSafetensors(path.join(FIX, "weights_hf.safetensors"));
    t.delete("segformer.encoder.block.3.0.attention.self.key.weight");
    const model = tiny();
    const r = model.loadTensors(t);
    assert.deepEqual(r.missing, ["segformer.encoder.block.3.0.attention.self.key.weight"]);
    assert.deepEqual(r.unexpected, []);
    assert.deepEqual(r.misshaped, []);
    model.dispose();
  });
});

test("stateDict writes PyTorch layouts that load back to the same variables", async () => {
  await onBackend("wasm", () => {
    const a = buildMiT("mit-b0", { config: TINY, seed: 11 });
    const file = tmpFile("roundtrip.safetensors");
    writeSafetensors(file, a.stateDict());
    const fixture = readSafetensors(path.join(FIX, "weights.safetensors"));
    const mine = readSafetensors(file);
    for (const [name, t] of mine) assert.deepEqual(t.shape, fixture.get(name)!.shape, `${name}: same PyTorch shape as the reference's`);
    const b = buildMiT("mit-b0", { config: TINY, seed: 99, weights: file });
    const vb = b.namedVariables();
    for (const [name, v] of a.namedVariables()) assert.deepEqual(vb.get(name)!.dataSync(), v.dataSync(), name);
    assert.equal(b.weightsSource, file);
    a.dispose();
    b.dispose();
  });
});

test("parameter counts equal the PyTorch module's (b0, b1, b2, without head)", () => {
  // Counted from test/reference/mit_reference.py: sum(p.numel()) excluding head.*
  const expected = { "mit-b0": 3319392, "mit-b1": 13151424, "mit-b2": 24196288 } as const;
  for (const name of Object.keys(expected) as (keyof typeof expected)[]) {
    // Counted from the spec list, without building the variables (b2 has 24M parameters).
    const n = mitParamSpecs(MIT_CONFIGS[name]).reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0);
    assert.equal(n, expected[name], name);
  }
});

test("MiT-b0 stage shapes and strides at 64x96 (release strides); buildBackbone and backboneStageFeatures", async () => {
  await onBackend("wasm", async () => {
    const before = tf.memory().numTensors;
    const bb = await buildBackbone("mit-b0");
    assert.deepEqual(bb.stageChannels, [32, 64, 160, 256]);
    assert.deepEqual(bb.stageStrides, [4, 8, 16, 16]);
    assert.equal(bb.weightsSource, "random init (seed 0)");
    const images = tf.randomUniform([2, 64, 96, 3]) as tf.Tensor4D;
    const maps = await backboneStageFeatures(bb, images);
    assert.deepEqual(
      maps.map((m) => m.shape),
      [
        [2, 16, 24, 32],
        [2, 8, 12, 64],
        [2, 4, 6, 160],
        [2, 4, 6, 256],
      ],
    );
    tf.dispose(maps);
    const byName = await backboneStageFeatures("mit-b0", images, { strides: [4, 2, 2, 2] });
    assert.deepEqual(byName[3]!.shape, [2, 2, 3, 256], "original SegFormer strides halve stage 4");
    tf.dispose(byName);
    images.dispose();
    bb.dispose();
    assert.equal(tf.memory().numTensors, before);
    await assert.rejects(buildBackbone("mit-b9" as never), /unknown backbone "mit-b9"/);
  });
});

test("stochastic depth: off in eval, seeded in training, linear rates", async () => {
  await onBackend("wasm", () => {
    const input = io.get("input")!;
    const run = (m: MixTransformer, training: boolean) =>
      tf.tidy(() => m.apply(tf.tensor4d(input.data, input.shape as [number, number, number, number]), training).map((t) => t.dataSync()));
    const a = buildMiT("mit-b0", { config: TINY, seed: 5, dropPathRate: 0.9 });
    const b = buildMiT("mit-b0", { config: TINY, seed: 5, dropPathRate: 0.9 });
    const c = buildMiT("mit-b0", { config: TINY, seed: 5, dropPathRate: 0 });
    const evalA = run(a, false);
    assert.deepEqual(run(c, false), evalA, "eval ignores the drop-path rate");
    assert.deepEqual(run(c, true), evalA, "rate 0: training equals eval");
    const trainA = run(a, true);
    assert.deepEqual(run(b, true), trainA, "same seed, same masks");
    assert.notDeepEqual(trainA[3], evalA[3], "drop path acts when training");
    a.dispose();
    b.dispose();
    c.dispose();
  });
});

// --------------------------------------------------------------- full MiT-b1
const PY = "/usr/bin/python3";
function torchAvailable(): boolean {
  if (!fs.existsSync(PY)) return false;
  const { spawnSync } = require("node:child_process") as typeof import("node:child_process");
  return spawnSync(PY, ["-c", "import torch, numpy"], { stdio: "ignore" }).status === 0;
}

test("MiT-b1 at 224 px matches the PyTorch reference module (max relative error 1e-4 per map)", async (t) => {
  if (!torchAvailable()) {
    t.skip(`${PY} cannot import torch: the full MiT-b1 comparison is skipped (the tiny fixture test still ran)`);
    return;
  }
  const { spawnSync } = require("node:child_process") as typeof import("node:child_process");
  const { cacheDir, sha256File } = require("../../src/util") as typeof import("../../src/util");
  const script = path.join(__dirname, "..", "reference", "mit_reference.py");
  const dir = cacheDir("mit-reference", `b1-224-${sha256File(script).slice(0, 12)}`);
  if (!fs.existsSync(path.join(dir, "io.safetensors"))) {
    const r = spawnSync(PY, [script, "--config", "b1", "--seed", "7", "--out-dir", dir, "--input", "1,224,224", "--case", "release:4,2,2,1"], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, `reference failed: ${r.stderr}`);
  }
  await onBackend("wasm", () => {
    const before = tf.memory().numTensors;
    const model = buildMiT("mit-b1", { weights: path.join(dir, "weights.safetensors") });
    const ref = readSafetensors(path.join(dir, "io.safetensors"));
    const outs = runStages(model, ref.get("input")!);
    const shapes = [
      [1, 56, 56, 64],
      [1, 28, 28, 128],
      [1, 14, 14, 320],
      [1, 14, 14, 512],
    ];
    for (let s = 0; s < 4; s++) {
      const r = ref.get(`release.stage${s + 1}`)!;
      assert.deepEqual(r.shape, shapes[s]);
      const err = maxRelErr(outs[s]!, r.data);
      t.diagnostic(`stage ${s + 1} ${r.shape.join("x")}: max relative error ${err.toExponential(2)}`);
      assert.ok(err < 1e-4, `stage ${s + 1}: max relative error ${err.toExponential(2)}`);
    }
    model.dispose();
    assert.equal(tf.memory().numTensors, before);
  });
});

/** The README's torch-only one-liner, read from the README, with its file names as placeholders. */
function readmeOneLiner(): string {
  const readme = fs.readFileSync(path.join(__dirname, "..", "..", "README.md"), "utf8");
  const m = /python3 -c "(import torch,json,struct[^"]+)"/.exec(readme);
  assert.ok(m, "README.md has the torch-only one-liner");
  const code = m[1]!;
  assert.ok(code.includes("'mit_b1.pth'") && code.includes("'mit_b1.safetensors'"), "the one-liner names mit_b1.pth and mit_b1.safetensors");
  return code.replace("'mit_b1.pth'", "'IN'").replace("'mit_b1.safetensors'", "'OUT'");
}

test("kernel-setup/convert_mit_pth.py and the README one-liner turn a .pth into a loadable .safetensors", async (t) => {
  if (!torchAvailable()) {
    t.skip(`${PY} cannot import torch: the .pth conversion check is skipped`);
    return;
  }
  const { spawnSync } = require("node:child_process") as typeof import("node:child_process");
  const dir = path.dirname(tmpFile("x"));
  const root = path.join(__dirname, "..", "..");
  const ref = spawnSync(PY, [path.join(root, "test/reference/mit_reference.py"), "--config", "tiny", "--out-dir", dir, "--input", "1,32,32", "--case", "a:4,2,2,1", "--pth"], { encoding: "utf8" });
  assert.equal(ref.status, 0, ref.stderr);
  const conv = spawnSync(PY, [path.join(root, "kernel-setup/convert_mit_pth.py"), path.join(dir, "weights.pth"), path.join(dir, "converted.safetensors")], { encoding: "utf8" });
  assert.equal(conv.status, 0, conv.stderr);
  const code = readmeOneLiner().replace("'IN'", `'${path.join(dir, "weights.pth")}'`).replace("'OUT'", `'${path.join(dir, "oneliner.safetensors")}'`);
  const one = spawnSync(PY, ["-c", code], { encoding: "utf8" });
  assert.equal(one.status, 0, one.stderr);
  await onBackend("wasm", () => {
    const expected = buildMiT("mit-b0", { config: TINY, weights: path.join(dir, "weights.safetensors") }).namedVariables();
    for (const file of ["converted.safetensors", "oneliner.safetensors"]) {
      const m = buildMiT("mit-b0", { config: TINY, weights: path.join(dir, file) });
      for (const [name, v] of m.namedVariables()) assert.deepEqual(v.dataSync(), expected.get(name)!.dataSync(), `${file}: ${name}`);
      m.dispose();
    }
    for (const v of expected.values()) v.dispose();
  });
});
