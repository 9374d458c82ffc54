#!/usr/bin/env python3
"""Write the weights of PBIP's frozen encoder (Swin-T + Linear(768, 512)) for pbip.

Run this on your own machine, with torch and transformers installed and either
internet access or a local copy of the checkpoints; pbip's tests never run it.
It writes a `.safetensors` file that pbip's `swin-t` encoder loads
(`createEncoder("swin-t", { weights })`, `--encoder swin-t --weights FILE`) and a
small JSON beside it (same base name, `.json`) that says the input size,
normalisation, channel order and where the weights came from.

Three sources:

1. `imagenet` (what the authors' release actually runs as "MedCLIP"): the plain
   ImageNet checkpoint `microsoft/swin-tiny-patch4-window7-224` (768-d pooled
   output) followed by `nn.Linear(768, 512, bias=False)` with PyTorch's default
   initialisation, drawn after `torch.manual_seed(--seed)`.

   Seed handling: the release seeds torch once at start-up and then builds its
   modules; the projection's numbers depend on every random draw made before it in
   that process. This script calls `torch.manual_seed(seed)` immediately before
   constructing the Linear, so it reproduces the release's matrix only if the
   release builds the projection first after seeding. To get the release's exact
   matrix in every case, take it from a checkpoint the release saved:
   `--projection-from release.pth --projection-key <name of the 512x768 weight>`.

2. `medclip`: real MedCLIP vision weights. MedCLIP's `MedCLIPVisionModelViT` is the
   same Hugging Face Swin-T (`self.model`) plus `self.projection_head =
   nn.Linear(768, 512, bias=False)`; in a MedCLIP checkpoint (`pytorch_model.bin`
   of the `medclip-vit` release) they are named `vision_model.model.<SwinModel
   name>` and `vision_model.projection_head.weight`. The script maps
   `vision_model.model.X` -> `X` and `vision_model.projection_head.weight` ->
   `projection.weight`, and drops the text tower (`text_model.*`) and
   `logit_scale`. Give the checkpoint file or folder with `--medclip-checkpoint`,
   or `--medclip-package` to let the `medclip` package download its pretrained
   weights (`MedCLIPModel(vision_cls=MedCLIPVisionModelViT).from_pretrained()`).
   MedCLIP was trained on grey-scale chest X-rays normalised with mean 0.5863,
   std 0.2795 (its processor converts images to grey and pads them square); pbip
   feeds RGB patches, normalised per channel with those statistics.

3. `--projection-only`: write just `projection.weight` (seeded or taken from a
   checkpoint) to pair with a backbone file you already have (pbip's
   `SwinEncoderOptions.projection`).

Names written (Hugging Face `SwinModel.state_dict()`): `embeddings.*`,
`encoder.layers.{i}.blocks.{j}.*` (with the int64 `relative_position_index`
buffers, which pbip checks), `encoder.layers.{i}.downsample.*`, `layernorm.*`,
plus `projection.weight` [512, 768] (PyTorch layout [out, in]).

Examples:
  python3 export_swin_weights.py imagenet --seed 42 --out swin-t-imagenet-seed42.safetensors
  python3 export_swin_weights.py imagenet --checkpoint ./swin-tiny-local-dir --seed 42 --out w.safetensors
  python3 export_swin_weights.py imagenet --projection-from release.pth \
      --projection-key medclip.projection.weight --out w.safetensors
  python3 export_swin_weights.py medclip --medclip-checkpoint ./medclip-vit/pytorch_model.bin --out medclip.safetensors
"""
import argparse
import json
import os
import struct
import sys

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MEDCLIP_MEAN = 0.5862785803043838
MEDCLIP_STD = 0.27950088968644304
IMAGENET_ID = "microsoft/swin-tiny-patch4-window7-224"


def write_safetensors(path, tensors, metadata):
    """Hand-written writer (8-byte little-endian header length, JSON header, raw bytes); F32 and I64."""
    import numpy as np

    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = tensors[name].detach().cpu().contiguous().numpy()
        if a.dtype.kind == "f":
            a, dt = a.astype("<f4"), "F32"
        elif a.dtype.kind in "iu":
            a, dt = a.astype("<i8"), "I64"
        else:
            raise SystemExit(f"{name}: unsupported dtype {a.dtype}")
        b = a.tobytes()
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


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def seeded_projection(seed, in_dim=768, out_dim=512):
    import torch

    torch.manual_seed(seed)
    lin = torch.nn.Linear(in_dim, out_dim, bias=False)  # kaiming-uniform(a=sqrt(5)): U(-1/sqrt(768), 1/sqrt(768))
    return lin.weight.detach().clone()


def load_state_dict(path):
    import torch

    if os.path.isdir(path):
        for name in ("pytorch_model.bin", "model.safetensors"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise SystemExit(f"{path}: no pytorch_model.bin or model.safetensors in this folder")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    sd = torch.load(path, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    return sd


def projection_from(path, key):
    sd = load_state_dict(path)
    if key not in sd:
        near = [k for k in sd if "proj" in k.lower()][:20]
        raise SystemExit(f"{path}: no tensor named {key!r}; names with 'proj': {near}")
    w = sd[key].float()
    if tuple(w.shape) != (512, 768):
        raise SystemExit(f"{path}: {key} has shape {tuple(w.shape)}, expected (512, 768) ([out, in])")
    return w


def check_output(backbone, projection, mean, std):
    """Projected features of an all-0.5 RGB image through the declared normalisation (first 8 values), for a quick cross-check."""
    import torch

    x = torch.full((1, 3, 224, 224), 0.5)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        pooled = backbone((x - m) / s).pooler_output
        return [round(float(v), 6) for v in (pooled @ projection.T)[0, :8]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("source", choices=["imagenet", "medclip"])
    ap.add_argument("--out", required=True, help="output .safetensors file (the JSON is written beside it)")
    ap.add_argument("--checkpoint", default=IMAGENET_ID, help=f"imagenet: Hugging Face id or local folder (default {IMAGENET_ID})")
    ap.add_argument("--local-files-only", action="store_true", help="do not download; use the local Hugging Face cache or folder")
    ap.add_argument("--seed", type=int, default=0, help="imagenet: seed for torch.manual_seed before building Linear(768, 512)")
    ap.add_argument("--projection-from", help="take the projection from this torch/safetensors checkpoint instead of seeding")
    ap.add_argument("--projection-key", help="name of the [512, 768] projection weight in --projection-from")
    ap.add_argument("--projection-only", action="store_true", help="write only projection.weight")
    ap.add_argument("--medclip-checkpoint", help="medclip: MedCLIP pytorch_model.bin (or its folder)")
    ap.add_argument("--medclip-package", action="store_true", help="medclip: load with the medclip package's from_pretrained()")
    a = ap.parse_args()

    import torch

    meta = {"format": "pbip-swin-weights-1", "torch": torch.__version__}
    if not a.projection_only:
        import transformers
        from transformers import SwinConfig, SwinModel

        meta["transformers"] = transformers.__version__
    tensors = {}
    if a.source == "imagenet":
        if a.projection_from:
            if not a.projection_key:
                raise SystemExit("--projection-from needs --projection-key")
            proj = projection_from(a.projection_from, a.projection_key)
            proj_note = f"projection {a.projection_key} from {os.path.basename(a.projection_from)}"
        else:
            proj = seeded_projection(a.seed)
            proj_note = f"nn.Linear(768, 512, bias=False) drawn after torch.manual_seed({a.seed})"
        if a.projection_only:
            backbone = None
        else:
            backbone = SwinModel.from_pretrained(a.checkpoint, local_files_only=a.local_files_only).eval()
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        name = f"swin-t-imagenet-seed{a.seed}" if not a.projection_from else "swin-t-imagenet-release-projection"
        source = f"imagenet: {a.checkpoint} (SwinModel, pooled 768-d) + {proj_note}"
        stand_in = (
            "the authors' release's \"MedCLIP\": an ImageNet Swin-T under a seeded random Linear(768, 512), "
            "not MedCLIP's trained weights"
        )
    else:
        if a.projection_only:
            raise SystemExit("--projection-only is for the imagenet source")
        if a.medclip_package:
            from medclip import MedCLIPModel, MedCLIPVisionModelViT

            m = MedCLIPModel(vision_cls=MedCLIPVisionModelViT)
            m.from_pretrained()
            sd = m.state_dict()
        elif a.medclip_checkpoint:
            sd = load_state_dict(a.medclip_checkpoint)
        else:
            raise SystemExit("medclip: give --medclip-checkpoint FILE or --medclip-package")
        prefix = "vision_model.model."
        vision = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not vision:
            raise SystemExit(f"no '{prefix}*' tensors in the MedCLIP checkpoint (is it the ViT/Swin variant? the ResNet variant has vision_model.model.conv1...)")
        if "vision_model.projection_head.weight" not in sd:
            raise SystemExit("no vision_model.projection_head.weight in the MedCLIP checkpoint")
        proj = sd["vision_model.projection_head.weight"].float()
        # SwinConfig()'s defaults are exactly swin-tiny-patch4-window7-224 (embed 96, depths 2-2-6-2, heads 3-6-12-24, window 7).
        backbone = SwinModel(SwinConfig()).eval()
        missing, unexpected = backbone.load_state_dict(vision, strict=False)
        missing = [k for k in missing if not k.endswith("relative_position_index")]
        if missing or unexpected:
            raise SystemExit(f"MedCLIP vision weights do not fit SwinModel: missing {missing[:10]}, unexpected {unexpected[:10]}")
        mean, std = [MEDCLIP_MEAN] * 3, [MEDCLIP_STD] * 3
        name = "swin-t-medclip"
        source = "medclip: MedCLIPVisionModelViT (vision_model.model = Swin-T, vision_model.projection_head = Linear(768, 512))"
        stand_in = None
        meta["medclip_note"] = "MedCLIP was trained on grey-scale chest X-rays; pbip feeds RGB histology patches"

    if backbone is not None:
        for k, v in backbone.state_dict().items():
            tensors[k] = v
    tensors["projection.weight"] = proj
    write_safetensors(a.out, tensors, meta)
    sidecar = {
        "name": name,
        "inputSize": 224,
        "channelOrder": "RGB",
        "scale": 1,
        "mean": mean,
        "std": std,
        "dim": 512,
        "source": source,
        "resize": "pbip resizes bilinearly (half-pixel centres); Hugging Face's processor for this checkpoint uses bicubic",
        "projection": proj_note if a.source == "imagenet" else "vision_model.projection_head.weight",
        **meta,
    }
    if stand_in:
        sidecar["standInNote"] = stand_in
    if backbone is not None:
        sidecar["checkOutput"] = {"input": "one 224x224 RGB image of 0.5 everywhere, normalised as above", "projectedFirst8": check_output(backbone, proj, mean, std)}
    json_path = os.path.splitext(a.out)[0] + ".json"
    write_json(json_path, sidecar)
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {a.out} ({len(tensors)} tensors, {n / 1e6:.1f}M values) and {json_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
