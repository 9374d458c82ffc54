export * from "./core";
export * from "./run";
export * from "./stages";
