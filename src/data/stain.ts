/**
 * Stain vectors of stained tissue images, estimated by the method of Macenko
 * et al., "A method for normalizing histology slides for quantitative analysis",
 * ISBI 2009.
 *
 * Beer-Lambert: light of intensity I0 passing through stains of concentrations
 * c_s leaves `I_c = I0_c * 10^(-sum_s c_s * v_s,c)` in channel c, where `v_s` is
 * stain s's optical density (OD) per unit concentration. So the OD of a pixel,
 * `OD_c = -log10(I_c / I0_c)`, is a non-negative combination of the stain
 * vectors: with two stains, every tissue pixel's OD lies in the plane they span,
 * inside the wedge between them. Macenko finds that plane (the two largest
 * principal directions of the tissue pixels' OD) and takes the wedge's edges
 * (robust extreme angles of the pixels in the plane) as the two stain vectors.
 *
 * Everything here is plain host arithmetic on 8-bit interleaved RGB. `I0`
 * defaults to 255 in every channel (white light); a scan whose glass is grey or
 * tinted should pass its glass colour ({@link estimateBackground}).
 */
import { OD_TABLE } from "./colour";
import { cosine } from "../bank/matrix";
import { symmetricEigen } from "../bank/stats";
import { Rng } from "../util/rng";
import type { RGB } from "./types";

function unit3(v: readonly number[]): RGB {
  const n = Math.hypot(v[0]!, v[1]!, v[2]!);
  return [v[0]! / n, v[1]! / n, v[2]! / n];
}

/**
 * Reference stain vectors of Ruifrok and Johnston, "Quantification of
 * histochemical staining by color deconvolution", Anal. Quant. Cytol. Histol.
 * 2001: unit optical-density vectors (R, G, B) of hematoxylin, eosin and DAB
 * (the rows of scikit-image's `rgb_from_hed`, normalised to length 1). These
 * measure stains; the Macenko reference H&E vectors the synthetic generator
 * paints with are `HE_REFERENCE` (src/data/synthetic/paint.ts).
 */
export const REFERENCE_STAINS: Readonly<Record<"hematoxylin" | "eosin" | "dab", Readonly<RGB>>> = {
  hematoxylin: unit3([0.65, 0.7, 0.29]),
  eosin: unit3([0.07, 0.99, 0.11]),
  dab: unit3([0.27, 0.57, 0.78]),
};

/**
 * Optical density of interleaved 8-bit RGB (`n * 3` bytes) as `n * 3` float64
 * values in the same order: `-log10(max(I, 1) / I0)` per channel, clipped at 0,
 * where `I0` is the light through unstained glass (`background`, per channel,
 * default 255: pure white, so white is OD 0 and black about 2.41). With a
 * darker `background` (e.g. from {@link estimateBackground}), glass has OD 0.
 */
export function opticalDensity(rgb: Uint8Array, background: readonly number[] = [255, 255, 255]): Float64Array {
  const off = backgroundOffsets(background, "opticalDensity");
  const od = new Float64Array(rgb.length);
  for (let i = 0; i < rgb.length; i++) od[i] = Math.max(0, OD_TABLE[rgb[i]!]! - off[i % 3]!);
  return od;
}

/** OD of the background itself per channel (-log10(I0 / 255)), to subtract from {@link OD_TABLE}; validates `background`. */
function backgroundOffsets(background: readonly number[], who: string): RGB {
  if (background.length !== 3 || background.some((x) => !(x >= 1 && x <= 255))) {
    throw new Error(`${who}: background must be 3 intensities in [1, 255] (R, G, B of the glass), got [${background.join(", ")}]`);
  }
  return [0, 1, 2].map((c) => -Math.log10(background[c]! / 255)) as RGB;
}

/**
 * The intensity of unstained glass per channel (R, G, B), estimated as the
 * `percentile`-th percentile (default 99) of each channel of interleaved 8-bit
 * RGB: the `I0` of Beer-Lambert when the light through the slide is not pure
 * white (a grey or tinted scan). On a patch with no glass it is the brightest
 * tissue, which lowers every OD a little. Values below 1 are raised to 1.
 */
export function estimateBackground(rgb: Uint8Array, percentile = 99): RGB {
  if (rgb.length === 0 || rgb.length % 3 !== 0) throw new Error(`estimateBackground: expected interleaved RGB bytes (a non-zero multiple of 3), got ${rgb.length}`);
  if (!(percentile >= 0 && percentile <= 100)) throw new Error(`estimateBackground: percentile must be in [0, 100], got ${percentile}`);
  const n = rgb.length / 3;
  const out: RGB = [0, 0, 0];
  for (let c = 0; c < 3; c++) {
    const hist = new Uint32Array(256);
    for (let i = c; i < rgb.length; i += 3) hist[rgb[i]!]!++;
    const rank = Math.min(n - 1, Math.floor((percentile / 100) * (n - 1)));
    let seen = 0;
    let v = 0;
    for (; v < 256; v++) {
      seen += hist[v]!;
      if (seen > rank) break;
    }
    out[c] = Math.max(1, v);
  }
  return out;
}

/**
 * The 8-bit RGB colour that stain vector `v` (OD per unit concentration) gives at
 * concentration `c` under white light: `255 * 10^(-c * v)` per channel, rounded.
 * A colour chip for a stain vector.
 */
export function stainRgb(v: readonly number[], c = 1): RGB {
  const ch = (x: number): number => Math.max(0, Math.min(255, Math.round(255 * 10 ** (-c * x))));
  return [ch(v[0]!), ch(v[1]!), ch(v[2]!)];
}

/** Options of {@link estimateStainVectors}. */
export interface StainEstimateOptions {
  /**
   * Macenko's beta: a pixel is used only when its OD is at least this in every
   * channel (drops glass and near-white). Default 0.15. Being per channel, it
   * also drops pale pixels of a stain with a small component (pure eosin absorbs
   * little red), so such a stain's edge of the wedge comes from denser pixels.
   */
  odThreshold?: number;
  /** Macenko's alpha, in percent: the stain vectors are the `alpha` and `100 - alpha` percentile angles in the plane (0 <= alpha < 50). Default 1. */
  alpha?: number;
  /** Use at most this many of the kept pixels, drawn at random without replacement (default: all). */
  maxPixels?: number;
  /** Seed of that draw. Default 0. */
  seed?: number;
  /** Fewer kept pixels than this is an error. Default 50. */
  minPixels?: number;
  /**
   * `I0`, the intensity of unstained glass per channel (R, G, B): OD is
   * `-log10(I / I0)` ({@link opticalDensity}). Default [255, 255, 255] (white
   * light). A scan whose glass is grey adds the glass's own
   * OD to every pixel and pulls both vectors towards grey; pass
   * {@link estimateBackground}'s value then (and usually a lower `odThreshold`,
   * since faint tissue has little OD above its glass).
   */
  background?: readonly number[];
}

/** Result of {@link estimateStainVectors}. */
export interface StainEstimate {
  /**
   * The two unit OD stain vectors (R, G, B), non-negative. Order: the one with
   * the larger red OD component first. Hematoxylin (blue-purple) absorbs red
   * strongly and eosin (pink) hardly at all, so for H&E this is [hematoxylin,
   * eosin] (Macenko's own rule); for hematoxylin + DAB it is [hematoxylin, DAB]
   * (DAB's red OD is also smaller). For other stain pairs, look at the vectors.
   */
  vectors: [RGB, RGB];
  /** Tissue pixels the estimate used (after the OD threshold and `maxPixels`). */
  pixelsUsed: number;
  /** Pixels that passed the OD threshold (before `maxPixels`). */
  pixelsKept: number;
  /** Pixels in the image. */
  pixelsTotal: number;
  /**
   * The `alpha` and `100 - alpha` percentile angles (radians) of the tissue
   * pixels in the plane, measured from `plane[0]` towards `plane[1]`: the
   * directions of the two vectors before ordering.
   */
  angles: { low: number; high: number };
  /** The plane: the two largest principal directions of the tissue OD (unit, the first with positive sum). */
  plane: [RGB, RGB];
  /** Eigenvalues of the tissue OD covariance, largest first. */
  eigenvalues: [number, number, number];
}

function percentileSorted(sorted: Float64Array, p: number): number {
  const pos = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (pos - lo) * (sorted[hi]! - sorted[lo]!);
}

/**
 * Estimate the two stain vectors of an interleaved 8-bit RGB image (`n * 3`
 * bytes, any width and height) by Macenko's method:
 * 1. optical density of every pixel ({@link opticalDensity}, relative to
 *    `background`);
 * 2. keep pixels whose OD is at least `odThreshold` in every channel (tissue);
 * 3. the 3x3 covariance of the kept OD vectors and its two largest eigenvectors
 *    (Jacobi, `symmetricEigen` of src/bank/stats.ts): the plane of the stains;
 * 4. project each kept pixel onto the plane and take its angle;
 * 5. the `alpha` and `100 - alpha` percentile angles (linear interpolation)
 *    give two directions in the plane, mapped back to 3-D, negative components
 *    clipped to 0 (an OD vector cannot be negative) and scaled to unit length.
 * The vector with the larger red component comes first (see
 * {@link StainEstimate.vectors}).
 *
 * Throws, saying what is wrong, for empty input, a length that is not a multiple
 * of 3, bad options, fewer than `minPixels` tissue pixels, and tissue whose OD
 * spans a single direction (one colour: no plane).
 */
export function estimateStainVectors(rgb: Uint8Array, opts: StainEstimateOptions = {}): StainEstimate {
  const beta = opts.odThreshold ?? 0.15;
  const alpha = opts.alpha ?? 1;
  const minPixels = opts.minPixels ?? 50;
  if (rgb.length === 0) throw new Error("estimateStainVectors: the image is empty (0 bytes)");
  if (rgb.length % 3 !== 0) throw new Error(`estimateStainVectors: expected interleaved RGB bytes (a multiple of 3), got ${rgb.length}`);
  if (!(beta >= 0) || !Number.isFinite(beta)) throw new Error(`estimateStainVectors: odThreshold must be a finite number >= 0, got ${beta}`);
  if (!(alpha >= 0 && alpha < 50)) throw new Error(`estimateStainVectors: alpha is a percentile in [0, 50), got ${alpha}`);
  if (opts.maxPixels !== undefined && !(Number.isInteger(opts.maxPixels) && opts.maxPixels >= 2)) throw new Error(`estimateStainVectors: maxPixels must be an integer >= 2, got ${opts.maxPixels}`);
  const off = backgroundOffsets(opts.background ?? [255, 255, 255], "estimateStainVectors");
  const total = rgb.length / 3;
  // Tissue: OD >= beta in every channel, i.e. intensity at most the largest byte whose OD reaches beta.
  const maxByte = [-1, -1, -1];
  for (let c = 0; c < 3; c++) for (let i = 0; i < 256; i++) if (Math.max(0, OD_TABLE[i]! - off[c]!) >= beta) maxByte[c] = i;
  const [m0, m1, m2] = maxByte as RGB;
  let kept = 0;
  const idx = new Uint32Array(total);
  for (let p = 0, o = 0; p < total; p++, o += 3) {
    if (rgb[o]! <= m0 && rgb[o + 1]! <= m1 && rgb[o + 2]! <= m2) idx[kept++] = p;
  }
  if (kept < minPixels) {
    throw new Error(`estimateStainVectors: only ${kept} of ${total} pixels are tissue (OD >= ${beta} in every channel); at least ${minPixels} are needed. Is the image mostly glass, or odThreshold too high for faint staining?`);
  }
  let used = kept;
  if (opts.maxPixels !== undefined && kept > opts.maxPixels) {
    const rng = new Rng(opts.seed ?? 0);
    for (let i = 0; i < opts.maxPixels; i++) {
      const j = i + rng.int(kept - i);
      const t = idx[i]!;
      idx[i] = idx[j]!;
      idx[j] = t;
    }
    used = opts.maxPixels;
  }
  const od = new Float64Array(used * 3);
  for (let i = 0; i < used; i++) {
    const o = idx[i]! * 3;
    od[3 * i] = Math.max(0, OD_TABLE[rgb[o]!]! - off[0]);
    od[3 * i + 1] = Math.max(0, OD_TABLE[rgb[o + 1]!]! - off[1]);
    od[3 * i + 2] = Math.max(0, OD_TABLE[rgb[o + 2]!]! - off[2]);
  }
  // Covariance (centred, divided by n - 1).
  const mean = [0, 0, 0];
  for (let i = 0; i < used; i++) for (let c = 0; c < 3; c++) mean[c]! += od[3 * i + c]!;
  for (let c = 0; c < 3; c++) mean[c]! /= used;
  const cov = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
  for (let i = 0; i < used; i++) {
    const d0 = od[3 * i]! - mean[0]!;
    const d1 = od[3 * i + 1]! - mean[1]!;
    const d2 = od[3 * i + 2]! - mean[2]!;
    cov[0]![0]! += d0 * d0;
    cov[0]![1]! += d0 * d1;
    cov[0]![2]! += d0 * d2;
    cov[1]![1]! += d1 * d1;
    cov[1]![2]! += d1 * d2;
    cov[2]![2]! += d2 * d2;
  }
  for (let r = 0; r < 3; r++) for (let c = r; c < 3; c++) cov[c]![r] = cov[r]![c]! /= used - 1;
  const eig = symmetricEigen(cov);
  // A second direction of variation too small next to the OD itself: one colour, no plane.
  if (!(eig.values[1]! > 1e-10 * Math.max(eig.values[0]!, mean[0]! ** 2 + mean[1]! ** 2 + mean[2]! ** 2))) {
    throw new Error(`estimateStainVectors: the ${used} tissue pixels have a single colour direction (OD covariance eigenvalues ${eig.values.map((x) => x.toExponential(2)).join(", ")}): no stain plane`);
  }
  const flip = (v: RGB): RGB => (v[0] + v[1] + v[2] < 0 ? [-v[0], -v[1], -v[2]] : v);
  const e1 = flip(unit3(eig.vectors[0]!));
  const e2 = flip(unit3(eig.vectors[1]!));
  const phi = new Float64Array(used);
  for (let i = 0; i < used; i++) {
    const x = od[3 * i]!;
    const y = od[3 * i + 1]!;
    const z = od[3 * i + 2]!;
    phi[i] = Math.atan2(x * e2[0] + y * e2[1] + z * e2[2], x * e1[0] + y * e1[1] + z * e1[2]);
  }
  phi.sort();
  const low = percentileSorted(phi, alpha);
  const high = percentileSorted(phi, 100 - alpha);
  const back = (t: number): RGB => {
    const v = [0, 1, 2].map((c) => Math.max(0, e1[c]! * Math.cos(t) + e2[c]! * Math.sin(t)));
    if (Math.hypot(v[0]!, v[1]!, v[2]!) === 0) throw new Error(`estimateStainVectors: the stain direction at angle ${t.toFixed(3)} rad has no positive OD component`);
    return unit3(v);
  };
  const a = back(low);
  const b = back(high);
  return {
    vectors: a[0] >= b[0] ? [a, b] : [b, a],
    pixelsUsed: used,
    pixelsKept: kept,
    pixelsTotal: total,
    angles: { low, high },
    plane: [e1, e2],
    eigenvalues: eig.values as RGB,
  };
}

/**
 * Stain concentrations of every pixel: the least-squares solution `c` of
 * `OD = c0 * v0 + c1 * v1` per pixel (colour deconvolution with two stains;
 * OD relative to `background`, default white),
 * as `n * 2` float32 values `[c0, c1]` per pixel, in OD units. Values can be
 * slightly negative where a pixel lies outside the wedge of the two vectors.
 * Throws when the vectors are not 3-vectors or are parallel.
 */
export function stainConcentrations(rgb: Uint8Array, vectors: readonly [readonly number[], readonly number[]], background: readonly number[] = [255, 255, 255]): Float32Array {
  if (rgb.length % 3 !== 0) throw new Error(`stainConcentrations: expected interleaved RGB bytes (a multiple of 3), got ${rgb.length}`);
  const [u, w] = vectors;
  if (u.length !== 3 || w.length !== 3) throw new Error(`stainConcentrations: stain vectors must have 3 components, got ${u.length} and ${w.length}`);
  // Normal equations: G c = V^T od, G = V^T V (2x2).
  const g00 = u[0]! * u[0]! + u[1]! * u[1]! + u[2]! * u[2]!;
  const g01 = u[0]! * w[0]! + u[1]! * w[1]! + u[2]! * w[2]!;
  const g11 = w[0]! * w[0]! + w[1]! * w[1]! + w[2]! * w[2]!;
  const det = g00 * g11 - g01 * g01;
  if (!(Math.abs(det) > 1e-12 * Math.max(g00 * g11, 1e-300))) throw new Error(`stainConcentrations: the two stain vectors are parallel (cosine ${cosine(u, w).toFixed(6)}) or zero`);
  // Rows of the pseudo-inverse (V^T V)^-1 V^T.
  const p0 = [0, 1, 2].map((c) => (g11 * u[c]! - g01 * w[c]!) / det);
  const p1 = [0, 1, 2].map((c) => (g00 * w[c]! - g01 * u[c]!) / det);
  const off = backgroundOffsets(background, "stainConcentrations");
  const n = rgb.length / 3;
  const out = new Float32Array(n * 2);
  for (let i = 0, o = 0; i < n; i++, o += 3) {
    const r = Math.max(0, OD_TABLE[rgb[o]!]! - off[0]);
    const gg = Math.max(0, OD_TABLE[rgb[o + 1]!]! - off[1]);
    const b = Math.max(0, OD_TABLE[rgb[o + 2]!]! - off[2]);
    out[2 * i] = p0[0]! * r + p0[1]! * gg + p0[2]! * b;
    out[2 * i + 1] = p1[0]! * r + p1[1]! * gg + p1[2]! * b;
  }
  return out;
}

/** Cosine of each of `vectors` to the Ruifrok-Johnston references ({@link REFERENCE_STAINS}): one row per vector. */
export function referenceCosines(vectors: readonly (readonly number[])[]): { hematoxylin: number; eosin: number; dab: number }[] {
  return vectors.map((v) => ({
    hematoxylin: cosine(v, REFERENCE_STAINS.hematoxylin),
    eosin: cosine(v, REFERENCE_STAINS.eosin),
    dab: cosine(v, REFERENCE_STAINS.dab),
  }));
}
