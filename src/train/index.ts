export * from "./optim";
export * from "./schedule";
export * from "./validate";
export * from "./trainer";
