export * from "./types";
export * from "./preprocess";
export * from "./bundled";
export * from "./mobilenetv2";
export * from "./onnx";
export * from "./tfjs-model";
export * from "./factory";
export * from "./swin";
