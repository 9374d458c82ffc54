// Learning-rate schedules: values worked by hand, validation, and PyTorch's LambdaLR
// with the release's poly + warm-up schedule (test/fixtures/optim/adamw.json).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { lrFactor, learningRate, learningRates, warmupSteps, type LrSchedule } from "../../src/train/schedule";
import { UsageError } from "../../src/util/errors";

const near = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);

test("poly decay, by hand (release: power 1, counted from step 0)", () => {
  const s: LrSchedule = { kind: "poly", maxSteps: 10 };
  near(lrFactor(s, 0), 1, "step 0");
  near(lrFactor(s, 5), 0.5, "step 5");
  near(lrFactor(s, 9), 0.1, "step 9: the last update of 10 still moves");
  near(lrFactor(s, 10), 0, "step 10");
  near(lrFactor(s, 99), 0, "past the end");
  near(lrFactor({ kind: "poly", maxSteps: 10, power: 2 }, 5), 0.25, "power 2");
  near(learningRate(5e-5, s, 5), 2.5e-5, "learningRate = base * factor");
});

test("linear warm-up from startFactor, then the undelayed poly curve", () => {
  const s: LrSchedule = { kind: "poly", maxSteps: 10, warmup: { steps: 4, startFactor: 0.1 } };
  near(lrFactor(s, 0), 0.1, "step 0 = startFactor");
  near(lrFactor(s, 2), 0.1 + 0.9 * 0.5, "half-way: 0.55");
  near(lrFactor(s, 3), 0.1 + 0.9 * 0.75, "step 3: 0.775");
  near(lrFactor(s, 4), 0.6, "step 4 = poly's 1 - 4/10");
  assert.equal(warmupSteps(s), 4);
  // a fraction of maxSteps: 0.2 * 10 = 2 steps, start factor 0 by default
  const c: LrSchedule = { kind: "constant", maxSteps: 10, warmup: { fraction: 0.2 } };
  assert.deepEqual(learningRates(1, c, 4), [0, 0.5, 1, 1]);
});

test("cosine, by hand", () => {
  near(lrFactor({ kind: "cosine", maxSteps: 10 }, 5), 0.5, "mid-way");
  near(lrFactor({ kind: "cosine", maxSteps: 10, minFactor: 0.1 }, 5), 0.55, "mid-way with floor 0.1");
  near(lrFactor({ kind: "cosine", maxSteps: 10, minFactor: 0.1 }, 10), 0.1, "end");
  // warm-up 2 steps, then cosine over the remaining 8: step 6 is half-way
  near(lrFactor({ kind: "cosine", maxSteps: 10, warmup: { steps: 2 } }, 6), 0.5, "cosine after warm-up");
  near(lrFactor({ kind: "constant" }, 1e6), 1, "constant");
});

test("schedule errors name the problem", () => {
  assert.throws(() => lrFactor({ kind: "poly", maxSteps: 0 }, 0), /maxSteps/);
  assert.throws(() => lrFactor({ kind: "poly", maxSteps: 10 }, -1), /step must be >= 0/);
  assert.throws(() => lrFactor({ kind: "constant", warmup: { fraction: 0.1 } }, 0), /fraction needs maxSteps/);
  assert.throws(() => lrFactor({ kind: "poly", maxSteps: 10, warmup: { steps: 2, fraction: 0.1 } }, 0), /exactly one of/);
  assert.throws(() => lrFactor({ kind: "poly", maxSteps: 10, warmup: { steps: 2, startFactor: 2 } }, 0), UsageError);
  assert.throws(() => lrFactor({ kind: "nope" } as unknown as LrSchedule, 0), /unknown kind/);
});

test("poly + warm-up equals PyTorch LambdaLR carrying the release's schedule", () => {
  const fx = JSON.parse(readFileSync(join(__dirname, "..", "fixtures", "optim", "adamw.json"), "utf8"));
  for (const scn of fx.scenarios) {
    const s: LrSchedule = {
      kind: "poly",
      maxSteps: scn.schedule.maxSteps,
      power: scn.schedule.power,
      warmup: { steps: scn.schedule.warmupSteps, startFactor: scn.schedule.startFactor },
    };
    const ours = learningRates(scn.lr, s, scn.steps);
    scn.lrs.forEach((lr: number, i: number) => assert.ok(Math.abs(ours[i]! - lr) <= 1e-12 * scn.lr, `${scn.name} step ${i}: ${ours[i]} vs ${lr}`));
  }
});
