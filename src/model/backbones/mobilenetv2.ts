import * as tf from "@tensorflow/tfjs";
import type { Backbone, BackboneOptions } from "./types";
import type { WeightLoadReport } from "../../io/tensors";
import { BUNDLED_MOBILENETV2, instantiateBundledMobileNetV2, outputStride16 } from "../../encoders/bundled";

/**
 * Stage outputs of the MobileNetV2 backbone (Keras layer names) and their strides.
 *
 * | stage | layer          | channels | stride |
 * |-------|----------------|----------|--------|
 * | 1     | block_2_add    | 24       | 4      |
 * | 2     | block_5_add    | 32       | 8      |
 * | 3     | block_12_add   | 96       | 16     |
 * | 4     | out_relu       | 1280     | 16     |
 *
 * Stage 4 keeps 1/16 like the release's MiT (strides [4,2,2,1]): block 13's
 * depthwise convolution runs with stride 1 (its zero padding becomes symmetric),
 * without dilation. At 224 px the maps are 56x56x24, 28x28x32, 14x14x96, 14x14x1280.
 */
export const MOBILENETV2_STAGES = [
  { layer: "block_2_add", channels: 24, stride: 4 },
  { layer: "block_5_add", channels: 32, stride: 8 },
  { layer: "block_12_add", channels: 96, stride: 16 },
  { layer: "out_relu", channels: 1280, stride: 16 },
] as const;

/**
 * The bundled pretrained backbone: MobileNetV2 from nsfwjs (ImageNet start, then
 * fine-tuned on a non-medical task), cut into four stages. Trainable; its
 * BatchNorm layers always run with their stored statistics (batch 10 is too small
 * to re-estimate them), while their scale and offset train.
 */
class MobileNetV2Backbone implements Backbone {
  readonly name = "mobilenetv2";
  readonly stageChannels = MOBILENETV2_STAGES.map((s) => s.channels);
  readonly stageStrides = MOBILENETV2_STAGES.map((s) => s.stride);
  readonly defaultNormalization = { mean: [0.5, 0.5, 0.5] as [number, number, number], std: [0.5, 0.5, 0.5] as [number, number, number] };
  readonly weightsSource: string;

  constructor(
    private readonly model: tf.LayersModel,
    weightsHash: string,
  ) {
    this.weightsSource = `bundled ${BUNDLED_MOBILENETV2.package} MobileNetV2 (weights ${weightsHash})`;
  }

  apply(x: tf.Tensor4D, _training: boolean): tf.Tensor4D[] {
    return this.model.apply(x, { training: false }) as tf.Tensor4D[];
  }

  namedVariables(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    for (const layer of this.model.layers) {
      for (const w of layer.trainableWeights) out.set(`backbone/${w.originalName}`, (w as unknown as { val: tf.Variable }).val);
    }
    return out;
  }

  loadWeights(file: string): WeightLoadReport {
    throw new Error(`${file}: the MobileNetV2 backbone uses the bundled weights; load a ClassNet checkpoint instead`);
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** Build the MobileNetV2 backbone from the bundled weights (see {@link MOBILENETV2_STAGES}). */
export async function buildMobileNetV2Backbone(options: BackboneOptions = {}): Promise<Backbone> {
  if (options.weights) throw new Error(`mobilenetv2 backbone: only the bundled weights are supported, got ${options.weights}`);
  const { model, weightsHash } = await instantiateBundledMobileNetV2(
    (layers) => {
      // nsfwjs froze the layers before block 11 when fine-tuning; the backbone trains all of them.
      for (const l of layers) l.config.trainable = true;
      outputStride16(layers);
    },
    MOBILENETV2_STAGES.map((s) => s.layer),
  );
  return new MobileNetV2Backbone(model, weightsHash);
}
