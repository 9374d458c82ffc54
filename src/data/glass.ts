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
 * configured level misses that glass, and suggests Otsu's threshold instead.
 *
 * Measured against Space Ranger's tissue calls of the 4,992 Visium spots
 * (test/data/glass.test.ts): the pseudo-masks' rule (white blobs under 80 px kept
 * as tissue) agrees on 99.1 % of spots at Otsu's level (160 there), the bare
 * per-pixel rule on 98.9 %; at 200 both agree on 54.0 %, the share of tissue spots
 * (every spot called tissue).
 */

/** Grey level (ITU-R 601 luma) of an 8-bit RGB pixel: the level the white rules compare. */
export function greyOf(r: number, g: number, b: number): number {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

/** Joint histogram of grey level and chroma, summed over any number of images. */
export class GlassStats {
  /** Pixels per (grey level, chroma): index `grey * 256 + chroma`, grey = floor of the luma, chroma = max - min of R, G, B. */
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
      const level = Math.min(255, Math.floor(greyOf(r, g, b)));
      this.joint[level * 256 + Math.max(r, g, b) - Math.min(r, g, b)]!++;
    }
    return this;
  }

  /** Pixels per grey level, whatever their chroma. */
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
  /** Otsu's threshold of the grey histogram (-1 when there is nothing to split). */
  otsu: number;
  /** Share of all pixels that are glass candidates: above Otsu's threshold and colourless. */
  glassFraction: number;
  /** Mean grey level and mean chroma of the candidates. */
  glassGrey: number;
  glassChroma: number;
  /** There is glass: the candidates hold at least `minFraction` of the pixels. */
  glassLike: boolean;
  /** Share of the candidates above the configured white level (what the rules call glass). */
  foundByWhiteLevel: number;
  /** The configured level misses the glass: `glassLike` and most of it at or below `whiteGrey`. */
  missed: boolean;
  /** A white level that separates the two classes (Otsu's), when `missed`. */
  suggestedWhiteGrey?: number;
}

/**
 * One line for a person: what the glass check found and what to set, or undefined
 * when the white level finds the glass (or there is none).
 */
export function glassAdvice(c: GlassCheck, whiteGrey: number): string | undefined {
  if (!c.missed) return undefined;
  const pct = (v: number) => `${(100 * v).toFixed(0)}%`;
  return (
    `${pct(c.glassFraction)} of the pixels are bright and colourless (mean grey ${c.glassGrey.toFixed(0)}, chroma ${c.glassChroma.toFixed(0)}), ` +
    `likely glass, but ${pct(c.foundByWhiteLevel)} of it is above the white level ${whiteGrey}: pbip's glass rules (the bank's white filter, ` +
    `the white background of pseudo-masks) would not see it. Otsu's split of these images is ${c.otsu}: ` +
    `consider --set bank.whiteGrey=${c.suggestedWhiteGrey} --set cam.background.whiteGrey=${c.suggestedWhiteGrey} ` +
    `(on a real H&E scan with grey glass, src/data/glass.ts, the pseudo-masks' rule agreed with Space Ranger's tissue calls on 99.1% of spots at Otsu's level, 54.0% at 200)`
  );
}

/** Thresholds of {@link glassCheck}. */
export interface GlassCheckOptions {
  /** Glass candidates must hold at least this share of the pixels (default 0.05). */
  minFraction?: number;
  /** A candidate's chroma (max - min of R, G, B) is at most this (default 12; measured medians per Visium spot: glass 4, tissue 42). */
  maxChroma?: number;
}

/**
 * Does the fixed white level `whiteGrey` (pixels with grey > whiteGrey are glass)
 * find the glass in these images? See the module comment for the rule and its measurement.
 */
export function glassCheck(stats: GlassStats, whiteGrey: number, opts: GlassCheckOptions = {}): GlassCheck {
  const minFraction = opts.minFraction ?? 0.05;
  const maxChroma = opts.maxChroma ?? 12;
  const otsu = otsuThreshold(stats.greyCounts());
  let total = 0;
  for (const v of stats.joint) total += v;
  // Glass candidates: bright (above Otsu's threshold) and colourless (chroma <= maxChroma).
  let n = 0;
  let greySum = 0;
  let chromaSum = 0;
  let above = 0;
  for (let t = otsu + 1; otsu >= 0 && t < 256; t++) {
    for (let c = 0; c <= maxChroma; c++) {
      const k = stats.joint[t * 256 + c]!;
      n += k;
      greySum += (t + 0.5) * k;
      chromaSum += c * k;
      // Bin t holds grey levels in [t, t+1): counted above the white level when the whole bin is.
      if (t >= Math.floor(whiteGrey) + 1) above += k;
    }
  }
  const glassFraction = total ? n / total : 0;
  const glassLike = otsu >= 0 && glassFraction >= minFraction;
  const foundByWhiteLevel = n ? above / n : 0;
  const missed = glassLike && foundByWhiteLevel < 0.5;
  return {
    otsu,
    glassFraction,
    glassGrey: n ? greySum / n : 0,
    glassChroma: n ? chromaSum / n : 0,
    glassLike,
    foundByWhiteLevel,
    missed,
    ...(missed ? { suggestedWhiteGrey: otsu } : {}),
  };
}
