/**
 * Smooth random fields for the synthetic tissue generator: seeded value noise
 * (random values on a lattice, smoothstep-interpolated) and its fractal sum.
 * Everything is drawn from an {@link Rng}, so a field is a pure function of the seed.
 */
import type { Rng } from "../../util/rng";

/**
 * Value noise over a `w` x `h` image with lattice spacing `cell` pixels, values
 * in [-1, 1] before interpolation. Returns a Float32Array of `w * h`.
 */
export function valueNoise(rng: Rng, w: number, h: number, cell: number, out?: Float32Array): Float32Array {
  const c = Math.max(cell, 0.5);
  const gw = Math.ceil(w / c) + 2;
  const gh = Math.ceil(h / c) + 2;
  const grid = new Float32Array(gw * gh);
  for (let i = 0; i < grid.length; i++) grid[i] = rng.next() * 2 - 1;
  // A random sub-cell offset, so fields of the same cell size do not share lattice lines.
  const ox = rng.next() * c;
  const oy = rng.next() * c;
  const res = out ?? new Float32Array(w * h);
  const x0 = new Int32Array(w);
  const tx = new Float32Array(w);
  for (let x = 0; x < w; x++) {
    const fx = (x + ox) / c;
    const ix = Math.floor(fx);
    const t = fx - ix;
    x0[x] = ix;
    tx[x] = t * t * (3 - 2 * t);
  }
  for (let y = 0; y < h; y++) {
    const fy = (y + oy) / c;
    const iy = Math.floor(fy);
    let ty = fy - iy;
    ty = ty * ty * (3 - 2 * ty);
    const r0 = iy * gw;
    const r1 = r0 + gw;
    const row = y * w;
    for (let x = 0; x < w; x++) {
      const ix = x0[x]!;
      const t = tx[x]!;
      const a = grid[r0 + ix]! + (grid[r0 + ix + 1]! - grid[r0 + ix]!) * t;
      const b = grid[r1 + ix]! + (grid[r1 + ix + 1]! - grid[r1 + ix]!) * t;
      res[row + x] = a + (b - a) * ty;
    }
  }
  return res;
}

/** Scratch buffer for the octaves of {@link fbm} (one per thread: each worker has its own module). */
let fbmScratch = new Float32Array(0);

/**
 * Fractal value noise: `octaves` layers of {@link valueNoise}, each at half the
 * cell size and `gain` times the amplitude of the last, normalised so the result
 * stays roughly within [-1, 1].
 */
export function fbm(rng: Rng, w: number, h: number, cell: number, octaves = 3, gain = 0.5): Float32Array {
  const out = new Float32Array(w * h);
  if (fbmScratch.length < w * h) fbmScratch = new Float32Array(w * h);
  const tmp = fbmScratch.subarray(0, w * h);
  let amp = 1;
  let norm = 0;
  for (let o = 0; o < octaves; o++) {
    valueNoise(rng, w, h, cell / 2 ** o, tmp);
    for (let i = 0; i < out.length; i++) out[i]! += amp * tmp[i]!;
    norm += amp;
    amp *= gain;
  }
  const k = 1 / norm;
  for (let i = 0; i < out.length; i++) out[i]! *= k;
  return out;
}

/**
 * Value noise that can be sampled at any point (for anisotropic or rotated
 * fields): a `gw` x `gh` lattice of random values in [-1, 1] with unit spacing,
 * wrapped at its edges, smoothstep-interpolated.
 */
export class NoiseLattice {
  private readonly grid: Float32Array;
  constructor(
    rng: Rng,
    private readonly gw = 64,
    private readonly gh = 64,
  ) {
    this.grid = new Float32Array(gw * gh);
    for (let i = 0; i < this.grid.length; i++) this.grid[i] = rng.next() * 2 - 1;
  }
  /** The field at lattice coordinates (x, y). */
  at(x: number, y: number): number {
    const ix = Math.floor(x);
    const iy = Math.floor(y);
    let tx = x - ix;
    let ty = y - iy;
    tx = tx * tx * (3 - 2 * tx);
    ty = ty * ty * (3 - 2 * ty);
    const { gw, gh, grid } = this;
    const x0 = ((ix % gw) + gw) % gw;
    const y0 = ((iy % gh) + gh) % gh;
    const x1 = x0 + 1 === gw ? 0 : x0 + 1;
    const y1 = y0 + 1 === gh ? 0 : y0 + 1;
    const a = grid[y0 * gw + x0]! + (grid[y0 * gw + x1]! - grid[y0 * gw + x0]!) * tx;
    const b = grid[y1 * gw + x0]! + (grid[y1 * gw + x1]! - grid[y1 * gw + x0]!) * tx;
    return a + (b - a) * ty;
  }
}

/** Hermite smoothstep of x between edges a and b. */
export function smoothstep(a: number, b: number, x: number): number {
  const t = Math.min(1, Math.max(0, (x - a) / (b - a)));
  return t * t * (3 - 2 * t);
}
