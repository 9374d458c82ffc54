export * from "./confusion";
