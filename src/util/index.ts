export * from "./errors";
export * from "./fs";
export * from "./rng";
export * from "./progress";
export * from "./json";
