/**
 * Boundary IoU (Cheng, Girshick, Dollar, Berg, Kirillov, "Boundary IoU: Improving
 * Object-Centric Image Segmentation Evaluation", CVPR 2021).
 *
 * For a binary mask X, the boundary region X_d is the set of pixels of X within
 * distance d of its contour: the pixels of X that do not survive d erosions by a
 * 3x3 square, i.e. pixels of X with a pixel outside X within Chebyshev distance d.
 * As in the authors' code (which pads the mask with a ring of zeros before
 * `cv2.erode`), pixels outside the image count as outside X, so a mask touching
 * the image edge has a band along that edge too.
 *
 * Per class: bIoU = |(G_d ∩ G) ∩ (P_d ∩ P)| / |(G_d ∩ G) ∪ (P_d ∩ P)|, where G and
 * P are the ground-truth and predicted masks of the class.
 */

/**
 * X eroded by a (2d+1) x (2d+1) square with everything outside the image treated
 * as 0: a pixel survives iff every pixel within Chebyshev distance d is inside the
 * image and set. Exact, O(H * W) via two separable run-length passes.
 */
export function erodeSquare(mask: Uint8Array, height: number, width: number, d: number): Uint8Array {
  checkMask(mask, height, width, d);
  const rows = new Uint8Array(height * width);
  // Row pass: run lengths of set pixels to the left and right (each counting itself).
  const left = new Int32Array(width);
  for (let y = 0; y < height; y++) {
    const o = y * width;
    let run = 0;
    for (let x = 0; x < width; x++) {
      run = mask[o + x] ? run + 1 : 0;
      left[x] = run;
    }
    run = 0;
    for (let x = width - 1; x >= 0; x--) {
      run = mask[o + x] ? run + 1 : 0;
      if (left[x]! > d && run > d) rows[o + x] = 1;
    }
  }
  const out = new Uint8Array(height * width);
  const up = new Int32Array(height);
  for (let x = 0; x < width; x++) {
    let run = 0;
    for (let y = 0; y < height; y++) {
      run = rows[y * width + x] ? run + 1 : 0;
      up[y] = run;
    }
    run = 0;
    for (let y = height - 1; y >= 0; y--) {
      run = rows[y * width + x] ? run + 1 : 0;
      if (up[y]! > d && run > d) out[y * width + x] = 1;
    }
  }
  return out;
}

/**
 * The boundary region X_d ∩ X of a binary mask (Cheng et al. 2021): pixels of X
 * within Chebyshev distance `d` (>= 1) of its contour, the image outside counting
 * as background. Returns a 0/1 mask.
 */
export function boundaryRegion(mask: Uint8Array, height: number, width: number, d: number): Uint8Array {
  const eroded = erodeSquare(mask, height, width, d);
  const out = new Uint8Array(height * width);
  for (let i = 0; i < out.length; i++) out[i] = mask[i] && !eroded[i] ? 1 : 0;
  return out;
}

function checkMask(mask: Uint8Array, height: number, width: number, d: number): void {
  if (!Number.isInteger(height) || !Number.isInteger(width) || height <= 0 || width <= 0 || mask.length !== height * width) {
    throw new Error(`mask of ${mask.length} pixels does not match ${height} x ${width}`);
  }
  if (!Number.isInteger(d) || d < 1) throw new Error(`boundary band width must be an integer >= 1 pixel, got ${d}`);
}

/**
 * The band width Cheng et al. use by default: `max(1, round(ratio * diagonal))`
 * with ratio 0.02 (6 px for a 224 x 224 patch).
 */
export function bandWidthFromRatio(height: number, width: number, ratio = 0.02): number {
  return Math.max(1, Math.round(ratio * Math.sqrt(height * height + width * width)));
}

/** Per-id boundary intersection and union pixel counts, summed over images. */
export interface BoundaryCounts {
  intersection: Float64Array;
  union: Float64Array;
}

/**
 * Boundary intersection and union per mask id for one image pair.
 * Pixels whose ground truth is `ignoreId`, or one of `dropGt` (the `ignore-bg`
 * convention drops background), are not counted; the bands themselves are
 * computed on the full masks.
 */
export function boundaryCounts(
  gt: ArrayLike<number>,
  pred: ArrayLike<number>,
  height: number,
  width: number,
  size: number,
  d: number,
  opts: { ignoreId?: number; dropGt?: number[]; where?: string } = {},
): BoundaryCounts {
  const where = opts.where ?? "mask";
  const n = height * width;
  if (gt.length !== n || pred.length !== n) {
    throw new Error(`${where}: ground truth has ${gt.length} pixels and prediction ${pred.length}, expected ${height} x ${width} = ${n}`);
  }
  const ignore = opts.ignoreId ?? 255;
  const drop = new Set(opts.dropGt ?? []);
  const valid = new Uint8Array(n);
  const presentG = new Uint8Array(size);
  const presentP = new Uint8Array(size);
  for (let i = 0; i < n; i++) {
    const g = gt[i]!;
    const p = pred[i]!;
    if (g !== ignore && (!Number.isInteger(g) || g < 0 || g >= size)) throw new Error(`${where}: ground-truth pixel ${i} has id ${g}, expected an integer in [0, ${size}) or ${ignore}`);
    if (!Number.isInteger(p) || p < 0 || p >= size) throw new Error(`${where}: predicted pixel ${i} has id ${p}, expected an integer in [0, ${size})`);
    valid[i] = g !== ignore && !drop.has(g) ? 1 : 0;
    if (g !== ignore) presentG[g] = 1;
    presentP[p] = 1;
  }
  const intersection = new Float64Array(size);
  const union = new Float64Array(size);
  const G = new Uint8Array(n);
  const P = new Uint8Array(n);
  for (let c = 0; c < size; c++) {
    if (!presentG[c] && !presentP[c]) continue;
    for (let i = 0; i < n; i++) {
      G[i] = gt[i] === c ? 1 : 0;
      P[i] = pred[i] === c ? 1 : 0;
    }
    const gb = boundaryRegion(G, height, width, d);
    const pb = boundaryRegion(P, height, width, d);
    let inter = 0;
    let uni = 0;
    for (let i = 0; i < n; i++) {
      if (!valid[i]) continue;
      const a = gb[i]!;
      const b = pb[i]!;
      if (a & b) inter++;
      if (a | b) uni++;
    }
    intersection[c] = inter;
    union[c] = uni;
  }
  return { intersection, union };
}

/** bIoU per id from summed counts; NaN where the union is empty. */
export function boundaryIoUFromCounts(c: BoundaryCounts): number[] {
  return Array.from(c.intersection, (v, i) => (c.union[i]! > 0 ? v / c.union[i]! : NaN));
}
