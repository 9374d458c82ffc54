export * from "./types";
export * from "./preprocess";
