export * from "./backbones/types";
