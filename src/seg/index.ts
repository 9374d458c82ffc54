/**
 * Stage 2 (METHOD.md section 5): a fully supervised segmentation network trained
 * on the stage-1 pseudo-masks (DeepLab-v3+ on the bundled MobileNetV2, or the
 * SegFormer all-MLP decoder on a Mix Transformer), its loss, training task,
 * inference to palette PNGs and evaluation.
 */
export * from "./layers";
export * from "./loss";
export * from "./models";
export * from "./data";
export * from "./task";
export * from "./predict";
