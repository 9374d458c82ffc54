#!/usr/bin/python3
"""Independent PyTorch reference of the SegFormer Mix Transformer (MiT) encoder.

Written for pbip's tests from the structure of the original SegFormer
`mix_transformer.py` (NVlabs, as used by the PBIP release): module and parameter
names are the original ones (`patch_embed1.proj`, `block1.0.attn.kv`, `norm1`,
...), so a `state_dict()` of this module has exactly the names of `mit_b1.pth`.

What it writes into --out-dir:
  weights.safetensors     the model's parameters under the original names (plus a
                          dummy `head.weight`/`head.bias`, as in the ImageNet
                          checkpoints, which loaders must ignore)
  weights_hf.safetensors  (with --hf) the same numbers under Hugging Face
                          `SegformerForImageClassification` names, k and v split
  weights.pth             (with --pth) the same state dict saved by torch.save as
                          {"state_dict": {"module.<name>": ...}}, to test converters
  grad.safetensors        (with --grad) `loss_weight.stage1..4` (NHWC), `loss`, and
                          `grad.<name>` for every encoder parameter (PyTorch
                          layout): gradients of sum_s sum(stage_s * loss_weight_s)
  io.safetensors          `input` (NHWC, stored like the weights) and, per --case,
                          `<case>.stage1`..`<case>.stage4` (NHWC, F32): the
                          outputs of the four stages in eval mode

The forward pass runs in float64 on float32 (or rounded, see --round) weights and
a float32 input, so the reference error is far below the float32 tolerance the
TensorFlow.js tests use. The .safetensors writer is hand-written (8-byte LE header
length, JSON, raw bytes): only torch and numpy are needed.

Usage:
  /usr/bin/python3 test/reference/mit_reference.py --config b1 --out-dir DIR \
      --input 1,224,224 --case release:4,2,2,1
  /usr/bin/python3 test/reference/mit_reference.py --config tiny --round bf16 --hf \
      --weights-dtype F16 --out-dir test/fixtures/mit --input 2,64,40 \
      --case release:4,2,2,1 --case original:4,2,2,2
"""
import argparse
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # dims, heads, depths, sr_ratios, mlp_ratios (per stage, as in the original)
    "tiny": ([8, 16, 24, 32], [1, 2, 3, 4], [1, 1, 1, 1], [8, 4, 2, 1], [4, 2, 2, 2]),
    "b0": ([32, 64, 160, 256], [1, 2, 5, 8], [2, 2, 2, 2], [8, 4, 2, 1], [4, 4, 4, 4]),
    "b1": ([64, 128, 320, 512], [1, 2, 5, 8], [2, 2, 2, 2], [8, 4, 2, 1], [4, 4, 4, 4]),
    "b2": ([64, 128, 320, 512], [1, 2, 5, 8], [3, 4, 6, 3], [8, 4, 2, 1], [4, 4, 4, 4]),
}

BLOCK_EPS = 1e-6  # norm_layer=partial(nn.LayerNorm, eps=1e-6): block norm1/norm2 and stage norm1..4


# ---------------------------------------------------------------- modules
class DWConv(nn.Module):
    """3x3 depthwise convolution over the token grid (Mix-FFN's positional mixing)."""

    def __init__(self, dim):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x, h, w):
        b, n, c = x.shape
        grid = x.transpose(1, 2).reshape(b, c, h, w)
        return self.dwconv(grid).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """Mix-FFN: fc1 -> depthwise 3x3 -> GELU (erf) -> fc2."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()  # exact erf form
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, h, w):
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Attention(nn.Module):
    """Efficient self-attention: keys and values from a sequence reduced by a
    kernel=stride=sr convolution followed by LayerNorm (default eps 1e-5)."""

    def __init__(self, dim, heads, sr_ratio, qkv_bias=True):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, h, w):
        b, n, c = x.shape
        hd = c // self.heads
        q = self.q(x).reshape(b, n, self.heads, hd).permute(0, 2, 1, 3)
        src = x
        if self.sr_ratio > 1:
            grid = x.permute(0, 2, 1).reshape(b, c, h, w)
            src = self.norm(self.sr(grid).reshape(b, c, -1).permute(0, 2, 1))
        kv = self.kv(src).reshape(b, -1, 2, self.heads, hd).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, sr_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.attn = Attention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, h, w):
        # eval mode: drop_path is the identity
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: conv (kernel k, padding k//2) then LayerNorm (default eps 1e-5)."""

    def __init__(self, k, stride, cin, dim):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, kernel_size=k, stride=stride, padding=k // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        y = self.proj(x)
        _, _, h, w = y.shape
        return self.norm(y.flatten(2).transpose(1, 2)), h, w


class MixVisionTransformer(nn.Module):
    def __init__(self, dims, heads, depths, srs, mlp_ratios, strides, num_classes=10):
        super().__init__()
        cin = 3
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(7 if i == 0 else 3, strides[i], cin, dims[i]))
            setattr(self, f"block{i + 1}", nn.ModuleList([Block(dims[i], heads[i], mlp_ratios[i], srs[i]) for _ in range(depths[i])]))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i], eps=BLOCK_EPS))
            cin = dims[i]
        self.head = nn.Linear(dims[3], num_classes)  # the ImageNet classifier; pbip ignores it

    def set_strides(self, strides):
        for i in range(4):
            getattr(self, f"patch_embed{i + 1}").proj.stride = (strides[i], strides[i])

    def forward(self, x):
        outs = []
        b = x.shape[0]
        for i in range(4):
            t, h, w = getattr(self, f"patch_embed{i + 1}")(x)
            for blk in getattr(self, f"block{i + 1}"):
                t = blk(t, h, w)
            t = getattr(self, f"norm{i + 1}")(t)
            x = t.reshape(b, h, w, -1).permute(0, 3, 1, 2)
            outs.append(x)
        return outs


# ---------------------------------------------------------------- weights
def round_weights(t, mode):
    """Round to a grid both F16 and BF16 represent exactly (mode 'bf16'), or leave as float32."""
    if mode == "none":
        return t
    r = t.float().to(torch.bfloat16).float()
    tiny = r.abs() < 2.0 ** -14  # below F16's normal range: flush to zero
    return torch.where(tiny, torch.zeros_like(r), r)


def randomise(model, seed, rounding):
    """Seeded random values for every parameter, biases and LayerNorm affine included, so
    that a loader that skips or transposes any of them is caught."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            elif p.dim() == 1:  # LayerNorm weight
                v = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
            else:
                fan_in = int(np.prod(p.shape[1:]))
                v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
            p.copy_(round_weights(v, rounding))


def hf_names(state):
    """The same parameters under Hugging Face SegformerForImageClassification names."""
    out = {}
    for name, t in state.items():
        parts = name.split(".")
        if parts[0] == "head":
            out["classifier." + ".".join(parts[1:])] = t
        elif parts[0].startswith("patch_embed"):
            i = int(parts[0][len("patch_embed"):]) - 1
            sub = {"proj": "proj", "norm": "layer_norm"}[parts[1]]
            out[f"segformer.encoder.patch_embeddings.{i}.{sub}.{parts[2]}"] = t
        elif parts[0].startswith("norm"):
            i = int(parts[0][len("norm"):]) - 1
            out[f"segformer.encoder.layer_norm.{i}.{parts[1]}"] = t
        elif parts[0].startswith("block"):
            i = int(parts[0][len("block"):]) - 1
            j = int(parts[1])
            pre = f"segformer.encoder.block.{i}.{j}."
            rest = parts[2:]
            if rest[0] in ("norm1", "norm2"):
                out[pre + {"norm1": "layer_norm_1", "norm2": "layer_norm_2"}[rest[0]] + "." + rest[1]] = t
            elif rest[0] == "attn":
                what, kind = rest[1], rest[2]
                if what == "kv":
                    c = t.shape[0] // 2
                    out[pre + "attention.self.key." + kind] = t[:c]
                    out[pre + "attention.self.value." + kind] = t[c:]
                elif what == "proj":
                    out[pre + "attention.output.dense." + kind] = t
                else:
                    out[pre + "attention.self." + {"q": "query", "sr": "sr", "norm": "layer_norm"}[what] + "." + kind] = t
            elif rest[0] == "mlp":
                if rest[1] == "dwconv":
                    out[pre + "mlp.dwconv.dwconv." + rest[3]] = t
                else:
                    out[pre + "mlp." + {"fc1": "dense1", "fc2": "dense2"}[rest[1]] + "." + rest[2]] = t
            else:
                raise KeyError(name)
        else:
            raise KeyError(name)
    return out


# ---------------------------------------------------------------- safetensors
def save_safetensors(path, tensors, dtype="F32", metadata=None):
    """Hand-written safetensors writer: u64 LE header length, JSON header, raw LE bytes.
    `dtype` is one of F32/F16/F64, or a dict from tensor name to one of them."""
    header = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        dt = dtype[name] if isinstance(dtype, dict) else dtype
        np_dtype = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dt]
        arr = np.ascontiguousarray(tensors[name].detach().cpu().double().numpy().astype(np_dtype))
        raw = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    js = json.dumps(header, separators=(",", ":")).encode("utf8")
    js += b" " * ((8 - len(js) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--weights-dtype", choices=["F32", "F16"], default="F32")
    ap.add_argument("--round", choices=["none", "bf16"], default="none",
                    help="round weights to values F16 and BF16 both hold exactly")
    ap.add_argument("--hf", action="store_true", help="also write weights_hf.safetensors")
    ap.add_argument("--pth", action="store_true", help="also write weights.pth (torch.save, wrapped and module.-prefixed)")
    ap.add_argument("--grad", action="store_true",
                    help="also write grad.safetensors: parameter gradients of a seeded linear loss (first --case)")
    ap.add_argument("--input", default="1,224,224", help="B,H,W of the seeded random input (RGB)")
    ap.add_argument("--case", action="append", default=[],
                    help="NAME:s0,s1,s2,s3  stage strides of one forward pass of the input")
    args = ap.parse_args()

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    dims, heads, depths, srs, mlp = CONFIGS[args.config]
    model = MixVisionTransformer(dims, heads, depths, srs, mlp, [4, 2, 2, 1])
    randomise(model, args.seed, args.round)
    model.eval()
    os.makedirs(args.out_dir, exist_ok=True)
    state = model.state_dict()
    meta = {"config": args.config, "seed": args.seed, "writer": "test/reference/mit_reference.py"}
    save_safetensors(os.path.join(args.out_dir, "weights.safetensors"), state, args.weights_dtype, meta)
    if args.hf:
        save_safetensors(os.path.join(args.out_dir, "weights_hf.safetensors"), hf_names(state), args.weights_dtype, meta)
    if args.pth:
        # As a DataParallel training script would save it: wrapped, `module.`-prefixed.
        wrapped = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 300}
        torch.save(wrapped, os.path.join(args.out_dir, "weights.pth"))

    model64 = model.double()
    g = torch.Generator().manual_seed(args.seed + 1000)
    b, h, w = [int(v) for v in args.input.split(",")]
    x = round_weights(torch.randn((b, 3, h, w), generator=g), args.round)
    io = {"input": x.permute(0, 2, 3, 1)}
    dtypes = {"input": args.weights_dtype}
    for spec in args.case:
        name, s = spec.split(":")
        strides = [int(v) for v in s.split(",")]
        model64.set_strides(strides)
        with torch.no_grad():
            outs = model64(x.double())
        for k, o in enumerate(outs):
            io[f"{name}.stage{k + 1}"] = o.permute(0, 2, 3, 1).float()
            dtypes[f"{name}.stage{k + 1}"] = "F32"
        meta[f"strides.{name}"] = s
        print(name, "strides", strides, "input", [b, h, w, 3], "stages", [list(o.permute(0, 2, 3, 1).shape) for o in outs])
    save_safetensors(os.path.join(args.out_dir, "io.safetensors"), io, dtypes, meta)

    if args.grad:
        # Gradients of loss = sum_s sum(stage_s * R_s) (R_s seeded, NHWC) w.r.t. every
        # parameter, in PyTorch layout, for the first --case's strides.
        name, s = args.case[0].split(":")
        model64.set_strides([int(v) for v in s.split(",")])
        model64.zero_grad()
        outs = model64(x.double())
        gw = torch.Generator().manual_seed(args.seed + 2000)
        grad = {}
        loss = 0
        for k, o in enumerate(outs):
            r = torch.randn(o.permute(0, 2, 3, 1).shape, generator=gw, dtype=torch.float64)
            grad[f"loss_weight.stage{k + 1}"] = r
            loss = loss + (o.permute(0, 2, 3, 1) * r).sum()
        loss.backward()
        grad["loss"] = loss.detach().reshape(1)
        for pname, p in model64.named_parameters():
            if not pname.startswith("head."):
                grad[f"grad.{pname}"] = p.grad
        save_safetensors(os.path.join(args.out_dir, "grad.safetensors"), grad, "F32", {**meta, "strides": s})
        print("gradients of", len(grad) - 5, "parameters, loss", float(loss))


if __name__ == "__main__":
    main()
