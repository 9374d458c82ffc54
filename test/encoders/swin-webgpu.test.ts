/**
 * The Swin encoder on the WebGPU backend (Dawn; Mesa lavapipe on a CPU-only machine)
 * agrees with the CPU backend to 1e-4: forward, input gradient, and the gradient a
 * training step in the `image` region mode sends through the encoder into the map.
 * Uses the project's WebGPU harness (child processes; fails with the setup
 * instruction when lavapipe is missing).
 */
import { compareBackendsTest } from "../webgpu/harness";

compareBackendsTest("../encoders/swin-webgpu-cases.ts");
