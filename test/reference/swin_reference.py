#!/usr/bin/python3
"""Independent PyTorch reference of the Swin Transformer as Hugging Face's `SwinModel`.

Written for pbip's tests from the structure of `transformers`' Swin (module and
parameter names as `SwinModel.state_dict()` has them: `embeddings.patch_embeddings
.projection`, `encoder.layers.{i}.blocks.{j}.attention.self.query`, ...), with its
own forward code: windows are cut with explicit index arithmetic, the shift mask
is built from the region of each padded-map coordinate, and the relative position
bias is looked up from coordinate differences. Nothing here imports transformers.

What it writes into --out-dir:
  weights.safetensors     the parameters (HF names, optionally under --prefix, e.g.
                          `swin.` as SwinForImageClassification, which then also gets
                          a dummy `classifier.weight`/`classifier.bias`), the int64
                          `relative_position_index` buffers, and `projection.weight`
                          [P, F] unless --projection-file is given
  projection.safetensors  (with --projection-file) `projection.weight` alone
  io.safetensors          `pooled` [B, F] (pooler_output), `projected` [B, P]
                          (pooled @ projection.T), `tokens` [B, h, w, F]
                          (last_hidden_state as a map), and with --grad:
                          `grad_weights` [B, P] and `grad_input0` [H, W, 3] =
                          d sum(projected * grad_weights) / d input[0] (NHWC)

The input is not stored: it is mulberry32(--input-seed) in [-1, 1), NHWC, exactly
as `randomArray(n, seed)` in test/helpers.ts draws it, rounded to float32. Weights
are drawn with torch's generator (seed --seed) as float32, then everything runs in
float64, so the reference error is far below the float32 tolerance of the tests.
The .safetensors writer is hand-written (8-byte LE header length, JSON, raw bytes).

Usage:
  /usr/bin/python3 test/reference/swin_reference.py --config tiny --window 3 \
      --input 2,72,96 --grad --prefix swin. --projection-file --out-dir test/fixtures/swin
  /usr/bin/python3 test/reference/swin_reference.py --config swin-t --input 1,224,224 \
      --grad --out-dir .cache/swin-reference/...
"""
import argparse
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn

CONFIGS = {
    # embed_dim, depths, num_heads, window_size, projection dim
    "tiny": (4, [2, 2, 2, 2], [1, 2, 2, 4], 3, 8),
    "swin-t": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 512),
}
PATCH = 4
MLP_RATIO = 4
EPS = 1e-5


# ---------------------------------------------------------------- input
def mulberry32(n, seed):
    """The same numbers as randomArray(n, seed) in test/helpers.ts (float64, before rounding)."""
    a = seed & 0xFFFFFFFF
    out = np.empty(n, dtype=np.float64)
    m = 0xFFFFFFFF
    for i in range(n):
        a = (a + 0x6D2B79F5) & m
        t = a
        t = ((t ^ (t >> 15)) * (t | 1)) & m
        t = (t ^ ((t + (((t ^ (t >> 7)) * (t | 61)) & m)) & m)) & m
        out[i] = ((t ^ (t >> 14)) & m) / 4294967296 * 2 - 1
    return out


# ---------------------------------------------------------------- modules (HF names)
class PatchEmbeddings(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        self.projection = nn.Conv2d(3, embed_dim, kernel_size=PATCH, stride=PATCH)


class Embeddings(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        self.patch_embeddings = PatchEmbeddings(embed_dim)
        self.norm = nn.LayerNorm(embed_dim, eps=EPS)


def relative_index(w):
    """Row of the bias table for every (query, key) pair of a w x w window, from coordinate differences."""
    idx = torch.empty(w * w, w * w, dtype=torch.int64)
    for i in range(w * w):
        for j in range(w * w):
            dy = i // w - j // w
            dx = i % w - j % w
            idx[i, j] = (dy + w - 1) * (2 * w - 1) + (dx + w - 1)
    return idx


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.heads = heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_index(window))
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)


class SelfOutput(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dense = nn.Linear(dim, dim)


class Attention(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.self = SelfAttention(dim, heads, window)
        self.output = SelfOutput(dim)


class Intermediate(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dense = nn.Linear(dim, MLP_RATIO * dim)


class Output(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dense = nn.Linear(MLP_RATIO * dim, dim)


class Layer(nn.Module):
    def __init__(self, dim, heads, window, odd):
        super().__init__()
        self.window = window
        self.odd = odd
        self.layernorm_before = nn.LayerNorm(dim, eps=EPS)
        self.attention = Attention(dim, heads, window)
        self.layernorm_after = nn.LayerNorm(dim, eps=EPS)
        self.intermediate = Intermediate(dim)
        self.output = Output(dim)

    def forward(self, x, hw):
        H, W = hw
        B, L, C = x.shape
        ws = self.window
        shift = ws // 2 if self.odd else 0
        if min(H, W) <= ws:
            shift = 0
            assert min(H, W) == ws, "map smaller than the window"
        heads = self.attention.self.heads
        hd = C // heads
        h = self.layernorm_before(x).view(B, H, W, C)
        Hp = -(-H // ws) * ws
        Wp = -(-W // ws) * ws
        padded = torch.zeros(B, Hp, Wp, C, dtype=x.dtype)
        padded[:, :H, :W] = h
        # Window w = (wy, wx), token t = (ty, tx) reads padded[(wy*ws+ty+shift) % Hp, (wx*ws+tx+shift) % Wp].
        nWh, nWw = Hp // ws, Wp // ws
        ys = torch.tensor([[(wy * ws + t // ws + shift) % Hp for t in range(ws * ws)] for wy in range(nWh) for wx in range(nWw)])
        xs = torch.tensor([[(wx * ws + t % ws + shift) % Wp for t in range(ws * ws)] for wy in range(nWh) for wx in range(nWw)])
        win = padded[:, ys, xs]  # [B, nW, T, C]
        sa = self.attention.self
        q = sa.query(win).view(B, -1, ws * ws, heads, hd).transpose(2, 3)
        k = sa.key(win).view(B, -1, ws * ws, heads, hd).transpose(2, 3)
        v = sa.value(win).view(B, -1, ws * ws, heads, hd).transpose(2, 3)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)  # [B, nW, heads, T, T]
        bias = sa.relative_position_bias_table[relative_index(ws).view(-1)].view(ws * ws, ws * ws, heads).permute(2, 0, 1)
        scores = scores + bias
        if shift:
            # Region of each coordinate of the padded map before shifting: bands [0, L-ws), [L-ws, L-shift), [L-shift, L).
            def band(c, L):
                return 0 if c < L - ws else (1 if c < L - shift else 2)

            # HF's mask is defined on the shifted map: by a token's position inside it, not its source.
            region = torch.tensor(
                [[band(wy * ws + t // ws, Hp) * 3 + band(wx * ws + t % ws, Wp) for t in range(ws * ws)] for wy in range(nWh) for wx in range(nWw)]
            )
            mask = (region[:, :, None] != region[:, None, :]).to(x.dtype) * -100.0  # [nW, T, T]
            scores = scores + mask[None, :, None]
        p = torch.softmax(scores, dim=-1)
        ctx = (p @ v).transpose(2, 3).reshape(B, -1, ws * ws, C)
        out_win = self.attention.output.dense(ctx)
        back = torch.zeros(B, Hp, Wp, C, dtype=x.dtype)
        back[:, ys, xs] = out_win
        attn = back[:, :H, :W].reshape(B, H * W, C)
        x = x + attn
        y = self.output.dense(nn.functional.gelu(self.intermediate.dense(self.layernorm_after(x))))
        return x + y


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim, eps=EPS)

    def forward(self, x, hw):
        H, W = hw
        B, _, C = x.shape
        x = x.view(B, H, W, C)
        H2, W2 = (H + 1) // 2, (W + 1) // 2
        padded = torch.zeros(B, 2 * H2, 2 * W2, C, dtype=x.dtype)
        padded[:, :H, :W] = x
        parts = [padded[:, dy::2, dx::2] for dy, dx in ((0, 0), (1, 0), (0, 1), (1, 1))]
        x = torch.cat(parts, dim=-1).view(B, H2 * W2, 4 * C)
        return self.reduction(self.norm(x)), (H2, W2)


class Stage(nn.Module):
    def __init__(self, dim, depth, heads, window, last):
        super().__init__()
        self.blocks = nn.ModuleList([Layer(dim, heads, window, j % 2 == 1) for j in range(depth)])
        self.downsample = None if last else PatchMerging(dim)


class Encoder(nn.Module):
    def __init__(self, embed_dim, depths, heads, window):
        super().__init__()
        self.layers = nn.ModuleList(
            [Stage(embed_dim * 2**i, depths[i], heads[i], window, i == len(depths) - 1) for i in range(len(depths))]
        )


class SwinRef(nn.Module):
    def __init__(self, embed_dim, depths, heads, window):
        super().__init__()
        self.embeddings = Embeddings(embed_dim)
        self.encoder = Encoder(embed_dim, depths, heads, window)
        self.layernorm = nn.LayerNorm(embed_dim * 2 ** (len(depths) - 1), eps=EPS)

    def forward(self, pixels_nchw):
        B, _, H, W = pixels_nchw.shape
        Hp, Wp = -(-H // PATCH) * PATCH, -(-W // PATCH) * PATCH
        x = torch.zeros(B, 3, Hp, Wp, dtype=pixels_nchw.dtype)
        x[:, :, :H, :W] = pixels_nchw
        e = self.embeddings.patch_embeddings.projection(x)
        hw = (e.shape[2], e.shape[3])
        h = self.embeddings.norm(e.flatten(2).transpose(1, 2))
        for stage in self.encoder.layers:
            for blk in stage.blocks:
                h = blk(h, hw)
            if stage.downsample is not None:
                h, hw = stage.downsample(h, hw)
        h = self.layernorm(h)
        return h.mean(dim=1), h.view(B, hw[0], hw[1], -1)


# ---------------------------------------------------------------- safetensors
def write_safetensors(path, tensors):
    """tensors: name -> numpy array (float32 or int64)."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype == np.float32:
            dt = "F32"
        elif a.dtype == np.int64:
            dt = "I64"
        else:
            raise ValueError(f"{name}: dtype {a.dtype}")
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode("utf8")
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--window", type=int, default=None, help="override the window size")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--input", required=True, help="B,H,W")
    ap.add_argument("--input-seed", type=int, default=11)
    ap.add_argument("--grad", action="store_true")
    ap.add_argument("--prefix", default="", help="name prefix of the backbone parameters, e.g. swin.")
    ap.add_argument("--projection-file", action="store_true", help="write the projection to projection.safetensors")
    ap.add_argument("--out-dir", required=True)
    a = ap.parse_args()
    embed, depths, heads, window, pdim = CONFIGS[a.config]
    if a.window:
        window = a.window
    B, H, W = (int(v) for v in a.input.split(","))
    torch.manual_seed(a.seed)
    model = SwinRef(embed, depths, heads, window)
    g = torch.Generator().manual_seed(a.seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm_before.weight") or name.endswith("layernorm_after.weight") or name == "layernorm.weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("norm.bias") or name.endswith("layernorm_before.bias") or name.endswith("layernorm_after.bias") or name == "layernorm.bias":
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif name.endswith("relative_position_bias_table"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g) if embed > 8 else 0.3 * torch.randn(p.shape, generator=g))
    F = embed * 2 ** (len(depths) - 1)
    proj = (torch.rand(pdim, F, generator=g) * 2 - 1) / math.sqrt(F)
    os.makedirs(a.out_dir, exist_ok=True)
    weights = {}
    for name, t in model.state_dict().items():
        weights[a.prefix + name] = t.numpy().astype(np.int64 if t.dtype == torch.int64 else np.float32)
    if a.prefix:
        weights[a.prefix.replace("swin.", "") + "classifier.weight"] = np.zeros((3, F), np.float32)
        weights[a.prefix.replace("swin.", "") + "classifier.bias"] = np.zeros((3,), np.float32)
    if a.projection_file:
        write_safetensors(os.path.join(a.out_dir, "projection.safetensors"), {"projection.weight": proj.numpy().astype(np.float32)})
    else:
        weights["projection.weight"] = proj.numpy().astype(np.float32)
    write_safetensors(os.path.join(a.out_dir, "weights.safetensors"), weights)

    model = model.double()
    x = torch.tensor(mulberry32(B * H * W * 3, a.input_seed).astype(np.float32).astype(np.float64)).view(B, H, W, 3)
    x.requires_grad_(a.grad)
    pooled, tokens = model(x.permute(0, 3, 1, 2))
    projected = pooled @ proj.double().T
    io = {
        "pooled": pooled.detach().numpy().astype(np.float32),
        "projected": projected.detach().numpy().astype(np.float32),
        "tokens": tokens.detach().numpy().astype(np.float32),
    }
    if a.grad:
        r = torch.tensor(mulberry32(B * pdim, a.input_seed + 1).astype(np.float32).astype(np.float64)).view(B, pdim)
        (projected * r).sum().backward()
        io["grad_weights"] = r.numpy().astype(np.float32)
        io["grad_input0"] = x.grad[0].numpy().astype(np.float32)
    write_safetensors(os.path.join(a.out_dir, "io.safetensors"), io)
    print(f"wrote {a.out_dir}: pooled {list(pooled.shape)}, tokens {list(tokens.shape)}")


if __name__ == "__main__":
    main()
