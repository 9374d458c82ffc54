// Stage-2 training on pseudo-masks through the shared loop: the pseudo-mask split
// adapter, per-epoch validation against ground truth, and resume (stop after k
// steps, resume, same final weights as an uninterrupted run).
import { test, before } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { initBackend } from "../../src/runtime";
import { openDataset, readMask } from "../../src/data";
import { readSafetensors } from "../../src/io";
import { openSegData, pseudoMaskSplit, stage2Config, STAGE2_EPOCHS, trainSegmentation, loadSegModel, buildSegModel, IGNORE_ID } from "../../src/seg";
import { PROFILES, resolveConfig } from "../../src/config/profiles";
import { readTrainLog } from "../../src/pipeline/stages";
import type { TrainEvent } from "../../src/train";
import { tinyDataset, tinySegFormer, TINY_MIT, type TinyData } from "./fixtures";
import { tmpDir } from "../tmp";

let data: TinyData;
before(async () => {
  await initBackend({ backend: "wasm" });
  data = await tinyDataset();
});

const config = () => stage2Config("notebook", { data: { inputSize: 64 }, train: { epochs: 2, batchSize: 2, valLimit: 0 } });

async function run(o: Parameters<typeof trainSegmentation>[0]): Promise<TrainEvent[]> {
  const out: TrainEvent[] = [];
  for await (const ev of trainSegmentation(o)) out.push(ev);
  return out;
}

test("pseudoMaskSplit pairs each training patch with <stem>.png and names missing masks", () => {
  const train = openDataset(data.root, { dataset: data.spec }).split("train");
  const s = pseudoMaskSplit(train, data.pseudo);
  assert.equal(s.samples.length, 4);
  for (const x of s.samples) assert.equal(x.maskPath, path.join(path.resolve(data.pseudo), x.id.replace(/\.png$/, ".png")));
  assert.equal(s.dataset.palette.length, 256, "padded so the ignore id 255 loads");
  const partial = tmpDir("pbip-seg-partial-");
  fs.copyFileSync(path.join(data.pseudo, fs.readdirSync(data.pseudo)[0]!), path.join(partial, fs.readdirSync(data.pseudo)[0]!));
  assert.throws(() => pseudoMaskSplit(train, partial), (e: Error) => e.message.includes(partial) && /no pseudo-mask for 3 of 4/.test(e.message));
  fs.rmSync(partial, { recursive: true, force: true });
});

// Stochastic depth off here to keep the case small; the MiT backbone reseeds its drop
// masks per step (Backbone.setStepSeed), so resume is exact with drop path > 0 too.
test("SegTask: validation each epoch (count-bg mIoU on val ground truth); resumed run ends with the uninterrupted run's weights", async () => {
  const base = tmpDir("pbip-seg-resume-");
  const cfg = config();
  const sd = openSegData({ data: data.root, dataset: data.spec, pseudo: data.pseudo, config: cfg });
  assert.equal(sd.train.batchesPerEpoch, 2);
  assert.ok(sd.val, "val loader");
  // Uninterrupted: 2 epochs x 2 steps.
  const m1 = await tinySegFormer(data.spec, 1, 0);
  const full = await run({ config: cfg, model: m1, train: sd.train, val: sd.val, outDir: path.join(base, "full"), maskSource: sd.pseudoDir });
  m1.dispose();
  const vals = full.filter((e): e is Extract<TrainEvent, { type: "validation" }> => e.type === "validation");
  assert.equal(vals.length, 2);
  for (const v of vals) {
    assert.ok(v.score.miou >= 0 && v.score.miou <= 1, `miou ${v.score.miou}`);
    assert.equal(v.score.convention, "count-bg");
    assert.equal(v.score.patches, 2);
  }
  const steps = full.filter((e): e is Extract<TrainEvent, { type: "step" }> => e.type === "step");
  assert.equal(steps.length, 4);
  assert.ok(steps.slice(1).every((s) => s.tensors === steps[1]!.tensors), `tensors ${steps.map((s) => s.tensors)}`);

  // Interrupted after 3 steps (the epoch-1 checkpoint exists), then resumed with a fresh model.
  const part = path.join(base, "part");
  const m2 = await tinySegFormer(data.spec, 1, 0);
  const first = await run({ config: cfg, model: m2, train: sd.train, val: sd.val, outDir: part, stopAfter: 3 });
  m2.dispose();
  assert.equal(first.filter((e) => e.type === "step").length, 3);
  const m3 = await tinySegFormer(data.spec, 1, 0);
  const second = await run({ config: cfg, model: m3, train: sd.train, val: sd.val, outDir: part });
  m3.dispose();
  const start = second[0] as Extract<TrainEvent, { type: "start" }>;
  assert.equal(start.step, 2);
  assert.ok(start.resumedFrom?.endsWith("step-000002.safetensors"));
  assert.equal(second.filter((e) => e.type === "step").length, 2);

  const a = readSafetensors(path.join(base, "full", "step-000004.safetensors"));
  const b = readSafetensors(path.join(part, "step-000004.safetensors"));
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  let compared = 0;
  for (const [k, t] of a) {
    assert.deepEqual(b.get(k)!.data, t.data, `${k} differs after resume`);
    if (k.startsWith("backbone/") || k.startsWith("decoder/")) compared++;
  }
  assert.ok(compared > 20);

  // best.safetensors restores as a model; the train log has one line per step and one per
  // validation, in order, the killed run's tail dropped on resume.
  const best = await loadSegModel(path.join(part, "best.safetensors"));
  assert.equal(best.config.arch, "segformer-mit-b0");
  best.dispose();
  const lines = fs.readFileSync(path.join(part, "train-log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; step: number; score?: { miou: number } });
  assert.deepEqual(lines.map((l) => `${l.type}@${l.step}`), ["step@1", "step@2", "validation@2", "step@3", "step@4", "validation@4"]);
  const logged = readTrainLog(part);
  assert.equal(logged.steps.length, 4);
  const evVals = [...first, ...second].filter((e): e is Extract<TrainEvent, { type: "validation" }> => e.type === "validation");
  assert.deepEqual(logged.validations.map((v) => [v.epoch, v.score.miou]), evVals.map((v) => [v.epoch, v.score.miou]));

  // Resuming with another model is refused, naming the checkpoint.
  const other = await buildSegModel({ arch: "segformer-mit-b0", classes: data.spec.codes, backgroundId: data.spec.backgroundId, inputSize: 64, segformer: { embedDim: 8, mit: { ...TINY_MIT, dropPathRate: 0 } } });
  await assert.rejects(run({ config: cfg, model: other, train: sd.train, outDir: part }), /step-000004\.safetensors: was written with another model/);
  other.dispose();
});

test("stochastic depth and resume: with drop path 0.1 a resumed run still ends with the uninterrupted run's weights", async () => {
  // SegTask reseeds the backbone's drop masks every step (Backbone.setStepSeed), so a resumed run
  // draws the masks the uninterrupted one drew; without the reseed they would follow the process's
  // random state and differ after resume. test/model/mit-stepseed.test.ts checks the masks follow the seed.
  const base = tmpDir("pbip-seg-droppath-");
  const cfg = config();
  const sd = openSegData({ data: data.root, dataset: data.spec, pseudo: data.pseudo, config: cfg });
  const weightsAfter = async (dir: string, dropPathRate: number | undefined, stops: (number | undefined)[]) => {
    for (const stopAfter of stops) {
      const m = await tinySegFormer(data.spec, 1, dropPathRate);
      if (dropPathRate === undefined) assert.equal(m.config.segformer!.mit.dropPathRate, 0.1, "SegFormer's default drop path");
      await run({ config: cfg, model: m, train: sd.train, outDir: dir, stopAfter });
      m.dispose();
    }
    return readSafetensors(path.join(dir, "step-000004.safetensors"));
  };
  const full = await weightsAfter(path.join(base, "full"), undefined, [undefined]);
  const resumed = await weightsAfter(path.join(base, "part"), undefined, [3, undefined]);
  const noDrop = await weightsAfter(path.join(base, "nodrop"), 0, [undefined]);
  let differsWithoutDropPath = false;
  for (const [k, t] of full) {
    assert.deepEqual(resumed.get(k)!.data, t.data, `${k} differs after resume`);
    if (!differsWithoutDropPath && noDrop.get(k)!.data.some((v, i) => v !== t.data[i])) differsWithoutDropPath = true;
  }
  assert.ok(differsWithoutDropPath, "stochastic depth changed the training (else the comparison above would not test it)");
});

test("freezeBackbone: the decoder trains, the backbone keeps its weights, checkpoints still hold every variable", async () => {
  const base = tmpDir("pbip-seg-frozen-");
  const cfg = stage2Config("notebook", { data: { inputSize: 64 }, train: { epochs: 1, batchSize: 2 } });
  const sd = openSegData({ data: data.root, dataset: data.spec, pseudo: data.pseudo, config: cfg });
  const model = await tinySegFormer(data.spec, 3, 0.1);
  try {
    const before = new Map([...model.namedVariables()].map(([n, v]) => [n, v.dataSync().slice()]));
    const evs = await run({ config: cfg, model, train: sd.train, outDir: base, freezeBackbone: true });
    const steps = evs.filter((e): e is Extract<TrainEvent, { type: "step" }> => e.type === "step");
    assert.equal(steps.length, 2);
    assert.ok(steps[0]!.seconds.prepare > 0, "backbone runs in prepare");
    for (const [n, v] of model.namedVariables()) {
      const same = v.dataSync().every((x, i) => x === before.get(n)![i]);
      if (n.startsWith("backbone/")) assert.ok(same, `${n} must not change`);
    }
    assert.ok([...model.namedVariables()].some(([n, v]) => n.startsWith("decoder/") && v.dataSync().some((x, i) => x !== before.get(n)![i])), "the decoder trains");
    const ckpt = readSafetensors(path.join(base, "step-000002.safetensors"));
    assert.ok([...model.namedVariables().keys()].every((n) => ckpt.has(n)), "every variable checkpointed");
    // Resuming with the backbone unfrozen is refused.
    await assert.rejects(run({ config: cfg, model, train: sd.train, outDir: base }), /freezeBackbone/);
  } finally {
    model.dispose();
  }
});

test("running out of WASM memory in a step is explained (heap limit, what to shrink, restart)", async () => {
  const base = tmpDir("pbip-seg-oom-");
  const model = await tinySegFormer(data.spec, 3, 0);
  try {
    const failing = {
      batchesPerEpoch: 1,
      epoch: () => ({
        async *[Symbol.asyncIterator]() {
          // What the WASM backend throws when its heap cannot grow.
          const wasm = (globalThis as unknown as { WebAssembly: { RuntimeError: new (m: string) => Error } }).WebAssembly;
          throw new wasm.RuntimeError("memory access out of bounds");
        },
      }),
    };
    const cfg = stage2Config("notebook", { data: { inputSize: 64 } });
    await assert.rejects(run({ config: cfg, model, train: failing as never, outDir: base }), /ran out of memory.*batch 8 x 64px.*4 GiB.*--freeze-backbone.*restart/);
  } finally {
    model.dispose();
  }
});

test("a pseudo-mask id that is neither class, background nor 255 stops training, naming the file; 255 is accepted", async () => {
  const base = tmpDir("pbip-seg-badid-");
  const pseudo = path.join(base, "pseudo");
  fs.cpSync(data.pseudo, pseudo, { recursive: true });
  const names = fs.readdirSync(pseudo).sort();
  // Grey PNGs carry their ids as written: one mask with ignore pixels, one with id 9.
  const m0 = readMask(path.join(pseudo, names[0]!), data.spec);
  const ids0 = Uint8Array.from(m0.ids);
  ids0.fill(IGNORE_ID, 0, 64 * 8);
  fs.writeFileSync(path.join(pseudo, names[0]!), await greyPng(ids0, 64, 64));
  const cfg = stage2Config("notebook", { data: { inputSize: 64, augment: { hflip: false, vflip: false, rot90: false } }, train: { epochs: 1, batchSize: 4 } });
  const sd = openSegData({ data: data.root, dataset: data.spec, pseudo, config: cfg });
  const model = await tinySegFormer(data.spec, 2);
  try {
    const evs = await run({ config: cfg, model, train: sd.train, outDir: path.join(base, "ok"), maskSource: sd.pseudoDir });
    assert.ok(evs.some((e) => e.type === "step"), "255 pixels are skipped, training runs");
    const ids1 = Uint8Array.from(readMask(path.join(pseudo, names[1]!), data.spec).ids);
    ids1[100] = 9;
    fs.writeFileSync(path.join(pseudo, names[1]!), await greyPng(ids1, 64, 64));
    await assert.rejects(run({ config: cfg, model, train: sd.train, outDir: path.join(base, "bad"), maskSource: sd.pseudoDir }), (e: Error) => e.message.includes(names[1]!) && /mask id 9/.test(e.message));
  } finally {
    model.dispose();
  }
  // The grey PNG really carries the ignore ids (the loader reads grey values as ids).
  assert.equal(readMask(path.join(pseudo, names[0]!), undefined).ids[0], IGNORE_ID);
});

/** An 8-bit grey PNG (ids as grey values, so ids outside the palette survive), written by sharp. */
function greyPng(ids: Uint8Array, w: number, h: number): Promise<Buffer> {
  return sharp(Buffer.from(ids), { raw: { width: w, height: h, channels: 1 } }).toColourspace("b-w").png().toBuffer();
}

test("stage2Config: the notebook profile trains stage 2 for STAGE2_EPOCHS.notebook epochs (stage 1: 1), from a name or a resolved config; overrides still win", () => {
  assert.equal(PROFILES.notebook!.train.epochs, 1);
  assert.equal(stage2Config("notebook").train.epochs, STAGE2_EPOCHS.notebook);
  assert.equal(stage2Config(resolveConfig("notebook", { train: { maxSteps: 6 } as never })).train.epochs, STAGE2_EPOCHS.notebook);
  assert.equal(stage2Config(resolveConfig("notebook", { train: { maxSteps: 6 } as never })).train.maxSteps, 6);
  assert.equal(stage2Config("notebook", { train: { epochs: 2 } as never }).train.epochs, 2);
  assert.equal(stage2Config("release").train.epochs, PROFILES.release!.train.epochs);
  assert.equal(stage2Config("notebook").profile, "notebook+stage2");
  assert.equal(stage2Config(stage2Config("notebook")).train.epochs, STAGE2_EPOCHS.notebook);
});
