/**
 * Confusion matrix over mask ids (foreground classes plus background), the basis
 * of every segmentation metric in pbip. Rows are ground truth, columns prediction:
 * `counts[g * size + p]`.
 */
export class ConfusionMatrix {
  readonly counts: Float64Array;
  constructor(readonly size: number) {
    this.counts = new Float64Array(size * size);
  }

  /**
   * Add one mask pair. Pixels whose ground truth equals `ignore` (e.g. 255) are
   * skipped. Values outside [0, size) are an error naming `where`.
   */
  add(gt: ArrayLike<number>, pred: ArrayLike<number>, ignore = 255, where = "mask"): this {
    if (gt.length !== pred.length) throw new Error(`${where}: ground truth has ${gt.length} pixels, prediction ${pred.length}`);
    const k = this.size;
    for (let i = 0; i < gt.length; i++) {
      const g = gt[i]!;
      if (g === ignore) continue;
      const p = pred[i]!;
      if (g < 0 || g >= k || p < 0 || p >= k || !Number.isInteger(g) || !Number.isInteger(p)) {
        throw new Error(`${where}: pixel ${i} has ground truth ${g} and prediction ${p}; ids must be integers in [0, ${k})`);
      }
      this.counts[g * k + p]! += 1;
    }
    return this;
  }

  /** Add another matrix's counts into this one. */
  merge(other: ConfusionMatrix): this {
    if (other.size !== this.size) throw new Error(`cannot merge a ${other.size}-class matrix into a ${this.size}-class one`);
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += other.counts[i]!;
    return this;
  }

  /** A copy with the same counts. */
  clone(): ConfusionMatrix {
    const out = new ConfusionMatrix(this.size);
    out.counts.set(this.counts);
    return out;
  }

  /** Ground-truth pixels per id (row sums). */
  gtTotals(): number[] {
    const k = this.size;
    const out = new Array<number>(k).fill(0);
    for (let g = 0; g < k; g++) for (let p = 0; p < k; p++) out[g]! += this.counts[g * k + p]!;
    return out;
  }

  /** Predicted pixels per id (column sums). */
  predTotals(): number[] {
    const k = this.size;
    const out = new Array<number>(k).fill(0);
    for (let g = 0; g < k; g++) for (let p = 0; p < k; p++) out[p]! += this.counts[g * k + p]!;
    return out;
  }

  /** The counts as rows (ground truth) of columns (prediction), for JSON reports. */
  toRows(): number[][] {
    const k = this.size;
    return Array.from({ length: k }, (_, g) => Array.from(this.counts.subarray(g * k, (g + 1) * k)));
  }

  at(gt: number, pred: number): number {
    return this.counts[gt * this.size + pred]!;
  }

  /** The matrix with ground-truth rows in `dropGt` removed (the "ignore background" convention). */
  withoutGtRows(dropGt: number[]): ConfusionMatrix {
    const out = new ConfusionMatrix(this.size);
    out.counts.set(this.counts);
    for (const g of dropGt) out.counts.fill(0, g * this.size, (g + 1) * this.size);
    return out;
  }

  total(): number {
    let s = 0;
    for (const v of this.counts) s += v;
    return s;
  }

  /** Per id: true positives, false positives, false negatives. */
  stats(): { tp: number[]; fp: number[]; fn: number[] } {
    const k = this.size;
    const tp = new Array<number>(k).fill(0);
    const fp = new Array<number>(k).fill(0);
    const fn = new Array<number>(k).fill(0);
    for (let g = 0; g < k; g++) {
      for (let p = 0; p < k; p++) {
        const v = this.counts[g * k + p]!;
        if (g === p) tp[g]! += v;
        else {
          fp[p]! += v;
          fn[g]! += v;
        }
      }
    }
    return { tp, fp, fn };
  }
}

/** Per-id IoU = TP / (TP + FP + FN); NaN where the id never occurs in either mask. */
export function iouPerClass(cm: ConfusionMatrix): number[] {
  const { tp, fp, fn } = cm.stats();
  return tp.map((t, i) => {
    const d = t + fp[i]! + fn[i]!;
    return d > 0 ? t / d : NaN;
  });
}

/** Mean IoU over the given ids (default: all), skipping NaN. */
export function meanIoU(cm: ConfusionMatrix, ids?: number[]): number {
  const iou = iouPerClass(cm);
  const sel = (ids ?? iou.map((_, i) => i)).map((i) => iou[i]!).filter((v) => !Number.isNaN(v));
  return sel.length ? sel.reduce((a, b) => a + b, 0) / sel.length : NaN;
}
