/**
 * Statistics of an image bank for notebooks and checks: prototype cosine
 * similarities (within vs across classes), within-class spread as a function of
 * K, a PCA of the features for 2-D plots, and the patches nearest each subclass
 * centre.
 */
import type { BankFeatures } from "./build";
import { type ImageBank, subclassClassIndex, subclassLabels } from "./bank";
import { type FeatureMatrix, row, dot, norm, l2NormalizeRows, selectRows } from "./matrix";
import { sphericalKMeans } from "./kmeans";
import { classSeed } from "./build";
import { Rng } from "../util/rng";

/** Cosine similarity between every pair of prototype rows, `[sum K][sum K]`. */
export function prototypeCosineMatrix(bank: ImageBank): number[][] {
  const d = bank.meta.dim;
  const s = bank.prototypes.length / d;
  const p: FeatureMatrix = { rows: s, dim: d, data: bank.prototypes };
  const norms = Array.from({ length: s }, (_, i) => norm(row(p, i)));
  return Array.from({ length: s }, (_, i) => Array.from({ length: s }, (_, j) => (norms[i]! * norms[j]! > 0 ? dot(row(p, i), row(p, j)) / (norms[i]! * norms[j]!) : 0)));
}

/** Mean prototype cosine within and across classes (the release's bank: within 0.80-0.91, across 0.44-0.90). */
export interface WithinAcross {
  /** Mean cosine over pairs of distinct subclasses of the same class (NaN when every K is 1). */
  within: number;
  /** Mean cosine over pairs of subclasses of different classes. */
  across: number;
  withinPairs: number;
  acrossPairs: number;
  /** Per class: mean cosine between its own subclasses (NaN for K = 1). */
  perClassWithin: number[];
  /** Subclass row labels, e.g. `TE.0`, and the full matrix. */
  labels: string[];
  matrix: number[][];
}

/**
 * Within- vs across-class prototype similarity: the check that prototypes of the
 * same class are more alike than prototypes of different classes.
 */
export function withinAcrossCosine(bank: ImageBank): WithinAcross {
  const m = prototypeCosineMatrix(bank);
  const cls = subclassClassIndex(bank);
  let wSum = 0;
  let wN = 0;
  let aSum = 0;
  let aN = 0;
  const perSum = bank.meta.classes.map(() => 0);
  const perN = bank.meta.classes.map(() => 0);
  for (let i = 0; i < m.length; i++) {
    for (let j = i + 1; j < m.length; j++) {
      if (cls[i] === cls[j]) {
        wSum += m[i]![j]!;
        wN++;
        perSum[cls[i]!]! += m[i]![j]!;
        perN[cls[i]!]!++;
      } else {
        aSum += m[i]![j]!;
        aN++;
      }
    }
  }
  return {
    within: wN ? wSum / wN : NaN,
    across: aN ? aSum / aN : NaN,
    withinPairs: wN,
    acrossPairs: aN,
    perClassWithin: perSum.map((s, c) => (perN[c] ? s / perN[c]! : NaN)),
    labels: subclassLabels(bank),
    matrix: m,
  };
}

/** Within-class spread for one K. */
export interface SpreadAtK {
  k: number;
  /** Mean cosine distance of every patch to its subclass centre (all classes). */
  spread: number;
  /** The same per class. */
  perClass: number[];
}

/**
 * The effect of K on within-class spread: for each K, cluster every class with
 * spherical k-means (eq. 1 distance, the bank's seeds) and report the mean cosine
 * distance of patches to their subclass centre. Spread falls as K grows; the
 * elbow suggests a K (the paper's Table 4 finds K = 2 to 4 best).
 */
export function spreadByK(f: BankFeatures, ks: readonly number[] = [1, 2, 3, 4, 5], opts: { seed?: number; maxIterations?: number } = {}): SpreadAtK[] {
  const unitRows = l2NormalizeRows(f.features);
  const byClass = f.classes.map((_, c) => {
    const idx: number[] = [];
    for (let i = 0; i < f.classIndex.length; i++) if (f.classIndex[i] === c) idx.push(i);
    return idx;
  });
  return ks.map((k) => {
    let total = 0;
    let n = 0;
    const perClass = byClass.map((idx, c) => {
      if (!idx.length) return NaN;
      const r = sphericalKMeans(selectRows(unitRows, idx), { k, seed: classSeed(opts.seed ?? 42, c), maxIterations: opts.maxIterations ?? 100 });
      total += r.meanDistance * idx.length;
      n += idx.length;
      return r.meanDistance;
    });
    return { k, spread: n ? total / n : NaN, perClass };
  });
}

/** Result of {@link pca}. */
export interface PcaResult {
  /** Mean row that was subtracted. */
  mean: Float64Array;
  /** Principal directions (unit rows), largest variance first; sign: largest-magnitude entry positive. */
  components: Float64Array[];
  /** Variance along each component (eigenvalues of the covariance, divisor n - 1). */
  variances: number[];
  /** Share of the total variance each component explains. */
  explained: number[];
  /** The rows projected on the components, `[rows][m]`. */
  projected: number[][];
}

/** Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations: eigenvalues descending, `vectors[i]` the unit eigenvector of `values[i]`. */
export function symmetricEigen(a: number[][]): { values: number[]; vectors: number[][] } {
  const n = a.length;
  const m = a.map((r) => r.slice());
  const v: number[][] = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 1 : 0)));
  // Converged when the off-diagonal part is negligible next to the whole matrix (relative, so tiny matrices are solved as well as large ones).
  let total = 0;
  for (const r of m) for (const x of r) total += x * x;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += m[p]![q]! ** 2;
    if (off <= 1e-30 * total) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = m[p]![q]!;
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (m[q]![q]! - m[p]![p]!) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const mkp = m[k]![p]!;
          const mkq = m[k]![q]!;
          m[k]![p] = c * mkp - s * mkq;
          m[k]![q] = s * mkp + c * mkq;
        }
        for (let k = 0; k < n; k++) {
          const mpk = m[p]![k]!;
          const mqk = m[q]![k]!;
          m[p]![k] = c * mpk - s * mqk;
          m[q]![k] = s * mpk + c * mqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k]![p]!;
          const vkq = v[k]![q]!;
          v[k]![p] = c * vkp - s * vkq;
          v[k]![q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = [...Array(n).keys()].sort((i, j) => m[j]![j]! - m[i]![i]!);
  return { values: order.map((i) => m[i]![i]!), vectors: order.map((i) => v.map((r) => r[i]!)) };
}

/**
 * PCA of the rows of `x` to `m` dimensions (default 2), for 2-D plots of encoder
 * features. Subspace (block power) iteration on the covariance, applied
 * implicitly as `X^T (X v) / (n - 1)` (never forming the d x d matrix), with
 * `m + 4` vectors, then a Rayleigh-Ritz step (a small Jacobi eigen-decomposition)
 * for the final directions. Seeded start; deterministic.
 */
export function pca(x: FeatureMatrix, m = 2, opts: { iterations?: number; tolerance?: number; seed?: number } = {}): PcaResult {
  const { rows: n, dim: d } = x;
  if (n < 2) throw new Error("pca: need at least two rows");
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += x.data[i * d + j]!;
  for (let j = 0; j < d; j++) mean[j]! /= n;
  const xc = new Float64Array(n * d);
  let totalVar = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) {
      const v = x.data[i * d + j]! - mean[j]!;
      xc[i * d + j] = v;
      totalVar += v * v;
    }
  }
  totalVar /= n - 1;
  const mm = Math.min(m, d, n - 1);
  const p = Math.min(mm + 4, d, n);
  const cov = (v: Float64Array): Float64Array => {
    const xv = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += xc[i * d + j]! * v[j]!;
      xv[i] = s;
    }
    const out = new Float64Array(d);
    for (let i = 0; i < n; i++) {
      const a = xv[i]!;
      if (a !== 0) for (let j = 0; j < d; j++) out[j] += xc[i * d + j]! * a;
    }
    for (let j = 0; j < d; j++) out[j]! /= n - 1;
    return out;
  };
  // Gram-Schmidt, twice ("twice is enough"); a vector with (numerically) nothing
  // left outside the span of the earlier ones becomes zero and stays zero.
  const orthonormalise = (vs: Float64Array[]) => {
    for (let a = 0; a < vs.length; a++) {
      const v = vs[a]!;
      const before = norm(v);
      for (let pass = 0; pass < 2; pass++) {
        for (let b = 0; b < a; b++) {
          const u = vs[b]!;
          const proj = dot(v, u);
          for (let j = 0; j < d; j++) v[j]! -= proj * u[j]!;
        }
      }
      const nv = norm(v);
      if (nv > 1e-10 * before && nv > 0) for (let j = 0; j < d; j++) v[j]! /= nv;
      else v.fill(0);
    }
  };
  const rng = new Rng(opts.seed ?? 0);
  let basis: Float64Array[] = Array.from({ length: p }, () => Float64Array.from({ length: d }, () => rng.normal()));
  orthonormalise(basis);
  const maxIt = opts.iterations ?? 500;
  const tol = opts.tolerance ?? 1e-10;
  let prev: number[] = [];
  for (let it = 0; it < maxIt; it++) {
    const next = basis.map(cov);
    const rayleigh = basis.map((b, i) => dot(b, next[i]!));
    orthonormalise(next);
    basis = next;
    const change = rayleigh.slice(0, mm).reduce((a, r, i) => Math.max(a, Math.abs(r - (prev[i] ?? Infinity)) / Math.max(Math.abs(r), 1e-300)), 0);
    prev = rayleigh;
    if (change < tol) break;
  }
  // Rayleigh-Ritz: eigen-decompose B^T C B (p x p) and rotate the basis.
  const cb = basis.map(cov);
  const small = basis.map((bi) => cb.map((cj) => dot(bi, cj)));
  const eig = symmetricEigen(small);
  const components: Float64Array[] = [];
  for (let k = 0; k < mm; k++) {
    const coef = eig.vectors[k]!;
    const v = new Float64Array(d);
    coef.forEach((c, i) => {
      const b = basis[i]!;
      for (let j = 0; j < d; j++) v[j]! += c * b[j]!;
    });
    const nv = norm(v) || 1;
    let big = 0;
    for (let j = 0; j < d; j++) {
      v[j]! /= nv;
      if (Math.abs(v[j]!) > Math.abs(v[big]!)) big = j;
    }
    if (v[big]! < 0) for (let j = 0; j < d; j++) v[j] = -v[j]!;
    components.push(v);
  }
  const variances = eig.values.slice(0, mm);
  const projected = Array.from({ length: n }, (_, i) => components.map((c) => {
    let s = 0;
    for (let j = 0; j < d; j++) s += xc[i * d + j]! * c[j]!;
    return s;
  }));
  return { mean, components, variances, explained: variances.map((v) => (totalVar > 0 ? v / totalVar : 0)), projected };
}

/** For each prototype row: its label and the ids and image files of the members nearest its centre. */
export interface SubclassNearest {
  label: string;
  classIndex: number;
  subclass: number;
  size: number;
  ids: string[];
  imagePaths: string[];
  distances: number[];
}

/**
 * The `n` member patches nearest each subclass centre (one entry per prototype
 * row), with their image files looked up in `features` (for the bank grid).
 */
export function nearestToCentres(bank: ImageBank, features: Pick<BankFeatures, "ids" | "imagePaths">, n = 8): SubclassNearest[] {
  const where = new Map(features.ids.map((id, i) => [id, features.imagePaths[i]!]));
  const labels = subclassLabels(bank);
  return bank.meta.subclasses.map((s, r) => {
    const top = s.members.slice(0, n);
    return {
      label: labels[r]!,
      classIndex: s.classIndex,
      subclass: s.subclass,
      size: s.size,
      ids: top.map((m) => m.id),
      imagePaths: top.map((m) => where.get(m.id) ?? ""),
      distances: top.map((m) => m.distance),
    };
  });
}

/**
 * Subclass of every feature row under a bank (for colouring PCA plots by
 * subclass): a bank member gets the subclass it was clustered into; any other
 * row the most similar prototype (cosine) among its own class's rows.
 */
export function assignSubclasses(bank: ImageBank, f: Pick<BankFeatures, "features" | "classIndex"> & { ids?: readonly string[] }): Int32Array {
  const member = new Map<string, number>();
  for (const s of bank.meta.subclasses) for (const m of s.members) member.set(`${s.classIndex}/${m.id}`, s.subclass);
  const unitRows = l2NormalizeRows(f.features);
  const d = bank.meta.dim;
  const protos = l2NormalizeRows({ rows: bank.prototypes.length / d, dim: d, data: bank.prototypes });
  const out = new Int32Array(f.features.rows);
  for (let i = 0; i < f.features.rows; i++) {
    const c = f.classIndex[i]!;
    const known = f.ids ? member.get(`${c}/${f.ids[i]}`) : undefined;
    if (known !== undefined) {
      out[i] = known;
      continue;
    }
    const a = bank.meta.offsets[c]!;
    const b = bank.meta.offsets[c + 1]!;
    let best = a;
    let bestSim = -Infinity;
    for (let r = a; r < b; r++) {
      const s = dot(row(unitRows, i), row(protos, r));
      if (s > bestSim) {
        bestSim = s;
        best = r;
      }
    }
    out[i] = best - a;
  }
  return out;
}
