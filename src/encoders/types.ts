import type * as tf from "@tensorflow/tfjs";

/** How an encoder wants its input: size, channel order and normalisation. */
export interface Preprocessing {
  /** Square input side in pixels; inputs of another size are resized bilinearly. */
  inputSize: number;
  /** Channel order the weights expect. pbip images are always RGB; BGR is produced by flipping. */
  channelOrder: "RGB" | "BGR";
  /** Scale applied to [0,1] pixels before mean/std (1 for [0,1] weights, 255 for [0,255] ones). */
  scale: number;
  /** Per-channel mean and std in the scaled range, in the encoder's channel order. */
  mean: [number, number, number];
  std: [number, number, number];
}

/** Identity of an encoder, stored with a bank so a bank is never used with another encoder. */
export interface EncoderIdentity {
  /** Stable name, e.g. `mobilenetv2-nsfwjs` or `onnx:medclip`. */
  name: string;
  /** Feature dimension d. */
  dim: number;
  /** SHA-256 of the weights (or model file), first 16 hex digits. */
  weightsHash: string;
  preprocessing: Preprocessing;
}

/** (A type alias rather than an interface, so it can be returned from `tf.tidy`.) */
export type EncoderOutput = {
  /** Pooled features [B, d] (not L2-normalised). */
  pooled: tf.Tensor2D;
  /** The dense feature map [B, h, w, d] whose average pool is `pooled`, when the encoder has one and it was asked for. */
  dense?: tf.Tensor4D;
};

/**
 * A frozen image encoder phi (the paper's MedCLIP). Input images are RGB floats in
 * [0, 1], NHWC, of any size; the encoder applies its own {@link Preprocessing}.
 */
export interface ImageEncoder {
  readonly identity: EncoderIdentity;
  /** True when this is not the encoder the paper used; `standInNote` says what it is. */
  readonly isStandIn: boolean;
  readonly standInNote?: string;
  /** True when {@link apply} exists: the encoder runs inside a TensorFlow.js gradient tape. */
  readonly differentiable: boolean;
  /** True when the encoder can return a dense feature map (for the `feature` region mode). */
  readonly hasDense: boolean;
  /** Encode a batch (no gradients). The caller disposes the outputs. */
  encode(images: tf.Tensor4D, options?: { dense?: boolean }): Promise<EncoderOutput>;
  /** Differentiable forward pass, synchronous, for use inside `tf.grad`/`variableGrads`. */
  apply?(images: tf.Tensor4D, options?: { dense?: boolean }): EncoderOutput;
  dispose(): void;
}
