/**
 * Prototypes of one class from its patches' features: the K rows of P (N x K x d)
 * that belong to the class (METHOD.md section 2, steps 3-4).
 *
 * Rules (`bank.rule` in the config):
 * - `centroid` (release): spherical k-means with cosine distance (eq. 1); the
 *   prototype is the L2-normalised centroid of all members of the subclass.
 * - `nearest` (paper): the same clustering; the prototype is the mean of the
 *   N_K members nearest the centre (all members when the subclass has fewer).
 * - `random` (the paper's Figure 4 ablation, no clustering): the class's patches
 *   are shuffled (seeded) and K disjoint sub-banks of N_K patches are drawn
 *   (fewer when the class has fewer than K * N_K patches); each prototype is a sub-bank's mean.
 *
 * All means are taken over L2-normalised features (the bank lives on the unit
 * sphere of the cosine distance); `nearest` and `random` means are not
 * re-normalised, so their norm (< 1) shows how spread their members are.
 */
import type { BankRule } from "../config/profiles";
import { Rng } from "../util/rng";
import { type FeatureMatrix, row, dot, meanOfRows, unit } from "./matrix";
import { sphericalKMeans } from "./kmeans";

/** One member patch of a subclass and its cosine distance to the subclass centre. */
export interface BankMember {
  id: string;
  /** `1 - cos(phi(x), centre)`; for `random`, the centre is the normalised sub-bank mean. */
  distance: number;
}

/** A subclass of the bank: one prototype row. */
export interface SubclassRecord {
  /** Class index in label order. */
  classIndex: number;
  /** Subclass index within the class, 0..K-1. */
  subclass: number;
  /** Number of member patches (the cluster size; N_K or fewer for `random`). */
  size: number;
  /** Patches the prototype averages: all members (`centroid`), the N_K nearest (`nearest`), the sub-bank (`random`). */
  used: number;
  /** Mean cosine distance of the members to the centre (the subclass's spread). */
  meanDistance: number;
  /** Norm of the stored prototype (1 for `centroid`). */
  prototypeNorm: number;
  /** Every member, nearest the centre first. */
  members: BankMember[];
}

/** Options of {@link classPrototypes}. */
export interface ClassPrototypeOptions {
  rule: BankRule;
  /** Subclasses K for this class. */
  k: number;
  /** N_K: patches per subclass for `nearest` and `random`. */
  nK: number;
  /** Seed for this class (k-means++ initialisation, or the random draw). */
  seed: number;
  maxIterations?: number;
}

/** The prototypes of one class: `k` rows of dimension d, plus what went into them. */
export interface ClassPrototypes {
  prototypes: Float32Array;
  k: number;
  subclasses: SubclassRecord[];
  /** k-means iterations and convergence (undefined for `random`). */
  kmeans?: { iterations: number; converged: boolean };
}

const round6 = (v: number) => Math.round(v * 1e6) / 1e6;

/**
 * Prototypes of one class from its unit-norm features `x` (one row per patch,
 * `ids` in the same order), by `rule` (see the module comment). K is clamped to
 * the number of patches.
 */
export function classPrototypes(x: FeatureMatrix, ids: readonly string[], classIndex: number, opts: ClassPrototypeOptions): ClassPrototypes {
  if (x.rows !== ids.length) throw new Error(`classPrototypes: ${x.rows} feature rows but ${ids.length} ids`);
  if (x.rows === 0) throw new Error(`classPrototypes: class ${classIndex} has no patches`);
  if (!(opts.nK >= 1)) throw new Error(`classPrototypes: N_K must be >= 1, got ${opts.nK}`);
  const d = x.dim;
  const subclasses: SubclassRecord[] = [];
  if (opts.rule === "random") {
    const k = Math.min(opts.k, x.rows);
    const per = Math.min(opts.nK, Math.floor(x.rows / k));
    const order = new Rng(opts.seed).shuffle([...Array(x.rows).keys()]);
    const protos = new Float32Array(k * d);
    for (let s = 0; s < k; s++) {
      const pick = order.slice(s * per, (s + 1) * per);
      const mean = meanOfRows(x, pick);
      protos.set(mean, s * d);
      const centre = unit(mean);
      const members = pick.map((i) => ({ id: ids[i]!, distance: 1 - dot(row(x, i), centre) })).sort((a, b) => a.distance - b.distance || (a.id < b.id ? -1 : 1));
      subclasses.push(record(classIndex, s, members, members.length, mean));
    }
    return { prototypes: protos, k, subclasses };
  }
  const km = sphericalKMeans(x, { k: opts.k, seed: opts.seed, maxIterations: opts.maxIterations ?? 100 });
  const k = km.k;
  const protos = new Float32Array(k * d);
  for (let s = 0; s < k; s++) {
    const idx: number[] = [];
    for (let i = 0; i < x.rows; i++) if (km.assignments[i] === s) idx.push(i);
    idx.sort((a, b) => km.distances[a]! - km.distances[b]! || a - b);
    const members = idx.map((i) => ({ id: ids[i]!, distance: km.distances[i]! }));
    let proto: Float32Array;
    let used: number;
    if (opts.rule === "centroid") {
      // The L2-normalised centroid of all members (an empty cluster keeps its last centre).
      proto = idx.length ? unit(meanOfRows(x, idx)) : row(km.centroids, s).slice();
      used = idx.length;
    } else {
      const near = idx.slice(0, Math.min(opts.nK, idx.length));
      proto = near.length ? meanOfRows(x, near) : row(km.centroids, s).slice();
      used = near.length;
    }
    protos.set(proto, s * d);
    subclasses.push(record(classIndex, s, members, used, proto));
  }
  return { prototypes: protos, k, subclasses, kmeans: { iterations: km.iterations, converged: km.converged } };
}

function record(classIndex: number, subclass: number, members: BankMember[], used: number, proto: Float32Array): SubclassRecord {
  const meanDistance = members.length ? members.reduce((a, m) => a + m.distance, 0) / members.length : 0;
  return {
    classIndex,
    subclass,
    size: members.length,
    used,
    meanDistance: round6(meanDistance),
    prototypeNorm: round6(Math.sqrt(dot(proto, proto))),
    members: members.map((m) => ({ id: m.id, distance: round6(m.distance) })),
  };
}
