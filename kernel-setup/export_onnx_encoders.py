#!/usr/bin/env python3
"""Export frozen image encoders to ONNX for pbip, each with its sidecar JSON.

Run this in YOUR OWN Python environment (it downloads weights from the
Hugging Face hub): pbip itself never downloads anything. Then use the result as
`--encoder onnx:<file.onnx>` (CLI) or `createEncoder("onnx:<file.onnx>")`.
See kernel-setup/ENCODERS.md for the file format and what each encoder is.

    pip install torch transformers            # medclip-release, plip
    pip install onnxruntime                   # optional: check the export
    pip install medclip                       # medclip (MedCLIP's own weights)
    pip install git+https://github.com/mahmoodlab/CONCH.git   # conch (gated on the hub: accept its terms, give a token)

    python kernel-setup/export_onnx_encoders.py medclip-release --out weights/
    python kernel-setup/export_onnx_encoders.py medclip --out weights/
    python kernel-setup/export_onnx_encoders.py plip --out weights/
    python kernel-setup/export_onnx_encoders.py conch --out weights/ --hf-token hf_...
    python kernel-setup/export_onnx_encoders.py tiny-test --out /tmp/   # no download; checks the tooling

Each run writes `<out>/<name>.onnx` and `<out>/<name>.json` (the sidecar:
input size, channel order, scale, mean/std, layout, input and output names,
feature dimension d, where the weights come from, and, for a stand-in, what it
stands in for). Inputs are float32 NCHW images already resized and normalised by
pbip (so the ONNX graph holds the network only), with a dynamic batch axis.
Outputs: `pooled` [B, d] and, where the network has one, `dense` (per-patch
features in the same d-dimensional space, as tokens [B, L, d]).

The encoders:

  medclip-release  What the PBIP authors' release actually runs as "MedCLIP": the
                   ImageNet Swin-T (microsoft/swin-tiny-patch4-window7-224, pooled
                   768-d) under Linear(768, 512, bias=False) initialised at random
                   with a seed (the release never loads MedCLIP weights). Marked as
                   a stand-in. Same distribution as the release's projection, not the
                   same numbers (those depend on the release's RNG state).
  medclip          MedCLIP's vision tower with its trained weights (MedCLIPVisionModelViT:
                   the same Swin-T plus its trained projection head), through the
                   `medclip` package. Trained on chest X-rays, not histopathology.
  plip             PLIP (vinid/plip): a CLIP ViT-B/32 fine-tuned on pathology image-text
                   pairs; pooled = CLIP image embedding (512-d).
  conch            CONCH (MahmoodLab/conch) through its own package: a ViT-B/16 with
                   attentional pooling; pooled = the contrastive image embedding (512-d),
                   input 448 px as CONCH's preprocessing uses.
  tiny-test        A small random CNN, no download: exercises export, sidecar and check.

Requires torch >= 1.13. Written against transformers 4.x.
"""
import argparse
import hashlib
import json
import os
import sys

import torch
from torch import nn

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# MedCLIP normalises every channel with one grey-level mean/std (medclip/constants.py).
MEDCLIP_MEAN = [0.5862785803043838] * 3
MEDCLIP_STD = [0.27950088968644304] * 3


class SwinProjected(nn.Module):
    """Hugging Face SwinModel -> pooled 768 and final tokens [B, 49, 768], each through a bias-free Linear(768, d).

    Since the projection is linear without bias, the mean of the projected tokens
    equals the projected pooled vector (SwinModel's pooler averages the tokens).
    """

    def __init__(self, swin, projection):
        super().__init__()
        self.swin = swin
        self.projection = projection

    def forward(self, pixel_values):
        out = self.swin(pixel_values=pixel_values)
        return self.projection(out.pooler_output), self.projection(out.last_hidden_state)


class ClipImageTower(nn.Module):
    """CLIP vision tower: pooled = visual_projection(post_layernorm(CLS)) (= get_image_features);
    dense = the same head applied to every token [B, 1 + L, d] (CLS first: skip 1)."""

    def __init__(self, clip):
        super().__init__()
        self.vision = clip.vision_model
        self.projection = clip.visual_projection

    def forward(self, pixel_values):
        out = self.vision(pixel_values=pixel_values)
        pooled = self.projection(out.pooler_output)
        tokens = self.projection(self.vision.post_layernorm(out.last_hidden_state))
        return pooled, tokens


class ConchImage(nn.Module):
    """CONCH contrastive image embedding (not L2-normalised; pbip normalises where the method does)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.encode_image(pixel_values, proj_contrast=True, normalize=False)


class TinyCnn(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, d, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, pixel_values):
        fmap = self.body(pixel_values)  # [B, d, h, w]
        tokens = fmap.flatten(2).transpose(1, 2)  # [B, h*w, d]
        return fmap.mean(dim=(2, 3)), tokens


class PooledOnly(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, pixel_values):
        return self.inner(pixel_values)[0]


def build(args):
    """Return (module, sidecar fields) for the chosen encoder."""
    name = args.model
    if name == "medclip-release":
        from transformers import SwinModel

        swin = SwinModel.from_pretrained("microsoft/swin-tiny-patch4-window7-224")
        torch.manual_seed(args.seed)
        projection = nn.Linear(768, 512, bias=False)
        return SwinProjected(swin, projection), dict(
            name="medclip-release",
            inputSize=224,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            denseLayout="tokens",
            denseSkipTokens=0,
            dim=512,
            source=f"transformers SwinModel microsoft/swin-tiny-patch4-window7-224 (ImageNet) + nn.Linear(768, 512, bias=False), torch.manual_seed({args.seed}); as the PBIP release builds its encoder",
            standInNote="the PBIP release's 'MedCLIP': an ImageNet Swin-T under a seeded random Linear(768,512), no MedCLIP weights",
        )
    if name == "medclip":
        from medclip import MedCLIPModel, MedCLIPVisionModelViT

        model = MedCLIPModel(vision_cls=MedCLIPVisionModelViT)
        model.from_pretrained()
        vision = model.vision_model  # .model: SwinModel, .projection_head: Linear(768, 512, bias=False)
        return SwinProjected(vision.model, vision.projection_head), dict(
            name="medclip",
            inputSize=224,
            mean=MEDCLIP_MEAN,
            std=MEDCLIP_STD,
            denseLayout="tokens",
            denseSkipTokens=0,
            dim=512,
            source="MedCLIP (RyanWangZf/MedCLIP) MedCLIPVisionModelViT with its released weights: Swin-T + projection_head; trained on chest X-rays",
        )
    if name == "plip":
        from transformers import CLIPModel

        clip = CLIPModel.from_pretrained("vinid/plip")
        return ClipImageTower(clip), dict(
            name="plip",
            inputSize=224,
            mean=OPENAI_MEAN,
            std=OPENAI_STD,
            denseLayout="tokens",
            denseSkipTokens=1,
            dim=clip.config.projection_dim,
            source="PLIP (vinid/plip, CLIP ViT-B/32 fine-tuned on pathology image-text pairs); pooled = get_image_features; dense = the projection applied to every post-layernorm patch token",
        )
    if name == "conch":
        from conch.open_clip_custom import create_model_from_pretrained

        model, _ = create_model_from_pretrained("conch_ViT-B-16", args.conch_checkpoint or "hf_hub:MahmoodLab/conch", hf_auth_token=args.hf_token)
        return ConchImage(model), dict(
            name="conch",
            inputSize=args.conch_size,
            mean=OPENAI_MEAN,
            std=OPENAI_STD,
            dim=512,
            source="CONCH (MahmoodLab/conch, conch_ViT-B-16) encode_image(proj_contrast=True, normalize=False)",
        )
    if name == "tiny-test":
        torch.manual_seed(args.seed)
        return TinyCnn(), dict(
            name="tiny-test",
            inputSize=64,
            mean=[0.5, 0.5, 0.5],
            std=[0.25, 0.25, 0.25],
            denseLayout="tokens",
            denseSkipTokens=0,
            dim=32,
            source=f"random two-layer CNN, torch.manual_seed({args.seed}); for checking the export tooling only",
            standInNote="random weights: a tooling test, not an encoder",
        )
    sys.exit(f"unknown model {name}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["medclip-release", "medclip", "plip", "conch", "tiny-test"])
    p.add_argument("--out", default="weights", help="output folder (default weights/)")
    p.add_argument("--seed", type=int, default=42, help="seed of the random projection (medclip-release; the release's seed is 42)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-dense", action="store_true", help="export the pooled output only")
    p.add_argument("--hf-token", default=os.environ.get("HF_TOKEN"), help="Hugging Face token (CONCH is gated)")
    p.add_argument("--conch-checkpoint", help="local CONCH checkpoint instead of the hub")
    p.add_argument("--conch-size", type=int, default=448, help="CONCH input side (its preprocessing uses 448)")
    args = p.parse_args()

    module, side = build(args)
    module.eval()
    os.makedirs(args.out, exist_ok=True)
    onnx_file = os.path.join(args.out, side["name"] + ".onnx")
    json_file = os.path.join(args.out, side["name"] + ".json")
    size = side["inputSize"]
    dummy = torch.rand(2, 3, size, size)
    with torch.no_grad():
        ref = module(dummy)
    has_dense = isinstance(ref, tuple) and not args.no_dense
    if isinstance(ref, tuple) and args.no_dense:
        module = PooledOnly(module)
        ref = ref[0]
    outputs = ["pooled", "dense"] if has_dense else ["pooled"]
    dynamic = {n: {0: "batch"} for n in ["pixel_values", *outputs]}
    torch.onnx.export(module, dummy, onnx_file, input_names=["pixel_values"], output_names=outputs, dynamic_axes=dynamic, opset_version=args.opset, do_constant_folding=True)

    sidecar = {
        "name": side["name"],
        "inputSize": size,
        "channelOrder": "RGB",
        "scale": 1,
        "mean": side["mean"],
        "std": side["std"],
        "layout": "NCHW",
        "inputName": "pixel_values",
        "outputName": "pooled",
        "dim": side["dim"],
        "source": side["source"],
    }
    if has_dense:
        sidecar.update(denseOutputName="dense", denseLayout=side.get("denseLayout", "tokens"), denseSkipTokens=side.get("denseSkipTokens", 0))
    if "standInNote" in side:
        sidecar["standInNote"] = side["standInNote"]
    with open(json_file, "w") as f:
        json.dump(sidecar, f, indent=2)
        f.write("\n")
    with open(onnx_file, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    print(f"wrote {onnx_file} (sha256 {digest}, pbip's weights hash) and {json_file}")

    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime not installed: skipped the check of the exported file")
        return
    sess = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    got = sess.run(outputs, {"pixel_values": dummy.numpy()})
    refs = list(ref) if has_dense else [ref]
    for n, a, b in zip(outputs, got, refs):
        b = b.numpy()
        err = float(np.abs(a - b).max() / max(1e-12, np.abs(b).max()))
        print(f"check {n}: shape {list(a.shape)}, max relative difference to PyTorch {err:.2e}")
        if err > 1e-3:
            sys.exit(f"{onnx_file}: output {n} differs from PyTorch by {err:.2e}")


if __name__ == "__main__":
    main()
