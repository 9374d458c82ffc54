// The paper and release profiles train as shipped, at a small size: MiT-b0 on 64 px patches, two
// steps, a Swin-T with seeded random weights in place of the weights file each names (MedCLIP's
// vision tower, the release's ImageNet Swin-T + projection), the `image` region mode through it.
// The paper profile once could not start (an ONNX encoder in the image mode); each step's total is
// checked against the profile's own formula, L = a*L_CLS + b*(t1*L_FGS + t2*L_BGS + w*mean(M4)),
// with L_CLS the stage-weighted sum of the per-stage terms.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend } from "../helpers";
import { tmpDir } from "../tmp";
import { resolveConfig } from "../../src/config/profiles";
import { createSwinEncoder } from "../../src/encoders/swin";
import { generateSynthetic, syntheticManifest } from "../../src/data/synthetic/generate";
import { openDataset } from "../../src/data/dataset";
import { buildBank, prototypesTensor } from "../../src/bank";
import { createClassNet, createEncoderFor, stage1Loaders } from "../../src/pipeline/core";
import { trainClassNet } from "../../src/train/trainer";
import type { TrainEvent } from "../../src/train/loop";

for (const profile of ["paper", "release"] as const) {
  test(`the ${profile} profile trains as shipped (small): finite losses, its loss formula, pairs matched, a validation`, { timeout: 300_000 }, async () => {
    await onBackend("wasm", () => undefined);
    const before = tf.memory().numTensors;
    const dir = tmpDir(`pbip-${profile}-train-`);
    await generateSynthetic({ out: path.join(dir, "data"), train: 48, val: 4, test: 2, size: 64, seed: 3, workers: 1 });
    const ds = openDataset(path.join(dir, "data"), { dataset: syntheticManifest() });
    const cfg = resolveConfig(profile, { data: { inputSize: 64 }, model: { backbone: "mit-b0" }, train: { epochs: 1, batchSize: 2, maxSteps: 2, valLimit: 4 }, bank: { k: 2, nK: 3 } });
    assert.equal(cfg.match.regionMode, "image");
    // The encoder the profile names is a Swin-T (here without its weights file); a random one stands in.
    assert.equal(cfg.encoder.name, "swin-t");
    if (profile === "paper" && !fs.existsSync(cfg.encoder.weights!)) await assert.rejects(createEncoderFor(cfg), /swin-t-medclip\.safetensors: file not found/);
    const enc = await createSwinEncoder({ randomSeed: 1 });
    assert.ok(enc.differentiable);
    const { bank } = await buildBank({ split: ds.split("train"), encoder: enc, config: cfg.bank });
    const net = await createClassNet(cfg, bank, ds.spec);
    const { train, val } = stage1Loaders(ds, cfg);
    const protos = prototypesTensor(bank);
    const events: TrainEvent[] = [];
    try {
      for await (const ev of trainClassNet({ config: cfg, net, encoder: enc, bankPrototypes: protos, backgroundId: ds.spec.backgroundId, train, val, outDir: path.join(dir, "run") })) events.push(ev);
    } finally {
      protos.dispose();
      net.dispose();
      enc.dispose();
    }
    const steps = events.filter((e): e is Extract<TrainEvent, { type: "step" }> => e.type === "step");
    assert.equal(steps.length, 2);
    const L = cfg.loss;
    for (const s of steps) {
      const l = s.losses as Record<string, number>;
      for (const [k, v] of Object.entries(l)) assert.ok(Number.isFinite(v), `step ${s.step}: ${k} = ${v}`);
      const cls = cfg.model.stages.reduce((a, st) => a + L.stageWeights[st - 1]! * l[`cls_stage${st}`]!, 0);
      assert.ok(Math.abs(l.cls! - cls) <= 1e-5 * Math.abs(cls), `step ${s.step}: L_CLS ${l.cls} vs stage-weighted ${cls}`);
      const total = L.alpha * l.cls! + L.beta * (L.theta1 * l.fg! + L.theta2 * l.bg! + L.camRegWeight * l.camReg!);
      assert.ok(Math.abs(l.total! - total) <= 1e-5 * Math.abs(total), `step ${s.step}: total ${l.total} vs the ${profile} formula ${total}`);
    }
    assert.ok(steps.some((s) => (s.counts.pairs ?? 0) > 0), "foreground/background pairs were matched");
    const v = events.find((e): e is Extract<TrainEvent, { type: "validation" }> => e.type === "validation");
    assert.ok(v && v.score.miou >= 0 && v.score.miou <= 1, "validated");
    assert.equal(events.at(-1)!.type, "done");
    assert.equal(tf.memory().numTensors, before, "no tensors left");
  });
}
