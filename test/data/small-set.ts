// A small synthetic set shared by the data tests: 24 train / 6 val / 6 test
// patches at 64 px, generated once per test process into a temporary folder.
import * as fs from "node:fs";
import * as path from "node:path";
import { generateSynthetic, type SynthResult } from "../../src/data/synthetic/generate";
import { tmpDir as baseTmpDir } from "../tmp";

export const SMALL = { train: 24, val: 6, test: 6, size: 64, seed: 11 };

let cached: Promise<SynthResult> | undefined;

/** The shared small set (generated in-thread on first use). */
export function smallSet(): Promise<SynthResult> {
  cached ??= generateSynthetic({ ...SMALL, out: path.join(baseTmpDir("pbip-data-"), "synthetic"), workers: 1 });
  return cached;
}

/** A copy of a folder (for tests that damage or rearrange it). */
export function copyDir(src: string, dst: string): string {
  fs.cpSync(src, dst, { recursive: true });
  return dst;
}

export function tmpDir(prefix = "pbip-data-"): string {
  return baseTmpDir(prefix);
}
