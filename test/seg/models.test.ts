// Stage-2 networks: output shapes and variable names of DeepLab-v3+ (MobileNetV2)
// and SegFormer (MiT), save/load, and training through the shared loop on WASM:
// a step runs, the loss falls when overfitting two patches, the tensor count
// stays flat.
import { test, before } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../src/runtime";
import { buildSegModel, loadSegModel, stage2Config, trainSegmentation, atrousRatesFor, pseudoMaskSplit, type SegModel } from "../../src/seg";
import { createLoader, openDataset } from "../../src/data";
import type { Batch, DatasetSpec } from "../../src/data/types";
import type { BatchSource, TrainEvent } from "../../src/train";
import { tinyDataset, tinySegFormer, smallDeepLab, type TinyData } from "./fixtures";
import { tmpDir } from "../tmp";

let data: TinyData;
let spec: DatasetSpec;
before(async () => {
  await initBackend({ backend: "wasm" });
  data = await tinyDataset();
  spec = data.spec;
});

function images(b: number, side: number, seed: number): tf.Tensor4D {
  return tf.randomUniform([b, side, side, 3], 0, 1, "float32", seed) as tf.Tensor4D;
}

test("deeplab-mobilenetv2 (defaults): logits [B, H, W, N+1], ASPP rates for the input size, stable names, summary, no leak", async () => {
  const model = await buildSegModel({ arch: "deeplab-mobilenetv2", classes: spec.codes, backgroundId: spec.backgroundId, inputSize: 224 });
  try {
    const c = model.config;
    assert.equal(c.numOutputs, 5);
    assert.deepEqual(c.deeplab, { asppChannels: 128, rates: atrousRatesFor(224), separable: true, lowLevelChannels: 48, decoderChannels: 128 });
    assert.deepEqual(c.normalization, { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] });
    const names = [...model.namedVariables().keys()];
    for (const n of [
      "decoder/aspp/branch0/conv/weight",
      "decoder/aspp/branch1/depthwise/weight",
      "decoder/aspp/branch3/pointwise/gn/bias",
      "decoder/aspp/pool/conv/weight",
      "decoder/aspp/project/conv/weight",
      "decoder/lowlevel/conv/weight",
      "decoder/refine1/pointwise/conv/weight",
      "decoder/classifier/bias",
    ]) {
      assert.ok(names.includes(n), `variable ${n}`);
    }
    assert.ok(names.every((n) => n.startsWith("backbone/") || n.startsWith("decoder/")));
    assert.deepEqual(model.namedVariables().get("decoder/aspp/project/conv/weight")!.shape, [1, 1, 5 * 128, 128]);
    const text = model.summaryText();
    assert.match(text, /ASPP \(rates 3\/5\/8, separable\) on stage 4 +\[14,14,128\]/);
    assert.match(text, /refine 2 x 3x3 +\[56,56,128\]/);
    const p = model.parameterCounts();
    assert.ok(p.backbone > 2e6 && p.decoder > 1e5, JSON.stringify(p));
    const before = tf.memory().numTensors;
    const x = images(2, 64, 1);
    const logits = model.forward(x);
    assert.deepEqual(logits.shape, [2, 64, 64, 5]);
    const ids = model.predictIds(x, [80, 80]);
    assert.deepEqual(ids.shape, [2, 80, 80]);
    assert.equal(ids.dtype, "int32");
    tf.dispose([x, logits, ids]);
    assert.equal(tf.memory().numTensors, before, "forward leaves no tensors");
  } finally {
    model.dispose();
  }
});

test("segformer-mit-b1 (defaults): SegFormer strides 4/8/16/32, decoder width 256, logits [B, H, W, N+1]", async () => {
  const model = await buildSegModel({ arch: "segformer-mit-b1", classes: spec.codes, backgroundId: spec.backgroundId, inputSize: 64 });
  try {
    assert.deepEqual(model.backbone.stageStrides, [4, 8, 16, 32]);
    assert.equal(model.config.segformer!.embedDim, 256);
    assert.deepEqual(model.config.segformer!.mit.embedDims, [64, 128, 320, 512]);
    assert.deepEqual(model.namedVariables().get("decoder/linear_fuse/conv/weight")!.shape, [1, 1, 1024, 256]);
    assert.deepEqual(model.namedVariables().get("decoder/linear_c4/weight")!.shape, [1, 1, 512, 256]);
    assert.ok([...model.namedVariables().keys()].some((n) => n.startsWith("backbone/") && n.includes("patch_embed")), "MiT variables under backbone/");
    assert.match(model.summaryText(), /linear_fuse 1x1 +\[16,16,256\]/);
    const x = images(1, 64, 2);
    const logits = model.forward(x);
    assert.deepEqual(logits.shape, [1, 64, 64, 5]);
    tf.dispose([x, logits]);
  } finally {
    model.dispose();
  }
});

test("save and loadSegModel give the same logits; loading a file that is not a stage-2 model names it", async () => {
  const dir = tmpDir("pbip-seg-save-");
  const model = await tinySegFormer(spec, 5);
  let loaded: SegModel | undefined;
  try {
    // Move the weights away from their initial values so loading really matters.
    for (const v of model.namedVariables().values()) tf.tidy(() => v.assign(tf.add(v, tf.randomNormal(v.shape, 0, 0.01, "float32", 9))));
    const file = path.join(dir, "m.safetensors");
    await model.save(file, { note: "test" });
    loaded = await loadSegModel(file);
    assert.deepEqual(loaded.config, model.config);
    const x = images(2, 64, 3);
    const a = model.forward(x);
    const b = loaded.forward(x);
    assert.deepEqual(await a.data(), await b.data());
    tf.dispose([x, a, b]);
    const bad = path.join(dir, "bad.safetensors");
    fs.writeFileSync(bad, "not a checkpoint");
    await assert.rejects(loadSegModel(bad), (e: Error) => e.message.includes(bad));
  } finally {
    model.dispose();
    loaded?.dispose();
  }
});

/** A source that yields the same batch (fresh tensors) `n` times per epoch: an overfit case. */
function repeatSource(host: { images: Float32Array; masks: Int32Array; b: number; side: number }, n: number): BatchSource {
  return {
    batchesPerEpoch: n,
    epoch() {
      return {
        async *[Symbol.asyncIterator]() {
          for (let i = 0; i < n; i++) {
            const batch: Batch = {
              images: tf.tensor4d(host.images, [host.b, host.side, host.side, 3]),
              labels: tf.zeros([host.b, 4]) as tf.Tensor2D,
              masks: tf.tensor3d(host.masks, [host.b, host.side, host.side], "int32"),
              ids: Array.from({ length: host.b }, (_, j) => `p${j}`),
            };
            yield batch;
          }
        },
      };
    },
  };
}

async function collect(events: AsyncIterable<TrainEvent>): Promise<TrainEvent[]> {
  const out: TrainEvent[] = [];
  for await (const ev of events) out.push(ev);
  return out;
}

test("DeepLab on WASM through the shared loop: steps run, the loss falls when overfitting 2 patches, tensor count flat", async (t) => {
  const split = pseudoMaskSplit(openDataset(data.root, { dataset: spec }).split("train"), data.pseudo);
  const loader = createLoader({ ...split, samples: split.samples.slice(0, 2) }, { batchSize: 2, shuffle: false, withMasks: true });
  let host: { images: Float32Array; masks: Int32Array; b: number; side: number } | undefined;
  for await (const b of loader.epoch(0)) {
    host = { images: Float32Array.from(await b.images.data()), masks: Int32Array.from(await b.masks!.data()), b: 2, side: 64 };
    tf.dispose([b.images, b.labels, b.masks]);
  }
  const model = await smallDeepLab(spec);
  const out = tmpDir("pbip-seg-overfit-");
  try {
    const config = stage2Config("notebook", { data: { inputSize: 64 }, train: { epochs: 1, batchSize: 2, maxSteps: 0 }, optim: { lr: 2e-3, schedule: { kind: "constant", power: 1, warmupSteps: 0 } } });
    const evs = await collect(trainSegmentation({ config, model, train: repeatSource(host!, 6), outDir: out }));
    const steps = evs.filter((e): e is Extract<TrainEvent, { type: "step" }> => e.type === "step");
    assert.equal(steps.length, 6);
    const losses = steps.map((s) => s.losses.total);
    t.diagnostic(`losses ${losses.map((l) => l.toFixed(3)).join(" ")}; tensors ${steps.map((s) => s.tensors).join(" ")}`);
    assert.ok(losses.every(Number.isFinite));
    assert.ok(losses[5]! < 0.6 * losses[0]!, `loss should fall: ${losses.map((l) => l.toFixed(3)).join(" ")}`);
    assert.equal(steps[0]!.losses.ce, steps[0]!.losses.total);
    const counts = steps.slice(1).map((s) => s.tensors);
    assert.ok(
      counts.every((n) => n === counts[0]),
      `tensor count per step: ${steps.map((s) => s.tensors).join(" ")}`,
    );
    const done = evs[evs.length - 1]!;
    assert.equal(done.type, "done");
    assert.ok(fs.existsSync(path.join(out, "best.safetensors")));
    assert.equal((JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8")) as { task: string }).task, "seg");
    // A model built for another size is refused.
    await assert.rejects(collect(trainSegmentation({ config: stage2Config("notebook"), model, train: repeatSource(host!, 1), outDir: out })), /112px/);
  } finally {
    model.dispose();
  }
});
