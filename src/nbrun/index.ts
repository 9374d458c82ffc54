/**
 * Development environment and headless notebooks: the setup behind `npm run setup`,
 * Jupyter and tslab kernelspec discovery, the Mesa lavapipe GPU emulation, and the
 * headless runner behind `npm run notebooks`. Not part of the root API; the CLI
 * (`pbip doctor`, `pbip demo`) and the tests import it from here.
 */
export * from "./paths";
export * from "./build";
export * from "./jupyter";
export * from "./lavapipe";
export * from "./setup";
export * from "./run";
