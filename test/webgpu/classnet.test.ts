/**
 * WebGPU vs CPU on whole training steps: ClassNet with PBIP's losses in both region
 * modes, and the bundled MobileNetV2 backbone (issue: "a training step of ClassNet
 * runs on WASM and on the WebGPU backend with equal results within tolerance").
 */
import { compareBackendsTest } from "./harness";

compareBackendsTest("cases/classnet.ts");
