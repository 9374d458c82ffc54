"""Independent reference values for test/eval/*.test.ts.

Run with Debian's Python (numpy + python3-scipy from apt, development only):
    /usr/bin/python3 test/eval/reference/eval_reference.py
The printed numbers are pasted into the tests as constants.
"""
import numpy as np
from scipy import ndimage, special, stats

H = W = 40
ys, xs = np.mgrid[0:H, 0:W]
# Smooth regions (so boundary bands differ from whole masks) plus a ring of ignore.
gt = np.where(ys < 20, np.where(xs < 20, 0, 1), np.where(xs < 26, 2, 3))
gt[(xs - 20) ** 2 + (ys - 20) ** 2 <= 36] = 4
pred = np.where(ys < 17, np.where(xs < 23, 0, 1), np.where(xs < 22, 2, 3))
pred[(xs - 24) ** 2 + (ys - 22) ** 2 <= 25] = 4
pred[(xs - 8) ** 2 + (ys - 8) ** 2 <= 9] = 3
gt[xs == 35] = 255
BG, K = 4, 5

def scores(convention):
    valid = gt != 255
    if convention == "ignore-bg":
        valid &= gt != BG
    cm = np.bincount(gt[valid] * K + pred[valid], minlength=K * K).reshape(K, K).astype(float)
    tp = np.diag(cm); fp = cm.sum(0) - tp; fn = cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn); dice = 2 * tp / (2 * tp + fp + fn)
    freq = cm.sum(1) / cm.sum()
    fw = (freq[freq > 0] * iou[freq > 0]).sum()
    return cm, iou, dice, fw, tp.sum() / cm.sum()

def boundary(mask, d):
    er = ndimage.binary_erosion(mask, structure=np.ones((3, 3)), iterations=d, border_value=0)
    return mask & ~er

def biou(convention, d):
    valid = gt != 255
    if convention == "ignore-bg":
        valid &= gt != BG
    out = []
    for c in range(4):
        g = boundary(gt == c, d); p = boundary(pred == c, d)
        out.append(((g & p) & valid).sum() / ((g | p) & valid).sum())
    return out

np.set_printoptions(precision=17)
for conv in ("count-bg", "ignore-bg"):
    cm, iou, dice, fw, acc = scores(conv)
    print(conv, "cm rows", cm.astype(int).tolist())
    print(conv, "iou", [repr(float(v)) for v in iou[:4]], "miou", repr(float(np.nanmean(iou[:4]))))
    print(conv, "dice", [repr(float(v)) for v in dice[:4]], "mdice", repr(float(np.nanmean(dice[:4]))))
    print(conv, "fwiou", repr(float(fw)), "acc", repr(float(acc)))
    for d in (1, 2, 3):
        b = biou(conv, d)
        print(conv, "biou d=%d" % d, [repr(float(v)) for v in b], "mean", repr(float(np.mean(b))))
for c in range(4):
    print("boundary pixels class", c, [int(boundary(gt == c, d).sum()) for d in (1, 2, 3)])

print("t.cdf", [(t, df, repr(float(stats.t.cdf(t, df)))) for t, df in [(0.5, 3), (-1.7, 7), (2.3, 29), (4.0, 2.5), (-0.1, 100), (10.0, 5)]])
print("betainc", [(x, a, b, repr(float(special.betainc(a, b, x)))) for x, a, b in [(0.3, 2.0, 3.0), (0.9, 0.5, 0.5), (0.05, 10.0, 0.5), (0.7, 50.0, 40.0)]])
a = np.array([0.61, 0.72, 0.55, 0.80, 0.67, 0.59, 0.74, 0.70])
b = np.array([0.58, 0.70, 0.56, 0.71, 0.60, 0.57, 0.69, 0.71])
r = stats.ttest_rel(a, b)
print("ttest_rel", repr(float(r.statistic)), repr(float(r.pvalue)))
print("meanstd", repr(float(a.mean())), repr(float(a.std(ddof=1))))
