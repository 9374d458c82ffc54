#!/usr/bin/python3
"""Independent fixtures for pbip's PNG codec and augmentations (PIL + numpy).

Writes test/data/fixtures/*.png (small masks and images saved by PIL in the colour
types and bit depths other tools produce) and expected.json (the pixel arrays
numpy/PIL read back, and numpy's rot90/flip results for the augmentation test).
Regenerate with: /usr/bin/python3 test/data/reference/png_reference.py
"""
import json
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures")
os.makedirs(OUT, exist_ok=True)

rng = np.random.default_rng(7)
LUAD = [(205, 51, 51), (0, 255, 0), (65, 105, 225), (255, 165, 0), (255, 255, 255)]
expected = {}


def palette_image(ids, palette):
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    flat = [c for rgb in palette for c in rgb]
    im.putpalette(flat)
    return im


# 1. Palette masks: 5-colour palette. PIL reduces the bit depth for small palettes
#    (4 bits for up to 16 colours); bits=8 forces 8-bit.
ids = rng.integers(0, 5, size=(13, 17))
palette_image(ids, LUAD).save(os.path.join(OUT, "mask_p_auto.png"))
palette_image(ids, LUAD).save(os.path.join(OUT, "mask_p8.png"), bits=8)
expected["mask_ids"] = ids.tolist()

# 2. Two-colour and four-colour palettes (1-bit and 2-bit).
ids2 = rng.integers(0, 2, size=(9, 11))
palette_image(ids2, LUAD[:2]).save(os.path.join(OUT, "mask_p1.png"), bits=1)
expected["mask_ids_1bit"] = ids2.tolist()
ids4 = rng.integers(0, 4, size=(9, 11))
palette_image(ids4, LUAD[:4]).save(os.path.join(OUT, "mask_p2.png"), bits=2)
expected["mask_ids_2bit"] = ids4.tolist()

# 3. A palette saved in another order (a re-saved mask): colours, not indices, carry meaning.
perm = [3, 0, 4, 1, 2]  # file index k holds colour LUAD[perm[k]]
inv = np.argsort(perm)
palette_image(inv[ids], [LUAD[p] for p in perm]).save(os.path.join(OUT, "mask_p_reordered.png"), bits=8)

# 4. The same mask as grey ids, as RGB colours and as RGBA.
Image.fromarray(ids.astype(np.uint8), mode="L").save(os.path.join(OUT, "mask_grey.png"))
rgb = np.array(LUAD, dtype=np.uint8)[ids]
Image.fromarray(rgb, mode="RGB").save(os.path.join(OUT, "mask_rgb.png"))
rgba = np.concatenate([rgb, np.full(ids.shape + (1,), 255, np.uint8)], axis=2)
Image.fromarray(rgba, mode="RGBA").save(os.path.join(OUT, "mask_rgba.png"))

# 5. An RGB image, plain and Adam7-interlaced, and a 16-bit grey image.
img = rng.integers(0, 256, size=(10, 7, 3)).astype(np.uint8)
Image.fromarray(img, mode="RGB").save(os.path.join(OUT, "rgb.png"))
expected["rgb"] = img.tolist()
# PIL cannot write interlaced PNGs; the interlaced fixture is written by sharp in the test.
g16 = rng.integers(0, 65536, size=(5, 6)).astype(np.uint16)
Image.fromarray(g16.astype(np.int32), mode="I").convert("I;16").save(os.path.join(OUT, "grey16.png"))
expected["grey16"] = np.array(Image.open(os.path.join(OUT, "grey16.png"))).astype(int).tolist()

# 6. numpy's rot90 and flips on a small non-symmetric array, for augmentPixels.
a = np.arange(4 * 4 * 2).reshape(4, 4, 2)
aug = {}
for k in range(4):
    for h in (0, 1):
        for v in (0, 1):
            r = np.rot90(a, k, axes=(0, 1))
            if h:
                r = r[:, ::-1]
            if v:
                r = r[::-1, :]
            aug[f"{k}{h}{v}"] = r.reshape(-1).tolist()
expected["augment_input"] = a.reshape(-1).tolist()
expected["augment"] = aug

# Read every fixture back with PIL, so the test compares against PIL's decoding.
back = {}
for f in sorted(os.listdir(OUT)):
    if f.endswith(".png"):
        im = Image.open(os.path.join(OUT, f))
        back[f] = {"mode": im.mode, "size": list(im.size)}
expected["modes"] = back

with open(os.path.join(OUT, "expected.json"), "w") as fh:
    json.dump(expected, fh)
print("wrote", OUT)
