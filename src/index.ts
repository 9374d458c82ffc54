/**
 * pbip: prototype-based image prompting (PBIP, CVPR 2025) for weakly supervised
 * histopathology segmentation, in TensorFlow.js. The public API, by stage.
 */
export * as tf from "@tensorflow/tfjs";
export * from "./runtime";
