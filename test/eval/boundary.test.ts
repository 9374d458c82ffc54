import { test } from "node:test";
import assert from "node:assert/strict";
import { erodeSquare, boundaryRegion, boundaryCounts, boundaryIoUFromCounts, bandWidthFromRatio, evaluateMasks } from "../../src/eval";
import { Rng } from "../../src/util";

function fromRows(rows: string[]): { m: Uint8Array; h: number; w: number } {
  const h = rows.length;
  const w = rows[0]!.length;
  const m = new Uint8Array(h * w);
  rows.forEach((r, y) => [...r].forEach((c, x) => (m[y * w + x] = c === "#" ? 1 : 0)));
  return { m, h, w };
}
const toRows = (m: Uint8Array, h: number, w: number) => Array.from({ length: h }, (_, y) => Array.from(m.subarray(y * w, (y + 1) * w), (v) => (v ? "#" : ".")).join(""));
const count = (m: Uint8Array) => m.reduce((a, b) => a + b, 0);

/** Brute-force erosion: a pixel survives iff every pixel within Chebyshev distance d is inside the image and set. */
function naiveErode(m: Uint8Array, h: number, w: number, d: number): Uint8Array {
  const out = new Uint8Array(h * w);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let ok = 1;
      for (let dy = -d; dy <= d && ok; dy++)
        for (let dx = -d; dx <= d; dx++) {
          const yy = y + dy;
          const xx = x + dx;
          if (yy < 0 || yy >= h || xx < 0 || xx >= w || !m[yy * w + xx]) {
            ok = 0;
            break;
          }
        }
      out[y * w + x] = ok;
    }
  return out;
}

test("boundary band of hand-made masks: the image outside counts as background (Cheng et al.)", () => {
  const full = fromRows(["#####", "#####", "#####", "#####", "#####"]);
  assert.equal(count(boundaryRegion(full.m, 5, 5, 1)), 16); // ring of 16, 3 x 3 interior survives
  assert.equal(count(boundaryRegion(full.m, 5, 5, 2)), 24); // only the centre survives
  assert.equal(count(boundaryRegion(full.m, 5, 5, 3)), 25);
  const sq = fromRows([".......", ".......", "..###..", "..###..", "..###..", ".......", "......."]);
  assert.deepEqual(toRows(boundaryRegion(sq.m, 7, 7, 1), 7, 7), [".......", ".......", "..###..", "..#.#..", "..###..", ".......", "......."]);
  const l = fromRows(["######", "######", "######", "######", "###...", "###..."]);
  assert.deepEqual(toRows(erodeSquare(l.m, 6, 6, 1), 6, 6), ["......", ".####.", ".####.", ".#....", ".#....", "......"]);
  assert.deepEqual(boundaryRegion(l.m, 6, 6, 2), l.m); // no 5 x 5 square fits: the whole mask is band
  assert.throws(() => boundaryRegion(sq.m, 7, 7, 0), /band width/);
  assert.throws(() => boundaryRegion(sq.m, 7, 6, 1), /does not match/);
});

test("separable erosion equals brute-force erosion on random masks", () => {
  const rng = new Rng(3);
  for (let t = 0; t < 40; t++) {
    const h = 1 + rng.int(25);
    const w = 1 + rng.int(25);
    const density = 0.5 + 0.5 * rng.next();
    const m = new Uint8Array(h * w).map(() => (rng.next() < density ? 1 : 0));
    for (const d of [1, 2, 3, 5]) assert.deepEqual(erodeSquare(m, h, w, d), naiveErode(m, h, w, d), `trial ${t} ${h}x${w} d=${d}`);
  }
});

test("hand-worked boundary IoU: two vertical halves with a shifted prediction", () => {
  // 6 x 6, GT: class 0 in columns 0-2, class 1 in 3-5. Pred: class 0 in 0-3, class 1 in 4-5. d = 1.
  const gt = new Uint8Array(36);
  const pred = new Uint8Array(36);
  for (let y = 0; y < 6; y++)
    for (let x = 0; x < 6; x++) {
      gt[y * 6 + x] = x < 3 ? 0 : 1;
      pred[y * 6 + x] = x < 4 ? 0 : 1;
    }
  // Class 0: |G_d| = 18 - 4 = 14, |P_d| = 24 - 8 = 16, intersection 6 + 2 + 2 = 10, union 20.
  // Class 1: |G_d| = 14, |P_d| = 12 (nothing survives), intersection 8, union 18.
  const c = boundaryCounts(gt, pred, 6, 6, 3, 1);
  assert.deepEqual(Array.from(c.intersection), [10, 8, 0]);
  assert.deepEqual(Array.from(c.union), [20, 18, 0]);
  const b = boundaryIoUFromCounts(c);
  assert.equal(b[0], 0.5);
  assert.equal(b[1], 8 / 18);
  assert.ok(Number.isNaN(b[2]!));
  const r = evaluateMasks([{ id: "h", gt, pred, height: 6, width: 6 }], { classes: ["a", "b"], backgroundId: 2, convention: "count-bg", band: 1 });
  assert.equal(r.scores.mbiou, (0.5 + 8 / 18) / 2);
});

test("boundary IoU under both conventions: a class predicted on GT background", () => {
  // 4 x 4 all background (id 2); prediction puts class 0 on a 2 x 2 block.
  const gt = new Uint8Array(16).fill(2);
  const pred = new Uint8Array(16).fill(2);
  for (const i of [5, 6, 9, 10]) pred[i] = 0;
  const space = { classes: ["a", "b"], backgroundId: 2, band: 1 };
  const counted = evaluateMasks([{ id: "x", gt, pred, height: 4, width: 4 }], { ...space, convention: "count-bg" });
  assert.equal(counted.scores.biou[0], 0); // 4 predicted band pixels, none in GT
  assert.equal(counted.scores.iou[0], 0);
  const ignored = evaluateMasks([{ id: "x", gt, pred, height: 4, width: 4 }], { ...space, convention: "ignore-bg" });
  assert.ok(Number.isNaN(ignored.scores.biou[0]!)); // nothing counted
  assert.ok(Number.isNaN(ignored.scores.iou[0]!));
});

test("default band is Cheng et al.'s 2% of the diagonal", () => {
  assert.equal(bandWidthFromRatio(224, 224), 6);
  assert.equal(bandWidthFromRatio(10, 10), 1);
  const gt = new Uint8Array(224 * 224);
  const r = evaluateMasks([{ id: "z", gt, pred: gt, height: 224, width: 224 }], { classes: ["a"], backgroundId: 1, convention: "count-bg" });
  assert.equal(r.perImage[0]!.band, 6);
  assert.deepEqual(r.band, { pixels: null, ratio: 0.02 });
  assert.equal(r.scores.biou[0], 1);
});
