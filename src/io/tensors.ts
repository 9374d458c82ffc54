/**
 * Named host tensors: what a weights file holds once read (safetensors, tfjs
 * weights), before it becomes TensorFlow.js variables. Shapes are in the file's own
 * layout (PyTorch: OIHW for convolutions, [out, in] for linear layers); the model
 * loaders convert layouts.
 */
export interface HostTensor {
  dtype: "float32";
  shape: number[];
  data: Float32Array;
}

export type NamedTensors = Map<string, HostTensor>;

/** The result of matching a file's names against a model's expected names. */
export interface WeightLoadReport {
  loaded: string[];
  /** Expected by the model, absent in the file. */
  missing: string[];
  /** Present in the file, not used by the model (after ignored prefixes). */
  unexpected: string[];
  /** Present in both, with a different shape: `name: file [..] vs model [..]`. */
  misshaped: string[];
}

/** Throws one error listing every problem of a load report (if any), naming the file. */
export function assertCleanLoad(file: string, r: WeightLoadReport, allowMissing: RegExp[] = []): void {
  const missing = r.missing.filter((n) => !allowMissing.some((re) => re.test(n)));
  if (missing.length || r.unexpected.length || r.misshaped.length) {
    const part = (t: string, a: string[]) => (a.length ? `\n  ${t} (${a.length}): ${a.slice(0, 20).join(", ")}${a.length > 20 ? ", ..." : ""}` : "");
    throw new Error(
      `${file}: weights do not match the model` +
        part("missing", missing) +
        part("unexpected", r.unexpected) +
        part("mis-shaped", r.misshaped),
    );
  }
}
