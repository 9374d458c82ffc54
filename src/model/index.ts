export * from "./backbones/types";
export * from "./backbones/mobilenetv2";
export * from "./heads";
export * from "./classnet";
