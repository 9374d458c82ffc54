/**
 * Pixel colour features shared by the baselines and the synthetic generator
 * (kept free of image-library imports so worker threads load it cheaply).
 */

/** Grey level (ITU-R 601 luma, as PIL's `L` mode) above which a pixel is white glass: the TPRO/MLPS rule. */
export const BASELINE_WHITE_LEVEL = 200;

/** `rgb`: 8-bit RGB values; `od`: optical density -log10(I/255) per channel (the Beer-Lambert stain space). */
export type ColourSpace = "rgb" | "od";

/** Optical density of each 8-bit intensity, -log10(max(I, 1) / 255). */
export const OD_TABLE: Float64Array = Float64Array.from({ length: 256 }, (_, i) => -Math.log10(Math.max(i, 1) / 255));

/** Colour of a pixel in the chosen space: RGB 0..255, or optical density -log10(I/255) (I clamped to >= 1). */
export function colourFeature(r: number, g: number, b: number, space: ColourSpace, out: number[]): void {
  if (space === "rgb") {
    out[0] = r;
    out[1] = g;
    out[2] = b;
  } else {
    out[0] = OD_TABLE[r]!;
    out[1] = OD_TABLE[g]!;
    out[2] = OD_TABLE[b]!;
  }
}

/** Sum of the colour feature over non-white pixels, and their count. */
export function tissueSums(rgb: Uint8Array, space: ColourSpace): [number[], number] {
  const s = [0, 0, 0];
  const f = [0, 0, 0];
  let n = 0;
  for (let i = 0; i < rgb.length; i += 3) {
    const r = rgb[i]!;
    const g = rgb[i + 1]!;
    const b = rgb[i + 2]!;
    if (0.299 * r + 0.587 * g + 0.114 * b > BASELINE_WHITE_LEVEL) continue;
    colourFeature(r, g, b, space, f);
    s[0]! += f[0]!;
    s[1]! += f[1]!;
    s[2]! += f[2]!;
    n++;
  }
  return [s, n];
}

