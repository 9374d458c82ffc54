/**
 * pbip: prototype-based image prompting (PBIP, CVPR 2025) for weakly supervised
 * histopathology segmentation, in TensorFlow.js. The public API, by stage:
 *
 *   runtime   backend choice (WebGPU > native > WASM > CPU) and the kernels WASM lacks
 *   config    the `paper`, `release` and `notebook` profiles
 *   data      dataset readers, palettes, the synthetic tissue benchmark, the loader
 *   encoders  frozen image encoders (bundled stand-in, ONNX, tfjs, Swin-T)
 *   bank      image bank: selection, clustering, prototypes (eq. 1)
 *   model     backbones, prototype projection, similarity maps (eq. 2), ClassNet
 *   match     adaptive threshold (eq. 4), foreground/background regions (eq. 5)
 *   losses    L_CLS, L_FGS, L_BGS (eq. 7-13)
 *   train     optimiser, schedule, the trainer and its events
 *   cam       CAMs and pseudo-masks
 *   eval      confusion matrix and metrics
 *   viz       overlays, heatmaps, plots, notebook display
 *   seg       stage 2 segmentation
 */
export * as tf from "@tensorflow/tfjs";
export * from "./runtime";
export * from "./util";
export * from "./io";
export * from "./config";
export * from "./data";
export * from "./encoders";
export * from "./bank";
export * from "./model";
export * from "./match";
export * from "./losses";
export * from "./train";
export * from "./cam";
export * from "./eval";
export * from "./viz";
export * from "./seg";
export * from "./pipeline";
