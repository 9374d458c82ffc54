export * from "./tensors";
export * from "./safetensors";
