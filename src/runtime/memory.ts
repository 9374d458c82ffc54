import * as tf from "@tensorflow/tfjs";

/** Tensors alive and bytes held by the engine, plus the process's resident memory. */
export interface MemorySnapshot {
  tensors: number;
  dataBuffers: number;
  tensorBytes: number;
  rssBytes: number;
}

export function memorySnapshot(): MemorySnapshot {
  const m = tf.memory();
  return { tensors: m.numTensors, dataBuffers: m.numDataBuffers, tensorBytes: m.numBytes, rssBytes: process.memoryUsage().rss };
}

/**
 * Run `fn` and throw if it leaves more tensors alive than it started with (besides
 * those it returns). Use around a training step to catch a missing `dispose`.
 */
export async function assertNoTensorLeak<T>(label: string, fn: () => Promise<T> | T, returned = 0): Promise<T> {
  const before = tf.memory().numTensors;
  const out = await fn();
  const after = tf.memory().numTensors;
  if (after - before > returned) {
    throw new Error(`${label}: ${after - before - returned} tensor(s) leaked (${before} before, ${after} after)`);
  }
  return out;
}

/** Human-readable bytes. */
export function formatBytes(n: number): string {
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}

/**
 * Whether the active backend can read tensors synchronously (`dataSync`). WebGPU in
 * Node cannot (tfjs reads synchronously through an OffscreenCanvas), so code that
 * needs host values in the middle of a computation must read them beforehand.
 */
export function canReadSync(): boolean {
  return tf.getBackend() !== "webgpu";
}
