/**
 * Statistics the paper reports across runs: mean and standard deviation over
 * seeds, and a paired t-test between two methods' per-image scores.
 */

/** Mean and sample standard deviation (n - 1 in the denominator; 0 for one value, NaN for none). */
export interface MeanStd {
  mean: number;
  std: number;
  n: number;
}

/** Mean and sample standard deviation of `xs` (e.g. one metric over seeds). NaN values are an error. */
export function meanStd(xs: ArrayLike<number>): MeanStd {
  const n = xs.length;
  if (n === 0) return { mean: NaN, std: NaN, n: 0 };
  let s = 0;
  for (let i = 0; i < n; i++) {
    if (Number.isNaN(xs[i]!)) throw new Error(`meanStd: value ${i} is NaN`);
    s += xs[i]!;
  }
  const mean = s / n;
  if (n === 1) return { mean, std: 0, n };
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (xs[i]! - mean) ** 2;
  return { mean, std: Math.sqrt(ss / (n - 1)), n };
}

/** `mean ± std` with `digits` decimals, after multiplying by `scale` (100 for percentages). */
export function formatMeanStd(m: MeanStd, digits = 2, scale = 100): string {
  return `${(m.mean * scale).toFixed(digits)} ± ${(m.std * scale).toFixed(digits)}`;
}

const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
  -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Γ(x) for x > 0 (Lanczos approximation, g = 7, n = 9; about 15 significant digits). */
export function lnGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lnGamma(1 - x);
  const z = x - 1;
  let a = LANCZOS[0]!;
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i]! / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Continued fraction of I_x(a, b) (modified Lentz), valid for x < (a + 1) / (a + b + 2). */
function betaContinuedFraction(x: number, a: number, b: number): number {
  const tiny = 1e-300;
  const eps = 1e-16;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 10000; m++) {
    const m2 = 2 * m;
    // even term d_{2m} = m (b - m) x / ((a + 2m - 1)(a + 2m))
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    // odd term d_{2m+1} = -(a + m)(a + b + m) x / ((a + 2m)(a + 2m + 1))
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < eps) return h;
  }
  throw new Error(`incomplete beta: continued fraction did not converge for x=${x}, a=${a}, b=${b}`);
}

/**
 * The regularized incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b), for
 * x in [0, 1] and a, b > 0, by its continued fraction (with the symmetry
 * I_x(a, b) = 1 - I_{1-x}(b, a) where that converges faster).
 */
export function regularizedIncompleteBeta(x: number, a: number, b: number): number {
  if (!(a > 0) || !(b > 0)) throw new Error(`incomplete beta: a and b must be > 0, got a=${a}, b=${b}`);
  if (Number.isNaN(x) || x < 0 || x > 1) throw new Error(`incomplete beta: x must be in [0, 1], got ${x}`);
  if (x === 0) return 0;
  if (x === 1) return 1;
  const lnFront = a * Math.log(x) + b * Math.log1p(-x) - (lnGamma(a) + lnGamma(b) - lnGamma(a + b));
  if (x < (a + 1) / (a + b + 2)) return (Math.exp(lnFront) * betaContinuedFraction(x, a, b)) / a;
  return 1 - (Math.exp(lnFront) * betaContinuedFraction(1 - x, b, a)) / b;
}

/**
 * Student's t cumulative distribution P(T <= t) with `df` degrees of freedom,
 * through the incomplete beta function: for x = df / (df + t^2),
 * P(|T| > |t|) = I_x(df/2, 1/2).
 */
export function studentTCdf(t: number, df: number): number {
  if (!(df > 0)) throw new Error(`Student t: degrees of freedom must be > 0, got ${df}`);
  if (Number.isNaN(t)) return NaN;
  if (t === Infinity) return 1;
  if (t === -Infinity) return 0;
  const tail = 0.5 * regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/** Two-sided p-value P(|T| >= |t|) of Student's t with `df` degrees of freedom. */
export function studentTTwoSided(t: number, df: number): number {
  if (!(df > 0)) throw new Error(`Student t: degrees of freedom must be > 0, got ${df}`);
  if (Number.isNaN(t)) return NaN;
  if (!Number.isFinite(t)) return 0;
  return regularizedIncompleteBeta(df / (df + t * t), df / 2, 0.5);
}

/** Result of a paired t-test of `a - b`. */
export interface PairedTTest {
  /** Pairs used (pairs with a NaN on either side are dropped). */
  n: number;
  /** Pairs dropped because a score was NaN. */
  dropped: number;
  /** Mean of a - b. */
  meanDiff: number;
  /** Sample standard deviation of a - b. */
  stdDiff: number;
  /** t = meanDiff / (stdDiff / sqrt(n)). */
  t: number;
  /** n - 1. */
  df: number;
  /** Two-sided p-value (NaN when every difference is zero; 0 when they are equal and non-zero). */
  p: number;
}

/**
 * Paired (dependent-samples) t-test between two methods' per-image scores, as the
 * paper uses to compare methods: t = mean(d) / (sd(d) / sqrt(n)) with d = a - b,
 * n - 1 degrees of freedom, two-sided p from the Student t distribution. Needs at
 * least two usable pairs.
 */
export function pairedTTest(a: ArrayLike<number>, b: ArrayLike<number>): PairedTTest {
  if (a.length !== b.length) throw new Error(`paired t-test: ${a.length} scores against ${b.length}; the samples must be paired`);
  const d: number[] = [];
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (!Number.isNaN(x) && !Number.isNaN(y)) d.push(x - y);
  }
  const n = d.length;
  if (n < 2) throw new Error(`paired t-test: needs at least 2 pairs without NaN, got ${n}`);
  const { mean, std } = meanStd(d);
  const df = n - 1;
  let t: number;
  if (std === 0) t = mean === 0 ? NaN : mean > 0 ? Infinity : -Infinity;
  else t = mean / (std / Math.sqrt(n));
  return { n, dropped: a.length - n, meanDiff: mean, stdDiff: std, t, df, p: studentTTwoSided(t, df) };
}
