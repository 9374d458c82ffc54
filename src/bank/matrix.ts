/**
 * Plain row-major float32 matrices for encoder features: the image bank works on
 * the host (clustering, statistics) and hands tensors to the model only at the end.
 */

/** A row-major `rows x dim` float32 matrix (one feature vector phi(x) per row). */
export interface FeatureMatrix {
  rows: number;
  dim: number;
  data: Float32Array;
}

/** A matrix from rows of equal length. */
export function matrixFromRows(rows: ArrayLike<number>[], dim?: number): FeatureMatrix {
  const d = dim ?? rows[0]?.length ?? 0;
  const data = new Float32Array(rows.length * d);
  rows.forEach((r, i) => {
    if (r.length !== d) throw new Error(`matrixFromRows: row ${i} has ${r.length} values, expected ${d}`);
    data.set(Array.from(r), i * d);
  });
  return { rows: rows.length, dim: d, data };
}

/** Row `i` as a view (no copy). */
export function row(m: FeatureMatrix, i: number): Float32Array {
  return m.data.subarray(i * m.dim, (i + 1) * m.dim);
}

/** The rows at `indices`, copied, in that order. */
export function selectRows(m: FeatureMatrix, indices: ArrayLike<number>): FeatureMatrix {
  const out = new Float32Array(indices.length * m.dim);
  for (let j = 0; j < indices.length; j++) out.set(row(m, indices[j]!), j * m.dim);
  return { rows: indices.length, dim: m.dim, data: out };
}

/** Dot product of two vectors (float64 accumulation). */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** Euclidean norm (float64 accumulation). */
export function norm(a: ArrayLike<number>): number {
  return Math.sqrt(dot(a, a));
}

/** Cosine similarity cos(a, b); 0 when either vector is zero. */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = norm(a) * norm(b);
  return n > 0 ? dot(a, b) / n : 0;
}

/** A copy with every row scaled to unit L2 norm (zero rows stay zero). */
export function l2NormalizeRows(m: FeatureMatrix): FeatureMatrix {
  const out = new Float32Array(m.data.length);
  for (let i = 0; i < m.rows; i++) {
    const r = row(m, i);
    const n = norm(r);
    if (n > 0) for (let j = 0; j < m.dim; j++) out[i * m.dim + j] = r[j]! / n;
  }
  return { rows: m.rows, dim: m.dim, data: out };
}

/** Mean of the rows at `indices` (float64 accumulation), as a float32 vector. */
export function meanOfRows(m: FeatureMatrix, indices: ArrayLike<number>): Float32Array {
  const acc = new Float64Array(m.dim);
  for (let j = 0; j < indices.length; j++) {
    const r = row(m, indices[j]!);
    for (let k = 0; k < m.dim; k++) acc[k] += r[k]!;
  }
  const out = new Float32Array(m.dim);
  if (indices.length > 0) for (let k = 0; k < m.dim; k++) out[k] = acc[k]! / indices.length;
  return out;
}

/** `v / |v|` as float32 (a zero vector stays zero). */
export function unit(v: ArrayLike<number>): Float32Array {
  const n = norm(v);
  const out = new Float32Array(v.length);
  if (n > 0) for (let i = 0; i < v.length; i++) out[i] = v[i]! / n;
  return out;
}
