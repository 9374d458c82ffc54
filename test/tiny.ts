/**
 * Tiny stand-ins for fast trainer tests: a 4-stage convolutional backbone and a
 * differentiable convolutional encoder with a dense map. Seeded, a few thousand
 * parameters, so a training step takes milliseconds on any backend.
 */
import * as tf from "@tensorflow/tfjs";
import type { Backbone } from "../src/model/backbones/types";
import type { ImageEncoder, EncoderOutput, EncoderIdentity } from "../src/encoders/types";
import { preprocessForEncoder } from "../src/encoders/preprocess";

export class TinyBackbone implements Backbone {
  readonly name = "tiny";
  readonly stageChannels = [4, 6, 8, 8];
  readonly stageStrides = [2, 4, 8, 8];
  readonly defaultNormalization = { mean: [0.5, 0.5, 0.5] as [number, number, number], std: [0.25, 0.25, 0.25] as [number, number, number] };
  readonly weightsSource = "random init (test)";
  private readonly vars = new Map<string, tf.Variable>();
  constructor(seed = 1) {
    let cin = 3;
    this.stageChannels.forEach((c, i) => {
      this.vars.set(`backbone/conv${i}/kernel`, tf.tidy(() => tf.variable(tf.randomNormal([3, 3, cin, c], 0, 0.4, "float32", seed + i))));
      this.vars.set(`backbone/conv${i}/bias`, tf.tidy(() => tf.variable(tf.zeros([c]))));
      cin = c;
    });
  }
  apply(x: tf.Tensor4D): tf.Tensor4D[] {
    return tf.tidy(() => {
      const out: tf.Tensor4D[] = [];
      let h = x;
      const strides = [2, 2, 2, 1];
      for (let i = 0; i < 4; i++) {
        h = tf.relu(tf.add(tf.conv2d(h, this.vars.get(`backbone/conv${i}/kernel`) as tf.Tensor4D, strides[i]!, "same"), this.vars.get(`backbone/conv${i}/bias`)!)) as tf.Tensor4D;
        out.push(h);
      }
      return out;
    });
  }
  namedVariables(): Map<string, tf.Variable> {
    return new Map(this.vars);
  }
  dispose(): void {
    tf.dispose([...this.vars.values()]);
  }
}

export class TinyEncoder implements ImageEncoder {
  readonly isStandIn = true;
  readonly standInNote = "test encoder";
  readonly differentiable = true;
  readonly hasDense = true;
  readonly identity: EncoderIdentity;
  private readonly w1: tf.Tensor4D;
  private readonly w2: tf.Tensor4D;
  constructor(inputSize = 32, dim = 5, seed = 7) {
    this.identity = { name: "tiny-encoder", dim, weightsHash: `tiny${seed}`, preprocessing: { inputSize, channelOrder: "RGB", scale: 1, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] } };
    this.w1 = tf.keep(tf.randomNormal([3, 3, 3, 6], 0, 0.5, "float32", seed)) as tf.Tensor4D;
    this.w2 = tf.keep(tf.randomNormal([3, 3, 6, dim], 0, 0.5, "float32", seed + 1)) as tf.Tensor4D;
  }
  apply(images: tf.Tensor4D, o: { dense?: boolean } = {}): EncoderOutput {
    return tf.tidy(() => {
      const x = preprocessForEncoder(images, this.identity.preprocessing);
      const h = tf.tanh(tf.conv2d(x, this.w1, 2, "same"));
      const dense = tf.tanh(tf.conv2d(h, this.w2, 2, "same")) as tf.Tensor4D;
      const pooled = tf.mean(dense, [1, 2]) as tf.Tensor2D;
      return o.dense ? { pooled, dense } : { pooled };
    });
  }
  async encode(images: tf.Tensor4D, o: { dense?: boolean } = {}): Promise<EncoderOutput> {
    return this.apply(images, o);
  }
  dispose(): void {
    tf.dispose([this.w1, this.w2]);
  }
}
