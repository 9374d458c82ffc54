#!/usr/bin/env python3
"""PyTorch reference runs for pbip's AdamW and learning-rate schedules (src/train/optim.ts,
src/train/schedule.ts), and the fixture generator.

Each scenario trains a tiny model (W [4,3], b [3], a scalar scale s) with
torch.optim.AdamW (decoupled weight decay, per-group lr and weight decay), a
torch.optim.lr_scheduler.LambdaLR carrying the release's poly schedule with linear
warm-up, and optionally torch.nn.utils.clip_grad_norm_, in float32 as PyTorch
trains, and records the learning rate and the parameters after every step.

It also checks that AdamW + LambdaLR equals a from-scratch re-statement of the
release's PolyWarmupAdamW (the learning rate set from global_step before each
AdamW step), so the fixture stands for the release's optimiser.

    /usr/bin/python3 test/reference/optim_reference.py   # rewrites test/fixtures/optim/adamw.json

Needs Debian's python3-torch; the tests read only the JSON.
"""
import json
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "optim")


def poly_warmup_factor(step, max_steps, power, warmup_steps, start_factor):
    """The release's schedule: linear warm-up from start_factor, then (1 - step/max)^power counted from step 0."""
    if step < warmup_steps:
        return 1 - (1 - step / warmup_steps) * (1 - start_factor)
    if step < max_steps:
        return (1 - step / max_steps) ** power
    return 0.0


class ReleaseStylePolyWarmupAdamW(torch.optim.AdamW):
    """Re-statement of the release's optimiser: before each AdamW step, every group's lr is its
    initial lr times the warm-up or poly factor of global_step; then global_step += 1."""

    def __init__(self, params, lr, weight_decay, betas, warmup_iter, max_iter, warmup_ratio, power):
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=1e-8)
        self.global_step = 0
        self.sched = (max_iter, power, warmup_iter, warmup_ratio)
        self.initial = [g["lr"] for g in self.param_groups]

    def step(self, closure=None):
        max_iter, power, warmup_iter, ratio = self.sched
        if self.global_step < max_iter:
            f = poly_warmup_factor(self.global_step, max_iter, power, warmup_iter, ratio)
            for g, lr0 in zip(self.param_groups, self.initial):
                g["lr"] = lr0 * f
        super().step(closure)
        self.global_step += 1


def make_problem(gen):
    x = torch.randn([8, 4], generator=gen)
    y = torch.randn([8, 3], generator=gen)
    params = {
        "W": torch.randn([4, 3], generator=gen) * 0.5,
        "b": torch.randn([3], generator=gen) * 0.1,
        "s": torch.tensor(1.5),
    }
    return x, y, params


def loss_fn(p, x, y):
    """mean((s * (x @ W) + b - y)^2) + 0.1 * sum(sin(W))  (float32)"""
    pred = p["s"] * (x @ p["W"]) + p["b"]
    return ((pred - y) ** 2).mean() + 0.1 * torch.sin(p["W"]).sum()


def run(scn, x, y, init, release_style=False):
    p = {k: v.clone().requires_grad_(True) for k, v in init.items()}
    groups = []
    for g in scn["groups"]:
        groups.append({"params": [p[n] for n in g["params"]], "lr": scn["lr"] * g["lrScale"], "weight_decay": g["weightDecay"]})
    sch = scn["schedule"]
    if release_style:
        opt = ReleaseStylePolyWarmupAdamW(groups, lr=scn["lr"], weight_decay=0.0, betas=(0.9, 0.999),
                                          warmup_iter=sch["warmupSteps"], max_iter=sch["maxSteps"],
                                          warmup_ratio=sch["startFactor"], power=sch["power"])
        lr_sched = None
    else:
        opt = torch.optim.AdamW(groups, lr=scn["lr"], betas=(0.9, 0.999), eps=1e-8)
        lr_sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: poly_warmup_factor(step, sch["maxSteps"], sch["power"], sch["warmupSteps"], sch["startFactor"]))
    lrs, losses, grad_norms, history = [], [], [], []
    for step in range(scn["steps"]):
        opt.zero_grad()
        loss = loss_fn(p, x, y)
        loss.backward()
        if scn.get("clipGradNorm") is not None:
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_([p["W"], p["b"], p["s"]], scn["clipGradNorm"])))
        if not release_style:
            lrs.append(opt.param_groups[0]["lr"] / scn["groups"][0]["lrScale"])
        losses.append(loss.item())
        opt.step()
        if lr_sched is not None:
            lr_sched.step()
        history.append({k: [float(v) for v in t.detach().reshape(-1).tolist()] for k, t in p.items()})
    return lrs, losses, grad_norms, history


def main():
    gen = torch.Generator().manual_seed(7)
    x, y, init = make_problem(gen)
    scenarios = [
        {"name": "two groups, warm-up then poly power 1",
         "lr": 0.02, "steps": 25,
         "groups": [{"name": "matrices", "params": ["W"], "lrScale": 1.0, "weightDecay": 0.05},
                    {"name": "vectors", "params": ["b", "s"], "lrScale": 2.0, "weightDecay": 0.02}],
         "schedule": {"maxSteps": 25, "power": 1.0, "warmupSteps": 4, "startFactor": 0.1}},
        {"name": "release-like one group, clip 0.5, poly power 0.9",
         "lr": 0.05, "steps": 20, "clipGradNorm": 0.5,
         "groups": [{"name": "all", "params": ["W", "b", "s"], "lrScale": 1.0, "weightDecay": 1e-3}],
         "schedule": {"maxSteps": 30, "power": 0.9, "warmupSteps": 0, "startFactor": 1e-6}},
    ]
    out = []
    for scn in scenarios:
        lrs, losses, norms, history = run(scn, x, y, init)
        _, _, _, history2 = run(scn, x, y, init, release_style=True)
        assert history == history2, f"{scn['name']}: AdamW + LambdaLR differs from the release-style PolyWarmupAdamW"
        out.append({**scn, "lrs": lrs, "losses": losses, "gradNorms": norms, "params": history})
        print(f"{scn['name']}: loss {losses[0]:.4f} -> {losses[-1]:.4f}; AdamW+LambdaLR == release-style PolyWarmupAdamW")
    payload = {
        "generator": "test/reference/optim_reference.py", "torch": torch.__version__, "dtype": "float32",
        "problem": "loss = mean((s * (x @ W) + b - y)^2) + 0.1 * sum(sin(W))",
        "x": [float(v) for v in x.reshape(-1).tolist()], "xShape": [8, 4],
        "y": [float(v) for v in y.reshape(-1).tolist()], "yShape": [8, 3],
        "init": {k: [float(v) for v in t.reshape(-1).tolist()] for k, t in init.items()},
        "shapes": {k: list(t.shape) for k, t in init.items()},
        "scenarios": out,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "adamw.json")
    with open(path + ".tmp", "w") as fh:
        json.dump(payload, fh, separators=(",", ":"))
        fh.write("\n")
    os.replace(path + ".tmp", path)
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
