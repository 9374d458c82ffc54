/**
 * Spherical k-means (ml-kmeans iterations + pbip's seeded cosine k-means++) against
 * a second, plain implementation written here, and the three prototype rules on
 * hand-made features.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { sphericalKMeans, sphericalKMeansSteps, kmeansPlusPlus, cosineDistance } from "../../src/bank/kmeans";
import { classPrototypes } from "../../src/bank/prototypes";
import { l2NormalizeRows, row, dot, norm, type FeatureMatrix } from "../../src/bank/matrix";
import { Rng } from "../../src/util/rng";
import { groups, axis } from "./fixtures";

/** Plain spherical k-means (Lloyd on the sphere) from given initial rows, until assignments stop changing. */
function plainSphericalKMeans(x: FeatureMatrix, init: number[], maxIt = 100): { assign: number[]; centres: number[][] } {
  const d = x.dim;
  let centres = init.map((i) => Array.from(row(x, i)));
  let assign: number[] = [];
  for (let it = 0; it < maxIt; it++) {
    const next = Array.from({ length: x.rows }, (_, i) => {
      let best = 0;
      let bs = -Infinity;
      centres.forEach((c, k) => {
        const s = dot(row(x, i), c) / norm(c);
        if (s > bs) {
          bs = s;
          best = k;
        }
      });
      return best;
    });
    const same = next.every((a, i) => a === assign[i]);
    assign = next;
    centres = centres.map((c, k) => {
      const m = new Array<number>(d).fill(0);
      let n = 0;
      assign.forEach((a, i) => {
        if (a !== k) return;
        n++;
        for (let j = 0; j < d; j++) m[j]! += x.data[i * d + j]!;
      });
      if (!n) return c;
      const l = Math.hypot(...m);
      return m.map((v) => v / l);
    });
    if (same) break;
  }
  return { assign, centres };
}

test("spherical k-means equals a plain implementation from the same seeded k-means++ start", () => {
  for (const seed of [1, 2, 3]) {
    // Overlapping groups so that several iterations are needed.
    const { x: raw } = groups([axis(6, 0, 1), axis(6, 1, 1), [0.7, 0.7, 0.2, 0, 0, 0], axis(6, 2, 1)], 15, 0.6, seed);
    const x = l2NormalizeRows(raw);
    const k = 3;
    const init = kmeansPlusPlus(x, k, new Rng(seed));
    const ours = sphericalKMeans(x, { k, seed, maxIterations: 100 });
    const ref = plainSphericalKMeans(x, init);
    assert.ok(ours.converged, `seed ${seed}: converged`);
    assert.deepEqual(Array.from(ours.assignments), ref.assign, `seed ${seed}: assignments`);
    for (let c = 0; c < k; c++) {
      const a = row(ours.centroids, c);
      assert.ok(Math.abs(norm(a) - 1) < 1e-6, "unit centroid");
      ref.centres[c]!.forEach((v, j) => assert.ok(Math.abs(v - a[j]!) < 1e-6, `seed ${seed} centre ${c}[${j}]: ${a[j]} vs ${v}`));
    }
    // Distances are 1 - cos to the own centre.
    for (let i = 0; i < x.rows; i++) assert.ok(Math.abs(ours.distances[i]! - cosineDistance(row(x, i), row(ours.centroids, ours.assignments[i]!))) < 1e-6);
  }
});

test("spherical k-means recovers well-separated groups, is seeded, and the step generator ends where it does", () => {
  const { x: raw, group } = groups([axis(5, 0, 3), axis(5, 2, 3), axis(5, 4, 3)], 10, 0.3, 7);
  const x = l2NormalizeRows(raw);
  const r = sphericalKMeans(x, { k: 3, seed: 11 });
  // Same partition as the truth, up to relabelling.
  const map = new Map<number, number>();
  group.forEach((g, i) => {
    const a = r.assignments[i]!;
    if (!map.has(g)) map.set(g, a);
    assert.equal(map.get(g), a, "a true group was split");
  });
  assert.equal(new Set(map.values()).size, 3);
  assert.deepEqual(sphericalKMeans(x, { k: 3, seed: 11 }), r, "same seed, same result");
  const steps = [...sphericalKMeansSteps(x, { k: 3, seed: 11 })];
  assert.deepEqual(steps[steps.length - 1]!.result, r);
  assert.equal(steps[steps.length - 1]!.iteration, r.iterations);
  // K larger than the number of points is clamped; duplicates do not break seeding.
  const dup = l2NormalizeRows({ rows: 3, dim: 2, data: Float32Array.from([1, 0, 1, 0, 1, 0]) });
  const rd = sphericalKMeans(dup, { k: 5, seed: 1 });
  assert.equal(rd.k, 3);
  assert.equal(new Set(kmeansPlusPlus(dup, 3, new Rng(4))).size, 3);
});

test("centroid rule: K unit-norm prototypes, each the normalised mean of its members", () => {
  const { x: raw } = groups([axis(4, 0, 2), axis(4, 1, 2), axis(4, 3, 2)], 8, 0.4, 3);
  const x = l2NormalizeRows(raw);
  const ids = Array.from({ length: x.rows }, (_, i) => `id${i}`);
  const cp = classPrototypes(x, ids, 2, { rule: "centroid", k: 3, nK: 100, seed: 5 });
  assert.equal(cp.k, 3);
  assert.equal(cp.prototypes.length, 3 * 4);
  assert.equal(cp.subclasses.reduce((a, s) => a + s.size, 0), x.rows);
  cp.subclasses.forEach((s, k) => {
    assert.equal(s.classIndex, 2);
    assert.equal(s.subclass, k);
    const p = cp.prototypes.subarray(k * 4, (k + 1) * 4);
    assert.ok(Math.abs(norm(p) - 1) < 1e-6, "unit norm");
    const mean = [0, 0, 0, 0];
    for (const m of s.members) row(x, ids.indexOf(m.id)).forEach((v, j) => (mean[j]! += v));
    const l = Math.hypot(...mean);
    mean.forEach((v, j) => assert.ok(Math.abs(v / l - p[j]!) < 1e-6));
    // Members sorted by distance, which is 1 - cos to the prototype.
    for (let i = 1; i < s.members.length; i++) assert.ok(s.members[i]!.distance >= s.members[i - 1]!.distance);
    for (const m of s.members) assert.ok(Math.abs(m.distance - (1 - dot(row(x, ids.indexOf(m.id)), p))) < 2e-6);
  });
});

test("nearest rule on a hand case: the mean of the N_K unit features nearest the centre", () => {
  // Unit vectors in 2-D at these angles; K = 1, so the centre is the direction of their mean.
  const angles = [0, 0.1, 0.2, 0.3, 1.2];
  const data = Float32Array.from(angles.flatMap((a) => [Math.cos(a), Math.sin(a)]));
  const x: FeatureMatrix = { rows: 5, dim: 2, data };
  const ids = angles.map((a) => `a${a}`);
  const mx = angles.reduce((s, a) => s + Math.cos(a), 0);
  const my = angles.reduce((s, a) => s + Math.sin(a), 0);
  const centre = Math.atan2(my, mx); // about 0.349 rad
  const byDist = [...angles].sort((a, b) => Math.abs(a - centre) - Math.abs(b - centre));
  assert.deepEqual(byDist.slice(0, 2), [0.3, 0.2]);
  const cp = classPrototypes(x, ids, 0, { rule: "nearest", k: 1, nK: 2, seed: 1 });
  const expected = [(Math.cos(0.3) + Math.cos(0.2)) / 2, (Math.sin(0.3) + Math.sin(0.2)) / 2];
  assert.ok(Math.abs(cp.prototypes[0]! - expected[0]!) < 1e-6 && Math.abs(cp.prototypes[1]! - expected[1]!) < 1e-6, `prototype ${Array.from(cp.prototypes)} vs ${expected}`);
  const s = cp.subclasses[0]!;
  assert.equal(s.size, 5);
  assert.equal(s.used, 2);
  assert.deepEqual(s.members.map((m) => m.id), byDist.map((a) => `a${a}`));
  assert.ok(Math.abs(s.members[0]!.distance - (1 - Math.cos(0.3 - centre))) < 1e-6);
  assert.ok(Math.abs(s.prototypeNorm - Math.hypot(...expected)) < 1e-6);
  // N_K larger than the subclass: all members.
  const all = classPrototypes(x, ids, 0, { rule: "nearest", k: 1, nK: 100, seed: 1 });
  assert.ok(Math.abs(all.prototypes[0]! - mx / 5) < 1e-6 && Math.abs(all.prototypes[1]! - my / 5) < 1e-6);
});

test("random rule: K disjoint seeded sub-banks of N_K patches, each prototype their mean", () => {
  const { x: raw } = groups([axis(3, 0, 1), axis(3, 1, 1)], 5, 0.5, 9);
  const x = l2NormalizeRows(raw);
  const ids = Array.from({ length: 10 }, (_, i) => `r${i}`);
  const a = classPrototypes(x, ids, 1, { rule: "random", k: 2, nK: 3, seed: 4 });
  assert.equal(a.kmeans, undefined);
  assert.deepEqual(a.subclasses.map((s) => s.size), [3, 3]);
  const used = a.subclasses.flatMap((s) => s.members.map((m) => m.id));
  assert.equal(new Set(used).size, 6, "sub-banks are disjoint");
  a.subclasses.forEach((s, k) => {
    const mean = [0, 0, 0];
    for (const m of s.members) row(x, ids.indexOf(m.id)).forEach((v, j) => (mean[j]! += v / 3));
    mean.forEach((v, j) => assert.ok(Math.abs(v - a.prototypes[k * 3 + j]!) < 1e-6));
  });
  assert.deepEqual(classPrototypes(x, ids, 1, { rule: "random", k: 2, nK: 3, seed: 4 }), a, "seeded");
  assert.notDeepEqual(classPrototypes(x, ids, 1, { rule: "random", k: 2, nK: 3, seed: 5 }).subclasses.map((s) => s.members), a.subclasses.map((s) => s.members));
  // Not enough patches for K x N_K: floor(n / K) each.
  const b = classPrototypes(x, ids, 1, { rule: "random", k: 3, nK: 100, seed: 4 });
  assert.deepEqual(b.subclasses.map((s) => s.size), [3, 3, 3]);
});
