import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ConfusionMatrix,
  segmentationScores,
  SegmentationEvaluator,
  evaluateMasks,
  formatEvalTable,
  parseConvention,
  foregroundIds,
  type BackgroundConvention,
} from "../../src/eval";
import { Rng } from "../../src/util";

const close = (a: number, b: number, tol = 1e-12, what = "") => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);
const closeArr = (a: number[], b: number[], tol = 1e-12, what = "") => {
  assert.equal(a.length, b.length, what);
  a.forEach((v, i) => (Number.isNaN(b[i]!) ? assert.ok(Number.isNaN(v), `${what}[${i}] ${v} should be NaN`) : close(v, b[i]!, tol, `${what}[${i}]`)));
};

const SPACE = { classes: ["A", "B"], backgroundId: 2 };

// Hand-worked 2 x 4 case (rows GT, columns prediction):
//   GT   0 0 1 1 / 2 2 1 0      Pred 0 1 1 1 / 0 1 1 1
//   matrix: GT0 -> [1, 2, 0], GT1 -> [0, 3, 0], GT2 (bg) -> [1, 1, 0]
const GT = [0, 0, 1, 1, 2, 2, 1, 0];
const PRED = [0, 1, 1, 1, 0, 1, 1, 1];

test("hand-worked case, count-bg: GT background predicted as a class is a false positive", () => {
  const cm = new ConfusionMatrix(3).add(GT, PRED);
  assert.deepEqual(cm.toRows(), [
    [1, 2, 0],
    [0, 3, 0],
    [1, 1, 0],
  ]);
  const s = segmentationScores(cm, SPACE, "count-bg");
  assert.equal(s.convention, "count-bg");
  // A: TP 1, FP 1 (on bg), FN 2 -> IoU 1/4, Dice 2/5.  B: TP 3, FP 3, FN 0 -> IoU 1/2, Dice 6/9.
  closeArr(s.iou, [0.25, 0.5], 1e-15, "iou");
  closeArr(s.dice, [0.4, 6 / 9], 1e-15, "dice");
  close(s.miou, 0.375, 1e-15, "miou");
  close(s.mdice, (0.4 + 6 / 9) / 2, 1e-15, "mdice");
  // freq A = B = 3/8, bg = 2/8 with IoU_bg = 0.
  close(s.fwiou, (3 / 8) * 0.25 + (3 / 8) * 0.5, 1e-15, "fwiou");
  close(s.pixelAccuracy, 4 / 8, 1e-15, "acc");
  assert.equal(s.pixels, 8);
  close(s.background.iou, 0, 0, "bg iou");
  assert.deepEqual(s.gtPixels, [3, 3]);
  assert.deepEqual(s.predPixels, [2, 6]);
});

test("hand-worked case, ignore-bg: GT background pixels are dropped", () => {
  const s = segmentationScores(new ConfusionMatrix(3).add(GT, PRED), SPACE, "ignore-bg");
  assert.equal(s.convention, "ignore-bg");
  // A: TP 1, FP 0, FN 2 -> 1/3, Dice 1/2.  B: TP 3, FP 2, FN 0 -> 3/5, Dice 3/4.
  closeArr(s.iou, [1 / 3, 0.6], 1e-15, "iou");
  closeArr(s.dice, [0.5, 0.75], 1e-15, "dice");
  close(s.miou, (1 / 3 + 0.6) / 2, 1e-15, "miou");
  close(s.fwiou, 0.5 * (1 / 3) + 0.5 * 0.6, 1e-15, "fwiou");
  close(s.pixelAccuracy, 4 / 6, 1e-15, "acc");
  assert.equal(s.pixels, 6);
  assert.ok(Number.isNaN(s.background.iou));
});

test("a class absent from both masks is NaN and left out of the means; ignore id 255 is never counted", () => {
  const s = segmentationScores(new ConfusionMatrix(3).add([0, 0, 255, 2], [0, 0, 1, 2]), SPACE, "count-bg");
  closeArr(s.iou, [1, NaN], 0, "iou");
  close(s.miou, 1, 0, "miou");
  close(s.fwiou, 1, 0, "fwiou (bg predicted correctly)");
  close(s.background.iou, 1, 0, "bg");
  assert.equal(s.pixels, 3);
});

test("background id need not be last; foreground ids skip it", () => {
  assert.deepEqual(foregroundIds({ classes: ["a", "b", "c"], backgroundId: 0 }), [1, 2, 3]);
  // Same hand case with ids relabelled: bg 0, A 1, B 2.
  const map = [1, 2, 0];
  const s = segmentationScores(
    new ConfusionMatrix(3).add(
      GT.map((g) => map[g]!),
      PRED.map((p) => map[p]!),
    ),
    { classes: ["A", "B"], backgroundId: 0 },
    "count-bg",
  );
  closeArr(s.iou, [0.25, 0.5], 1e-15, "iou");
  assert.throws(() => parseConvention("both", "--convention"), /--convention.*count-bg/);
});

// Reference: test/eval/reference/eval_reference.py (numpy bincount confusion matrix,
// scipy.ndimage.binary_erosion with border_value=0 for the boundary bands), run with
// Debian's /usr/bin/python3 (numpy 1.24, scipy 1.10.1).
function referenceMasks(): { gt: Uint8Array; pred: Uint8Array; h: number; w: number } {
  const h = 40;
  const w = 40;
  const gt = new Uint8Array(h * w);
  const pred = new Uint8Array(h * w);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let g = y < 20 ? (x < 20 ? 0 : 1) : x < 26 ? 2 : 3;
      if ((x - 20) ** 2 + (y - 20) ** 2 <= 36) g = 4;
      let p = y < 17 ? (x < 23 ? 0 : 1) : x < 22 ? 2 : 3;
      if ((x - 24) ** 2 + (y - 22) ** 2 <= 25) p = 4;
      if ((x - 8) ** 2 + (y - 8) ** 2 <= 9) p = 3;
      if (x === 35) g = 255;
      gt[y * w + x] = g;
      pred[y * w + x] = p;
    }
  }
  return { gt, pred, h, w };
}

const REF = {
  "count-bg": {
    cm: [
      [304, 0, 45, 29, 0],
      [44, 269, 0, 34, 5],
      [0, 0, 398, 51, 9],
      [0, 0, 0, 239, 20],
      [14, 3, 46, 3, 47],
    ],
    iou: [0.6972477064220184, 0.7577464788732394, 0.7249544626593807, 0.6356382978723404],
    miou: 0.7038967364567448,
    dice: [0.8216216216216217, 0.8621794871794872, 0.8405491024287223, 0.7772357723577236],
    mdice: 0.8253964958968887,
    fwiou: 0.6814584027810999,
    acc: 0.8057692307692308,
    biou: {
      1: [0.2602739726027397, 0.2740740740740741, 0.3142857142857143, 0.19883040935672514],
      2: [0.27208480565371024, 0.3389121338912134, 0.3463035019455253, 0.25],
      3: [0.31007751937984496, 0.4246575342465753, 0.38028169014084506, 0.33620689655172414],
    } as Record<number, number[]>,
  },
  "ignore-bg": {
    iou: [0.7203791469194313, 0.7642045454545454, 0.7912524850894632, 0.6407506702412868],
    miou: 0.7291467119261816,
    dice: [0.837465564738292, 0.8663446054750402, 0.8834628190899001, 0.7810457516339869],
    mdice: 0.8420796852343048,
    fwiou: 0.7392200271589581,
    acc: 0.8362128541810643,
    biou: {
      1: [0.2753623188405797, 0.2803030303030303, 0.36363636363636365, 0.20238095238095238],
      2: [0.2851851851851852, 0.3432203389830508, 0.39555555555555555, 0.25259515570934254],
      3: [0.32171581769436997, 0.4290657439446367, 0.4299363057324841, 0.3391304347826087],
    } as Record<number, number[]>,
  },
};

test("agrees with numpy/scipy reference values on a 40 x 40 case, both conventions, bands 1-3", () => {
  const { gt, pred, h, w } = referenceMasks();
  const space = { classes: ["c0", "c1", "c2", "c3"], backgroundId: 4 };
  for (const conv of ["count-bg", "ignore-bg"] as const) {
    const ref = REF[conv];
    for (const band of [1, 2, 3]) {
      const r = evaluateMasks([{ id: "ref", gt, pred, height: h, width: w }], { ...space, convention: conv, band });
      if (conv === "count-bg") assert.deepEqual(r.confusion, REF["count-bg"].cm);
      closeArr(r.scores.iou, ref.iou, 1e-14, `${conv} iou`);
      closeArr(r.scores.dice, ref.dice, 1e-14, `${conv} dice`);
      close(r.scores.miou, ref.miou, 1e-14, `${conv} miou`);
      close(r.scores.mdice, ref.mdice, 1e-14, `${conv} mdice`);
      close(r.scores.fwiou, ref.fwiou, 1e-14, `${conv} fwiou`);
      close(r.scores.pixelAccuracy, ref.acc, 1e-14, `${conv} acc`);
      closeArr(r.scores.biou, ref.biou[band]!, 1e-14, `${conv} biou d=${band}`);
      // One image: per-image scores equal the dataset's.
      close(r.perImage[0]!.miou, ref.miou, 1e-14, "per-image miou");
      closeArr(r.perImage[0]!.biou, ref.biou[band]!, 1e-14, "per-image biou");
    }
  }
});

/** Independent per-pixel computation: per class, count TP/FP/FN directly over the counted pixels. */
function naiveScores(gt: ArrayLike<number>, pred: ArrayLike<number>, nIds: number, bg: number, conv: BackgroundConvention) {
  const tp = new Array(nIds).fill(0);
  const fp = new Array(nIds).fill(0);
  const fn = new Array(nIds).fill(0);
  const gtCount = new Array(nIds).fill(0);
  let counted = 0;
  let correct = 0;
  for (let i = 0; i < gt.length; i++) {
    const g = gt[i]!;
    const p = pred[i]!;
    if (g === 255) continue;
    if (conv === "ignore-bg" && g === bg) continue;
    counted++;
    gtCount[g]++;
    if (g === p) {
      tp[g]++;
      correct++;
    } else {
      fp[p]++;
      fn[g]++;
    }
  }
  const iou = tp.map((t, c) => (t + fp[c] + fn[c] > 0 ? t / (t + fp[c] + fn[c]) : NaN));
  const dice = tp.map((t, c) => (2 * t + fp[c] + fn[c] > 0 ? (2 * t) / (2 * t + fp[c] + fn[c]) : NaN));
  let fw = 0;
  for (let c = 0; c < nIds; c++) if (gtCount[c] > 0) fw += (gtCount[c] / counted) * iou[c];
  return { iou, dice, fw, acc: correct / counted };
}

test("agrees with an independent per-pixel computation on random masks, both conventions", () => {
  const rng = new Rng(7);
  for (let trial = 0; trial < 20; trial++) {
    const n = 2 + rng.int(4); // 2..5 classes
    const bg = rng.int(n + 1);
    const classes = Array.from({ length: n }, (_, i) => `k${i}`);
    const h = 5 + rng.int(20);
    const w = 5 + rng.int(20);
    const pairs = Array.from({ length: 3 }, (_, j) => {
      const gt = new Uint8Array(h * w);
      const pred = new Uint8Array(h * w);
      for (let i = 0; i < h * w; i++) {
        gt[i] = rng.next() < 0.05 ? 255 : rng.int(n + 1);
        pred[i] = rng.next() < 0.6 && gt[i] !== 255 ? gt[i]! : rng.int(n + 1);
      }
      return { id: `img${j}`, gt, pred, height: h, width: w };
    });
    const allGt = new Uint8Array(pairs.flatMap((p) => Array.from(p.gt)));
    const allPred = new Uint8Array(pairs.flatMap((p) => Array.from(p.pred)));
    const fg = foregroundIds({ classes, backgroundId: bg });
    for (const conv of ["count-bg", "ignore-bg"] as const) {
      const r = evaluateMasks(pairs, { classes, backgroundId: bg, convention: conv, band: 1 });
      const ref = naiveScores(allGt, allPred, n + 1, bg, conv);
      const what = `trial ${trial} ${conv}`;
      closeArr(r.scores.iou, fg.map((c) => ref.iou[c]), 1e-12, `${what} iou`);
      closeArr(r.scores.dice, fg.map((c) => ref.dice[c]), 1e-12, `${what} dice`);
      close(r.scores.fwiou, ref.fw, 1e-12, `${what} fwiou`);
      close(r.scores.pixelAccuracy, ref.acc, 1e-12, `${what} acc`);
      // Per image.
      pairs.forEach((p, j) => {
        const pi = naiveScores(p.gt, p.pred, n + 1, bg, conv);
        closeArr(r.perImage[j]!.iou, fg.map((c) => pi.iou[c]), 1e-12, `${what} image ${j}`);
      });
    }
  }
});

test("evaluator: dataset level sums pixels over images (not a mean of per-image scores); report names the convention", () => {
  const ev = new SegmentationEvaluator({ ...SPACE, convention: "ignore-bg", band: 1, dataset: "toy" });
  ev.add("x", GT, PRED, 2, 4);
  ev.add("y", [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1], 2, 4);
  const r = ev.report();
  assert.equal(r.convention, "ignore-bg");
  assert.match(r.conventionNote, /MLPS/);
  assert.equal(r.images, 2);
  // Pooled ignore-bg matrix: GT0 -> [5, 2, 0], GT1 -> [0, 7, 0].
  closeArr(r.scores.iou, [5 / 7, 7 / 9], 1e-15, "pooled iou");
  close(r.perImage[1]!.miou, 1, 0, "perfect image");
  const table = formatEvalTable(r);
  assert.match(table, /convention ignore-bg/);
  assert.match(table, /^A\s+71\.43/m);
  assert.match(table, /FwIoU/);
  assert.match(table, /bIoU band 1 px/);
  // JSON round trip turns NaN into null and keeps the convention.
  const json = JSON.parse(JSON.stringify(r));
  assert.equal(json.convention, "ignore-bg");
  assert.equal(json.scores.background.iou, null);
});

test("errors name the image and the bad pixel", () => {
  const ev = new SegmentationEvaluator({ ...SPACE, convention: "count-bg" });
  assert.throws(() => ev.add("bad.png", [0, 7], [0, 0], 1, 2), /bad\.png: pixel 1 has ground truth 7/);
  assert.throws(() => ev.add("short.png", [0, 1], [0], 1, 2), /short\.png/);
  assert.throws(() => new SegmentationEvaluator({ ...SPACE, convention: "count-bg", band: 0 }), /band/);
});
