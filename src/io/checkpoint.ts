/**
 * Variable files: named float32 tensors in a safetensors file with a JSON metadata
 * record (config, bank identity, package version, training position) stored in the
 * file's `__metadata__` under `pbip`. One file, written atomically.
 */
import * as tf from "@tensorflow/tfjs";
import * as fs from "node:fs";
import { readSafetensors, writeSafetensors, parseSafetensorsHeader } from "./safetensors";
import type { NamedTensors, WeightLoadReport } from "./tensors";
import { FileError } from "../util/errors";

/** The package version, read once from package.json. */
export function pbipVersion(): string {
  try {
    return (require("../../package.json") as { version: string }).version;
  } catch {
    return "unknown";
  }
}

/** Snapshot variables (and any extra host tensors) into a safetensors file with metadata. */
export async function saveVariables(file: string, vars: Map<string, tf.Variable | tf.Tensor>, metadata: Record<string, unknown>, extra: NamedTensors = new Map()): Promise<void> {
  const out: NamedTensors = new Map(extra);
  // Asynchronous reads: WebGPU in Node cannot read synchronously.
  for (const [name, v] of vars) out.set(name, { dtype: "float32", shape: [...v.shape], data: Float32Array.from((await v.data()) as Float32Array) });
  writeSafetensors(file, out, { pbip: JSON.stringify({ ...metadata, pbipVersion: pbipVersion(), savedAt: new Date().toISOString() }) });
}

/** The metadata record of a pbip safetensors file. */
export function readMetadata<T = Record<string, unknown>>(file: string): T {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new FileError(file, code === "ENOENT" ? "file not found" : `cannot read: ${code ?? (e as Error).message}`);
  }
  const h = parseSafetensorsHeader(bytes, file);
  const raw = h.metadata.pbip;
  if (!raw) throw new FileError(file, "has no pbip metadata (not a pbip checkpoint)");
  try {
    return JSON.parse(raw) as T;
  } catch (e) {
    throw new FileError(file, `pbip metadata is not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * Assign tensors from a file to variables by name. Returns what matched; names in
 * the file that start with one of `ignorePrefixes` are neither loaded nor reported.
 */
export function loadVariables(file: string, vars: Map<string, tf.Variable>, ignorePrefixes: string[] = []): WeightLoadReport {
  const tensors = readSafetensors(file);
  const report: WeightLoadReport = { loaded: [], missing: [], unexpected: [], misshaped: [] };
  for (const [name, v] of vars) {
    const t = tensors.get(name);
    if (!t) {
      report.missing.push(name);
      continue;
    }
    if (t.shape.length !== v.shape.length || t.shape.some((d, i) => d !== v.shape[i])) {
      report.misshaped.push(`${name}: file [${t.shape}] vs model [${v.shape}]`);
      continue;
    }
    tf.tidy(() => v.assign(tf.tensor(t.data, t.shape)));
    report.loaded.push(name);
  }
  for (const name of tensors.keys()) {
    if (!vars.has(name) && !ignorePrefixes.some((p) => name.startsWith(p))) report.unexpected.push(name);
  }
  return report;
}
