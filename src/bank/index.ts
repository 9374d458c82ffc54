export * from "./matrix";
export * from "./kmeans";
export * from "./prototypes";
export * from "./select";
export * from "./bank";
export * from "./build";
export * from "./stats";
export * from "./zeroshot";
