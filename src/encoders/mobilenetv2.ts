import * as tf from "@tensorflow/tfjs";
import type { EncoderIdentity, EncoderOutput, ImageEncoder, Preprocessing } from "./types";
import { preprocessForEncoder } from "./preprocess";
import { applyFrozen } from "./frozen";
import { UsageError } from "../util/errors";
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
 *
 * `featureLayer` stops the network at an earlier Keras layer instead (e.g. `block_4_add`,
 * 32 channels at stride 8): less specific to the task the weights were fine-tuned on.
 * On the synthetic set its prototypes segment the training patches far better than
 * `out_relu`'s (`npx tsx bench/encoder-view.ts`); docs/results.md reports what that does to PBIP.
 */
export class MobileNetV2Encoder implements ImageEncoder {
  readonly isStandIn = true;
  readonly standInNote = `stand-in encoder, not MedCLIP: ${BUNDLED_MOBILENETV2.description}`;
  readonly differentiable = true;
  readonly hasDense = true;

  private constructor(
    private readonly model: tf.LayersModel,
    readonly identity: EncoderIdentity,
    /** The model that owns the weights (the full network when `model` stops early). */
    private readonly owner: tf.LayersModel = model,
  ) {}

  /**
   * Build the encoder (extracts the bundled model into the cache on first use).
   * `outputStride` 16 runs block 13 at stride 1 (as the backbone does), so the dense
   * map is twice as fine: 7x7 instead of 3x3 at 112 px. The encoder's identity
   * records it, so a bank built one way is refused by the other.
   */
  static async create(options: { preprocessing?: Partial<Preprocessing>; outputStride?: 16 | 32; featureLayer?: string } = {}): Promise<MobileNetV2Encoder> {
    const os16 = options.outputStride === 16;
    const layer = options.featureLayer ?? BUNDLED_MOBILENETV2.featureLayer;
    const custom = layer !== BUNDLED_MOBILENETV2.featureLayer;
    const { model: full, weightsHash } = await instantiateBundledMobileNetV2(os16 ? outputStride16 : undefined);
    full.trainable = false;
    let model = full;
    if (custom) {
      // The network up to `layer`; the full model keeps owning every weight (disposing
      // this sub-model would leave the later layers' weights behind).
      let out: tf.SymbolicTensor;
      try {
        out = full.getLayer(layer).output as tf.SymbolicTensor;
      } catch {
        full.dispose();
        throw new UsageError(`encoder mobilenetv2: no layer "${layer}" (use a Keras MobileNetV2 layer name such as block_4_add, block_12_add, block_16_project or out_relu)`);
      }
      model = tf.model({ inputs: full.inputs, outputs: out });
    }
    const shape = model.outputs[0]!.shape;
    const dim = shape[shape.length - 1]!;
    const preprocessing = { ...MOBILENETV2_PREPROCESSING, ...options.preprocessing };
    return new MobileNetV2Encoder(
      model,
      {
        name: `${BUNDLED_MOBILENETV2.id}${os16 ? " output-stride-16" : ""}${custom ? ` layer ${layer}` : ""} (stand-in, not MedCLIP)`,
        dim,
        weightsHash,
        preprocessing,
      },
      full,
    );
  }

  /**
   * The bundled encoder a bank or checkpoint was built with, from its recorded
   * identity (input size, output stride and feature layer, which the name carries).
   */
  static forIdentity(identity: Pick<EncoderIdentity, "name" | "preprocessing">): Promise<MobileNetV2Encoder> {
    const layer = / layer (\S+)/.exec(identity.name)?.[1];
    return MobileNetV2Encoder.create({
      preprocessing: { inputSize: identity.preprocessing.inputSize },
      ...(identity.name.includes(" output-stride-16") ? { outputStride: 16 as const } : {}),
      ...(layer ? { featureLayer: layer } : {}),
    });
  }

  apply(images: tf.Tensor4D, options: { dense?: boolean } = {}): EncoderOutput {
    return tf.tidy(() => {
      const x = preprocessForEncoder(images, this.identity.preprocessing);
      // Layer by layer, so an input gradient skips the frozen convolutions' filter gradients.
      const dense = applyFrozen(this.model, x)[0] as tf.Tensor4D;
      const pooled = tf.mean(dense, [1, 2]) as tf.Tensor2D;
      return options.dense ? { pooled, dense } : { pooled };
    });
  }

  async encode(images: tf.Tensor4D, options: { dense?: boolean } = {}): Promise<EncoderOutput> {
    return this.apply(images, options);
  }

  dispose(): void {
    this.owner.dispose();
  }
}
