import type * as tf from "@tensorflow/tfjs";
import type { WeightLoadReport } from "../../io/tensors";

/** Names of the backbones pbip builds. */
export type BackboneName = "mit-b0" | "mit-b1" | "mit-b2" | "mobilenetv2";

/**
 * A ClassNet backbone: maps a normalised NHWC batch to four stage feature maps
 * (NHWC), the F_i of the paper's eq. 2.
 */
export interface Backbone {
  readonly name: BackboneName | string;
  /** Channels C_i of the four stage maps. */
  readonly stageChannels: readonly number[];
  /** Output stride of each stage map relative to the input (e.g. [4, 8, 16, 16] for the release's MiT). */
  readonly stageStrides: readonly number[];
  /** Input normalisation the weights were trained with, on the [0,1] scale (RGB). */
  readonly defaultNormalization: { mean: [number, number, number]; std: [number, number, number] };
  /** Where the weights came from (`random init`, a file name, a bundled package); shown in summaries. */
  readonly weightsSource: string;
  /**
   * Forward pass. `x` is already normalised. `training` enables stochastic depth and
   * dropout where the backbone has them. Returns the four stage maps.
   */
  apply(x: tf.Tensor4D, training: boolean): tf.Tensor4D[];
  /**
   * Reseed the backbone's training-time randomness (stochastic depth) for one step,
   * so that a resumed run repeats an uninterrupted one. Backbones without
   * randomness omit it.
   */
  setStepSeed?(seed: number): void;
  /** Trainable variables by a stable name (used by checkpoints). */
  namedVariables(): Map<string, tf.Variable>;
  /** Load weights from a file (format per backbone); returns what matched and what did not. */
  loadWeights?(file: string): WeightLoadReport;
  dispose(): void;
}

export interface BackboneOptions {
  /** Stochastic depth rate (MiT). Default per backbone (release MiT: 0.1). */
  dropPathRate?: number;
  /** Stage strides: first entry is the stem's stride, then one per later stage (MiT release: [4, 2, 2, 1]). */
  strides?: [number, number, number, number];
  /** Seed for random initialisation and stochastic depth. */
  seed?: number;
  /** Optional weights file to load after construction. */
  weights?: string;
}
