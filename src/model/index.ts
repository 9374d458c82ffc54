export * from "./backbones";
export * from "./heads";
export * from "./classnet";
