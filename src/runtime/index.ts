export * from "./backend";
export * from "./wasm-kernels";
export * from "./memory";
export { resizeBilinear } from "./resize";
export * from "./gradients";
export * from "./ops";
export * from "./webgpu-kernels";
export { gemm, columnSums, depthwise3x3FilterGrad, wasmSimdKernelsAvailable, type GemmTile } from "./wasm-simd";
export { guardWasmHeap, WasmHeapFullError, WASM_HEAP_LIMIT_BYTES } from "./wasm-heap";
