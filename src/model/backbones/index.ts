/**
 * ClassNet backbones by name (METHOD.md section 3): the SegFormer Mix Transformer
 * (`mit-b0`, `mit-b1`, `mit-b2`; the release uses MiT-b1) and the bundled pretrained
 * MobileNetV2 (`mobilenetv2`). Each maps an image batch to the four stage feature
 * maps F_1..F_4 of eq. 2 (NHWC).
 *
 * Only the MobileNetV2 comes with pretrained weights offline. A MiT without a
 * weights file starts from random initialisation (the original's init), i.e. it
 * trains from scratch; pass `weights` (a `.safetensors` converted from
 * `mit_b1.pth`, see kernel-setup/convert_mit_pth.py) to start from ImageNet.
 */
import * as tf from "@tensorflow/tfjs";
import { assertCleanLoad } from "../../io/tensors";
import { normalizeImages } from "../../encoders/preprocess";
import type { Backbone, BackboneName, BackboneOptions } from "./types";
import { MixTransformer } from "./mit";
import { MIT_CONFIGS, resolveMiTConfig, type MiTName, type MiTOptions } from "./mit-config";
import { buildMobileNetV2Backbone } from "./mobilenetv2";

export * from "./types";
export * from "./mobilenetv2";
export { MixTransformer } from "./mit";
export {
  MIT_CONFIGS,
  IMAGENET_NORMALIZATION,
  dropPathRates,
  mitParamSpecs,
  resolveMiTConfig,
  validateMiTConfig,
  type MiTConfig,
  type MiTName,
  type MiTOptions,
  type MiTParamKind,
  type MiTParamSpec,
} from "./mit-config";
export {
  loadMiTWeights,
  detectMiTNaming,
  hfToOriginalName,
  originalToHfNames,
  fromPyTorchLayout,
  toPyTorchLayout,
  expectedPyTorchShapes,
  MIT_IGNORED_PREFIXES,
  type MiTWeightsOptions,
} from "./mit-weights";

/** Every backbone name {@link buildBackbone} accepts. */
export const BACKBONE_NAMES: readonly BackboneName[] = ["mit-b0", "mit-b1", "mit-b2", "mobilenetv2"];

/**
 * Build a MiT (`mit-b0|mit-b1|mit-b2`) with the given options: strides (release
 * [4, 2, 2, 1]), drop-path rate (release 0.1), seed, and an optional custom
 * architecture (`config`). With `weights`, loads the `.safetensors` file and throws,
 * listing every missing, unexpected or mis-shaped name, unless it matches exactly.
 */
export function buildMiT(name: MiTName, options: MiTOptions = {}): MixTransformer {
  const model = new MixTransformer(name, resolveMiTConfig(name, options), options.seed ?? 0, !options.weights);
  if (options.weights) {
    try {
      assertCleanLoad(options.weights, model.loadWeights(options.weights));
    } catch (e) {
      model.dispose();
      throw e;
    }
  }
  return model;
}

/**
 * Build a backbone by name. `mit-*` builds the SegFormer Mix Transformer (see
 * {@link buildMiT}); `mobilenetv2` builds the bundled pretrained MobileNetV2 cut
 * into four stages. `options.weights` loads a weights file (MiT: `.safetensors`).
 */
export async function buildBackbone(name: BackboneName, options: BackboneOptions = {}): Promise<Backbone> {
  if (name === "mobilenetv2") return buildMobileNetV2Backbone(options);
  if (name in MIT_CONFIGS) return buildMiT(name as MiTName, options);
  throw new Error(`unknown backbone "${String(name)}"; use one of ${BACKBONE_NAMES.join(", ")}`);
}

/** Options of {@link backboneStageFeatures}. */
export interface StageFeaturesOptions extends BackboneOptions {
  /** The images are already normalised (skip the backbone's mean/std). Default false. */
  normalized?: boolean;
  /** Run in training mode (stochastic depth on). Default false. */
  training?: boolean;
}

/**
 * The stage feature maps F_1..F_4 (NHWC) of eq. 2 for an image batch (RGB in [0, 1],
 * NHWC, normalised here with the backbone's mean/std). Given a name, builds the
 * backbone (loading `weights` if set), runs it and disposes it; given a backbone,
 * just runs it. The caller owns the returned tensors.
 */
export async function backboneStageFeatures(
  backbone: BackboneName | Backbone,
  images: tf.Tensor4D,
  options: StageFeaturesOptions = {},
): Promise<tf.Tensor4D[]> {
  const owned = typeof backbone === "string";
  const bb = owned ? await buildBackbone(backbone, options) : backbone;
  try {
    return tf.tidy(() => {
      const x = options.normalized ? images : normalizeImages(images, bb.defaultNormalization);
      return bb.apply(x, options.training ?? false);
    });
  } finally {
    if (owned) bb.dispose();
  }
}
