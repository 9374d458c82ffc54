export * from "./paint";
export * from "./spec";
export * from "./generate";
export * from "./card";
export { fbm, valueNoise, NoiseLattice, smoothstep } from "./noise";
