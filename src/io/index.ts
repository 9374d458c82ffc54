export * from "./tensors";
export * from "./safetensors";
export * from "./checkpoint";
