export * from "./tensors";
