export * from "./core";
export * from "./run";
export * from "./stages";
export * from "./results";
export * from "./headless";
export * from "./stage2";
export * from "./export";
export * from "./ablation";
