/**
 * Where glass starts: a check of the fixed white level that pbip's glass rules use.
 *
 * Two rules treat bright pixels as glass (no tissue): the bank's white-patch filter
 * (`bank.whiteGrey`, `bank.whiteMaxFraction`) and the peers' background rule for
 * pseudo-masks (`cam.background.whiteGrey`, TPRO / MLPS). Both use a fixed grey
 * level, 200 by default, which suits LUAD-HistoSeg's white glass. Glass is as
 * bright as the scanner's white balance makes it: on the Visium H&E scan in
 * `fetchRealSamples()` it sits at grey 185-189, so the rule at 200 finds none of it.
 *
 * `GlassStats` accumulates a joint histogram of grey level (ITU-R 601 luma, as the
 * rules use) and chroma (max - min of R, G, B). Otsu's threshold splits the grey
 * levels into a dark and a bright class; the bright pixels that are also colourless
 * are the glass candidates (glass is neutral grey, pale stroma is pink), and there
 * is glass when they are a large enough share. `glassCheck` then says whether the
 * configured level misses that glass, and suggests the level that best separates
 * the candidates from the coloured pixels (Otsu's split alone can fall inside the
 * tissue when a dataset mixes dark and pale patches).
 *
 * Measured against Space Ranger's tissue calls of the 4,992 Visium spots
 * (test/data/glass.test.ts): the pseudo-masks' rule (white blobs under 80 px kept
 * as tissue) agrees on 99.3 % of spots at the suggested level (162 there; Otsu's
 * split is 161), the bare per-pixel rule on 99.1 %; at 200 both agree on 54.0 %,
 * the share of tissue spots (every spot called tissue).
 */

/**
 * 1000 times the grey level (ITU-R 601 luma) of an 8-bit RGB pixel, an integer:
 * `299 R + 587 G + 114 B`. The white rules compare it with `1000 * whiteGrey`, so a
 * grey of exactly the level is never white, whatever floating point would say.
 */
export function greyMilli(r: number, g: number, b: number): number {
  return 299 * r + 587 * g + 114 * b;
}

/** The white rule for one pixel: grey (ITU-R 601 luma) strictly above `whiteGrey`, computed exactly. */
export function isWhite(r: number, g: number, b: number, whiteGrey: number): boolean {
  return greyMilli(r, g, b) > 1000 * whiteGrey;
}

/** Histogram bin of a pixel: bin `t` holds grey levels in (t, t + 1] (bin 0 also holds 0), so `grey > W` is `bin >= W` for a whole W. */
function greyBin(r: number, g: number, b: number): number {
  return Math.max(0, Math.ceil(greyMilli(r, g, b) / 1000) - 1);
}

/** Joint histogram of grey level and chroma, summed over any number of images. */
export class GlassStats {
  /** Pixels per (grey bin, chroma): index `bin * 256 + chroma`; bin t holds grey levels in (t, t + 1]; chroma = max - min of R, G, B. */
  readonly joint = new Float64Array(256 * 256);

  /**
   * Add an image: interleaved 8-bit pixels, `channels` per pixel (3 or 4; the alpha
   * channel is ignored). `step` > 1 adds every step-th pixel only (a sample).
   */
  add(pixels: ArrayLike<number>, channels = 3, step = 1): this {
    if (channels < 3) throw new Error(`GlassStats.add: needs RGB pixels (3 or 4 channels), got ${channels}`);
    if (pixels.length % channels !== 0) throw new Error(`GlassStats.add: ${pixels.length} values is not a whole number of ${channels}-channel pixels`);
    if (!Number.isInteger(step) || step < 1) throw new Error(`GlassStats.add: step must be a positive integer, got ${step}`);
    for (let i = 0; i < pixels.length; i += channels * step) {
      const r = pixels[i]!;
      const g = pixels[i + 1]!;
      const b = pixels[i + 2]!;
      this.joint[greyBin(r, g, b) * 256 + Math.max(r, g, b) - Math.min(r, g, b)]!++;
    }
    return this;
  }

  /** Pixels per grey bin, whatever their chroma. */
  greyCounts(): Float64Array {
    const out = new Float64Array(256);
    for (let t = 0; t < 256; t++) for (let c = 0; c < 256; c++) out[t]! += this.joint[t * 256 + c]!;
    return out;
  }
}

/**
 * Otsu's threshold of a 256-bin histogram: the level t maximising the between-class
 * variance of [0, t] and (t, 255]. Returns -1 for an empty histogram or one with a
 * single occupied level (nothing to split).
 */
export function otsuThreshold(counts: ArrayLike<number>): number {
  let total = 0;
  let sum = 0;
  for (let i = 0; i < counts.length; i++) {
    total += counts[i]!;
    sum += i * counts[i]!;
  }
  let w0 = 0;
  let s0 = 0;
  let best = -1;
  let level = -1;
  for (let t = 0; t < counts.length; t++) {
    w0 += counts[t]!;
    s0 += t * counts[t]!;
    const w1 = total - w0;
    if (w0 === 0 || w1 === 0) continue;
    const between = w0 * w1 * (s0 / w0 - (sum - s0) / w1) ** 2;
    if (between > best) {
      best = between;
      level = t;
    }
  }
  return level;
}

/** What {@link glassCheck} found. */
export interface GlassCheck {
  /** Pixels sampled. */
  pixels: number;
  /**
   * Otsu's split of the grey levels, as a white level: the bright class is the
   * pixels with grey > `otsu` (-1 when there is nothing to split).
   */
  otsu: number;
  /** Share of all pixels that are glass candidates: in the bright class and colourless. */
  glassFraction: number;
  /** Mean grey level and mean chroma of the candidates. */
  glassGrey: number;
  glassChroma: number;
  /** Share of all pixels with chroma <= 2: near 1, the images are greyscale and the check says nothing. */
  colourlessFraction: number;
  /** The check could be made: enough pixels, and colour images (not greyscale stored as RGB). */
  applicable: boolean;
  /** There is glass: the check is applicable and the candidates hold at least `minFraction` of the pixels. */
  glassLike: boolean;
  /** Share of the candidates above the configured white level (what the rules call glass). */
  foundByWhiteLevel: number;
  /** The configured level misses the glass: `glassLike` and at most half of it above `whiteGrey`. */
  missed: boolean;
  /**
   * When `missed`: the white level that best separates the candidates from the
   * coloured pixels (fewest coloured pixels above it plus candidates at or under it).
   */
  suggestedWhiteGrey?: number;
}

/**
 * One paragraph for a person: what the glass check found and what to set, or
 * undefined when the white level finds the glass (or there is none, or the check
 * could not be made).
 */
export function glassAdvice(c: GlassCheck, whiteGrey: number): string | undefined {
  if (!c.missed) return undefined;
  const pct = (v: number) => `${(100 * v).toFixed(0)}%`;
  const n = c.suggestedWhiteGrey;
  return (
    `${pct(c.glassFraction)} of the pixels are bright and colourless (mean grey ${c.glassGrey.toFixed(0)}, chroma ${c.glassChroma.toFixed(0)}), likely glass, ` +
    `and only ${pct(c.foundByWhiteLevel)} of them are above the white level ${whiteGrey}: pbip's glass rules would miss the rest. ` +
    `The level that best separates them from the coloured (tissue) pixels is ${n}. Where you use those rules, set their level to it: the bank's white filter with ` +
    `\`pbip bank build --white-grey ${n}\` (bank.whiteGrey), the white background of pseudo-masks with \`--set cam.background.whiteGrey=${n}\` ` +
    `on \`pbip train\` or \`pbip ablate\` (\`pbip cam\` takes it from the checkpoint). The release profile uses neither rule. ` +
    `On a real H&E scan with grey glass (src/data/glass.ts), the pseudo-masks' rule agreed with Space Ranger's tissue calls on 99.3% of spots at the suggested level (162 there) and on 54.0% at 200.`
  );
}

/** Thresholds of {@link glassCheck}. */
export interface GlassCheckOptions {
  /** Glass candidates must hold at least this share of the pixels (default 0.05). */
  minFraction?: number;
  /** A candidate's chroma (max - min of R, G, B) is at most this (default 12; measured medians per Visium spot: glass 4, tissue 42). */
  maxChroma?: number;
  /** Fewer pixels than this and the check is not made (default 1000). */
  minPixels?: number;
}

/**
 * Does the fixed white level `whiteGrey` (pixels with grey > whiteGrey are glass)
 * find the glass in these images? See the module comment for the rule and its
 * measurement. Exact for a whole `whiteGrey`; for a fractional one, the pixels
 * between it and the next whole level are not counted as above it.
 */
export function glassCheck(stats: GlassStats, whiteGrey: number, opts: GlassCheckOptions = {}): GlassCheck {
  if (!Number.isFinite(whiteGrey) || whiteGrey < 0 || whiteGrey > 255) throw new Error(`glassCheck: whiteGrey is a grey level in [0, 255], got ${whiteGrey}`);
  const minFraction = opts.minFraction ?? 0.05;
  const maxChroma = opts.maxChroma ?? 12;
  const minPixels = opts.minPixels ?? 1000;
  const t = otsuThreshold(stats.greyCounts());
  // Class 0 is bins 0..t (grey <= t + 1), class 1 the rest: the white level t + 1 splits them.
  const otsu = t < 0 ? -1 : t + 1;
  let total = 0;
  let colourless = 0;
  for (let bin = 0; bin < 256; bin++) {
    for (let c = 0; c < 256; c++) {
      const k = stats.joint[bin * 256 + c]!;
      total += k;
      if (c <= 2) colourless += k;
    }
  }
  // Glass candidates: bright (grey > otsu) and colourless (chroma <= maxChroma).
  let n = 0;
  let greySum = 0;
  let chromaSum = 0;
  let above = 0;
  for (let bin = otsu; t >= 0 && bin < 256; bin++) {
    for (let c = 0; c <= maxChroma; c++) {
      const k = stats.joint[bin * 256 + c]!;
      n += k;
      greySum += (bin + 0.5) * k;
      chromaSum += c * k;
      if (bin >= Math.ceil(whiteGrey)) above += k;
    }
  }
  // The suggested level: the one that best separates the candidates from the coloured (tissue) pixels,
  // fewest coloured pixels above it plus candidates at or under it (the middle of a tied range).
  // Otsu's split alone can fall inside the tissue when a dataset mixes dark and pale patches.
  const colouredAtLeast = new Float64Array(257);
  const candidatesBelow = new Float64Array(257);
  for (let bin = 255; bin >= 0; bin--) {
    let k = 0;
    for (let c = maxChroma + 1; c < 256; c++) k += stats.joint[bin * 256 + c]!;
    colouredAtLeast[bin] = colouredAtLeast[bin + 1]! + k;
  }
  for (let bin = 0; bin < 256; bin++) {
    let k = 0;
    if (t >= 0 && bin >= otsu) for (let c = 0; c <= maxChroma; c++) k += stats.joint[bin * 256 + c]!;
    candidatesBelow[bin + 1] = candidatesBelow[bin]! + k;
  }
  let bestErr = Infinity;
  let lo = 0;
  let hi = 0;
  for (let w = 0; w <= 255; w++) {
    const err = colouredAtLeast[w]! + candidatesBelow[w]!;
    if (err < bestErr) {
      bestErr = err;
      lo = hi = w;
    } else if (err === bestErr && hi === w - 1) hi = w;
  }
  const separating = Math.round((lo + hi) / 2);
  const colourlessFraction = total ? colourless / total : 0;
  const applicable = total >= minPixels && colourlessFraction < 0.9;
  const glassFraction = total ? n / total : 0;
  const glassLike = applicable && t >= 0 && glassFraction >= minFraction;
  const foundByWhiteLevel = n ? above / n : 0;
  const missed = glassLike && foundByWhiteLevel <= 0.5;
  return {
    pixels: total,
    otsu,
    glassFraction,
    glassGrey: n ? greySum / n : 0,
    glassChroma: n ? chromaSum / n : 0,
    colourlessFraction,
    applicable,
    glassLike,
    foundByWhiteLevel,
    missed,
    ...(missed ? { suggestedWhiteGrey: separating } : {}),
  };
}
