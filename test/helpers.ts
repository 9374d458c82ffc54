import * as tf from "@tensorflow/tfjs";
import { initBackend, type BackendName } from "../src/runtime";

/** Run `fn` on a backend and return plain arrays, so results can be compared across backends. */
export async function onBackend<T>(name: BackendName, fn: () => T | Promise<T>): Promise<T> {
  if (tf.getBackend() !== name) await initBackend({ backend: name });
  return fn();
}

/** A seeded pseudo-random Float32Array in [-1, 1) (mulberry32). */
export function randomArray(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return out;
}

/** max |a-b| / max(|b|_inf, tiny): a relative error over the whole array. */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 1e-12;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

/** Central finite-difference gradient of a scalar function of a Float32Array, at a few sampled coordinates. */
export function finiteDiff(f: (x: Float32Array) => number, x: Float32Array, coords: number[], eps = 1e-2): number[] {
  return coords.map((i) => {
    const xp = Float32Array.from(x);
    const xm = Float32Array.from(x);
    xp[i]! += eps;
    xm[i]! -= eps;
    return (f(xp) - f(xm)) / (2 * eps);
  });
}
