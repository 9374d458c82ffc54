/**
 * Guards for two silent failures of tfjs-backend-webgpu 4.22 (a rejected shader or
 * pipeline leaves the output buffer as garbage instead of throwing):
 *
 * - `Cast` of bool or int32 to float32 only relabels the buffer (tfjs sees no
 *   encoding loss), and kernels that generate shaders from the buffer's real type
 *   then fail to compile ("expected f32, got i32"). After such a cast the values
 *   are materialised as float32 (a multiply by one).
 * - `AddN` binds one storage buffer per input; more than the device's
 *   per-stage limit fails validation. Long sums are split into groups that fit.
 *
 * pbip's own code also avoids these paths (boolToFloat, the device limits in
 * backend.ts); these guards cover everything else that runs on the backend.
 */
import * as tf from "@tensorflow/tfjs";

type Info = tf.TensorInfo;
interface WebGpuBackendLike {
  makeTensorInfo(shape: number[], dtype: tf.DataType, values?: tf.backend_util.BackendValues): Info;
  disposeData(dataId: object): void;
  device: { limits: { maxStorageBuffersPerShaderStage: number } };
}

let registered = false;

/** Register the guards for the `webgpu` backend (idempotent). */
export function registerWebGpuKernels(): void {
  if (registered) return;
  const castK = tf.getKernel("Cast", "webgpu");
  const mulK = tf.getKernel("Multiply", "webgpu");
  const addNK = tf.getKernel("AddN", "webgpu");
  if (!castK || !mulK || !addNK) return;
  registered = true;
  tf.unregisterKernel("Cast", "webgpu");
  tf.registerKernel({
    ...castK,
    kernelFunc: (args) => {
      const x = (args.inputs as unknown as { x: Info }).x;
      const out = castK.kernelFunc(args) as Info;
      if ((args.attrs as unknown as { dtype: string }).dtype !== "float32" || (x.dtype !== "bool" && x.dtype !== "int32")) return out;
      const be = args.backend as unknown as WebGpuBackendLike;
      const one = be.makeTensorInfo([], "float32", new Float32Array([1]));
      const real = mulK.kernelFunc({ inputs: { a: out, b: one } as never, backend: args.backend, attrs: {} }) as Info;
      be.disposeData(out.dataId);
      be.disposeData(one.dataId);
      return real;
    },
  });
  tf.unregisterKernel("AddN", "webgpu");
  tf.registerKernel({
    ...addNK,
    kernelFunc: (args) => {
      const be = args.backend as unknown as WebGpuBackendLike;
      const max = Math.max(2, (be.device?.limits?.maxStorageBuffersPerShaderStage ?? 8) - 2);
      let inputs = args.inputs as unknown as Info[];
      const temps: Info[] = [];
      while (inputs.length > max) {
        const next: Info[] = [];
        for (let i = 0; i < inputs.length; i += max) {
          const group = inputs.slice(i, i + max);
          if (group.length === 1) {
            next.push(group[0]!);
            continue;
          }
          const r = addNK.kernelFunc({ inputs: group as never, backend: args.backend, attrs: {} }) as Info;
          temps.push(r);
          next.push(r);
        }
        inputs = next;
      }
      const out = addNK.kernelFunc({ inputs: inputs as never, backend: args.backend, attrs: {} }) as Info;
      for (const t of temps) be.disposeData(t.dataId);
      return out;
    },
  });
}
