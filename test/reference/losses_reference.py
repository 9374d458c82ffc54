#!/usr/bin/env python3
"""Independent PyTorch reference for pbip's losses (src/losses), and the fixture generator.

Written from the formulas of METHOD.md sections 3-4 and the paper's eq. 7-13, in the
release's own form (plain sums of exponentials, one pair at a time, in float64), not
in the log-sum-exp form the TypeScript code uses, so the two are independent.

    /usr/bin/python3 test/reference/losses_reference.py      # rewrites test/fixtures/losses/*.json

Needs PyTorch (Debian's python3-torch; the pyenv python3 on PATH has none). The tests
read only the JSON fixtures, so CI does not need PyTorch. Seeded: reruns give the same
files.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "losses")


def offsets(k):
    out = [0]
    for kn in k:
        out.append(out[-1] + kn)
    return out


def merge_subclass(logits, k, mode):
    """[B, S] -> [B, N]: mean of a class's K logits, or sum(softmax(s) * s) over them."""
    cols = []
    off = offsets(k)
    for n in range(len(k)):
        s = logits[:, off[n]:off[n + 1]]
        if mode == "mean":
            cols.append(s.mean(dim=1))
        else:
            cols.append((torch.softmax(s, dim=1) * s).sum(dim=1))
    return torch.stack(cols, dim=1)


def classification_loss(stage_logits, labels, k, weights, merge):
    per_stage = []
    for logits in stage_logits:
        merged = merge_subclass(logits, k, merge)
        a = F.multilabel_soft_margin_loss(merged, labels)
        b = F.binary_cross_entropy_with_logits(merged, labels)  # the release's nn.BCEWithLogitsLoss()
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14), (a.item(), b.item())
        per_stage.append(a)
    total = sum(w * l for w, l in zip(weights, per_stage))
    return total, per_stage


def fg_loss(feat, positives, protos, t, reduction):
    """L_FGS, eq. 9-10: -log(S+ / (S+ + S-)); negatives are all other prototypes, siblings included."""
    f = F.normalize(feat, dim=-1)
    p = F.normalize(protos, dim=-1)
    S = p.shape[0]
    pos_sum = torch.zeros((), dtype=feat.dtype)
    neg_sum = torch.zeros((), dtype=feat.dtype)
    per_pair = []
    for i in range(f.shape[0]):
        j = int(positives[i])
        e_pos = torch.exp(torch.dot(f[i], p[j]) / t)
        e_neg = sum(torch.exp(torch.dot(f[i], p[m]) / t) for m in range(S) if m != j)
        pos_sum = pos_sum + e_pos
        neg_sum = neg_sum + e_neg
        per_pair.append(-torch.log(e_pos / (e_pos + e_neg)))
    if reduction == "batch":
        return -torch.log(pos_sum / (pos_sum + neg_sum))
    return torch.stack(per_pair).mean()


def bg_loss(feat, positives, protos, t, reduction):
    """L_BGS, eq. 11-12: -log(B- / (B- + B+)), B- the mean over the S-1 negatives, B+ the own prototype."""
    g = F.normalize(feat, dim=-1)
    p = F.normalize(protos, dim=-1)
    S = p.shape[0]
    bneg_sum = torch.zeros((), dtype=feat.dtype)
    bpos_sum = torch.zeros((), dtype=feat.dtype)
    per_pair = []
    for i in range(g.shape[0]):
        j = int(positives[i])
        negs = [torch.exp(torch.dot(g[i], p[m]) / t) for m in range(S) if m != j]
        b_neg = sum(negs) / len(negs)
        b_pos = torch.exp(torch.dot(g[i], p[j]) / t)
        bneg_sum = bneg_sum + b_neg
        bpos_sum = bpos_sum + b_pos
        per_pair.append(-torch.log(b_neg / (b_neg + b_pos)))
    if reduction == "batch":
        return -torch.log(bneg_sum / (bneg_sum + bpos_sum))
    return torch.stack(per_pair).mean()


def total_loss(cls, fg, bg, cam, w):
    """eq. 6 and 13 plus the release's regulariser inside the beta term."""
    return w["alpha"] * cls + w["beta"] * (w["theta1"] * fg + w["theta2"] * bg + w["camRegWeight"] * cam.mean())


def f32(shape, gen, scale=1.0):
    """float32 random normal values (exactly representable in the JS Float32Array), promoted to float64."""
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).double()


def flat(x):
    return [float(v) for v in x.detach().reshape(-1).tolist()]


def leaf(x):
    return x.clone().requires_grad_(True)


def merge_cases(gen):
    cases = []
    for name, k, b in [("equal-k", [3, 3, 3, 3], 4), ("unequal-k", [2, 3, 1], 3)]:
        s = sum(k)
        x = f32([b, s], gen, 3.0)
        for mode in ["mean", "softmax"]:
            xl = leaf(x)
            out = merge_subclass(xl, k, mode)
            # scalar objective with fixed weights so the gradient is informative
            wts = torch.arange(1, out.numel() + 1, dtype=torch.float64).reshape(out.shape) / out.numel()
            (out * wts).sum().backward()
            cases.append({"name": f"{name} {mode}", "k": k, "mode": mode, "logits": flat(x), "shape": [b, s],
                          "out": flat(out), "objWeights": flat(wts), "gradLogits": flat(xl.grad)})
    return cases


def classification_cases(gen):
    cases = []
    for name, k, b, weights, merge in [
        ("release 4 stages, k=3x4, mean", [3, 3, 3, 3], 5, [0.0, 0.1, 1.0, 1.0], "mean"),
        ("2 stages, k=[2,3,1], softmax", [2, 3, 1], 4, [1.0, 0.5], "softmax"),
    ]:
        s = sum(k)
        n = len(k)
        stages = [f32([b, s], gen, 4.0) for _ in weights]
        labels = (torch.rand([b, n], generator=gen) < 0.5).double()
        labels[0] = 0.0
        labels[0, 0] = 1.0  # at least one single-class row
        leaves = [leaf(x) for x in stages]
        total, per = classification_loss(leaves, labels, k, weights, merge)
        total.backward()
        cases.append({"name": name, "k": k, "merge": merge, "stageWeights": weights, "shape": [b, s],
                      "stageLogits": [flat(x) for x in stages], "labels": flat(labels),
                      "total": total.item(), "perStage": [p.item() for p in per],
                      "gradStageLogits": [flat(x.grad) for x in leaves]})
    return cases


def contrastive_cases(gen):
    cases = []
    for name, k, npairs, d, t in [
        ("release t=0.07, k=3x4", [3, 3, 3, 3], 7, 16, 0.07),
        ("paper t=1, k=[2,3,1]", [2, 3, 1], 5, 8, 1.0),
        ("one pair, t=0.07", [3, 3], 1, 8, 0.07),
    ]:
        s = sum(k)
        feats = f32([npairs, d], gen, 2.0)
        protos = F.normalize(f32([s, d], gen), dim=-1).float().double()  # unit rows, as the release's bank
        positives = torch.randint(0, s, [npairs], generator=gen)
        for loss_name, fn in [("fg", fg_loss), ("bg", bg_loss)]:
            for reduction in ["batch", "pair"]:
                fl, pl = leaf(feats), leaf(protos)
                loss = fn(fl, positives, pl, t, reduction)
                loss.backward()
                cases.append({"name": f"{loss_name} {reduction} {name}", "loss": loss_name, "reduction": reduction,
                              "temperature": t, "k": k, "features": flat(feats), "featureShape": [npairs, d],
                              "prototypes": flat(protos), "prototypeShape": [s, d],
                              "positives": [int(v) for v in positives.tolist()],
                              "value": loss.item(), "gradFeatures": flat(fl.grad), "gradPrototypes": flat(pl.grad)})
    return cases


def total_cases(gen):
    cases = []
    for name, w in [
        ("release", {"alpha": 1.0, "beta": 0.1, "theta1": 1.0, "theta2": 1.0, "camRegWeight": 0.0005}),
        ("paper", {"alpha": 1.0, "beta": 0.5, "theta1": 1.0, "theta2": 0.5, "camRegWeight": 0.0}),
    ]:
        cls, fg, bg = (f32([], gen).abs() for _ in range(3))
        cam = f32([2, 6, 3, 3], gen)
        leaves = [leaf(x) for x in (cls, fg, bg, cam)]
        tot = total_loss(*leaves, w)
        tot.backward()
        cases.append({"name": name, "weights": w, "cls": cls.item(), "fg": fg.item(), "bg": bg.item(),
                      "cam": flat(cam), "camShape": [2, 6, 3, 3], "total": tot.item(),
                      "grads": {"cls": leaves[0].grad.item(), "fg": leaves[1].grad.item(), "bg": leaves[2].grad.item(),
                                "cam": flat(leaves[3].grad)}})
    return cases


def write(name, payload):
    path = os.path.join(OUT, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, separators=(",", ":"))
        fh.write("\n")
    os.replace(tmp, path)
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    meta = {"generator": "test/reference/losses_reference.py", "torch": torch.__version__, "dtype": "float64 math on float32 inputs"}
    gen = torch.Generator().manual_seed(20250601)
    write("merge.json", {**meta, "cases": merge_cases(gen)})
    write("classification.json", {**meta, "cases": classification_cases(gen)})
    write("contrastive.json", {**meta, "cases": contrastive_cases(gen)})
    write("total.json", {**meta, "cases": total_cases(gen)})


if __name__ == "__main__":
    main()
