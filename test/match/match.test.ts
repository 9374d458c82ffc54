import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr, finiteDiff } from "../helpers";
import { adaptiveThreshold, selectPairs, pairChannels, foregroundBackground, encodeRegionsFeature, matchingMap, minMaxPerChannel } from "../../src/match";
import { RELEASE, PAPER } from "../../src/config/profiles";

test("eq. 4 by hand: tau = delta * max, over the whole image (release) or per channel", async () => {
  await onBackend("cpu", () => undefined);
  // One image, 1x3 pixels, 2 channels: channel 0 = [1, 4, 8], channel 1 = [2, 3, 1].
  const m = tf.tensor4d([1, 2, 4, 3, 8, 1], [1, 1, 3, 2]);
  // Image max 8, delta 0.5 -> tau 4: channel 0 -> [0,1,1], channel 1 -> [0,0,0].
  assert.deepEqual(Array.from(await adaptiveThreshold(m, 0.5, "image").data()), [0, 0, 1, 0, 1, 0]);
  // Per channel: tau0 = 4 -> [0,1,1]; tau1 = 1.5 -> [1,1,0].
  assert.deepEqual(Array.from(await adaptiveThreshold(m, 0.5, "channel").data()), [0, 1, 1, 1, 1, 0]);
});

test("pair selection by hand: labelled classes, subclass logit above its class's mean", () => {
  // K = [3, 1]: class 0 owns subclasses 0..2, class 1 owns 3. Two images.
  const logits = [1, 5, 3, /* class 1 */ 0, /* image 2 */ 2, 2, 2, 7];
  const labels = [1, 1, /* image 2 */ 1, 0];
  const p = selectPairs(logits, labels, 2, [3, 1]);
  // Image 0: class 0 mean 3 -> only subclass 1 (5 > 3); class 1 has K = 1 -> subclass 3. Image 1: all equal -> none; class 1 not labelled.
  assert.deepEqual(p, { image: [0, 0], subclass: [1, 3], cls: [0, 1] });
});

test("eq. 5 by hand (paper form): X_FG = b * M' * X and X_BG = (1-b) * (1-M') * X with M' min-max normalised", async () => {
  await onBackend("cpu", () => undefined);
  const x = tf.tensor4d([0.2, 0.4, 0.6, 0.8], [1, 1, 4, 1]).tile([1, 1, 1, 3]) as tf.Tensor4D;
  const m = tf.tensor4d([0, 1, 2, 4], [1, 1, 4, 1]);
  const b = tf.tensor4d([0, 0, 1, 1], [1, 1, 4, 1]);
  const r = foregroundBackground(x, m, b, { image: [0], subclass: [0], cls: [0] }, { ...PAPER.match });
  const m01 = [0, 0.25, 0.5, 1];
  const fg = Array.from(await r.fg.data()).filter((_, i) => i % 3 === 0);
  const bg = Array.from(await r.bg.data()).filter((_, i) => i % 3 === 0);
  [0.2, 0.4, 0.6, 0.8].forEach((xv, i) => {
    assert.ok(Math.abs(fg[i]! - [0, 0, 1, 1][i]! * m01[i]! * xv) < 1e-4, `fg[${i}] ${fg[i]}`);
    assert.ok(Math.abs(bg[i]! - (1 - [0, 0, 1, 1][i]!) * (1 - m01[i]!) * xv) < 1e-4, `bg[${i}] ${bg[i]}`);
  });
});

test("eq. 5, release form: min-max of M*X and (1-M)*X per pair and channel before masking; no threshold ablation", async () => {
  await onBackend("cpu", () => undefined);
  const x = tf.tensor4d([0.2, 0.4, 0.6, 0.8], [1, 1, 4, 1]).tile([1, 1, 1, 3]) as tf.Tensor4D;
  const m = tf.tensor4d([0, 1, 2, 4], [1, 1, 4, 1]);
  const b = tf.tensor4d([0, 0, 1, 1], [1, 1, 4, 1]);
  const r = foregroundBackground(x, m, b, { image: [0], subclass: [0], cls: [0] }, { ...RELEASE.match });
  const mx = [0, 0.4, 1.2, 3.2]; // M*X, min 0 max 3.2
  const fg = Array.from(await r.fg.data()).filter((_, i) => i % 3 === 0);
  mx.forEach((v, i) => assert.ok(Math.abs(fg[i]! - [0, 0, 1, 1][i]! * (v / 3.2)) < 1e-4, `fg[${i}] ${fg[i]}`));
  const oneMinus = [0.2, 0, -0.6, -2.4]; // (1-M)*X, min -2.4 max 0.2
  const bg = Array.from(await r.bg.data()).filter((_, i) => i % 3 === 0);
  oneMinus.forEach((v, i) => assert.ok(Math.abs(bg[i]! - [1, 1, 0, 0][i]! * ((v + 2.4) / 2.6)) < 1e-4, `bg[${i}] ${bg[i]}`));
  const noThr = foregroundBackground(x, m, b, { image: [0], subclass: [0], cls: [0] }, { ...RELEASE.match, adaptiveThreshold: false });
  const fg2 = Array.from(await noThr.fg.data()).filter((_, i) => i % 3 === 0);
  mx.forEach((v, i) => assert.ok(Math.abs(fg2[i]! - v / 3.2) < 1e-4, `no-threshold fg[${i}] ${fg2[i]}`));
});

test("feature region mode: the region feature is the weight-averaged dense feature (exact on the dense grid)", async () => {
  await onBackend("cpu", () => undefined);
  // Dense map 2x2 with d = 3; weights at 4x4 are averaged to 2x2 by area.
  const dense = tf.tensor4d(randomArray(2 * 2 * 2 * 3, 5), [2, 2, 2, 3]);
  const w = randomArray(1 * 4 * 4, 6).map(Math.abs);
  const wt = tf.tensor4d(w, [1, 4, 4, 1]);
  const regions = { fg: tf.zeros([1, 4, 4, 3]) as tf.Tensor4D, bg: tf.zeros([1, 4, 4, 3]) as tf.Tensor4D, fgWeight: wt, bgWeight: tf.onesLike(wt) as tf.Tensor4D };
  const out = encodeRegionsFeature(dense, regions, { image: [1], subclass: [0], cls: [0] });
  const d = await dense.data();
  const cell = (y: number, x: number) => (w[4 * (2 * y) + 2 * x]! + w[4 * (2 * y) + 2 * x + 1]! + w[4 * (2 * y + 1) + 2 * x]! + w[4 * (2 * y + 1) + 2 * x + 1]!) / 4;
  const exp = [0, 0, 0];
  let z = 0;
  for (let y = 0; y < 2; y++) for (let x = 0; x < 2; x++) {
    const c = cell(y, x);
    z += c;
    for (let k = 0; k < 3; k++) exp[k]! += c * d[12 + (2 * y + x) * 3 + k]!;
  }
  const got = Array.from(await out.fg.data());
  exp.forEach((v, k) => assert.ok(Math.abs(got[k]! - v / z) < 1e-5, `f[${k}] ${got[k]} vs ${v / z}`));
  const bgMean = Array.from(await out.bg.data());
  [0, 1, 2].forEach((k) => assert.ok(Math.abs(bgMean[k]! - (d[12 + k]! + d[15 + k]! + d[18 + k]! + d[21 + k]!) / 4) < 1e-5));
});

test("matching map: deepest stage upsampled (release) or the sum of all upsampled stages (paper eq. 3); pair channels and min-max", async () => {
  await onBackend("cpu", () => undefined);
  const a = tf.ones([1, 2, 2, 2]) as tf.Tensor4D;
  const b = tf.fill([1, 4, 4, 2], 2) as tf.Tensor4D;
  assert.deepEqual(Array.from(await matchingMap([a, b], [8, 8], "last").data()).slice(0, 2), [2, 2]);
  assert.deepEqual(Array.from(await matchingMap([a, b], [8, 8], "sum").data()).slice(0, 2), [3, 3]);
  const m = tf.tensor4d([1, 10, 2, 20, 3, 30, 4, 40], [2, 1, 2, 2]);
  // pairs: (image 1, channel 1), (image 0, channel 0)
  assert.deepEqual(Array.from(await pairChannels(m, { image: [1, 0], subclass: [1, 0], cls: [0, 0] }).data()), [30, 40, 1, 2]);
  assert.deepEqual(Array.from(await minMaxPerChannel(tf.tensor4d([2, 4, 6], [1, 1, 3, 1])).data()).map((v) => +v.toFixed(4)), [0, 0.5, 1]);
});

test("minMaxPerChannel's written-out gradient equals TF.js autodiff of the plain formula (ties at the min included) and finite differences", async () => {
  const plain = (x: tf.Tensor4D) => tf.div(tf.sub(x, tf.min(x, [1, 2], true)), tf.add(tf.sub(tf.max(x, [1, 2], true), tf.min(x, [1, 2], true)), 1e-5));
  const shape: [number, number, number, number] = [3, 5, 4, 3];
  const n = shape.reduce((a, b) => a * b, 1);
  // A masked image: about half the pixels are exactly 0, so the min is tied many times over.
  const xs = randomArray(n, 11).map((v, i) => (i % 7 < 3 ? 0 : v + 1));
  const w = randomArray(n, 12);
  for (const backend of ["cpu", "wasm"] as const) {
    await onBackend(backend, async () => {
      const x = tf.tensor4d(xs, shape);
      const wt = tf.tensor4d(w, shape);
      const mine = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(minMaxPerChannel(t as tf.Tensor4D), wt)))(x);
      const ref = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(plain(t as tf.Tensor4D), wt)))(x);
      assert.ok(maxRelErr(await mine.data(), await ref.data()) < 1e-5, `${backend}: ${maxRelErr(await mine.data(), await ref.data())}`);
      assert.ok(maxRelErr(await minMaxPerChannel(x).data(), await plain(x).data()) < 1e-6);
      tf.dispose([x, wt, mine, ref]);
    });
  }
  // Finite differences where there are no ties.
  await onBackend("cpu", async () => {
    const xs2 = randomArray(n, 13);
    const loss = (v: Float32Array) => tf.tidy(() => tf.sum(tf.mul(minMaxPerChannel(tf.tensor4d(v, shape)), tf.tensor4d(w, shape))).dataSync()[0]!);
    const g = await tf.grad((t: tf.Tensor) => tf.sum(tf.mul(minMaxPerChannel(t as tf.Tensor4D), tf.tensor4d(w, shape))))(tf.tensor4d(xs2, shape)).data();
    const coords = [0, 7, 19, 33, 58, n - 1];
    finiteDiff(loss, xs2, coords, 1e-3).forEach((fd, i) => assert.ok(Math.abs(fd - g[coords[i]!]!) < 2e-2 * Math.max(1, Math.abs(fd)), `d/dx[${coords[i]}]: ${g[coords[i]!]} vs ${fd}`));
  });
});

test("adaptiveThreshold gives the bits of a broadcasting greaterEqual (values at tau included) on CPU and WASM, and no gradient", async () => {
  const shape: [number, number, number, number] = [3, 6, 5, 4];
  // Values on a coarse grid, so that many equal tau = 0.5 * max exactly.
  const xs = randomArray(3 * 6 * 5 * 4, 21).map((v) => Math.round((v + 1) * 4) / 4);
  const perImage = 6 * 5 * 4;
  const ties = xs.filter((v, i) => {
    const img = Math.floor(i / perImage);
    return v === 0.5 * Math.max(...xs.slice(img * perImage, (img + 1) * perImage));
  }).length;
  assert.ok(ties > 0, "the data has values exactly at tau (image mode)");
  for (const backend of ["cpu", "wasm"] as const) {
    await onBackend(backend, async () => {
      const m = tf.tensor4d(xs, shape);
      for (const over of ["image", "channel"] as const) {
        const mx = over === "image" ? tf.max(m, [1, 2, 3], true) : tf.max(m, [1, 2], true);
        const want = await tf.cast(tf.greaterEqual(m, tf.mul(mx, 0.5)), "float32").data();
        const got = await adaptiveThreshold(m, 0.5, over).data();
        assert.deepEqual(Array.from(got), Array.from(want), `${backend} ${over}`);
      }
      const g = await tf.grad((t: tf.Tensor) => tf.sum(tf.mul(adaptiveThreshold(t as tf.Tensor4D, 0.5, "image"), t)))(m).data();
      // d/dm of sum(b * m) with b constant is b itself.
      assert.deepEqual(Array.from(g), Array.from(await adaptiveThreshold(m, 0.5, "image").data()));
      // The zero gradient through the max is declared, not computed: no broadcasting Equal mask.
      const prof = await tf.profile(() => tf.grad((t: tf.Tensor) => tf.sum(tf.mul(adaptiveThreshold(t as tf.Tensor4D, 0.5, "image"), t)))(m));
      assert.ok(!prof.kernels.some((k) => k.name === "Equal"), `kernels: ${prof.kernels.map((k) => k.name).join(", ")}`);
    });
  }
});
