export * from "./profiles";
