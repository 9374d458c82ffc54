/**
 * Spherical k-means: the per-class clustering of the image bank with the paper's
 * cosine distance `D(x1, x2) = 1 - cos(phi(x1), phi(x2))` (eq. 1).
 *
 * The iterations are ml-kmeans's (`kmeans`/`kmeansGenerator`) with a cosine
 * distance function. Its centre update is the arithmetic mean of the members,
 * which is right for the sphere here: the features are L2-normalised first, the
 * arithmetic mean of unit vectors points in the same direction as their
 * spherical mean, and the cosine assignment ignores a centre's length. So each
 * ml-kmeans step is exactly a spherical k-means step (Dhillon & Modha 2001); pbip
 * only normalises the final centres. The initial centres are chosen by pbip, not
 * ml-kmeans: k-means++ under the cosine distance with pbip's seeded {@link Rng}
 * (on unit vectors `|x - c|^2 = 2 D(x, c)`, so sampling proportional to D is
 * k-means++ exactly), which keeps every random choice of pbip on one seed.
 */
import { kmeans, kmeansGenerator } from "ml-kmeans";
import { Rng } from "../util/rng";
import { type FeatureMatrix, row, dot, norm, unit } from "./matrix";

/** Options of {@link sphericalKMeans}. */
export interface SphericalKMeansOptions {
  /** Number of clusters K (clamped to the number of points). */
  k: number;
  /** Seed of the k-means++ initialisation. */
  seed: number;
  /** At most this many assign/update steps (release: 100). Default 100. */
  maxIterations?: number;
  /** Stop when no centre moves by more than this cosine distance. Default 1e-6. */
  tolerance?: number;
}

/** Result of spherical k-means on one class. */
export interface SphericalKMeansResult {
  /** Cluster of each point, 0..K-1. */
  assignments: Int32Array;
  /** Unit-norm centres, K x d. */
  centroids: FeatureMatrix;
  /** Cosine distance of each point to its own centre. */
  distances: Float64Array;
  /** Mean of `distances`: the within-cluster spread. */
  meanDistance: number;
  iterations: number;
  converged: boolean;
  /** K actually used (min(k, number of points)). */
  k: number;
}

/** The paper's distance: `1 - cos(a, b)` (eq. 1). */
export function cosineDistance(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = norm(a) * norm(b);
  return n > 0 ? 1 - dot(a, b) / n : 1;
}

/**
 * k-means++ seeding under the cosine distance: the first centre uniformly, each
 * next one with probability proportional to its distance to the nearest chosen
 * centre. Returns point indices. Rows must be unit vectors.
 */
export function kmeansPlusPlus(x: FeatureMatrix, k: number, rng: Rng): number[] {
  const n = x.rows;
  const chosen: number[] = [rng.int(n)];
  const best = new Float64Array(n).fill(Infinity);
  while (chosen.length < k) {
    const c = row(x, chosen[chosen.length - 1]!);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const d = Math.max(0, 1 - dot(row(x, i), c));
      if (d < best[i]!) best[i] = d;
      total += best[i]!;
    }
    let pick = -1;
    if (total > 0) {
      let r = rng.next() * total;
      for (let i = 0; i < n; i++) {
        r -= best[i]!;
        if (r < 0 && best[i]! > 0) {
          pick = i;
          break;
        }
      }
      if (pick < 0) for (let i = n - 1; i >= 0; i--) if (best[i]! > 0) { pick = i; break; } // rounding at the end
    }
    if (pick < 0) {
      // All remaining points coincide with a centre: take an unused index.
      const free = [...Array(n).keys()].filter((i) => !chosen.includes(i));
      pick = free[rng.int(free.length)]!;
    }
    chosen.push(pick);
  }
  return chosen;
}

function toRows(x: FeatureMatrix): number[][] {
  const out: number[][] = new Array(x.rows);
  for (let i = 0; i < x.rows; i++) out[i] = Array.from(row(x, i));
  return out;
}

function finish(x: FeatureMatrix, k: number, clusters: number[], centroids: number[][], iterations: number, converged: boolean): SphericalKMeansResult {
  const c = new Float32Array(k * x.dim);
  centroids.forEach((v, i) => c.set(unit(v), i * x.dim));
  const cm: FeatureMatrix = { rows: k, dim: x.dim, data: c };
  const distances = new Float64Array(x.rows);
  let sum = 0;
  for (let i = 0; i < x.rows; i++) {
    distances[i] = 1 - dot(row(x, i), row(cm, clusters[i]!));
    sum += distances[i]!;
  }
  return { assignments: Int32Array.from(clusters), centroids: cm, distances, meanDistance: x.rows ? sum / x.rows : 0, iterations, converged, k };
}

function setup(x: FeatureMatrix, opts: SphericalKMeansOptions) {
  if (x.rows === 0) throw new Error("sphericalKMeans: no points to cluster");
  if (!Number.isInteger(opts.k) || opts.k < 1) throw new Error(`sphericalKMeans: k must be a positive integer, got ${opts.k}`);
  const k = Math.min(opts.k, x.rows);
  const init = kmeansPlusPlus(x, k, new Rng(opts.seed));
  const data = toRows(x);
  const options = {
    initialization: init.map((i) => data[i]!.slice()),
    maxIterations: opts.maxIterations ?? 100,
    tolerance: opts.tolerance ?? 1e-6,
    distanceFunction: cosineDistance,
  };
  return { k, data, options };
}

/**
 * Cluster unit-norm feature rows into K groups with cosine distance (eq. 1),
 * seeded; see the module comment for why ml-kmeans's iterations are spherical k-means.
 */
export function sphericalKMeans(x: FeatureMatrix, opts: SphericalKMeansOptions): SphericalKMeansResult {
  const { k, data, options } = setup(x, opts);
  if (k === 1) {
    // One cluster: the centre is the normalised mean; no iterations needed.
    const mean = new Float64Array(x.dim);
    for (const r of data) for (let j = 0; j < x.dim; j++) mean[j] += r[j]!;
    return finish(x, 1, new Array<number>(x.rows).fill(0), [Array.from(mean)], 1, true);
  }
  const r = kmeans(data, k, options);
  return finish(x, k, r.clusters, r.centroids, r.iterations, r.converged);
}

/** One iteration of {@link sphericalKMeansSteps}. */
export interface KMeansStep {
  iteration: number;
  /** Mean cosine distance of the points to their centre after this step. */
  meanDistance: number;
  converged: boolean;
  result: SphericalKMeansResult;
}

/**
 * The same clustering as {@link sphericalKMeans}, one step at a time, so a notebook
 * can watch it converge. The last step equals `sphericalKMeans(x, opts)`.
 */
export function* sphericalKMeansSteps(x: FeatureMatrix, opts: SphericalKMeansOptions): Generator<KMeansStep> {
  const { k, data, options } = setup(x, opts);
  if (k === 1) {
    const result = sphericalKMeans(x, opts);
    yield { iteration: 1, meanDistance: result.meanDistance, converged: true, result };
    return;
  }
  for (const s of kmeansGenerator(data, k, options)) {
    const result = finish(x, k, s.clusters, s.centroids, s.iterations, s.converged);
    yield { iteration: s.iterations, meanDistance: result.meanDistance, converged: s.converged, result };
  }
}
