export * from "./optim";
export * from "./schedule";
export * from "./validate";
export * from "./loop";
export * from "./trainer";
