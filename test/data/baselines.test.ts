// The difficulty baselines on a hand-worked case (numbers computed by hand below).
import { test } from "node:test";
import assert from "node:assert/strict";
import { ClassMeanFitter, evaluateBaselines, mostFrequentLabelClass, predictNearestMean, tissueSums } from "../../src/data/baselines";

const px = (...c: number[][]): Uint8Array => Uint8Array.from(c.flat());

test("class means use non-white pixels of single-label patches only", () => {
  const f = new ClassMeanFitter(2, "rgb");
  f.addPatch(px([100, 50, 50], [120, 70, 70], [250, 250, 250]), [1, 0]); // white pixel (grey 250 > 200) ignored
  f.addPatch(px([50, 50, 150]), [0, 1]);
  f.addPatch(px([0, 0, 0]), [1, 1]); // two classes: ignored
  assert.deepEqual(f.means(), [
    [110, 60, 60],
    [50, 50, 150],
  ]);
  const [s, n] = tissueSums(px([255, 255, 255], [10, 100, 255]), "od");
  assert.equal(n, 1);
  const od = (v: number): number => -Math.log10(v / 255);
  [od(10), od(100), 0].forEach((v, i) => assert.ok(Math.abs(s[i]! - v) < 1e-12));
});

test("baseline (b) predictions and baseline (a) choice, by hand", () => {
  const means = [
    [110, 60, 60],
    [50, 50, 150],
  ];
  // (90,90,100): squared distances 2900 to class 0, 5700 to class 1.
  assert.deepEqual(Array.from(predictNearestMean(px([105, 55, 55], [60, 60, 140], [255, 255, 255], [90, 90, 100]), means, "rgb", 2)), [0, 1, 2, 0]);
  assert.equal(mostFrequentLabelClass([1, 1], [2, 2]), 0, "ties go to the lower id");
  assert.equal(mostFrequentLabelClass([1, 1], [2, 3]), 1);
  assert.equal(mostFrequentLabelClass([0, 1], [9, 3]), 1);
});

test("mIoU over foreground classes with ground-truth background counted", () => {
  const rgb = new ClassMeanFitter(2, "rgb");
  rgb.addPatch(px([100, 50, 50], [120, 70, 70]), [1, 0]);
  rgb.addPatch(px([50, 50, 150]), [0, 1]);
  const od = new ClassMeanFitter(2, "od");
  const r = evaluateBaselines(2, { rgb, od, trainClassFrequency: [2, 2], fitPatches: [1, 1] }, [
    { rgb: px([105, 55, 55], [60, 60, 140], [255, 255, 255], [90, 90, 100]), mask: Uint8Array.from([0, 1, 2, 1]), label: [1, 1] },
  ]);
  // (b): gt [0,1,2,1], pred [0,1,2,0] -> IoU0 = 1/2, IoU1 = 1/2, background 1.
  assert.deepEqual(r.nearestMeanRgb.iou, [0.5, 0.5, 1]);
  assert.equal(r.nearestMeanRgb.mIoU, 0.5);
  // (a): everything class 0 -> IoU0 = 1/4, IoU1 = 0, background 0 (a false negative only).
  assert.deepEqual(r.mostFrequent.iou, [0.25, 0, 0]);
  assert.equal(r.mostFrequent.mIoU, 0.125);
  // No single-label patches fitted in OD space: every tissue pixel falls back to background.
  assert.deepEqual(r.nearestMeanOd.iou, [0, 0, 0.25]);
});
