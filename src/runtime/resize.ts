/**
 * Bilinear resizing with an exact gradient on every backend.
 *
 * `tf.image.resizeBilinear(x, size, false, true)` (half-pixel centres, PyTorch's
 * `align_corners=False`) computes the right forward pass, but in tfjs 4.22 its
 * gradient ignores `halfPixelCenters` on the CPU, WASM and WebGPU backends (and the
 * CPU backend's gradient swaps H and W for non-square inputs). Anything resized
 * inside a training graph (the matching map of eq. 3-5, an encoder's input in the
 * `image` region mode, stage-2 decoders) therefore goes through this version:
 * two interpolation matrices, `Ry . X . Rx^T`, whose gradient is their transpose.
 */
import * as tf from "@tensorflow/tfjs";

/**
 * The `[outSize, inSize]` matrix of 1-D linear interpolation with half-pixel
 * centres: output pixel `i` samples input coordinate `(i + 0.5) * in/out - 0.5`,
 * clamped to the edges. Row-major.
 */
export function bilinearMatrix(outSize: number, inSize: number): Float32Array {
  const m = new Float32Array(outSize * inSize);
  const scale = inSize / outSize;
  for (let i = 0; i < outSize; i++) {
    const src = Math.min(Math.max((i + 0.5) * scale - 0.5, 0), inSize - 1);
    const i0 = Math.floor(src);
    const i1 = Math.min(i0 + 1, inSize - 1);
    const f = src - i0;
    m[i * inSize + i0]! += 1 - f;
    m[i * inSize + i1]! += f;
  }
  return m;
}

/**
 * Bilinear resize of NHWC maps to `[outH, outW]` with half-pixel centres, as two
 * matrix products (no transposed operands: WASM's matMul is slow with them). The
 * same values as `tf.image.resizeBilinear(x, size, false, true)`; an exact gradient.
 * Returns a copy when the size already matches.
 */
export function resizeBilinear(x: tf.Tensor4D, size: [number, number]): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  const [oh, ow] = size;
  if (oh === h && ow === w) return tf.clone(x);
  return tf.tidy(() => {
    let y: tf.Tensor4D = x;
    if (oh !== h) {
      const ry = tf.tensor2d(bilinearMatrix(oh, h), [oh, h]);
      const t = tf.reshape(tf.transpose(y, [1, 0, 2, 3]), [h, b * w * c]);
      y = tf.transpose(tf.reshape(tf.matMul(ry, t), [oh, b, w, c]), [1, 0, 2, 3]);
    }
    if (ow !== w) {
      const rx = tf.tensor2d(bilinearMatrix(ow, w), [ow, w]);
      const t = tf.reshape(tf.transpose(y, [2, 0, 1, 3]), [w, b * oh * c]);
      y = tf.transpose(tf.reshape(tf.matMul(rx, t), [ow, b, oh, c]), [1, 2, 0, 3]);
    }
    return y;
  });
}
