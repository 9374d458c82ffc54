/**
 * The synthetic H&E painter: one patch = a region layout (which tissue class
 * covers each pixel) plus a stain-density rendering of each class's structures,
 * turned into RGB by the Beer-Lambert law.
 *
 * This is a stand-in for real histopathology, built to reproduce the two
 * difficulties PBIP addresses (paper section 1, and the image bank of eq. 1):
 * - intra-class heterogeneity: every class has two visibly different
 *   sub-appearances ({@link SYNTH_VARIANTS}), so one prototype per class is not
 *   enough and K > 1 sub-class prototypes have something to find;
 * - inter-class homogeneity: classes share colour and structure (dense
 *   lymphocyte sheets vs solid tumour, karyorrhectic necrosis vs lymphocytes,
 *   eosinophilic necrosis vs stroma), so colour alone does not separate them.
 *
 * Stain model: hematoxylin (H) and eosin (E) densities per pixel, combined as
 * optical density `OD_c = cH * H * h_c + cE * E * e_c` with the reference H&E
 * stain vectors of Macenko et al. (2009) and `I_c = I0_c * 10^(-OD_c)`, with
 * per-patch perturbations of the stain vectors, stain amounts and illumination.
 *
 * Structure sizes are given at 224 px and scale with `size / 224` (the same
 * field of view at another resolution). Nuclei are 3 to 7 px in radius at 224,
 * so they remain visible when a patch is downsampled to 112 px.
 */
import { Rng } from "../../util/rng";
import { fbm, NoiseLattice, smoothstep, valueNoise } from "./noise";

/** Number of foreground classes (LUAD-HistoSeg order: TE, NEC, LYM, TAS). */
export const SYNTH_NUM_CLASSES = 4;
/** Mask id of background (white glass, alveolar/fat spaces), as in LUAD-HistoSeg. */
export const SYNTH_BACKGROUND = 4;

/** The sub-appearances each class is drawn with, by mask id (index 4 = background). */
export const SYNTH_VARIANTS: readonly (readonly string[])[] = [
  ["solid", "acinar"], // tumour epithelium
  ["eosinophilic", "karyorrhectic"], // necrosis
  ["dense", "scattered"], // lymphocytes
  ["dense-collagen", "loose"], // tumour-associated stroma
  ["glass", "alveolar"], // background
];

/**
 * Reference stain vectors (RGB optical density per unit stain) of Macenko et
 * al., "A method for normalizing histology slides for quantitative analysis",
 * ISBI 2009, as used by common stain-normalisation code.
 */
export const HE_REFERENCE = {
  hematoxylin: [0.5626, 0.7201, 0.4062] as const,
  eosin: [0.2159, 0.8012, 0.5581] as const,
};

/** What decides a patch's layout and appearance. All fields have defaults in {@link paintDefaults}. */
export interface PaintParams {
  /** Patch side in pixels. */
  size: number;
  /** A class is kept (and labelled) only when it covers at least this fraction of the patch. */
  minArea: number;
  /** Probability that a patch has a background (glass) region. */
  backgroundProbability: number;
  /** At most this fraction of a patch is background. */
  maxBackground: number;
  /** Relative frequency of each class (TE, NEC, LYM, TAS) when choosing a patch's classes. */
  classPrior: [number, number, number, number];
  /** Relative frequency of patches with 1, 2, 3 and 4 classes. */
  classCountWeights: [number, number, number, number];
  /** Per-patch stain variation: relative spread of stain amounts (0.2 = +-20%). */
  stainJitter: number;
}

/** Defaults of {@link PaintParams} (224 px patches). */
export const paintDefaults: PaintParams = {
  size: 224,
  minArea: 0.05,
  backgroundProbability: 0.3,
  maxBackground: 0.5,
  classPrior: [0.34, 0.16, 0.2, 0.3],
  classCountWeights: [0.42, 0.33, 0.18, 0.07],
  stainJitter: 0.2,
};

/** One painted patch. */
export interface PaintedPatch {
  size: number;
  /** Interleaved RGB bytes, `size * size * 3`. */
  rgb: Uint8Array;
  /** Class id per pixel (0..3 foreground, 4 background). */
  mask: Uint8Array;
  /** Multi-hot image-level label over the 4 classes (classes whose area is at least `minArea`). */
  label: number[];
  /** Sub-appearance drawn for each present class and for background, by mask id (undefined when absent). */
  variants: (string | undefined)[];
}

interface Seed {
  x: number;
  y: number;
  w: number;
  cls: number;
}

function pickWeighted(rng: Rng, weights: readonly number[]): number {
  const total = weights.reduce((a, b) => a + b, 0);
  let r = rng.next() * total;
  for (let i = 0; i < weights.length; i++) {
    r -= weights[i]!;
    if (r < 0) return i;
  }
  return weights.length - 1;
}

/**
 * Region layout: a multiplicatively weighted Voronoi diagram of a few seeds in
 * domain-warped coordinates, which gives smooth irregular regions. Classes below
 * `minArea` (and background above `maxBackground`) are removed and the diagram
 * recomputed, so the final label is exactly the set of classes in the mask.
 */
function layout(rng: Rng, p: PaintParams): { map: Uint8Array; present: boolean[] } {
  const S = p.size;
  const n = pickWeighted(rng, p.classCountWeights) + 1;
  const prior = [...p.classPrior];
  const classes: number[] = [];
  for (let k = 0; k < n; k++) {
    const c = pickWeighted(rng, prior);
    classes.push(c);
    prior[c] = 0;
  }
  const seeds: Seed[] = [];
  for (const c of classes) {
    const m = rng.next() < 0.35 ? 2 : 1;
    for (let j = 0; j < m; j++) seeds.push({ x: rng.uniform(-0.05, 1.05) * S, y: rng.uniform(-0.05, 1.05) * S, w: rng.uniform(0.7, 1.4), cls: c });
  }
  if (rng.next() < p.backgroundProbability) {
    // Glass usually enters from an edge of the patch (the edge of the tissue).
    const side = rng.int(5);
    const t = rng.uniform(0, 1) * S;
    const o = rng.uniform(-0.2, 0.08) * S;
    const pos: [number, number] = side === 0 ? [t, o] : side === 1 ? [t, S - o] : side === 2 ? [o, t] : side === 3 ? [S - o, t] : [rng.uniform(0.2, 0.8) * S, rng.uniform(0.2, 0.8) * S];
    seeds.push({ x: pos[0], y: pos[1], w: rng.uniform(0.8, 1.3), cls: SYNTH_BACKGROUND });
  }
  const amp = 0.22 * S;
  const wx = fbm(rng, S, S, S * 0.45, 2);
  const wy = fbm(rng, S, S, S * 0.45, 2);
  const map = new Uint8Array(S * S);
  let active = seeds.slice();
  for (let iter = 0; iter < 8; iter++) {
    const area = new Float64Array(5);
    for (let y = 0, i = 0; y < S; y++) {
      for (let x = 0; x < S; x++, i++) {
        const px = x + amp * wx[i]!;
        const py = y + amp * wy[i]!;
        let best = Infinity;
        let cls = 0;
        for (const s of active) {
          const d = ((px - s.x) ** 2 + (py - s.y) ** 2) * s.w;
          if (d < best) {
            best = d;
            cls = s.cls;
          }
        }
        map[i] = cls;
        area[cls]! += 1;
      }
    }
    const total = S * S;
    let drop = -1;
    if (area[SYNTH_BACKGROUND]! > p.maxBackground * total) drop = SYNTH_BACKGROUND;
    else {
      let smallest = Infinity;
      for (let c = 0; c < SYNTH_NUM_CLASSES; c++) {
        if (area[c]! > 0 && area[c]! < p.minArea * total && area[c]! < smallest) {
          smallest = area[c]!;
          drop = c;
        }
      }
    }
    const fg = active.filter((s) => s.cls !== SYNTH_BACKGROUND);
    if (drop < 0 || (drop !== SYNTH_BACKGROUND && new Set(fg.map((s) => s.cls)).size <= 1)) break;
    active = active.filter((s) => s.cls !== drop);
  }
  const present = [false, false, false, false, false];
  for (let i = 0; i < map.length; i++) present[map[i]!] = true;
  return { map, present };
}

/** Stain density fields under construction, plus the class map that confines each painter. */
interface Canvas {
  S: number;
  s: number; // scale relative to 224
  map: Uint8Array;
  H: Float32Array;
  E: Float32Array;
  grain: Float32Array; // fine chromatin texture in [0, 1]
}

interface NucleusStyle {
  value: number; // peak hematoxylin density
  grainAmt?: number; // chromatin texture strength, 0..1
  rim?: number; // 0..1: how much the density concentrates at the nuclear membrane (vesicular)
  nucleolus?: number; // density of a central nucleolus (0 = none)
  wobble?: number; // outline irregularity
  phase?: number;
}

/** Stamp one elliptical nucleus (max-combined into H), clipped to pixels of class `cls`. */
function nucleus(cv: Canvas, cls: number, cx: number, cy: number, rx: number, ry: number, ang: number, st: NucleusStyle): void {
  const { S, map, H, grain } = cv;
  const r = Math.max(rx, ry) * (1 + (st.wobble ?? 0)) + 1.5;
  const x0 = Math.max(0, Math.floor(cx - r));
  const x1 = Math.min(S - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r));
  const y1 = Math.min(S - 1, Math.ceil(cy + r));
  const ca = Math.cos(ang);
  const sa = Math.sin(ang);
  const soft = Math.min(rx, ry) * 1.3;
  const g = st.grainAmt ?? 0;
  const rim = st.rim ?? 0;
  const wob = st.wobble ?? 0;
  const ph = st.phase ?? 0;
  const nr = 0.22 * Math.min(rx, ry);
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const i = y * S + x;
      if (map[i] !== cls) continue;
      const dx = x + 0.5 - cx;
      const dy = y + 0.5 - cy;
      const u = dx * ca + dy * sa;
      const v = -dx * sa + dy * ca;
      let d = Math.sqrt((u / rx) ** 2 + (v / ry) ** 2);
      if (wob > 0) d /= 1 + wob * Math.sin(3 * Math.atan2(v, u) + ph);
      if (d >= 1 + 1 / soft) continue;
      const edge = Math.min(1, Math.max(0, (1 - d) * soft + 0.5));
      let val = st.value * edge;
      if (rim > 0) val *= 1 - rim + rim * smoothstep(0.5, 0.95, d);
      if (g > 0) val *= 1 - g + 2 * g * grain[i]!;
      if (st.nucleolus && dx * dx + dy * dy < nr * nr) val = Math.max(val, st.nucleolus);
      if (val > H[i]!) H[i] = val;
    }
  }
}

/** Centres of a jittered hexagonal grid with spacing `sp` covering the patch. */
function hexGrid(rng: Rng, S: number, sp: number, jitter: number): [number, number][] {
  const out: [number, number][] = [];
  const dy = sp * 0.866;
  const ox = rng.next() * sp;
  const oy = rng.next() * dy;
  for (let row = -1, y = oy - dy; y < S + dy; row++, y += dy) {
    for (let x = ox - sp + (row & 1 ? sp / 2 : 0); x < S + sp; x += sp) {
      out.push([x + rng.uniform(-jitter, jitter) * sp, y + rng.uniform(-jitter, jitter) * sp]);
    }
  }
  return out;
}

function inClass(cv: Canvas, cls: number, x: number, y: number): boolean {
  const xi = Math.floor(x);
  const yi = Math.floor(y);
  return xi >= 0 && yi >= 0 && xi < cv.S && yi < cv.S && cv.map[yi * cv.S + xi] === cls;
}

/** Fill the stain fields of class `cls` with base densities plus smooth variation. */
function fillBase(cv: Canvas, rng: Rng, cls: number, eBase: number, eVar: number, eCell: number, hBase: number, hVar = 0): void {
  const { S, map, H, E } = cv;
  const ne = fbm(rng, S, S, eCell * cv.s, 3);
  const nh = hVar > 0 ? fbm(rng, S, S, 18 * cv.s, 2) : undefined;
  for (let i = 0; i < map.length; i++) {
    if (map[i] !== cls) continue;
    E[i] = Math.max(0, eBase + eVar * ne[i]!);
    H[i] = Math.max(0, hBase + (nh ? hVar * nh[i]! : 0));
  }
}

/**
 * Collagen fibres: stripes along direction `theta` with period `lambda` (px at
 * 224), domain-warped by `warp` so they wave, broken into segments of varying
 * strength (`breaks` 0..1). Adds `amp * (stripe * strength - 0.3)` to E; `sharp`
 * narrows the stripes.
 */
function fibres(cv: Canvas, rng: Rng, cls: number, theta: number, lambda: number, amp: number, sharp: number, warp: number, breaks = 0.5): void {
  const { S, map, E, s } = cv;
  const w = fbm(rng, S, S, 34 * s, 2);
  const w2 = valueNoise(rng, S, S, 9 * s);
  const lat = new NoiseLattice(rng, 64, 64);
  const st = Math.sin(theta);
  const ct = Math.cos(theta);
  const L = lambda * s;
  const k = (2 * Math.PI) / L;
  const seg = 1 / (24 * s);
  for (let y = 0, i = 0; y < S; y++) {
    for (let x = 0; x < S; x++, i++) {
      if (map[i] !== cls) continue;
      const u = -x * st + y * ct + warp * s * w[i]! + 1.2 * s * w2[i]!;
      const f = (0.5 + 0.5 * Math.cos(k * u)) ** sharp;
      const m = 1 - breaks + breaks * smoothstep(-0.35, 0.35, lat.at((x * ct + y * st) * seg, u / L + 0.5));
      E[i] = Math.max(0, E[i]! + amp * (f * m - 0.3));
    }
  }
}

function spindles(cv: Canvas, rng: Rng, cls: number, theta: number, spacing: number, value: number, roundFrac: number): void {
  const s = cv.s;
  for (const [x, y] of hexGrid(rng, cv.S, spacing * s, 0.45)) {
    if (!inClass(cv, cls, x, y) || rng.next() < 0.2) continue;
    if (rng.next() < roundFrac) {
      const r = rng.uniform(3, 4.5) * s;
      nucleus(cv, cls, x, y, r * rng.uniform(1, 1.3), r, rng.uniform(0, Math.PI), { value: value * rng.uniform(0.85, 1.05), grainAmt: 0.25 });
    } else {
      nucleus(cv, cls, x, y, rng.uniform(6, 10) * s, rng.uniform(1.4, 2.2) * s, theta + rng.uniform(-0.25, 0.25), {
        value: value * rng.uniform(0.85, 1.1),
        grainAmt: 0.2,
        wobble: 0.08,
        phase: rng.uniform(0, 6.3),
      });
    }
  }
}

// ---- class painters -------------------------------------------------------

function paintTumour(cv: Canvas, rng: Rng, variant: string): void {
  const s = cv.s;
  const C = 0;
  if (variant === "solid") {
    fillBase(cv, rng, C, rng.uniform(0.3, 0.42), 0.07, 14, rng.uniform(0.06, 0.12), 0.03);
    const R = rng.uniform(5.5, 7) * s;
    for (const [x, y] of hexGrid(rng, cv.S, R * rng.uniform(2.4, 2.9), 0.28)) {
      if (!inClass(cv, C, x, y) || rng.next() < 0.05) continue;
      const r = R * rng.uniform(0.8, 1.25);
      const vesicular = rng.next() < 0.6;
      nucleus(cv, C, x, y, r * rng.uniform(1, 1.45), r, rng.uniform(0, Math.PI), {
        value: vesicular ? rng.uniform(0.5, 0.7) : rng.uniform(0.75, 0.95),
        grainAmt: vesicular ? 0.3 : 0.35,
        rim: vesicular ? 0.45 : 0,
        nucleolus: vesicular && rng.next() < 0.7 ? rng.uniform(0.9, 1.1) : 0,
        wobble: rng.uniform(0.03, 0.12),
        phase: rng.uniform(0, 6.3),
      });
    }
    return;
  }
  // Acinar: glands (white lumen, a ring of columnar cells) in a pale matrix.
  const { S, map, H, E } = cv;
  const G = rng.uniform(50, 68) * s;
  const Rn = rng.uniform(3.8, 4.8) * s;
  const glands = hexGrid(rng, S, G, 0.18).map(([x, y]) => {
    const a = G * rng.uniform(0.22, 0.32);
    return { x, y, a, b: a * rng.uniform(0.6, 1), ang: rng.uniform(0, Math.PI), secretion: rng.next() < 0.3 ? rng.uniform(0.08, 0.16) : 0.03 };
  });
  const ring = 3.2 * Rn;
  const matrixE = rng.uniform(0.24, 0.34);
  const ne = fbm(rng, S, S, 12 * s, 3);
  const outline = new NoiseLattice(rng, 64, 64);
  const oc = 1 / (9 * s);
  for (let y = 0, i = 0; y < S; y++) {
    for (let x = 0; x < S; x++, i++) {
      if (map[i] !== C) continue;
      let best = Infinity;
      let g = glands[0]!;
      for (const q of glands) {
        const dx = x - q.x;
        const dy = y - q.y;
        if (Math.abs(dx) > G * 1.5 || Math.abs(dy) > G * 1.5) continue;
        const c = Math.cos(q.ang);
        const sn = Math.sin(q.ang);
        const u = (dx * c + dy * sn) / q.a;
        const v = (-dx * sn + dy * c) / q.b;
        // Distance outside the lumen ellipse, in pixels (approximate).
        const dd = (Math.sqrt(u * u + v * v) - 1) * Math.min(q.a, q.b);
        if (dd < best) {
          best = dd;
          g = q;
        }
      }
      best += 2.5 * s * outline.at(x * oc, y * oc);
      if (best < 0) {
        E[i] = g.secretion + 0.02 * ne[i]!;
        H[i] = 0.01;
      } else if (best < ring) {
        E[i] = 0.4 + 0.06 * ne[i]!;
        H[i] = 0.08;
      } else {
        E[i] = matrixE + 0.08 * ne[i]!;
        H[i] = 0.03;
      }
    }
  }
  for (const q of glands) {
    const c = Math.cos(q.ang);
    const sn = Math.sin(q.ang);
    const per = Math.PI * (q.a + q.b + 2 * Rn);
    const n = Math.max(8, Math.round(per / (1.5 * Rn)));
    const t0 = rng.next() * 6.3;
    for (let k = 0; k < n; k++) {
      const t = t0 + (k / n) * 2 * Math.PI + rng.uniform(-0.08, 0.08);
      const off = Rn * rng.uniform(1.8, 2.3);
      const lx = (q.a + off) * Math.cos(t);
      const ly = (q.b + off) * Math.sin(t);
      const x = q.x + lx * c - ly * sn;
      const y = q.y + lx * sn + ly * c;
      if (!inClass(cv, C, x, y)) continue;
      const r = Rn * rng.uniform(0.85, 1.15);
      const radial = Math.atan2(y - q.y, x - q.x);
      nucleus(cv, C, x, y, r * rng.uniform(1.2, 1.5), r * 0.8, radial + rng.uniform(-0.3, 0.3), {
        value: rng.uniform(0.5, 0.75),
        grainAmt: 0.3,
        wobble: 0.06,
        phase: rng.uniform(0, 6.3),
      });
    }
  }
  // A few stray nuclei in the matrix.
  for (const [x, y] of hexGrid(rng, S, 30 * s, 0.45)) {
    const inMatrix = inClass(cv, C, x, y) && E[Math.floor(y) * S + Math.floor(x)]! > 0.2;
    if (rng.next() < 0.4 && inMatrix) nucleus(cv, C, x, y, 4 * s, 3 * s, rng.uniform(0, 3.14), { value: 0.6, grainAmt: 0.3 });
  }
}

function paintNecrosis(cv: Canvas, rng: Rng, variant: string): void {
  const s = cv.s;
  const C = 1;
  const dirty = variant === "karyorrhectic";
  if (!dirty) fillBase(cv, rng, C, rng.uniform(0.36, 0.52), 0.16, 7, 0.04, 0.02);
  else fillBase(cv, rng, C, rng.uniform(0.26, 0.38), 0.12, 7, rng.uniform(0.1, 0.2), 0.08);
  // Granular debris texture.
  const { S, map, E, H } = cv;
  const gr = valueNoise(rng, S, S, 2.2 * s);
  for (let i = 0; i < map.length; i++) if (map[i] === C) E[i] = Math.max(0, E[i]! + 0.09 * gr[i]!);
  // Ghost cells: pale nuclear outlines of dead cells.
  for (const [x, y] of hexGrid(rng, S, rng.uniform(13, 17) * s, 0.35)) {
    if (!inClass(cv, C, x, y) || rng.next() < 0.3) continue;
    const r = rng.uniform(4, 6) * s;
    nucleus(cv, C, x, y, r * rng.uniform(1, 1.3), r, rng.uniform(0, 3.14), { value: rng.uniform(0.1, 0.2), rim: 1, wobble: 0.15, phase: rng.uniform(0, 6.3) });
  }
  // Karyorrhexis: clusters of small dark nuclear fragments.
  const clusterSpacing = (dirty ? rng.uniform(18, 24) : rng.uniform(45, 60)) * s;
  for (const [x, y] of hexGrid(rng, S, clusterSpacing, 0.5)) {
    if (!inClass(cv, C, x, y)) continue;
    const m = dirty ? 6 + rng.int(14) : 1 + rng.int(4);
    for (let k = 0; k < m; k++) {
      const fx = x + rng.normal(0, 7 * s);
      const fy = y + rng.normal(0, 7 * s);
      const r = rng.uniform(1.1, 2.4) * s;
      nucleus(cv, C, fx, fy, r * rng.uniform(1, 1.6), r, rng.uniform(0, 3.14), { value: rng.uniform(0.7, 1.1), wobble: 0.3, phase: rng.uniform(0, 6.3) });
    }
  }
  void H;
}

function paintLymphocytes(cv: Canvas, rng: Rng, variant: string): void {
  const s = cv.s;
  const C = 2;
  const { S } = cv;
  let keep: (x: number, y: number) => boolean;
  if (variant === "dense") {
    fillBase(cv, rng, C, rng.uniform(0.15, 0.22), 0.05, 10, 0.08, 0.03);
    keep = () => rng.next() > 0.08;
  } else {
    fillBase(cv, rng, C, rng.uniform(0.18, 0.28), 0.07, 16, 0.03);
    fibres(cv, rng, C, rng.uniform(0, Math.PI), rng.uniform(8, 12), 0.18, 4, 18, 0.6);
    const density = fbm(rng, S, S, 40 * s, 2);
    const base = rng.uniform(0.3, 0.5);
    keep = (x, y) => {
      const i = Math.min(S - 1, Math.max(0, Math.floor(y))) * S + Math.min(S - 1, Math.max(0, Math.floor(x)));
      return rng.next() < base + 0.45 * density[i]!;
    };
  }
  const r0 = rng.uniform(3, 3.8) * s;
  for (const [x, y] of hexGrid(rng, S, r0 * rng.uniform(2.05, 2.4), 0.22)) {
    if (!inClass(cv, C, x, y) || !keep(x, y)) continue;
    const r = r0 * rng.uniform(0.88, 1.12);
    nucleus(cv, C, x, y, r * rng.uniform(1, 1.15), r, rng.uniform(0, 3.14), { value: rng.uniform(0.95, 1.2), grainAmt: 0.12, wobble: 0.04, phase: rng.uniform(0, 6.3) });
  }
}

function paintStroma(cv: Canvas, rng: Rng, variant: string): void {
  const C = 3;
  const theta = rng.uniform(0, Math.PI);
  if (variant === "dense-collagen") {
    fillBase(cv, rng, C, rng.uniform(0.44, 0.56), 0.06, 20, 0.02);
    fibres(cv, rng, C, theta, rng.uniform(6, 9), 0.32, 2, 12, 0.45);
    spindles(cv, rng, C, theta, rng.uniform(26, 32), 0.85, 0.1);
  } else {
    fillBase(cv, rng, C, rng.uniform(0.2, 0.3), 0.05, 20, 0.02);
    fibres(cv, rng, C, theta, rng.uniform(8, 12), 0.42, 5, 26, 0.7);
    // Oedematous gaps.
    const { S, map, E } = cv;
    const gaps = fbm(rng, S, S, 26 * cv.s, 2);
    for (let i = 0; i < map.length; i++) if (map[i] === C) E[i] = E[i]! * (0.45 + 0.55 * smoothstep(-0.35, 0.25, gaps[i]!));
    spindles(cv, rng, C, theta, rng.uniform(34, 42), 0.8, 0.3);
  }
}

function paintBackground(cv: Canvas, rng: Rng, variant: string): void {
  const C = SYNTH_BACKGROUND;
  const { S, map, E, H, s } = cv;
  fillBase(cv, rng, C, 0.015, 0.01, 30, 0.004);
  if (variant !== "alveolar") return;
  // Thin septa between empty spaces (alveoli / fat cells): a Voronoi edge network.
  const pts = hexGrid(rng, S, rng.uniform(24, 34) * s, 0.35);
  const w = 1.1 * s;
  for (let y = 0, i = 0; y < S; y++) {
    for (let x = 0; x < S; x++, i++) {
      if (map[i] !== C) continue;
      let d1 = Infinity;
      let d2 = Infinity;
      for (const [px, py] of pts) {
        const d = (x - px) ** 2 + (y - py) ** 2;
        if (d < d1) {
          d2 = d1;
          d1 = d;
        } else if (d < d2) d2 = d;
      }
      const gap = Math.sqrt(d2) - Math.sqrt(d1);
      if (gap < 2 * w) {
        const a = 1 - gap / (2 * w);
        E[i] = Math.max(E[i]!, 0.28 * a);
        H[i] = Math.max(H[i]!, 0.04 * a);
      }
    }
  }
}

const PAINTERS = [paintTumour, paintNecrosis, paintLymphocytes, paintStroma, paintBackground];

/** Separable [1 2 1]/4 blur in place (optical softness). */
function blur121(f: Float32Array, S: number): void {
  const t = new Float32Array(f.length);
  for (let y = 0; y < S; y++) {
    const r = y * S;
    for (let x = 0; x < S; x++) t[r + x] = (2 * f[r + x]! + f[r + Math.max(0, x - 1)]! + f[r + Math.min(S - 1, x + 1)]!) * 0.25;
  }
  for (let y = 0; y < S; y++) {
    const up = Math.max(0, y - 1) * S;
    const dn = Math.min(S - 1, y + 1) * S;
    const r = y * S;
    for (let x = 0; x < S; x++) f[r + x] = (2 * t[r + x]! + t[up + x]! + t[dn + x]!) * 0.25;
  }
}

/**
 * Paint one synthetic H&E patch from a seed. A pure function: the same seed and
 * parameters give the same pixels, mask and label.
 */
export function paintPatch(seed: number, params: Partial<PaintParams> = {}): PaintedPatch {
  const p: PaintParams = { ...paintDefaults, ...params };
  const S = p.size;
  const rng = new Rng(seed);
  const { map, present } = layout(rng.fork(1), p);
  const grainRng = rng.fork(2);
  const cv: Canvas = { S, s: S / 224, map, H: new Float32Array(S * S), E: new Float32Array(S * S), grain: new Float32Array(S * S) };
  const g = valueNoise(grainRng, S, S, 1.6 * cv.s);
  for (let i = 0; i < g.length; i++) cv.grain[i] = 0.5 + 0.5 * g[i]!;
  const variants: (string | undefined)[] = [];
  for (let c = 0; c <= SYNTH_BACKGROUND; c++) {
    const crng = rng.fork(10 + c);
    const vs = SYNTH_VARIANTS[c]!;
    const v = vs[crng.int(vs.length)]!;
    if (!present[c]) continue;
    variants[c] = v;
    PAINTERS[c]!(cv, crng, v);
  }
  blur121(cv.H, S);
  blur121(cv.E, S);
  // Beer-Lambert with per-patch stain variation.
  const srng = rng.fork(3);
  const j = p.stainJitter;
  const unit = (v: readonly number[]): number[] => {
    const q = v.map((x) => Math.max(0.02, x + srng.normal(0, 0.03)));
    const n = Math.hypot(...q);
    return q.map((x) => x / n);
  };
  const hv = unit(HE_REFERENCE.hematoxylin);
  const ev = unit(HE_REFERENCE.eosin);
  const cH = srng.uniform(1 - j, 1 + j);
  const cE = srng.uniform(1 - j, 1 + j);
  const base = srng.uniform(232, 250);
  const I0 = [0, 1, 2].map(() => Math.min(255, base + srng.uniform(-5, 5)));
  const light = fbm(srng, S, S, S * 0.5, 2);
  const rgb = new Uint8Array(S * S * 3);
  const k = -Math.log(10);
  const [h0, h1, h2] = hv as [number, number, number];
  const [e0, e1, e2] = ev as [number, number, number];
  const [i0, i1, i2] = I0 as [number, number, number];
  const Hf = cv.H;
  const Ef = cv.E;
  // Sensor noise: triangular, +-4 grey levels, from a cheap xorshift32 stream.
  let ns = srng.int(0x7fffffff) | 1;
  const noise = (): number => {
    ns ^= ns << 13;
    ns ^= ns >>> 17;
    ns ^= ns << 5;
    return ((ns & 0xffff) + ((ns >>> 16) & 0xffff)) * (4 / 65536) - 4;
  };
  const byte = (v: number): number => (v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v));
  for (let i = 0, o = 0; i < S * S; i++, o += 3) {
    const h = cH * Hf[i]!;
    const e = cE * Ef[i]!;
    const l = 1 + 0.025 * light[i]!;
    rgb[o] = byte(i0 * l * Math.exp(k * (h * h0 + e * e0)) + noise());
    rgb[o + 1] = byte(i1 * l * Math.exp(k * (h * h1 + e * e1)) + noise());
    rgb[o + 2] = byte(i2 * l * Math.exp(k * (h * h2 + e * e2)) + noise());
  }
  const label = [0, 1, 2, 3].map((c) => (present[c] ? 1 : 0));
  return { size: S, rgb, mask: map, label, variants };
}
