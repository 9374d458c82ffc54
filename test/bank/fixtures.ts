/** Hand-made encoder features for the bank tests: tight groups around known directions. */
import { randomArray } from "../helpers";
import type { BankFeatures } from "../../src/bank/build";
import type { FeatureMatrix } from "../../src/bank/matrix";
import type { BankEncoderRecord } from "../../src/bank/bank";
import type { SelectionStats } from "../../src/bank/select";

/** `perGroup` points around each of `centres` (d-dimensional), spread `noise`, seeded; rows in group order. */
export function groups(centres: number[][], perGroup: number, noise: number, seed: number): { x: FeatureMatrix; group: number[] } {
  const d = centres[0]!.length;
  const rows = centres.length * perGroup;
  const data = new Float32Array(rows * d);
  const r = randomArray(rows * d, seed);
  const group: number[] = [];
  centres.forEach((c, g) => {
    for (let i = 0; i < perGroup; i++) {
      const row = g * perGroup + i;
      for (let j = 0; j < d; j++) data[row * d + j] = c[j]! + noise * r[row * d + j]!;
      group.push(g);
    }
  });
  return { x: { rows, dim: d, data }, group };
}

/** A one-hot direction in d dimensions, scaled. */
export function axis(d: number, i: number, scale = 1): number[] {
  const v = new Array<number>(d).fill(0);
  v[i] = scale;
  return v;
}

export const TEST_ENCODER: BankEncoderRecord = {
  name: "test-encoder",
  dim: 8,
  weightsHash: "0123456789abcdef",
  preprocessing: { inputSize: 32, channelOrder: "RGB", scale: 1, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
  isStandIn: true,
  standInNote: "hand-made features",
};

/**
 * BankFeatures for 3 classes in d = 8: class c has two sub-groups around
 * directions e_{2c} and e_{2c}+e_{2c+1}, 12 points each (24 per class).
 */
export function handFeatures(seed = 1): BankFeatures {
  const d = 8;
  const centres: number[][] = [];
  for (let c = 0; c < 3; c++) {
    centres.push(axis(d, 2 * c, 2));
    const v = axis(d, 2 * c, 1.2);
    v[2 * c + 1] = 1.6;
    centres.push(v);
  }
  const { x, group } = groups(centres, 12, 0.15, seed);
  const classIndex = Int32Array.from(group.map((g) => Math.floor(g / 2)));
  const ids = group.map((g, i) => `p${String(i).padStart(3, "0")}-c${Math.floor(g / 2)}`);
  const selection: SelectionStats = {
    classes: ["A", "B", "C"],
    steps: [{ step: "single-label", description: "hand-made", perClass: [24, 24, 24], total: 72 }],
    whiteFilter: { whiteGrey: 200, whiteMaxFraction: 0.5 },
  };
  return {
    dataset: "hand",
    classes: ["A", "B", "C"],
    codes: ["A", "B", "C"],
    ids,
    imagePaths: ids.map((id) => `/nowhere/${id}.png`),
    classIndex,
    features: x,
    whiteFractions: new Float32Array(x.rows),
    encoder: TEST_ENCODER,
    selection,
  };
}
