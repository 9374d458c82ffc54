/**
 * Compute backend selection.
 *
 * One call, {@link initBackend}, picks and initialises the TensorFlow.js backend:
 * `auto` tries a real GPU through WebGPU (Dawn), then a native TensorFlow binding
 * (`@tensorflow/tfjs-node-gpu` / `@tensorflow/tfjs-node`, optional installs), then
 * WASM, then the pure-JS CPU backend. A backend forced by name (in code, with
 * `--backend`, or with `PBIP_BACKEND`) that cannot start is an error, never a
 * silent fallback. Whatever is chosen is described by a {@link BackendReport}.
 */
import * as tf from "@tensorflow/tfjs";
import * as path from "node:path";
import * as fs from "node:fs";
import * as os from "node:os";
import { execFileSync } from "node:child_process";
import { registerWasmKernels } from "./wasm-kernels";
import { registerFastGradients } from "./gradients";
import { registerWebGpuKernels } from "./webgpu-kernels";
import { initWasmThreaded } from "./wasm-threads";
import { backendMemory, type WasmBackendLike } from "./wasm-asm";
import { guardWasmHeap } from "./wasm-heap";
import { enableRelaxedSimd } from "./wasm-simd";

export type BackendName = "webgpu" | "tensorflow" | "wasm" | "cpu";
export type BackendChoice = BackendName | "auto";
export const BACKEND_NAMES: readonly BackendName[] = ["webgpu", "tensorflow", "wasm", "cpu"];

/** What the WebGPU adapter says about itself. */
export interface AdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** True when the adapter is a software rasteriser (lavapipe/llvmpipe, SwiftShader, WARP) or a fallback adapter. */
  software: boolean;
}

export interface BackendAttempt {
  backend: BackendName;
  ok: boolean;
  /** Why it was not used (or "selected"). */
  note: string;
}

export interface BackendReport {
  /** The tfjs backend now active. */
  backend: BackendName;
  /** How it was chosen: `auto` or `forced by <source>`. */
  chosenBy: string;
  /** A one-line human description of the device. */
  device: string;
  adapter?: AdapterInfo;
  /** Threads the backend computes with (WASM: 1, or the multi-threaded build's pool; 0 = a native pool). */
  threads: number;
  versions: Record<string, string>;
  /** Every backend tried, in order, with the reason it was or was not used. */
  attempts: BackendAttempt[];
}

export interface InitBackendOptions {
  /** Backend to use; default: `PBIP_BACKEND` from the environment, else `auto`. */
  backend?: BackendChoice;
  /** For `auto`: accept a software WebGPU adapter as if it were a GPU (tests do this). Default false. */
  acceptSoftwareGpu?: boolean;
  /** Print the report to stderr. Default false. */
  verbose?: boolean;
  /**
   * Threads for the WASM backend: 1 = the single-threaded build TF.js uses in Node;
   * 2 or more = its multi-threaded build (see `./wasm-threads`; XNNPACK's convolutions
   * and matrix products on a thread pool, results bit-identical to one thread), which
   * falls back to one thread, with the reason in the report, where it cannot start;
   * 0 = as many as Node may use. Default: `PBIP_WASM_THREADS` from the environment
   * (a number, or `auto`), else 0.
   */
  wasmThreads?: number;
}

/** Parse a WASM thread count as given by a user (`auto` = 0 = every CPU Node may use); throws a clear error otherwise. */
export function parseWasmThreads(value: string, source = "threads"): number {
  const v = value.trim().toLowerCase();
  if (v === "auto" || v === "all") return 0;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 256) throw new Error(`${source}: "${value}" is not a thread count; use a whole number (1 = single-threaded, 0 or auto = every CPU)`);
  return n;
}

function wasmThreadsFor(options: InitBackendOptions): number {
  const n = options.wasmThreads ?? (process.env.PBIP_WASM_THREADS ? parseWasmThreads(process.env.PBIP_WASM_THREADS, "PBIP_WASM_THREADS") : 0);
  if (!Number.isInteger(n) || n < 0) throw new Error(`wasmThreads: ${n} is not a thread count`);
  return n === 0 ? os.availableParallelism() : n;
}

let current: BackendReport | undefined;

/** The report of the backend chosen by the last {@link initBackend}, if any. */
export function backendReport(): BackendReport | undefined {
  return current;
}

/** Parse a backend name as given by a user; throws a clear error for anything else. */
export function parseBackendChoice(value: string, source = "backend"): BackendChoice {
  const v = value.trim().toLowerCase();
  if (v === "auto") return "auto";
  if (v === "native" || v === "node" || v === "tfjs-node") return "tensorflow";
  if ((BACKEND_NAMES as readonly string[]).includes(v)) return v as BackendName;
  throw new Error(`${source}: unknown backend "${value}"; use one of auto, ${BACKEND_NAMES.join(", ")}`);
}

class BackendUnavailable extends Error {}

function packageVersion(name: string): string | undefined {
  try {
    // Resolve the package's entry point, then walk up to its package.json (some
    // packages do not export "./package.json").
    let dir = path.dirname(require.resolve(name));
    for (let i = 0; i < 5; i++) {
      try {
        const pkg = require(path.join(dir, "package.json")) as { name?: string; version?: string };
        if (pkg.name === name && pkg.version) return pkg.version;
      } catch {
        /* keep walking */
      }
      dir = path.dirname(dir);
    }
  } catch {
    return undefined;
  }
  return undefined;
}

/** Words that mark a software WebGPU adapter. */
const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|swiftshader|software|warp|microsoft basic render/i;

interface GpuLike {
  requestAdapter(opts?: { powerPreference?: string }): Promise<unknown>;
}

let webgpuModule: { create: (o: string[]) => GpuLike; globals: object } | undefined;

/**
 * Dawn's options. On Linux Dawn is pinned to Vulkan: its OpenGL ES route (which it
 * may otherwise pick through EGL on a machine with Mesa) computed a wrong
 * conv2d weight gradient. `PBIP_DAWN_BACKEND` overrides (`vulkan`, `opengles`,
 * `metal`, `d3d12`, ... or `default` for Dawn's own choice).
 */
export function dawnOptions(env: NodeJS.ProcessEnv = process.env): string[] {
  const v = env.PBIP_DAWN_BACKEND?.trim();
  if (v) return v === "default" ? [] : [`backend=${v}`];
  return process.platform === "linux" ? ["backend=vulkan"] : [];
}

/** Load Dawn (the `webgpu` package) and install `navigator.gpu` and the WebGPU globals. */
function loadDawn(): GpuLike {
  if (!webgpuModule) {
    try {
      webgpuModule = require("webgpu") as typeof webgpuModule;
    } catch (e) {
      throw new BackendUnavailable(`the "webgpu" package (Dawn for Node) did not load: ${(e as Error).message}`);
    }
  }
  const g = globalThis as unknown as Record<string, unknown>;
  Object.assign(g, webgpuModule!.globals);
  const nav = (g.navigator ?? {}) as Record<string, unknown>;
  if (!nav.gpu) {
    const gpu = webgpuModule!.create(dawnOptions());
    try {
      Object.defineProperty(nav, "gpu", { value: gpu, configurable: true, writable: true });
    } catch {
      /* fall through to replacing navigator */
    }
    if (!g.navigator) g.navigator = nav;
    else if ((g.navigator as Record<string, unknown>).gpu !== gpu) {
      Object.defineProperty(g, "navigator", { value: { ...(g.navigator as object), gpu }, configurable: true, writable: true });
    }
  }
  return (g.navigator as { gpu: GpuLike }).gpu;
}

/**
 * Why Dawn may have found no adapter, and what to do, from the Vulkan variables in
 * `env`: no driver named at all, or named drivers that gave no device (seen on an
 * NVIDIA H200 whose driver was mounted without glvnd: its ICD loads but returns no
 * vkCreateInstance).
 */
export function noAdapterHint(env: NodeJS.ProcessEnv): string {
  const named = env.VK_ICD_FILENAMES || env.VK_DRIVER_FILES;
  const setup = env.PBIP_GPU_BUNDLE ? "" : " On a CPU-only machine, `npm run setup` unpacks Mesa lavapipe; then start the process with `. .cache/vulkan/env.sh` sourced.";
  if (!named) return `no Vulkan driver is named (VK_ICD_FILENAMES) and the loader's default folders gave none.${setup}`;
  return (
    `the Vulkan loader was given ${named} but got no device from it. Run again with VK_LOADER_DEBUG=error to see why the driver was rejected; ` +
    "an NVIDIA driver also needs glvnd's libGLdispatch.so.0 and libEGL.so.1 (and libX11/libXext) on the library path " +
    "(Debian/Ubuntu: libglvnd0 libegl1 libx11-6 libxext6; the GPU bundle's run.sh fills in those the system lacks)." +
    setup
  );
}

/** Ask Dawn for an adapter and describe it; throws BackendUnavailable if there is none. */
export async function probeWebGpuAdapter(): Promise<AdapterInfo> {
  const gpu = loadDawn();
  const adapter = (await gpu.requestAdapter({ powerPreference: "high-performance" })) as
    | { info?: Record<string, unknown>; isFallbackAdapter?: boolean; requestAdapterInfo?: () => Promise<Record<string, unknown>> }
    | null;
  if (!adapter) {
    throw new BackendUnavailable(`WebGPU found no adapter through Dawn (${dawnOptions().join(" ") || "default backend"}): ${noAdapterHint(process.env)}`);
  }
  const info = adapter.info ?? (adapter.requestAdapterInfo ? await adapter.requestAdapterInfo() : {});
  const s = (k: string) => String(info[k] ?? "");
  const text = `${s("vendor")} ${s("architecture")} ${s("device")} ${s("description")}`;
  const software = Boolean(adapter.isFallbackAdapter || info.isFallbackAdapter) || SOFTWARE_ADAPTER.test(text);
  return { vendor: s("vendor"), architecture: s("architecture"), device: s("device"), description: s("description"), software };
}

/**
 * On Linux, whether a Vulkan loader (libvulkan.so.1) can be found, without loading
 * Dawn (which prints warnings to stderr when it cannot load Vulkan). Elsewhere true.
 */
export function vulkanLoaderFound(): boolean {
  if (process.platform !== "linux") return true;
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? "").split(":").filter(Boolean),
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
    "/usr/local/lib",
  ];
  if (dirs.some((d) => fs.existsSync(path.join(d, "libvulkan.so.1")))) return true;
  try {
    return /libvulkan\.so\.1/.test(execFileSync("/sbin/ldconfig", ["-p"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }));
  } catch {
    return false;
  }
}

async function tryWebGpu(auto: boolean, acceptSoftware: boolean): Promise<Partial<BackendReport>> {
  if (auto && !vulkanLoaderFound()) {
    throw new BackendUnavailable("no Vulkan loader (libvulkan.so.1) on this machine, so no WebGPU adapter (install the GPU driver's Vulkan support; for CPU emulation see kernel-setup/setup.sh)");
  }
  const adapter = await probeWebGpuAdapter();
  if (auto && adapter.software && !acceptSoftware) {
    throw new BackendUnavailable(`WebGPU adapter "${adapter.description || adapter.device}" is a software rasteriser, not a GPU`);
  }
  // The WebGPU backend registers itself at import time only if navigator.gpu exists,
  // so it is required here, after Dawn has been installed.
  const webgpuPkg = require("@tensorflow/tfjs-backend-webgpu") as { WebGPUBackend: new (device: unknown, adapterInfo?: unknown) => tf.KernelBackend };
  if (!tf.findBackendFactory("webgpu")) throw new BackendUnavailable("@tensorflow/tfjs-backend-webgpu did not register");
  registerWebGpuWithFullLimits(webgpuPkg.WebGPUBackend);
  if (!(await tf.setBackend("webgpu"))) throw new BackendUnavailable("tfjs could not initialise the WebGPU backend");
  registerWebGpuKernels();
  explainSyncReads(tf.backend() as unknown as { readSync(dataId: object): unknown });
  const kind = adapter.software ? "software adapter" : "GPU";
  return {
    adapter,
    device: `${kind}: ${adapter.description || adapter.device || adapter.vendor} (${adapter.vendor}${adapter.architecture ? ", " + adapter.architecture : ""})`,
    threads: 1,
  };
}

/**
 * In Node, the WebGPU backend cannot read a GPU tensor synchronously (its readSync
 * draws through an OffscreenCanvas, which Node lacks): `dataSync()`/`arraySync()`
 * fail with "OffscreenCanvas is not defined". Replace that with an error that says
 * what to do instead.
 */
function explainSyncReads(backend: { readSync(dataId: object): unknown }): void {
  const orig = backend.readSync.bind(backend);
  backend.readSync = (dataId: object) => {
    try {
      return orig(dataId);
    } catch (e) {
      if (e instanceof ReferenceError && /OffscreenCanvas/.test(e.message)) {
        throw new Error("dataSync()/arraySync() cannot read a WebGPU tensor in Node: use `await tensor.data()` or `await tensor.array()`");
      }
      throw e;
    }
  };
}

let webgpuFactoryReplaced = false;

/**
 * Register the WebGPU backend with a device that asks for the adapter's own limits
 * on storage buffers per shader stage. tfjs 4.22 requests the WebGPU defaults (8),
 * so an op with many inputs (addN of 8 or more tensors, which gradient code makes)
 * fails validation ("number of storage buffers (10) exceeds the maximum (8)") and
 * silently returns garbage. Otherwise the same device request as tfjs's own.
 */
function registerWebGpuWithFullLimits(WebGPUBackend: new (device: unknown, adapterInfo?: unknown) => tf.KernelBackend): void {
  if (webgpuFactoryReplaced) return;
  webgpuFactoryReplaced = true;
  tf.removeBackend("webgpu");
  tf.registerBackend(
    "webgpu",
    async () => {
      const gpu = (globalThis as unknown as { navigator: { gpu: GpuLike } }).navigator.gpu;
      const adapter = (await gpu.requestAdapter({ powerPreference: "high-performance" })) as {
        features: Set<string>;
        limits: Record<string, number>;
        info?: unknown;
        requestDevice(d: unknown): Promise<unknown>;
      };
      const requiredFeatures: string[] = [];
      if (adapter.features.has("timestamp-query")) requiredFeatures.push("timestamp-query");
      const l = adapter.limits;
      const requiredLimits: Record<string, number> = {};
      for (const k of [
        "maxComputeWorkgroupStorageSize",
        "maxComputeWorkgroupsPerDimension",
        "maxStorageBufferBindingSize",
        "maxBufferSize",
        "maxComputeWorkgroupSizeX",
        "maxComputeInvocationsPerWorkgroup",
        "maxStorageBuffersPerShaderStage",
        "maxBindingsPerBindGroup",
      ]) {
        if (typeof l[k] === "number") requiredLimits[k] = l[k]!;
      }
      const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
      return new WebGPUBackend(device, adapter.info);
    },
    3,
  );
}

async function tryTensorflow(): Promise<Partial<BackendReport>> {
  let loaded: string | undefined;
  const errors: string[] = [];
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      require(pkg);
      loaded = pkg;
      break;
    } catch (e) {
      errors.push(`${pkg}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  if (!loaded) {
    throw new BackendUnavailable(`no native TensorFlow binding is installed (optional; see README "Compute backends"): ${errors.join("; ")}`);
  }
  if (!(await tf.setBackend("tensorflow"))) throw new BackendUnavailable(`${loaded} loaded but the backend did not initialise`);
  return { device: `native TensorFlow via ${loaded}`, threads: 0, versions: { [loaded]: packageVersion(loaded) ?? "?" } };
}

async function tryWasm(threads: number): Promise<Partial<BackendReport>> {
  let wasm: typeof import("@tensorflow/tfjs-backend-wasm");
  try {
    wasm = require("@tensorflow/tfjs-backend-wasm");
  } catch (e) {
    throw new BackendUnavailable(`@tensorflow/tfjs-backend-wasm did not load: ${(e as Error).message}`);
  }
  const wasmDir = process.env.PBIP_WASM_DIR;
  if (wasmDir) wasm.setWasmPaths(wasmDir.endsWith("/") ? wasmDir : wasmDir + "/");
  registerWasmKernels();
  // The Emscripten module installs process-wide handlers that rethrow every uncaught
  // error from inside its minified source (so Node prints ~40 kB of it). Remove them.
  const before = { ue: process.listeners("uncaughtException"), ur: process.listeners("unhandledRejection") };
  let threadNote: string | undefined;
  let ok = false;
  if (threads > 1) {
    if (tf.findBackend("wasm")) {
      threadNote = "the WASM backend had already started in this process; its thread count cannot change";
    } else {
      try {
        await initWasmThreaded(threads);
        ok = true;
      } catch (e) {
        threadNote = `the multi-threaded build did not start (${(e as Error).message.split("\n")[0]}); using one thread`;
      }
    }
  }
  if (!ok) ok = await tf.setBackend("wasm");
  for (const l of process.listeners("uncaughtException")) if (!before.ue.includes(l)) process.removeListener("uncaughtException", l);
  for (const l of process.listeners("unhandledRejection")) if (!before.ur.includes(l)) process.removeListener("unhandledRejection", l);
  if (!ok) throw new BackendUnavailable("the WASM backend did not initialise");
  guardWasmHeap(tf.backend());
  const got = backendMemory(tf.backend() as unknown as WasmBackendLike).shared && typeof wasm.getThreadsCount === "function" ? wasm.getThreadsCount() : 1;
  const simd = Boolean(await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT"));
  const relaxed = simd && enableRelaxedSimd();
  const note = threadNote ? ` (${threads} requested: ${threadNote})` : "";
  return { device: `WebAssembly${simd ? " SIMD" : ""}${relaxed ? " (relaxed SIMD for pbip's products)" : ""} on the CPU, ${got} thread${got === 1 ? "" : "s"}${note}`, threads: got };
}

async function tryCpu(): Promise<Partial<BackendReport>> {
  if (!(await tf.setBackend("cpu"))) throw new BackendUnavailable("the CPU backend did not initialise");
  return { device: "pure-JavaScript CPU backend (slowest)", threads: 1 };
}

const TRY: Record<BackendName, (auto: boolean, acceptSoftware: boolean, wasmThreads: number) => Promise<Partial<BackendReport>>> = {
  webgpu: tryWebGpu,
  tensorflow: tryTensorflow,
  wasm: (_auto, _soft, threads) => tryWasm(threads),
  cpu: tryCpu,
};

/**
 * Pick, initialise and report the compute backend.
 *
 * @example
 * const report = await initBackend();            // auto
 * const r = await initBackend({ backend: "wasm" }); // forced; throws if WASM cannot start
 */
export async function initBackend(options: InitBackendOptions = {}): Promise<BackendReport> {
  let choice: BackendChoice;
  let source: string;
  if (options.backend) {
    choice = options.backend;
    source = "code";
  } else if (process.env.PBIP_BACKEND) {
    choice = parseBackendChoice(process.env.PBIP_BACKEND, "PBIP_BACKEND");
    source = "PBIP_BACKEND";
  } else {
    choice = "auto";
    source = "default";
  }
  const auto = choice === "auto";
  const wasmThreads = wasmThreadsFor(options);
  registerFastGradients();
  const order: BackendName[] = auto ? [...BACKEND_NAMES] : [choice as BackendName];
  const attempts: BackendAttempt[] = [];
  for (const name of order) {
    try {
      const part = await TRY[name](auto, options.acceptSoftwareGpu ?? false, wasmThreads);
      attempts.push({ backend: name, ok: true, note: "selected" });
      const report: BackendReport = {
        backend: name,
        chosenBy: auto ? "auto" : `forced by ${source === "code" ? "the caller" : source}`,
        device: part.device ?? name,
        adapter: part.adapter,
        threads: part.threads ?? 1,
        versions: {
          node: process.versions.node,
          "@tensorflow/tfjs": tf.version.tfjs,
          ...(name === "wasm" ? { "@tensorflow/tfjs-backend-wasm": packageVersion("@tensorflow/tfjs-backend-wasm") ?? "?" } : {}),
          ...(name === "webgpu"
            ? { "@tensorflow/tfjs-backend-webgpu": packageVersion("@tensorflow/tfjs-backend-webgpu") ?? "?", webgpu: packageVersion("webgpu") ?? "?" }
            : {}),
          ...(part.versions ?? {}),
        },
        attempts,
      };
      current = report;
      if (options.verbose) console.error(formatBackendReport(report));
      return report;
    } catch (e) {
      const msg = (e as Error).message;
      attempts.push({ backend: name, ok: false, note: msg });
      if (!auto) {
        throw new Error(`backend "${name}" (forced by ${source === "code" ? "the caller" : source}) cannot start: ${msg}`);
      }
    }
  }
  throw new Error(`no compute backend could start:\n${attempts.map((a) => `  ${a.backend}: ${a.note}`).join("\n")}`);
}

/** A short multi-line description of a backend report, for logs and `pbip doctor`. */
export function formatBackendReport(r: BackendReport): string {
  const lines = [
    `backend: ${r.backend} (${r.chosenBy})`,
    `device:  ${r.device}`,
    `threads: ${r.threads === 0 ? "native thread pool" : r.threads}`,
    `versions: ${Object.entries(r.versions).map(([k, v]) => `${k} ${v}`).join(", ")}`,
  ];
  const skipped = r.attempts.filter((a) => !a.ok);
  if (skipped.length) lines.push("not used:", ...skipped.map((a) => `  ${a.backend}: ${a.note}`));
  return lines.join("\n");
}

export { packageVersion };
