#!/usr/bin/env python3
"""Convert a SegFormer Mix Transformer checkpoint (.pth) to .safetensors for pbip.

    python3 kernel-setup/convert_mit_pth.py mit_b1.pth [mit_b1.safetensors]

Reads the original SegFormer ImageNet checkpoints (`mit_b0.pth` .. `mit_b5.pth`,
parameter names `patch_embed1.proj.weight`, `block1.0.attn.kv.weight`, `norm1.weight`,
...), also when wrapped as {"state_dict": ...} or {"model": ...} or saved from
DataParallel (`module.` prefix). Every tensor is written as little-endian float32
under its own name, `head.*` included (pbip ignores it); non-tensor entries are
skipped. Needs only torch (and numpy, which torch uses); the .safetensors format is
written by hand: an 8-byte little-endian header length, a JSON header, raw bytes.

pbip then loads it with
    buildBackbone("mit-b1", { weights: "mit_b1.safetensors" })
converting PyTorch layouts (OIHW, [out, in]) itself.
"""
import json
import os
import struct
import sys


def load_state_dict(path):
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError:  # torch < 1.13 has no weights_only
        obj = torch.load(path, map_location="cpu")
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        sys.exit(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    out = {}
    for name, value in obj.items():
        if not torch.is_tensor(value):
            continue
        if name.startswith("module."):
            name = name[len("module."):]
        out[name] = value.detach().to(torch.float32).contiguous()
    if not out:
        sys.exit(f"{path}: no tensors found")
    return out


def save_safetensors(path, tensors, metadata=None):
    header = {"__metadata__": metadata} if metadata else {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        raw = tensors[name].numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(raw)]}
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


def main(argv):
    if len(argv) not in (2, 3) or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) > 1 and argv[1] in ("-h", "--help") else 2
    src = argv[1]
    dst = argv[2] if len(argv) == 3 else os.path.splitext(src)[0] + ".safetensors"
    tensors = load_state_dict(src)
    save_safetensors(dst, tensors, {"source": os.path.basename(src), "converter": "pbip kernel-setup/convert_mit_pth.py"})
    n = sum(t.numel() for k, t in tensors.items() if not k.startswith("head."))
    print(f"{dst}: {len(tensors)} tensors, {n:,} encoder parameters (head.* kept, ignored by pbip)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
