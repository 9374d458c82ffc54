// AdamW: the update formula by hand, PyTorch's torch.optim.AdamW + LambdaLR (+ clipping)
// on a small problem (test/fixtures/optim/adamw.json, from test/reference/optim_reference.py),
// constant tensor count across steps, and exact resume from a saved state.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend, maxRelErr } from "../helpers";
import { AdamW, noDecayForVectors, type AdamWState, type ParamGroup } from "../../src/train/optim";
import { learningRate, type LrSchedule } from "../../src/train/schedule";
import { UsageError } from "../../src/util/errors";

const close = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

/** One scalar parameter, fed a given gradient sequence. */
function runScalar(p0: number, gs: number[], opts: { lr: number; weightDecay: number }): number[] {
  const p = tf.tidy(() => tf.variable(tf.scalar(p0)));
  const opt = new AdamW([p], opts);
  const out: number[] = [];
  for (const g of gs) {
    const gt = tf.scalar(g);
    opt.step({ [p.name]: gt });
    gt.dispose();
    out.push(p.dataSync()[0]!);
  }
  opt.dispose();
  p.dispose();
  return out;
}

for (const backend of ["cpu", "wasm"] as const) {
  test(`[${backend}] AdamW update formula, by hand`, async () => {
    await onBackend(backend, () => undefined);
    const before = tf.memory().numTensors;
    // p = 1, lr 0.1, wd 0.1, g = 0.5 twice.
    // step 1: p = 1 * (1 - 0.01) = 0.99; m = 0.05, v = 0.00025; m^ = 0.5, v^ = 0.25; p -= 0.1 * 0.5 / (0.5 + 1e-8) -> 0.89
    // step 2: p = 0.89 * 0.99 = 0.8811; m = 0.095, bc1 = 0.19 -> m^ = 0.5; v = 0.00049975, bc2 = 0.001999 -> v^ = 0.25; p -> 0.7811
    const a = runScalar(1, [0.5, 0.5], { lr: 0.1, weightDecay: 0.1 });
    close(a[0]!, 0.99 - 0.1 * (0.5 / (0.5 + 1e-8)), 1e-7, "step 1");
    close(a[1]!, 0.8811 - 0.1 * (0.5 / (0.5 + 1e-8)), 1e-7, "step 2");
    // no decay, g = 1 then -1: step 1 moves by -lr (m^ = 1, v^ = 1): p = -0.1.
    // step 2: m = 0.09 - 0.1 = -0.01, m^ = -0.01/0.19 = -0.0526316; v = 0.000999 + 0.001 = 0.001999, v^ = 1
    //   p = -0.1 + 0.1 * 0.0526316 = -0.0947368
    const b = runScalar(0, [1, -1], { lr: 0.1, weightDecay: 0 });
    close(b[0]!, -0.1, 1e-7, "step 1");
    close(b[1]!, -0.1 + 0.1 * (0.01 / 0.19) / (1 + 1e-8), 1e-7, "step 2");
    // eps sits outside the square root: g = 1e-8 gives m^ = 1e-8, sqrt(v^) = 1e-8, so the step is
    // lr * 1e-8 / (1e-8 + 1e-8) = lr / 2 (with eps inside the root it would be ~lr * 1e-4).
    const c = runScalar(0, [1e-8], { lr: 0.1, weightDecay: 0 });
    close(c[0]!, -0.05, 1e-5, "eps outside the sqrt");
    assert.equal(tf.memory().numTensors, before, "no tensors leak");
  });

  test(`[${backend}] AdamW + poly/warm-up schedule + clipping agree with PyTorch to 1e-5`, async () => {
    await onBackend(backend, () => undefined);
    const fx = JSON.parse(readFileSync(join(__dirname, "..", "fixtures", "optim", "adamw.json"), "utf8"));
    const x = tf.tensor2d(fx.x, fx.xShape);
    const y = tf.tensor2d(fx.y, fx.yShape);
    for (const scn of fx.scenarios) {
      const params = new Map<string, tf.Variable>(
        Object.entries(fx.shapes as Record<string, number[]>).map(([k, shape]) => [k, tf.tidy(() => tf.variable(tf.tensor(fx.init[k], shape), true, `${backend}-${scn.name}-${k}`))]),
      );
      const W = params.get("W")!;
      const b = params.get("b")!;
      const s = params.get("s")!;
      const groups: ParamGroup[] = scn.groups.map((g: { name: string; params: string[]; lrScale: number; weightDecay: number }) => ({
        name: g.name,
        match: (n: string) => g.params.includes(n),
        lrScale: g.lrScale,
        weightDecay: g.weightDecay,
      }));
      const opt = new AdamW(params, { lr: scn.lr, groups, clipGradNorm: scn.clipGradNorm });
      const schedule: LrSchedule = {
        kind: "poly",
        maxSteps: scn.schedule.maxSteps,
        power: scn.schedule.power,
        warmup: { steps: scn.schedule.warmupSteps, startFactor: scn.schedule.startFactor },
      };
      const lossFn = () =>
        tf.tidy(() => {
          const pred = tf.add(tf.mul(s, tf.matMul(x, W)), b);
          return tf.add(tf.mean(tf.square(tf.sub(pred, y))), tf.mul(0.1, tf.sum(tf.sin(W)))) as tf.Scalar;
        });
      let worst = 0;
      for (let i = 0; i < scn.steps; i++) {
        const { value, grads } = tf.variableGrads(lossFn, [W, b, s]);
        close(value.dataSync()[0]!, scn.losses[i], 1e-5, `${scn.name} loss at step ${i}`);
        opt.step(grads, learningRate(scn.lr, schedule, opt.stepCount));
        if (scn.clipGradNorm) close((await opt.gradNorm())!, scn.gradNorms[i], 1e-5, `${scn.name} grad norm at step ${i}`);
        else assert.equal(await opt.gradNorm(), undefined);
        tf.dispose([value, grads]);
        for (const [k, v] of params) worst = Math.max(worst, maxRelErr(v.dataSync(), scn.params[i][k]));
      }
      assert.ok(worst < 1e-5, `${scn.name}: parameters after each of ${scn.steps} steps agree with PyTorch to ${worst.toExponential(2)} (need < 1e-5)`);
      opt.dispose();
      for (const v of params.values()) v.dispose();
    }
    tf.dispose([x, y]);
  });

  test(`[${backend}] AdamW: tensor count after 50 steps equals the count after 1`, async () => {
    await onBackend(backend, () => undefined);
    const start = tf.memory().numTensors;
    const w = tf.tidy(() => tf.variable(tf.randomNormal([5, 4], 0, 1, "float32", 1), true, `${backend}-leak-w`));
    const v = tf.tidy(() => tf.variable(tf.zeros([4]), true, `${backend}-leak-v`));
    const opt = new AdamW([w, v], { lr: 1e-2, clipGradNorm: 1, groups: [noDecayForVectors()] });
    const counts: number[] = [];
    for (let i = 0; i < 50; i++) {
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(tf.add(tf.matMul(tf.ones([2, 5]), w), v))) as tf.Scalar);
      opt.step(grads, learningRate(1e-2, { kind: "poly", maxSteps: 50 }, opt.stepCount));
      tf.dispose([value, grads]);
      counts.push(tf.memory().numTensors);
    }
    assert.equal(counts[49], counts[0], `tensors after step 1: ${counts[0]}, after step 50: ${counts[49]}`);
    opt.dispose();
    tf.dispose([w, v]);
    assert.equal(tf.memory().numTensors, start, "dispose frees the optimiser's moments");
  });
}

test("AdamW state round-trip: save after k steps, load into a fresh optimiser, continue = uninterrupted", async () => {
  await onBackend("wasm", () => undefined);
  const init = { w: [0.3, -0.2, 0.5, 1.1, -0.7, 0.05], b: [0.1, -0.1] };
  const make = (tag: string) =>
    new Map<string, tf.Variable>([
      ["layer.weight", tf.tidy(() => tf.variable(tf.tensor2d(init.w, [3, 2]), true, `${tag}-w`))],
      ["layer.bias", tf.tidy(() => tf.variable(tf.tensor1d(init.b), true, `${tag}-b`))],
    ]);
  const start = tf.memory().numTensors;
  const xs = tf.tensor2d([[1, 2, 3], [-1, 0.5, 2]]);
  const lossOf = (p: Map<string, tf.Variable>) => () => tf.sum(tf.sin(tf.add(tf.matMul(xs, p.get("layer.weight")!), p.get("layer.bias")!))) as tf.Scalar;
  const schedule: LrSchedule = { kind: "poly", maxSteps: 10, warmup: { steps: 2, startFactor: 0.1 } };
  const opts = { lr: 0.05, weightDecay: 0.01, groups: [noDecayForVectors()] };
  const train = (opt: AdamW, p: Map<string, tf.Variable>, n: number) => {
    for (let i = 0; i < n; i++) {
      const { value, grads } = tf.variableGrads(lossOf(p), [...p.values()]);
      opt.step(grads, learningRate(opts.lr, schedule, opt.stepCount));
      tf.dispose([value, grads]);
    }
  };
  // uninterrupted: 7 steps
  const pa = make("a");
  const oa = new AdamW(pa, opts);
  train(oa, pa, 7);
  // interrupted after 3: save parameters and state as plain arrays, rebuild everything fresh
  const pb = make("b");
  const ob = new AdamW(pb, opts);
  train(ob, pb, 3);
  const saved: AdamWState = structuredClone(await ob.getState());
  const savedParams = new Map([...pb].map(([k, v]) => [k, Float32Array.from(v.dataSync() as Float32Array)]));
  assert.equal(saved.step, 3);
  assert.deepEqual(saved.paramSteps, { "layer.weight": 3, "layer.bias": 3 });
  assert.deepEqual([...saved.tensors.keys()].sort(), ["exp_avg/layer.bias", "exp_avg/layer.weight", "exp_avg_sq/layer.bias", "exp_avg_sq/layer.weight"]);
  ob.dispose();
  const pc = make("c");
  for (const [k, v] of pc) tf.tidy(() => v.assign(tf.tensor(savedParams.get(k)!, v.shape)));
  const oc = new AdamW(pc, opts);
  oc.setState(saved, "run/checkpoint-3");
  assert.equal(oc.stepCount, 3);
  train(oc, pc, 4);
  for (const k of pa.keys()) assert.deepEqual(pc.get(k)!.dataSync(), pa.get(k)!.dataSync(), `${k}: resumed equals uninterrupted, bit for bit`);
  // a state that does not fit names the source and every problem
  const bad: AdamWState = { step: 3, paramSteps: { "layer.weight": 3 }, tensors: new Map([["exp_avg/layer.weight", { dtype: "float32", shape: [2, 3], data: new Float32Array(6) }], ["exp_avg/extra", { dtype: "float32", shape: [1], data: new Float32Array(1) }]]) };
  assert.throws(
    () => oc.setState(bad, "run/checkpoint-3"),
    (e: Error) =>
      e instanceof UsageError &&
      /^run\/checkpoint-3: /.test(e.message) &&
      /exp_avg\/layer.weight has shape \[2, 3\]/.test(e.message) &&
      /missing exp_avg_sq\/layer.bias/.test(e.message) &&
      /unexpected exp_avg\/extra/.test(e.message),
  );
  for (const o of [oa, oc]) o.dispose();
  for (const p of [pa, pb, pc]) for (const v of p.values()) v.dispose();
  xs.dispose();
  assert.equal(tf.memory().numTensors, start, "save/load leaks no tensors");
});

test("AdamW groups, missing gradients and misuse", async () => {
  await onBackend("cpu", () => undefined);
  const [w, bias, scale] = tf.tidy(() => [
    tf.variable(tf.ones([2, 2]), true, "g-w"),
    tf.variable(tf.ones([2]), true, "g-b"),
    tf.variable(tf.scalar(14.3), true, "g-scale"),
  ]);
  const params = { "head.w": w, "head.bias": bias, "head.scale": scale };
  const opt = new AdamW(params, { lr: 0.1, weightDecay: 0.5, groups: [{ name: "head-bias", match: /bias$/, lrScale: 10 }, noDecayForVectors()] });
  assert.deepEqual(
    opt.describeGroups().map((g) => [g.name, g.group, g.lrScale, g.weightDecay]),
    [
      ["head.w", "default", 1, 0.5],
      ["head.bias", "head-bias", 10, 0.5],
      ["head.scale", "no-decay (rank <= 1)", 1, 0],
    ],
  );
  // only w gets a gradient (keyed by the constructor's name): bias and scale are untouched, not decayed
  const g = tf.zeros([2, 2]);
  const info = opt.step({ "head.w": g });
  assert.deepEqual(info.skipped, ["head.bias", "head.scale"]);
  assert.deepEqual(Array.from(bias.dataSync()), [1, 1]);
  close(w.dataSync()[0]!, 1 - 0.1 * 0.5, 1e-7, "zero gradient: only the decoupled decay moves w");
  assert.equal((await opt.getState()).paramSteps["head.bias"], 0);
  assert.throws(() => opt.step({ nope: g }), /"nope", which is not one of/);
  const g4 = tf.zeros([4]);
  assert.throws(() => opt.step({ "head.w": g4 }), /shape \[4\]/);
  assert.throws(() => new AdamW([w, w], { lr: 1 }), /appears twice/);
  assert.throws(() => new AdamW([], { lr: 1 }), /no parameters/);
  assert.throws(() => new AdamW([w], { lr: 1, betas: [1, 0.999] }), /betas/);
  opt.dispose();
  assert.throws(() => opt.step({ "head.w": g }), /after dispose/);
  tf.dispose([w, bias, scale, g, g4]);
});

for (const backend of ["cpu", "wasm"] as const) {
  test(`[${backend}] AdamW fused (flat) update equals one parameter at a time, bit for bit, in far fewer kernels`, async () => {
    await onBackend(backend, () => undefined);
    const start = tf.memory().numTensors;
    // 12 parameters of assorted ranks; three groups (decay, no decay for vectors, a x10 head);
    // clipping on; parameter "p3" gets no gradient in step 2, so its step count falls behind
    // and it is updated apart from its group from then on.
    const shapes: number[][] = [[3, 4], [4], [2, 3, 5], [5], [7, 2], [2], [1], [6, 6], [6], [3, 3, 2, 4], [4], [8]];
    const make = (tag: string) =>
      new Map<string, tf.Variable>(shapes.map((sh, i) => [`${i === 11 ? "head" : "body"}.p${i}`, tf.tidy(() => tf.variable(tf.randomNormal(sh, 0, 1, "float32", 100 + i), true, `${tag}-${i}`))]));
    const opts = (fuse: boolean) => ({ lr: 0.02, weightDecay: 0.05, clipGradNorm: 3, groups: [{ name: "head", match: /^head\./, lrScale: 10 }, noDecayForVectors()], fuse });
    const gradsFor = (p: Map<string, tf.Variable>, step: number) =>
      new Map([...p].filter(([k]) => !(step === 1 && k === "body.p3")).map(([k, v], i) => [k, tf.randomNormal(v.shape, 0, 2, "float32", 1000 * step + i + 1)]));
    const run = (fuse: boolean) => {
      const p = make(`${backend}-${fuse ? "fused" : "single"}`);
      const opt = new AdamW(p, opts(fuse));
      const kernels: number[] = [];
      for (let step = 0; step < 4; step++) {
        const g = gradsFor(p, step);
        const before = tf.memory().numTensors;
        let n = 0;
        tf.engine().startScope();
        const origRun = tf.engine().runKernel.bind(tf.engine());
        (tf.engine() as unknown as { runKernel: typeof origRun }).runKernel = ((name: string, ...rest: unknown[]) => {
          n++;
          return (origRun as (...a: unknown[]) => unknown)(name, ...rest);
        }) as typeof origRun;
        try {
          opt.step(g, 0.02);
        } finally {
          (tf.engine() as unknown as { runKernel: typeof origRun }).runKernel = origRun;
          tf.engine().endScope();
        }
        kernels.push(n);
        tf.dispose([...g.values()]);
        assert.equal(tf.memory().numTensors, before - shapes.length + (step === 1 ? 1 : 0), "the step leaks nothing (the gradients were disposed)");
      }
      const values = new Map([...p].map(([k, v]) => [k, Float32Array.from(v.dataSync() as Float32Array)]));
      return { p, opt, values, kernels };
    };
    const a = run(false);
    const b = run(true);
    for (const [k, v] of a.values) {
      const w = b.values.get(k)!;
      const worst = v.reduce((m, x, i) => Math.max(m, Math.abs(x - w[i]!)), 0);
      assert.deepEqual(w, v, `${k}: fused equals one-at-a-time, bit for bit (largest difference ${worst})`);
    }
    const sa = await a.opt.getState();
    const sb = await b.opt.getState();
    assert.deepEqual(sb.paramSteps, sa.paramSteps);
    assert.equal(sb.paramSteps["body.p3"], 3);
    for (const [k, h] of sa.tensors) assert.deepEqual(sb.tensors.get(k)!.data, h.data, `${k}: same moments`);
    // Per-parameter kernels: ~14 for each of 12 tensors; fused: ~14 per group plus concat/split/reshape.
    console.log(`[${backend}] kernels per step, one at a time: ${a.kernels.join(", ")}; fused: ${b.kernels.join(", ")}`);
    for (let i = 0; i < 4; i++) assert.ok(b.kernels[i]! < a.kernels[i]!, `step ${i}: fused runs fewer kernels (${b.kernels[i]} vs ${a.kernels[i]})`);
    for (const r of [a, b]) {
      r.opt.dispose();
      for (const v of r.p.values()) v.dispose();
    }
    assert.equal(tf.memory().numTensors, start, "no tensors leak");
  });
}
