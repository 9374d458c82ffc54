/**
 * Float64 JavaScript versions of the loss formulas (plain loops, plain sums of
 * exponentials, as the release writes them), used by the tests as the function
 * whose central finite differences check the TensorFlow.js gradients. They are
 * written from METHOD.md, independently of src/losses (no log-sum-exp tricks).
 */
export type Mat = number[][];

export function toMat(a: ArrayLike<number>, rows: number, cols: number): Mat {
  return Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => a[i * cols + j]!));
}

function normalize(v: number[]): number[] {
  const n = Math.max(Math.hypot(...v), 1e-12);
  return v.map((x) => x / n);
}

function dot(a: number[], b: number[]): number {
  return a.reduce((s, x, i) => s + x * b[i]!, 0);
}

export function merge64(logits: Mat, k: number[], mode: "mean" | "softmax"): Mat {
  return logits.map((row) => {
    const out: number[] = [];
    let o = 0;
    for (const kn of k) {
      const s = row.slice(o, o + kn);
      o += kn;
      if (mode === "mean") out.push(s.reduce((a, b) => a + b, 0) / kn);
      else {
        const e = s.map(Math.exp);
        const z = e.reduce((a, b) => a + b, 0);
        out.push(s.reduce((acc, x, i) => acc + (e[i]! / z) * x, 0));
      }
    }
    return out;
  });
}

/** -mean[ y log sigmoid(x) + (1-y) log(1 - sigmoid(x)) ] */
export function bce64(x: Mat, y: Mat): number {
  let s = 0;
  let n = 0;
  x.forEach((row, i) =>
    row.forEach((v, j) => {
      const p = 1 / (1 + Math.exp(-v));
      s += -(y[i]![j]! * Math.log(p) + (1 - y[i]![j]!) * Math.log(1 - p));
      n++;
    }),
  );
  return s / n;
}

export function cls64(stages: Mat[], y: Mat, k: number[], weights: number[], mode: "mean" | "softmax"): number {
  return stages.reduce((acc, l, i) => acc + weights[i]! * bce64(merge64(l, k, mode), y), 0);
}

export function fg64(f: Mat, pos: number[], protos: Mat, t: number, reduction: "batch" | "pair"): number {
  const P = protos.map(normalize);
  let sp = 0;
  let sn = 0;
  let pairSum = 0;
  f.forEach((row, i) => {
    const fi = normalize(row);
    const e = P.map((p) => Math.exp(dot(fi, p) / t));
    const ep = e[pos[i]!]!;
    const en = e.reduce((a, b, j) => (j === pos[i] ? a : a + b), 0);
    sp += ep;
    sn += en;
    pairSum += -Math.log(ep / (ep + en));
  });
  return reduction === "batch" ? -Math.log(sp / (sp + sn)) : pairSum / f.length;
}

export function bg64(g: Mat, pos: number[], protos: Mat, t: number, reduction: "batch" | "pair"): number {
  const P = protos.map(normalize);
  let bn = 0;
  let bp = 0;
  let pairSum = 0;
  g.forEach((row, i) => {
    const gi = normalize(row);
    const e = P.map((p) => Math.exp(dot(gi, p) / t));
    const ep = e[pos[i]!]!;
    const en = e.reduce((a, b, j) => (j === pos[i] ? a : a + b), 0) / (e.length - 1);
    bn += en;
    bp += ep;
    pairSum += -Math.log(en / (en + ep));
  });
  return reduction === "batch" ? -Math.log(bn / (bn + bp)) : pairSum / g.length;
}

/** Central differences of a float64 function of a flat array, at the given coordinates. */
export function centralDiff(f: (x: Float64Array) => number, x: ArrayLike<number>, coords: number[], eps = 1e-6): number[] {
  return coords.map((i) => {
    const xp = Float64Array.from(x);
    const xm = Float64Array.from(x);
    xp[i]! += eps;
    xm[i]! -= eps;
    return (f(xp) - f(xm)) / (2 * eps);
  });
}
