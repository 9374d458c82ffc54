export * from "./profiles";
export { configProblems, configKeyTakes } from "./validate";
