/**
 * Child-process probe: start the backend named by PBIP_BACKEND (the setup sets
 * `webgpu` and the lavapipe environment), run one small convolution, and print a
 * {@link WebGpuProbe} as the last line of stdout. Run by the setup and `pbip doctor`.
 */
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../runtime/backend";

async function probe(): Promise<void> {
  const t0 = Date.now();
  try {
    const r = await initBackend({ acceptSoftwareGpu: true });
    const ok = tf.tidy(() => {
      const x = tf.ones([1, 4, 4, 2]) as tf.Tensor4D;
      const w = tf.ones([3, 3, 2, 1]) as tf.Tensor4D;
      return tf.conv2d(x, w, 1, "same");
    });
    const v = await ok.data();
    ok.dispose();
    // The centre of a 3x3 all-ones kernel over 2 all-ones channels sums 18.
    if (v[5] !== 18) throw new Error(`conv2d check gave ${v[5]}, expected 18`);
    console.log(JSON.stringify({ ok: true, backend: r.backend, device: r.device, adapter: r.adapter, seconds: (Date.now() - t0) / 1000 }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: (e as Error).message, seconds: (Date.now() - t0) / 1000 }));
  }
  process.exit(0);
}

void probe();
