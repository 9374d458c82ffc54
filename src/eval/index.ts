export * from "./confusion";
export * from "./metrics";
export * from "./boundary";
export * from "./stats";
export * from "./evaluate";
export * from "./dirs";
