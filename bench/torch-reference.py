#!/usr/bin/env python3
"""PyTorch figures for scale beside `pbip bench` (not part of pbip; needs torch, timm, transformers).

Times the two big parts of the release's stage-1 step in PyTorch on the machine it runs
on, fp32, random weights, with the same shapes as `pbip bench`'s release case:

  - MiT-b1 (SegFormer's encoder, transformers' SegformerModel) forward+backward,
    batch 10, 224 px, training mode;
  - Swin-T (timm's swin_tiny_patch4_window7_224, frozen) forward+backward to its input
    on the step's region images (65 by default, the count `pbip bench` reports).

It is not the whole step (no CAMs, matching, losses or optimiser), so it bounds
PyTorch's step from below. Usage:

  python3 bench/torch-reference.py                    # CUDA when available, else CPU
  python3 bench/torch-reference.py --device cpu --threads 2
  python3 bench/torch-reference.py --regions 44 --reps 7

Prints one line per part and a JSON line at the end.
"""
import argparse
import json
import statistics
import time

import timm
import torch
from transformers import SegformerConfig, SegformerModel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads); 0 leaves PyTorch's default")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--regions", type=int, default=65)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    where = torch.cuda.get_device_name(dev) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, timm {timm.__version__} on {where}; fp32"
          + (f" (TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN TF32 {torch.backends.cudnn.allow_tf32})" if cuda else ""))

    torch.manual_seed(0)
    # MiT-b1: SegFormer's b1 encoder (hidden sizes 64/128/320/512, depths 2/2/2/2).
    cfg = SegformerConfig(num_channels=3, num_encoder_blocks=4, depths=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1],
                          hidden_sizes=[64, 128, 320, 512], num_attention_heads=[1, 2, 5, 8], mlp_ratios=[4, 4, 4, 4])
    mit = SegformerModel(cfg).to(dev).train()
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0).to(dev).eval()
    for p in swin.parameters():
        p.requires_grad_(False)
    x = torch.rand(a.batch, 3, a.size, a.size, device=dev)
    regions = torch.rand(a.regions, 3, 224, 224, device=dev)

    def mit_step() -> None:
        mit.zero_grad(set_to_none=True)
        hidden = mit(x, output_hidden_states=True).hidden_states
        sum(h.mean() for h in hidden).backward()

    def swin_step() -> None:
        r = regions.clone().requires_grad_(True)
        swin(r).sum().backward()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    results = {}
    for name, f in [(f"MiT-b1 forward+backward, batch {a.batch}, {a.size} px", mit_step),
                    (f"Swin-T forward+backward to the input, {a.regions} region images, 224 px", swin_step)]:
        for _ in range(a.warmup):
            f()
        sync()
        times = []
        for _ in range(a.reps):
            t = time.perf_counter()
            f()
            sync()
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        results[name] = {"median_s": med, "min_s": min(times), "max_s": max(times), "reps": a.reps}
        print(f"{name}: median {med * 1000:.1f} ms (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, {a.reps} reps)")
    print(json.dumps({"kind": "pbip-torch-reference", "device": where, "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()
