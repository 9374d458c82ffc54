import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { FileError } from "../../src/util/errors";
import { onBackend, maxRelErr } from "../helpers";
import { TinyBackbone, TinyEncoder } from "../tiny";
import { ClassNet } from "../../src/model/classnet";
import { buildMiT } from "../../src/model/backbones";
import { resolveConfig, type PbipConfig, type ConfigOverride } from "../../src/config/profiles";
import { PbipTask, trainClassNet, checkpointed, encoderKeepPlan, regionSurrogate, type PbipHooks } from "../../src/train/trainer";
import { foregroundContrastiveLoss } from "../../src/losses/contrastive";
import { adaptiveThreshold, foregroundBackground } from "../../src/match";
import { runTraining, TrainingDivergedError, type TrainEvent } from "../../src/train/loop";
import type { BatchSource } from "../../src/train/validate";
import type { Batch } from "../../src/data/types";
import { Rng } from "../../src/util/rng";
import { readSafetensors } from "../../src/io/safetensors";
import { tmpDir } from "../tmp";

const K = [2, 2, 2, 2];
const SIZE = 32;

function config(over: ConfigOverride = {}): PbipConfig {
  return resolveConfig(
    "release",
    {
      data: { inputSize: SIZE, normalization: "backbone" } as PbipConfig["data"],
      model: { backbone: "mobilenetv2", stages: [1, 2, 3, 4], projectionHidden: 8, scaleInit: 5 } as PbipConfig["model"],
      match: { regionMode: "image", encoderChunk: 0 } as PbipConfig["match"],
      loss: { beta: 0.5 } as PbipConfig["loss"],
      optim: { lr: 1e-2, schedule: { kind: "poly", power: 1, warmupSteps: 0 } } as PbipConfig["optim"],
      train: { epochs: 2, batchSize: 4, seed: 3, valEvery: 1, valLimit: 0, checkpointEvery: 1, maxSteps: 0 } as PbipConfig["train"],
      cam: { tta: { hflip: false, intensities: [1] } } as PbipConfig["cam"],
    },
    over,
  );
}

/** Deterministic in-memory batches: random images, labels with 1-3 classes, masks from the labels. */
function memorySource(n: number, batch: number, seed: number, poison = -1): BatchSource {
  const rng = new Rng(seed);
  const items = Array.from({ length: n }, (_, i) => {
    const img = new Float32Array(SIZE * SIZE * 3).map(() => rng.next());
    if (i === poison) img[0] = NaN;
    const label = [0, 1, 2, 3].map(() => (rng.next() < 0.5 ? 1 : 0));
    if (!label.some(Boolean)) label[rng.int(4)] = 1;
    const cls = label.flatMap((v, c) => (v ? [c] : []));
    const mask = new Int32Array(SIZE * SIZE).map((_, p) => cls[Math.floor((p % SIZE) / (SIZE / cls.length))]!);
    return { id: `p${i}`, img, label, mask };
  });
  return {
    batchesPerEpoch: Math.floor(n / batch),
    async *epoch(e: number): AsyncGenerator<Batch> {
      const order = new Rng(seed * 31 + e).shuffle(items.map((_, i) => i));
      for (let b = 0; b + batch <= n; b += batch) {
        const sel = order.slice(b, b + batch).map((i) => items[i]!);
        yield {
          images: tf.tensor4d(Float32Array.from(sel.flatMap((s) => Array.from(s.img))), [batch, SIZE, SIZE, 3]),
          labels: tf.tensor2d(sel.flatMap((s) => s.label), [batch, 4]),
          masks: tf.tensor3d(Int32Array.from(sel.flatMap((s) => Array.from(s.mask))), [batch, SIZE, SIZE], "int32"),
          ids: sel.map((s) => s.id),
        };
      }
    },
  };
}

/** A ClassNet on the tiny test backbone, or (`mitDropPath` given) on a tiny Mix Transformer with that stochastic depth. */
function tinyNet(cfg: PbipConfig, seed = 1, mitDropPath?: number): ClassNet {
  const protos = tf.tidy(() => tf.randomNormal([8, 5], 0, 1, "float32", 11) as tf.Tensor2D);
  const backbone =
    mitDropPath === undefined
      ? new TinyBackbone(seed)
      : buildMiT("mit-b0", { config: { embedDims: [8, 16, 24, 32], numHeads: [1, 2, 3, 4], depths: [2, 2, 2, 2], srRatios: [8, 4, 2, 1], mlpRatios: [2, 2, 2, 2], dropPathRate: mitDropPath }, seed });
  const net = new ClassNet({ backbone, prototypes: protos, k: K, model: cfg.model, normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] }, seed });
  protos.dispose();
  return net;
}

async function stepGradients(cfg: PbipConfig): Promise<Map<string, Float32Array>> {
  const net = tinyNet(cfg);
  const encoder = new TinyEncoder(SIZE);
  const protos = tf.tidy(() => tf.randomNormal([8, 5], 0, 1, "float32", 12) as tf.Tensor2D);
  const task = new PbipTask({ config: cfg, net, encoder, bankPrototypes: protos, backgroundId: 4 });
  const src = memorySource(8, 4, 5);
  const it = src.epoch(0)[Symbol.asyncIterator]();
  const batch = (await it.next()).value as Batch;
  const ctx = await task.prepare(batch, 0);
  const vars = task.variables();
  const counts: Record<string, number> = {};
  const { value, grads } = tf.variableGrads(() => task.loss(batch, ctx, 0, counts, {}).total, [...vars.values()]);
  if (cfg.loss.useFg) assert.ok(counts.pairs! > 0, "the case must have matching pairs");
  const byVar = new Map([...vars].map(([n, v]) => [v.name, n]));
  const out = new Map<string, Float32Array>();
  for (const [vn, g] of Object.entries(grads)) out.set(byVar.get(vn)!, Float32Array.from(await g.data()));
  out.set("loss", Float32Array.from(await value.data()));
  out.set("encoderKept", Float32Array.of(counts.encoderKept ?? -1, counts.encoderRecomputed ?? -1));
  task.release(ctx);
  tf.dispose([value, ...Object.values(grads), batch.images, batch.labels, batch.masks, protos]);
  task.dispose();
  net.dispose();
  encoder.dispose();
  return out;
}

test("two-pass chunked image mode gives the single-tape gradient and loss", async () => {
  await onBackend("cpu", () => undefined);
  const one = await stepGradients(config({ match: { encoderChunk: 0 } as PbipConfig["match"] }));
  const two = await stepGradients(config({ match: { encoderChunk: 3 } as PbipConfig["match"] }));
  assert.ok(maxRelErr(two.get("loss")!, one.get("loss")!) < 1e-5, `loss ${two.get("loss")} vs ${one.get("loss")}`);
  let checked = 0;
  for (const [name, g] of one) {
    if (name === "loss" || name === "encoderKept") continue;
    const e = maxRelErr(two.get(name)!, g);
    assert.ok(e < 1e-3, `${name}: relative error ${e}`);
    checked++;
  }
  assert.ok(checked > 10);
  // The matching losses reach the backbone: some backbone gradient differs from L_CLS alone.
  const clsOnly = await stepGradients(config({ loss: { useFg: false, useBg: false } as PbipConfig["loss"] }));
  assert.ok(maxRelErr(clsOnly.get("backbone/conv0/kernel")!, one.get("backbone/conv0/kernel")!) > 1e-3);
});

test("two-pass image mode: keeping some, all or none of the chunks' encoder activations gives the same bits", async () => {
  await onBackend("cpu", () => undefined);
  const run = (keep: number) => stepGradients(config({ match: { encoderChunk: 3, encoderKeep: keep } as PbipConfig["match"] }));
  const none = await run(0);
  const [kept0, total] = [none.get("encoderKept")![0]!, none.get("encoderKept")![0]! + none.get("encoderKept")![1]!];
  assert.equal(kept0, 0);
  assert.ok(total >= 7, `the case needs at least three chunks of 3 regions (has ${total} regions)`);
  for (const keep of [3, 6, 1000]) {
    const g = await run(keep);
    assert.equal(g.get("encoderKept")![0], Math.min(keep, total), `encoderKeep ${keep}`);
    for (const [name, v] of none) if (name !== "encoderKept") assert.deepEqual(g.get(name), v, `${name} with encoderKeep ${keep}`);
  }
});

test("checkpointed(): the enclosing gradient gets zero and records dy; vjp() then gives the encoder's input gradient, with nothing kept in between", async () => {
  await onBackend("cpu", async () => {
    const w = tf.randomNormal([3, 5], 0, 1, "float32", 2) as tf.Tensor2D;
    const enc = (x: tf.Tensor4D): tf.Tensor2D => tf.tidy(() => tf.matMul(tf.tanh(tf.mean(tf.mul(x, x), [1, 2])) as tf.Tensor2D, w));
    const x = tf.randomNormal([4, 6, 6, 3], 0, 1, "float32", 3) as tf.Tensor4D;
    const dy = tf.randomNormal([4, 5], 0, 1, "float32", 4);
    const direct = tf.grad((z: tf.Tensor) => enc(z as tf.Tensor4D))(x, dy);
    const before = tf.memory().numTensors;
    let c: ReturnType<typeof checkpointed> | undefined;
    let tensorsInForward = 0;
    const { value, grads } = tf.valueAndGrads((z: tf.Tensor) => {
      const n0 = tf.memory().numTensors;
      c = checkpointed(enc, z as tf.Tensor4D);
      tensorsInForward = tf.memory().numTensors - n0;
      return tf.sum(tf.mul(c.value, dy)) as tf.Scalar;
    })([x]);
    assert.equal(tensorsInForward, 1, "the forward pass leaves only its output (no activations)");
    assert.equal(tf.tidy(() => tf.max(tf.abs(grads[0]!)).dataSync()[0]), 0, "the enclosing gradient of x is zero");
    const gx = c!.vjp(x);
    assert.deepEqual(await gx.data(), await direct.data(), "vjp() equals the direct input gradient, bit for bit");
    assert.ok(Math.abs((await value.data())[0]! - tf.tidy(() => tf.sum(tf.mul(enc(x), dy)).dataSync()[0]!)) < 1e-5);
    c!.dispose();
    tf.dispose([value, grads[0]!, gx]);
    assert.equal(tf.memory().numTensors, before, "nothing leaks");
    tf.dispose([w, x, dy, direct]);
  });
});

for (const backend of ["cpu", "wasm"] as const) {
  test(`regionSurrogate on ${backend}: a pair-chunked rebuild in the backward pass gives autodiff's gradient through all regions, bit for bit`, async () => {
    await onBackend(backend, async () => {
      const cfg = config().match; // the release's min-max regions with the adaptive threshold
      const pairs = { image: [0, 0, 1, 2, 2, 1, 0], subclass: [1, 5, 0, 2, 7, 3, 6], cls: [0, 2, 0, 1, 3, 1, 3] };
      const P = pairs.image.length;
      const images = tf.randomUniform([3, 12, 12, 3], 0, 1, "float32", 1) as tf.Tensor4D;
      const maps = tf.randomUniform([3, 12, 12, 8], 0, 1, "float32", 2) as tf.Tensor4D;
      const gFg = tf.randomNormal([P, 12, 12, 3], 0, 1, "float32", 3) as tf.Tensor4D;
      const gBg = tf.randomNormal([P, 12, 12, 3], 0, 1, "float32", 4) as tf.Tensor4D;
      const f = (m: tf.Tensor4D) => {
        const b = adaptiveThreshold(m, cfg.delta, cfg.maxOver);
        const r = foregroundBackground(images, m, b, pairs, cfg);
        return tf.add(tf.sum(tf.mul(r.fg, gFg)), tf.sum(tf.mul(r.bg, gBg))) as tf.Scalar;
      };
      const ref = tf.valueAndGrad(f)(maps);
      const before = tf.memory().numTensors;
      for (const chunk of [1, 3, P, 0]) {
        const got = tf.valueAndGrad((m: tf.Tensor) => regionSurrogate(images, m as tf.Tensor4D, adaptiveThreshold(m as tf.Tensor4D, cfg.delta, cfg.maxOver), pairs, cfg, gFg, gBg, chunk))(maps);
        assert.ok(Math.abs(got.value.dataSync()[0]! - ref.value.dataSync()[0]!) <= 1e-4 * Math.abs(ref.value.dataSync()[0]!), `value with chunk ${chunk}`);
        assert.deepEqual(await got.grad.data(), await ref.grad.data(), `gradient with chunks of ${chunk} pairs`);
        tf.dispose([got.value, got.grad]);
        assert.equal(tf.memory().numTensors, before, `nothing leaks (chunk ${chunk})`);
      }
      assert.ok(tf.tidy(() => tf.max(tf.abs(ref.grad)).dataSync()[0]!) > 0, "the case has a gradient");
      tf.dispose([images, maps, gFg, gBg, ref.value, ref.grad]);
    });
  });
}

test("encoderKeepPlan: a number caps the kept images; auto keeps what fits the WASM heap and nothing elsewhere", () => {
  const three = encoderKeepPlan(3, "cpu", 16);
  assert.equal(three.keep(0, 3, 0), true);
  assert.equal(three.keep(3, 1, 100), false);
  assert.equal(encoderKeepPlan("auto", "tensorflow", 16).keep(0, 3, 0), false);
  const auto = encoderKeepPlan("auto", "wasm", 16);
  const MiB = 2 ** 20;
  const live = tf.memory().numBytes;
  assert.equal(auto.keep(0, 16, 0), true, "the first chunk is always kept");
  assert.equal(auto.keep(16, 16, 6 * MiB), true, "6 MiB per image: 16 images and a chunk's room fit");
  assert.equal(auto.keep(16, 16, 120 * MiB), false, "120 MiB per image: 16 images and a chunk's room (3.75 GiB) are over 90 % of 4 GiB");
  // The images of this chunk count, not a whole chunk's: a small last chunk fits where a full one would not.
  const perImage = (0.9 * 4 * 2 ** 30 - live - 128 * MiB) / 30.5;
  assert.equal(auto.keep(16, 14, perImage), true, "14 images plus a chunk of 16 fit");
  assert.equal(auto.keep(16, 16, perImage), false, "16 plus 16 do not");
});

async function train(cfg: PbipConfig, dir: string, extra: { stopAfter?: number; abortAfter?: number; abortAtStart?: boolean; val?: boolean; source?: BatchSource; valSource?: BatchSource; protoSeed?: number; hooks?: PbipHooks; mitDropPath?: number } = {}): Promise<TrainEvent[]> {
  const ctrl = new AbortController();
  if (extra.abortAtStart) ctrl.abort();
  const net = tinyNet(cfg, 1, extra.mitDropPath);
  const encoder = new TinyEncoder(SIZE);
  const protos = tf.tidy(() => tf.randomNormal([8, 5], 0, 1, "float32", extra.protoSeed ?? 12) as tf.Tensor2D);
  const events: TrainEvent[] = [];
  try {
    for await (const ev of trainClassNet({
      hooks: extra.hooks,
      config: cfg,
      net,
      encoder,
      bankPrototypes: protos,
      backgroundId: 4,
      train: extra.source ?? memorySource(16, 4, 9),
      val: extra.val === false ? undefined : (extra.valSource ?? memorySource(8, 4, 10)),
      outDir: dir,
      stopAfter: extra.stopAfter,
      signal: ctrl.signal,
    })) {
      events.push(ev);
      // As a Ctrl-C would: the abort arrives while the step is being reported.
      if (ev.type === "step" && ev.step === extra.abortAfter) ctrl.abort();
    }
  } finally {
    protos.dispose();
    net.dispose();
    encoder.dispose();
  }
  return events;
}

function tmp(name: string): string {
  return tmpDir(`pbip-${name}-`);
}

test("resuming after a stop mid-epoch reaches the same final weights as an uninterrupted run", async () => {
  await onBackend("wasm", () => undefined);
  for (const mode of ["feature", "image"] as const) {
    const cfg = config({ match: { regionMode: mode, encoderChunk: mode === "image" ? 3 : 0 } as PbipConfig["match"] });
    const a = tmp("full");
    const b = tmp("resume");
    const full = await train(cfg, a);
    const first = await train(cfg, b, { stopAfter: 6 }); // epoch 1 (4 steps) + 2 steps of epoch 2
    assert.ok(first.some((e) => e.type === "checkpoint"), "a checkpoint was written at the end of epoch 1");
    assert.equal(first.filter((e) => e.type === "step").length, 6);
    const second = await train(cfg, b);
    const start = second.find((e) => e.type === "start") as Extract<TrainEvent, { type: "start" }>;
    assert.equal(start.step, 4, "resumed from the epoch-1 checkpoint");
    const doneA = full.at(-1) as Extract<TrainEvent, { type: "done" }>;
    const doneB = second.at(-1) as Extract<TrainEvent, { type: "done" }>;
    assert.equal(doneA.step, 8);
    assert.equal(doneB.step, 8);
    const wa = readSafetensors(doneA.lastCheckpoint!);
    const wb = readSafetensors(doneB.lastCheckpoint!);
    assert.deepEqual([...wa.keys()].sort(), [...wb.keys()].sort());
    for (const [n, t] of wa) assert.deepEqual(Array.from(wb.get(n)!.data), Array.from(t.data), `${mode}: ${n} differs`);
    // Losses of the redone steps equal the uninterrupted run's.
    const la = full.filter((e) => e.type === "step").map((e) => (e as Extract<TrainEvent, { type: "step" }>).losses.total);
    const lb = [...first.filter((e) => e.type === "step").slice(0, 4), ...second.filter((e) => e.type === "step")].map((e) => (e as Extract<TrainEvent, { type: "step" }>).losses.total);
    assert.deepEqual(lb, la);
  }
});

test("an aborted run (Ctrl-C) saves its steps, mid-epoch or at an epoch's end, and its resume ends as the uninterrupted run", async () => {
  await onBackend("wasm", () => undefined);
  const cfg = config({ match: { regionMode: "feature" } as PbipConfig["match"] });
  const full = await train(cfg, tmp("abort-full"));
  const weights = (e: TrainEvent[]) => readSafetensors((e.at(-1) as Extract<TrainEvent, { type: "done" }>).lastCheckpoint!);
  const vals = (e: TrainEvent[]) => e.filter((x) => x.type === "validation").map((x) => [(x as Extract<TrainEvent, { type: "validation" }>).epoch, (x as Extract<TrainEvent, { type: "validation" }>).score.miou]);
  const losses = (e: TrainEvent[]) => e.filter((x) => x.type === "step").map((x) => (x as Extract<TrainEvent, { type: "step" }>).losses.total);
  // After step 6 (mid-epoch 2 of 4-step epochs), and after step 4 (epoch 1's last step, before its validation).
  for (const at of [6, 4]) {
    const dir = tmp(`abort-${at}`);
    const first = await train(cfg, dir, { abortAfter: at });
    const end = first.at(-1) as Extract<TrainEvent, { type: "interrupted" }>;
    assert.equal(end.type, "interrupted", `after step ${at}`);
    assert.equal(end.step, at);
    assert.equal(end.checkpoint, path.join(dir, `step-00000${at}.safetensors`), "the steps since the last checkpoint are saved");
    assert.equal(first.filter((e) => e.type === "step").length, at);
    const second = await train(cfg, dir);
    assert.equal((second[0] as Extract<TrainEvent, { type: "start" }>).step, at, "resumed where it stopped");
    assert.deepEqual([...losses(first), ...losses(second)], losses(full));
    assert.deepEqual([...vals(first), ...vals(second)], vals(full), "every epoch validated once, epoch 1 first when stopped before its validation");
    for (const [n, t] of weights(full)) assert.deepEqual(Array.from(weights(second).get(n)!.data), Array.from(t.data), `after step ${at}: ${n} differs`);
  }
  // After the last step of a run without validation: the run's end is done (checkpoint, best), not left for a resume.
  const noVal = tmp("abort-noval");
  const last = await train(cfg, noVal, { val: false, abortAfter: 8 });
  const done = last.at(-1) as Extract<TrainEvent, { type: "done" }>;
  assert.equal(done.type, "done");
  assert.ok(done.bestCheckpoint && fs.existsSync(path.join(noVal, "best.safetensors")), "best.safetensors of a finished run without validation");
  // A finished run started again and stopped at once is still finished.
  assert.equal((await train(cfg, noVal, { val: false, abortAtStart: true })).at(-1)!.type, "done");
});

test("with a Mix Transformer's stochastic depth (the release's 0.1) a resumed run still ends with the uninterrupted run's weights", async () => {
  // The trainer reseeds the backbone's drop masks every step (Backbone.setStepSeed); without it a
  // resumed run would draw other masks. Drop path 0 ends elsewhere, so the masks matter here.
  await onBackend("wasm", () => undefined);
  const cfg = config({ match: { regionMode: "feature" } as PbipConfig["match"] });
  const last = (e: TrainEvent[]) => readSafetensors((e.at(-1) as Extract<TrainEvent, { type: "done" }>).lastCheckpoint!);
  const full = last(await train(cfg, tmp("mit-full"), { val: false, mitDropPath: 0.1 }));
  const dir = tmp("mit-resume");
  await train(cfg, dir, { val: false, mitDropPath: 0.1, stopAfter: 6 });
  const resumed = last(await train(cfg, dir, { val: false, mitDropPath: 0.1 }));
  const noDrop = last(await train(cfg, tmp("mit-nodrop"), { val: false, mitDropPath: 0 }));
  let dropMatters = false;
  for (const [n, t] of full) {
    assert.deepEqual(Array.from(resumed.get(n)!.data), Array.from(t.data), `${n} differs after resume`);
    dropMatters ||= noDrop.get(n)!.data.some((v, i) => v !== t.data[i]);
  }
  assert.ok(dropMatters, "stochastic depth changed the training");
});

test("a checkpoint trained with another config or other prototypes is not resumed; the error names what differs", async () => {
  await onBackend("wasm", () => undefined);
  const cfg = config();
  const dir = tmp("mismatch");
  await train(cfg, dir, { stopAfter: 5 });
  await assert.rejects(train(cfg, dir, { protoSeed: 13 }), /step-000004\.safetensors: was trained with another prototypesSha256 \(another bank, or the bank rebuilt\); use a new output folder/);
  await assert.rejects(train({ ...cfg, loss: { ...cfg.loss, temperature: 0.5 } }, dir), /was trained with another config \(loss\.temperature\)/);
  const record = JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf8"));
  assert.equal(record.config.loss.temperature, cfg.loss.temperature, "a refused resume leaves the run's config.json as it was");
  assert.equal(record.task, "classnet");
  const resumed = await train(cfg, dir);
  assert.equal((resumed.find((e) => e.type === "start") as Extract<TrainEvent, { type: "start" }>).step, 4, "the same config and prototypes resume");
});

/** `inner`, except that batch `failBatch` of epoch `failEpoch` is a bad file (a FileError, as the loader gives). */
function failingSource(inner: BatchSource, failEpoch: number, failBatch: number): BatchSource {
  return {
    batchesPerEpoch: inner.batchesPerEpoch,
    async *epoch(e: number): AsyncGenerator<Batch> {
      let i = 0;
      for await (const b of inner.epoch(e)) {
        if (e === failEpoch && i === failBatch) {
          tf.dispose([b.images, b.labels, b.masks]);
          throw new FileError("/data/train/bad.png", "truncated or corrupt image (libpng read error)");
        }
        i++;
        yield b;
      }
    },
  };
}

test("a bad file met mid-epoch or in validation stops the run with its steps saved; fixing it and resuming gives the uninterrupted run", async () => {
  await onBackend("wasm", () => undefined);
  const cfg = config();
  const dirs = [tmp("full"), tmp("bad-train"), tmp("bad-val")];
  const full = await train(cfg, dirs[0]!);
  const doneFull = full.at(-1) as Extract<TrainEvent, { type: "done" }>;
  const weights = (f: string) => [...readSafetensors(f)].filter(([n]) => !n.startsWith("optim/")).map(([n, t]) => [n, Array.from(t.data)]);

  // Batch 2 of the second epoch is unreadable: 4 + 2 steps are trained, the last 2 not yet checkpointed.
  await assert.rejects(train(cfg, dirs[1]!, { source: failingSource(memorySource(16, 4, 9), 1, 2) }), (e: Error) =>
    e instanceof FileError && /^\/data\/train\/bad\.png: truncated or corrupt image/.test(e.message) && /the 2 step\(s\) trained since the last checkpoint were saved in .*step-000006\.safetensors: fix the problem and run again to resume from step 6\)$/.test(e.message));
  const resumed = await train(cfg, dirs[1]!);
  assert.equal((resumed[0] as Extract<TrainEvent, { type: "start" }>).step, 6);
  const done1 = resumed.at(-1) as Extract<TrainEvent, { type: "done" }>;
  assert.deepEqual(weights(done1.lastCheckpoint!), weights(doneFull.lastCheckpoint!), "the same final weights as the uninterrupted run");

  // The first validation meets a bad file: the epoch is saved, and the resumed run validates it first.
  await assert.rejects(train(cfg, dirs[2]!, { valSource: failingSource(memorySource(8, 4, 10), 0, 1) }), /starting with epoch 1's validation\)$/);
  const again = await train(cfg, dirs[2]!);
  assert.deepEqual(again.slice(0, 3).map((e) => [e.type, "step" in e ? e.step : undefined]), [["start", 4], ["validation", 4], ["checkpoint", 4]]);
  const done2 = again.at(-1) as Extract<TrainEvent, { type: "done" }>;
  assert.deepEqual(weights(done2.lastCheckpoint!), weights(doneFull.lastCheckpoint!));
  assert.equal(done2.bestMiou, doneFull.bestMiou, "the same validations, so the same best");
  assert.deepEqual(weights(done2.bestCheckpoint!), weights(doneFull.bestCheckpoint!));
});

/** `inner`, except that its `call`-th epoch() (from 0) meets a bad file at its first batch. */
function failingOnCall(inner: BatchSource, call: number): BatchSource {
  let calls = 0;
  return {
    batchesPerEpoch: inner.batchesPerEpoch,
    epoch(e: number): AsyncIterable<Batch> {
      return calls++ === call ? failingSource(inner, e, 0).epoch(e) : inner.epoch(e);
    },
  };
}

test("a run capped by maxSteps: a bad file in a batch it would not train on is never read, and a failed final validation resumes at its own epoch", async () => {
  await onBackend("wasm", () => undefined);
  const cfg = config({ train: { maxSteps: 6 } as PbipConfig["train"] }); // 2 epochs of 4 batches, capped at 6 steps
  const dirs = [tmp("cap"), tmp("cap-val")];
  const evs = await train(cfg, dirs[0]!, { source: failingSource(memorySource(16, 4, 9), 1, 2) });
  const done = evs.at(-1) as Extract<TrainEvent, { type: "done" }>;
  assert.equal(done.step, 6);
  assert.deepEqual(evs.filter((e) => e.type === "validation").map((e) => (e as Extract<TrainEvent, { type: "validation" }>).epoch), [0, 1], "both validations ran");

  await assert.rejects(train(cfg, dirs[1]!, { valSource: failingOnCall(memorySource(8, 4, 10), 1) }), /resume from step 6, starting with epoch 2's validation\)$/);
  const again = await train(cfg, dirs[1]!);
  const v = again.find((e) => e.type === "validation") as Extract<TrainEvent, { type: "validation" }>;
  assert.deepEqual([v.epoch, v.step], [1, 6], "the pending validation keeps its epoch (not step / stepsPerEpoch - 1)");
  assert.equal((again.at(-1) as Extract<TrainEvent, { type: "done" }>).bestMiou, done.bestMiou);
});

test("hooks replace eq. 4's threshold and the matching losses and add terms, in one-pass and two-pass image mode alike; their name guards resume", async () => {
  await onBackend("wasm", () => undefined);
  for (const chunk of [0, 3]) {
    const cfg = config({ match: { regionMode: "image", encoderChunk: chunk } as PbipConfig["match"] });
    const dirs = [tmp("plain"), tmp("hooked"), tmp("hooked2")];
    const firstStep = (evs: TrainEvent[]) => evs.find((e) => e.type === "step") as Extract<TrainEvent, { type: "step" }>;
    const plain = firstStep(await train(cfg, dirs[0]!, { stopAfter: 1, val: false }));
    let thresholdCalls = 0;
    const hooks: PbipHooks = {
      name: "double-fg-ones-mask-l2",
      // Every pixel foreground: b = 1.
      threshold: (m) => (thresholdCalls++, tf.onesLike(m)),
      fgLoss: (f, sub, p, o) => tf.mul(2, foregroundContrastiveLoss(f, sub, p, o)) as tf.Scalar,
      extraLoss: ({ out }) => ({ mapL2: tf.mul(1e-3, tf.mean(tf.square(out.maps[out.maps.length - 1]!))) as tf.Scalar }),
    };
    const hooked = firstStep(await train(cfg, dirs[1]!, { stopAfter: 1, val: false, hooks }));
    assert.ok(thresholdCalls >= 1, "the threshold hook was used");
    // With b = 1 everywhere, X_BG = 0: every background region is black, whatever the maps.
    const ones = firstStep(await train(cfg, dirs[2]!, { stopAfter: 1, val: false, hooks: { name: "ones", threshold: (m) => tf.onesLike(m) } }));
    assert.notEqual(ones.losses.bg, plain.losses.bg, "another mask, another L_BGS");
    assert.ok(Math.abs(hooked.losses.fg! - 2 * ones.losses.fg!) <= 1e-5 * Math.abs(ones.losses.fg!), `fgLoss hook doubles L_FGS (${hooked.losses.fg} vs 2 x ${ones.losses.fg})`);
    assert.ok(hooked.losses.mapL2! > 0, "the extra term is logged under its name");
    const expected = ones.losses.total + (hooked.losses.fg! - ones.losses.fg!) * cfg.loss.beta * cfg.loss.theta1 + hooked.losses.mapL2!;
    assert.ok(Math.abs(hooked.losses.total - expected) <= 1e-5 * Math.abs(expected), `the total adds the extra term (${hooked.losses.total} vs ${expected})`);
    // A checkpoint trained with hooks is not resumed without them (or with others).
    const d = tmp("resume-hooks");
    await train(cfg, d, { stopAfter: 5, hooks });
    await assert.rejects(train(cfg, d), /was trained with another hooks/);
  }
});

test("tensor count after 50 steps equals the count after 1 step", async () => {
  await onBackend("wasm", () => undefined);
  const cfg = config({ train: { epochs: 50, maxSteps: 50, valEvery: 100, checkpointEvery: 100 } as PbipConfig["train"], match: { regionMode: "image", encoderChunk: 3 } as PbipConfig["match"] });
  const events = await train(cfg, tmp("leak"), { val: false, source: memorySource(4, 4, 2) });
  const steps = events.filter((e) => e.type === "step") as Extract<TrainEvent, { type: "step" }>[];
  assert.equal(steps.length, 50);
  assert.equal(steps[49]!.tensors, steps[0]!.tensors, `tensors after step 1: ${steps[0]!.tensors}, after step 50: ${steps[49]!.tensors}`);
});

/** `inner`, with sample `id`'s image turned NaN from epoch `from` on. */
function poisonedFrom(inner: BatchSource, from: number, id: string): BatchSource {
  return {
    batchesPerEpoch: inner.batchesPerEpoch,
    async *epoch(e: number): AsyncGenerator<Batch> {
      for await (const b of inner.epoch(e)) {
        const j = b.ids.indexOf(id);
        if (e < from || j < 0) {
          yield b;
          continue;
        }
        const px = b.images.dataSync().slice();
        px[j * SIZE * SIZE * 3] = NaN;
        const images = tf.tensor4d(px, b.images.shape as [number, number, number, number]);
        b.images.dispose();
        yield { ...b, images };
      }
    },
  };
}

test("a non-finite loss stops the run naming the step, the batch and the last checkpoint", async () => {
  await onBackend("wasm", () => undefined);
  const cfg = config({ train: { epochs: 3 } as PbipConfig["train"] });
  const dir = tmp("nan");
  // Sample 13 turns NaN in epoch 2 (index 1): the run stops at the step of the batch that holds it
  // there, found from the source's own seeded order, with epoch 1's checkpoint (step 4) the last good one.
  const order = new Rng(9 * 31 + 1).shuffle(Array.from({ length: 16 }, (_, i) => i));
  const wantStep = 4 + Math.floor(order.indexOf(13) / 4) + 1;
  await assert.rejects(
    () => train(cfg, dir, { val: false, source: poisonedFrom(memorySource(16, 4, 9), 1, "p13") }),
    (e: unknown) => {
      assert.ok(e instanceof TrainingDivergedError, String(e));
      assert.equal(e.step, wantStep);
      assert.ok(e.ids.includes("p13"), `ids ${e.ids}`);
      assert.equal(e.lastCheckpoint, path.join(dir, "step-000004.safetensors"));
      assert.ok(fs.existsSync(e.lastCheckpoint));
      assert.match(e.message, new RegExp(`training diverged at step ${wantStep}: .*p13.*last good checkpoint: .*step-000004\\.safetensors`));
      return true;
    },
  );
});

/** A one-variable task whose validation scores are scripted per epoch (its loss, (w - 3)^2, ignores the batch). */
class ScriptedTask {
  readonly name = "scripted";
  readonly w = tf.variable(tf.scalar(0));
  constructor(private readonly scores: number[]) {}
  variables(): Map<string, tf.Variable> {
    return new Map([["w", this.w]]);
  }
  loss(): { total: tf.Scalar; terms: Record<string, tf.Scalar> } {
    return { total: tf.square(tf.sub(this.w, 3)) as tf.Scalar, terms: {} };
  }
  validate(_s: BatchSource, epoch: number): Promise<{ miou: number }> {
    return Promise.resolve({ miou: this.scores[epoch]! });
  }
}

test("best checkpoint: the epoch of the highest val mIoU, also across a resume; the done event names it", async () => {
  await onBackend("wasm", () => undefined);
  // Epoch 1 best; epoch 3 lower than epoch 1 but higher than epoch 2 (a best reset on resume would
  // take it); epoch 4 the new best.
  const scores = [0.5, 0.3, 0.45, 0.7];
  const cfg = config({ train: { epochs: 4 } as PbipConfig["train"] });
  const run = async (dir: string, stopAfter?: number) => {
    const task = new ScriptedTask(scores);
    const seen: { epoch: number; best?: boolean; ckpt?: Buffer; bestFile?: Buffer }[] = [];
    let done: Extract<TrainEvent, { type: "done" }> | undefined;
    try {
      for await (const ev of runTraining(task as never, { config: cfg, train: memorySource(16, 4, 9), val: memorySource(8, 4, 10), outDir: dir, stopAfter })) {
        if (ev.type === "validation") seen.push({ epoch: ev.epoch, best: ev.best });
        if (ev.type === "checkpoint") {
          const at = seen.find((x) => x.epoch === ev.epoch)!;
          at.ckpt = fs.readFileSync(ev.file);
          at.bestFile = fs.readFileSync(path.join(dir, "best.safetensors"));
        }
        if (ev.type === "done") done = ev;
      }
    } finally {
      task.w.dispose();
    }
    return { seen, done };
  };
  const full = await run(tmp("best-full"));
  assert.deepEqual(full.seen.map((x) => x.best), [true, false, false, true]);
  const e1 = full.seen[0]!.ckpt!;
  assert.ok(full.seen[1]!.bestFile!.equals(e1) && full.seen[2]!.bestFile!.equals(e1), "best.safetensors stays epoch 1's checkpoint through epochs 2 and 3");
  assert.ok(full.seen[3]!.bestFile!.equals(full.seen[3]!.ckpt!), "epoch 4's checkpoint becomes best.safetensors");
  assert.equal(full.done!.bestMiou, 0.7);
  assert.ok(full.done!.bestCheckpoint!.endsWith("best.safetensors"));
  // Stopped in epoch 3 (after 9 steps), then resumed: the best score of epochs 1-2 is remembered.
  const dir = tmp("best-resume");
  const first = await run(dir, 9);
  assert.deepEqual(first.seen.map((x) => x.best), [true, false]);
  const second = await run(dir);
  assert.deepEqual(second.seen.map((x) => [x.epoch, x.best]), [[2, false], [3, true]]);
  assert.ok(second.seen[0]!.bestFile!.equals(first.seen[0]!.ckpt!), "after the resume, best.safetensors is still epoch 1's");
  assert.equal(second.done!.bestMiou, 0.7);
});

test("validation each epoch: events carry the pseudo-mask mIoU and the best checkpoint is kept", async () => {
  await onBackend("wasm", () => undefined);
  const dir = tmp("val");
  const events = await train(config({ train: { epochs: 2 } as PbipConfig["train"] }), dir);
  const vals = events.filter((e) => e.type === "validation") as Extract<TrainEvent, { type: "validation" }>[];
  assert.equal(vals.length, 2);
  for (const v of vals) assert.ok(v.score.miou >= 0 && v.score.miou <= 1);
  assert.ok(fs.existsSync(path.join(dir, "best.safetensors")));
  assert.ok(fs.existsSync(path.join(dir, "config.json")));
  // One log line per step and one per validation, each with the score the event carried.
  const log = fs.readFileSync(path.join(dir, "train-log.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { type: string; score?: { miou: number } });
  assert.equal(log.filter((l) => l.type === "step").length, 8);
  assert.deepEqual(log.filter((l) => l.type === "validation").map((l) => l.score!.miou), vals.map((v) => v.score.miou));
  void runTraining;
});
