/**
 * The WebGPU backend (Dawn; Mesa lavapipe on a CPU-only machine) agrees with the
 * pure-JS CPU backend on the ops the models are built from, forward and
 * gradients, to 1e-4 relative. Fails with the setup instruction when lavapipe is
 * missing. Model blocks get their own case modules beside ./cases/ops.ts.
 */
import { compareBackendsTest } from "./harness";

compareBackendsTest("cases/ops.ts");
