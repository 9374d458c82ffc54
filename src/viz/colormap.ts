import type { RGB } from "../data/types";

/** Colormap names for heatmaps and CAMs. */
export type ColormapName = "viridis" | "jet" | "gray";

// Viridis sampled at 9 evenly spaced points (its standard 9-colour hex list);
// between them we interpolate linearly in sRGB. A close stand-in for the full
// 256-entry table, labelled as such in `colormap`'s doc comment.
const VIRIDIS_STOPS: RGB[] = [
  [0x44, 0x01, 0x54],
  [0x47, 0x2d, 0x7b],
  [0x3b, 0x52, 0x8b],
  [0x2c, 0x72, 0x8e],
  [0x21, 0x91, 0x8c],
  [0x28, 0xae, 0x80],
  [0x5e, 0xc9, 0x62],
  [0xad, 0xdc, 0x30],
  [0xfd, 0xe7, 0x25],
];

function clamp01(t: number): number {
  return Number.isNaN(t) ? 0 : t < 0 ? 0 : t > 1 ? 1 : t;
}

/** Jet: the classic piecewise-linear blue-cyan-yellow-red map. */
function jet(t: number): RGB {
  const f = (x: number) => Math.round(255 * clamp01(Math.min(4 * t - x + 1.5, -4 * t + x + 1.5)));
  return [f(3), f(2), f(1)];
}

/**
 * Colour of `t` in [0, 1] (clamped; NaN maps to 0) under a colormap:
 * `viridis` (perceptually uniform; here a 9-stop piecewise-linear approximation
 * of matplotlib's table), `jet` (the classic CAM colormap) or `gray`.
 */
export function colormap(name: ColormapName, t: number): RGB {
  const u = clamp01(t);
  if (name === "jet") return jet(u);
  if (name === "gray") {
    const g = Math.round(255 * u);
    return [g, g, g];
  }
  const f = u * (VIRIDIS_STOPS.length - 1);
  const i = Math.min(Math.floor(f), VIRIDIS_STOPS.length - 2);
  const w = f - i;
  const a = VIRIDIS_STOPS[i]!;
  const b = VIRIDIS_STOPS[i + 1]!;
  return [Math.round(a[0] + w * (b[0] - a[0])), Math.round(a[1] + w * (b[1] - a[1])), Math.round(a[2] + w * (b[2] - a[2]))];
}

/** `#rrggbb` for an RGB triple. */
export function hex(c: RGB): string {
  return "#" + c.map((v) => Math.max(0, Math.min(255, Math.round(v))).toString(16).padStart(2, "0")).join("");
}

/** matplotlib's tab10 categorical colours, for chart series. */
export const SERIES_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
