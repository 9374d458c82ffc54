import { test } from "node:test";
import assert from "node:assert/strict";
import { PROFILES, RELEASE, PAPER, NOTEBOOK, resolveConfig, parseSetOverrides, formatConfigDiff, diffConfigs, configProblems, upgradeStoredConfig, upgradeStoredCam, type PbipConfig } from "../../src/config";
import { resumeMismatch } from "../../src/train/loop";

test("the three profiles are valid configs and carry METHOD.md section 6's values where they differ", () => {
  for (const [name, p] of Object.entries(PROFILES)) assert.deepEqual(configProblems(p), [], name);
  assert.deepEqual([RELEASE.loss.temperature, PAPER.loss.temperature], [0.07, 1]);
  assert.deepEqual([RELEASE.match.delta, PAPER.match.delta], [0.5, 0.15]);
  assert.deepEqual([RELEASE.optim.lr, PAPER.optim.lr], [5e-5, 1e-5]);
  assert.deepEqual([RELEASE.loss.beta, PAPER.loss.beta, RELEASE.loss.theta2, PAPER.loss.theta2], [0.1, 0.5, 1, 0.5]);
  assert.deepEqual(RELEASE.loss.stageWeights, [0, 0.1, 1, 1]);
  assert.deepEqual([RELEASE.train.epochs, PAPER.train.epochs, NOTEBOOK.train.epochs], [8, 10, 1]);
  // Section 2.1: the release has no white filter; the paper's is unspecified (pbip uses the peers').
  assert.deepEqual([RELEASE.bank.whiteMaxFraction, PAPER.bank.whiteMaxFraction, NOTEBOOK.bank.whiteMaxFraction], [1, 0.5, 0.5]);
});

test("every profile can train as shipped: the image region mode names an encoder TF.js can differentiate", () => {
  // The trainer refuses a non-differentiable encoder (ONNX) in the image mode; the paper profile
  // once named an ONNX MedCLIP there and could not start.
  for (const [name, p] of Object.entries(PROFILES)) {
    if (p.match.regionMode !== "image" || !(p.loss.useFg || p.loss.useBg)) continue;
    assert.ok(!/^onnx:|\.onnx$/.test(p.encoder.name), `${name}: encoder ${p.encoder.name} in the image region mode`);
  }
  assert.deepEqual([PAPER.match.regionMode, PAPER.encoder.name, PAPER.encoder.weights], ["image", "swin-t", "weights/swin-t-medclip.safetensors"]);
});

test("overrides spread section by section; a config diff lists every changed leaf, labelled", () => {
  const a = resolveConfig("notebook");
  const b = resolveConfig("notebook", { loss: { temperature: 1 } as never }, { train: { epochs: 2 } as never });
  assert.equal(b.loss.beta, a.loss.beta, "keys not overridden keep the profile's value");
  assert.deepEqual(diffConfigs(a, b).map((d) => [d.path, d.a, d.b]), [["loss.temperature", 0.07, 1], ["train.epochs", 1, 2]]);
  assert.equal(formatConfigDiff(a, b, ["base", "t1"]), ["base -> t1", "  loss.temperature  0.07 -> 1", "  train.epochs      1 -> 2"].join("\n"));
  assert.match(formatConfigDiff(a, b), /^notebook -> notebook\n/, "without labels, the profile names");
  assert.equal(formatConfigDiff(a, a), "notebook and notebook: identical");
});

test("a value a key does not take is an error naming the key and what it takes, from resolveConfig and from --set", () => {
  assert.throws(() => resolveConfig("notebook", { train: { epochs: 0 } as never }), /train\.epochs takes an integer of at least 1, got 0/);
  assert.throws(() => resolveConfig("release", { loss: { temperature: -1 } as never, cam: { gate: "labels" } as never }), /loss\.temperature takes a positive number, got -1; cam\.gate takes one of "gt", "pred", got "labels"/);
  const set = (s: string) => () => parseSetOverrides([s], PROFILES["notebook"]);
  assert.throws(set("train.epochs=abc"), /^Error: --set train\.epochs=abc: train\.epochs takes an integer of at least 1, got "abc"$/);
  assert.throws(set("loss.useFg=maybe"), /loss\.useFg takes true or false, got "maybe"/);
  assert.throws(set("data.augment.rot90=1"), /data\.augment\.rot90 takes true or false, got 1/);
  assert.throws(set("train=5"), /--set train=5: train\.epochs takes an integer of at least 1, got nothing/);
  assert.throws(set("data=null"), /--set data=null: data\.inputSize takes/);
  assert.throws(set("match.delta=1.5"), /match\.delta takes a fraction from 0 to 1, got 1\.5/);
  assert.throws(set("optim.betas=[0.9]"), /optim\.betas takes two numbers/);
  assert.deepEqual(parseSetOverrides(["train.epochs=3", "loss.useBg=false", "cam.tta.intensities=[0.9,1]"], PROFILES["notebook"]), { train: { epochs: 3 }, loss: { useBg: false }, cam: { tta: { intensities: [0.9, 1] } } });
});

test("overrides type-check at any depth, without casts, and merge key by key", () => {
  const c = resolveConfig("notebook", { cam: { background: { mode: "power" } }, loss: { temperature: 1 } });
  assert.equal(c.cam.background.mode, "power");
  assert.equal(c.cam.background.whiteGrey, NOTEBOOK.cam.background.whiteGrey, "the section's other keys stay");
  assert.equal(c.loss.temperature, 1);
});

test("a config stored before cam.merge existed compares equal to today's (it merged by softmax); another merge does not", () => {
  const now = resolveConfig("release");
  const old = JSON.parse(JSON.stringify(now)) as PbipConfig;
  delete (old.cam as Partial<PbipConfig["cam"]>).merge;
  assert.deepEqual(upgradeStoredConfig(old), now);
  assert.equal(resumeMismatch({ config: old }, now), undefined, "a run written before the key resumes");
  assert.match(resumeMismatch({ config: old }, resolveConfig("release", { cam: { merge: "mean" } })) ?? "", /another config \(cam\.merge\)/);
  assert.equal((old.cam as Partial<PbipConfig["cam"]>).merge, undefined, "the stored object is not changed");
  assert.deepEqual(upgradeStoredCam(old.cam), now.cam, "a stored cam section alone (pseudo-mask stamps)");
});
