import * as tf from "@tensorflow/tfjs";
import type { EncoderIdentity, EncoderOutput, ImageEncoder, Preprocessing } from "./types";
import { preprocessForEncoder } from "./preprocess";
import { BUNDLED_MOBILENETV2, instantiateBundledMobileNetV2, outputStride16 } from "./bundled";

/** Keras MobileNetV2 expects x/127.5 - 1, i.e. (x01 - 0.5) / 0.5. */
export const MOBILENETV2_PREPROCESSING: Preprocessing = {
  inputSize: 224,
  channelOrder: "RGB",
  scale: 1,
  mean: [0.5, 0.5, 0.5],
  std: [0.5, 0.5, 0.5],
};

/**
 * The bundled frozen encoder phi: MobileNetV2 from nsfwjs (see {@link BUNDLED_MOBILENETV2}),
 * global-average-pooled `out_relu` features, d = 1280. A STAND-IN for the paper's
 * MedCLIP (512-d); the method only needs a strong frozen encoder, so any encoder
 * fits, but results with this one are not the paper's.
 *
 * Differentiable: {@link apply} runs inside a gradient tape, so the `image` region
 * mode can back-propagate through it into the similarity maps (weights stay frozen).
 * The dense map is `out_relu` itself ([B, 7, 7, 1280] at 224 px), whose average is the pooled vector.
 */
export class MobileNetV2Encoder implements ImageEncoder {
  readonly isStandIn = true;
  readonly standInNote = `stand-in encoder, not MedCLIP: ${BUNDLED_MOBILENETV2.description}`;
  readonly differentiable = true;
  readonly hasDense = true;

  private constructor(
    private readonly model: tf.LayersModel,
    readonly identity: EncoderIdentity,
  ) {}

  /**
   * Build the encoder (extracts the bundled model into the cache on first use).
   * `outputStride` 16 runs block 13 at stride 1 (as the backbone does), so the dense
   * map is twice as fine: 7x7 instead of 3x3 at 112 px. The encoder's identity
   * records it, so a bank built one way is refused by the other.
   */
  static async create(options: { preprocessing?: Partial<Preprocessing>; outputStride?: 16 | 32 } = {}): Promise<MobileNetV2Encoder> {
    const os16 = options.outputStride === 16;
    const { model, weightsHash } = await instantiateBundledMobileNetV2(os16 ? outputStride16 : undefined);
    model.trainable = false;
    const preprocessing = { ...MOBILENETV2_PREPROCESSING, ...options.preprocessing };
    return new MobileNetV2Encoder(model, {
      name: `${BUNDLED_MOBILENETV2.id}${os16 ? " output-stride-16" : ""} (stand-in, not MedCLIP)`,
      dim: 1280,
      weightsHash,
      preprocessing,
    });
  }

  apply(images: tf.Tensor4D, options: { dense?: boolean } = {}): EncoderOutput {
    return tf.tidy(() => {
      const x = preprocessForEncoder(images, this.identity.preprocessing);
      const dense = this.model.apply(x, { training: false }) as tf.Tensor4D;
      const pooled = tf.mean(dense, [1, 2]) as tf.Tensor2D;
      return options.dense ? { pooled, dense } : { pooled };
    });
  }

  async encode(images: tf.Tensor4D, options: { dense?: boolean } = {}): Promise<EncoderOutput> {
    return this.apply(images, options);
  }

  dispose(): void {
    this.model.dispose();
  }
}
