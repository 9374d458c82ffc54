export * from "./types";
export * from "./preprocess";
export * from "./bundled";
export * from "./mobilenetv2";
