/**
 * TensorFlow.js's multi-threaded WASM build in Node.
 *
 * tfjs-backend-wasm 4.22 ships a threaded SIMD build (XNNPACK's thread pool on
 * Emscripten pthreads, i.e. worker threads over a shared memory) but never picks it
 * in Node: its `WASM_HAS_MULTITHREAD_SUPPORT` flag is false when running in Node
 * (tfjs issue #3830). {@link initWasmThreaded} starts it anyway. Forcing the flag is
 * not enough, for three reasons worked around while the backend initialises (and
 * only then):
 *   1. the pthread workers are started from `URL.createObjectURL(blob)` URLs, which
 *      Node's worker_threads cannot load: the blobs' text is written to files and
 *      their paths returned instead (a Blob subclass records the text);
 *   2. the worker evaluates the factory's source (`factory.toString()`), which refers
 *      to the bundle's module-scope helpers (commonjsGlobal, require$$0/1/3/4 = fs,
 *      path, perf_hooks, os): the worker file starts by defining them;
 *   3. the C++ side caps the pool at os.cpus().length / 2 (it assumes two hardware
 *      threads per core), i.e. 1 on a 2-vCPU machine: os.cpus() reports 2n entries
 *      during initialisation.
 * Then XNNPACK runs convolutions, depthwise convolutions and single matrix products
 * on n threads; TF.js's other kernels run on the calling thread, and pbip's own kernels
 * on n threads through its worker pool on the same shared memory (`./wasm-pool`).
 * Measured with `npx tsx bench/wasm-threads.ts`.
 *
 * The workarounds name internals of one tfjs-backend-wasm version; another version is
 * refused with a clear error, and {@link initBackend} then falls back to the shipped
 * single-threaded build and says so in its report.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";

/**
 * Write a script a worker is about to load: once (Emscripten asks for the same worker
 * script for every pthread it starts), and by rename, so a worker that is already
 * reading it never sees it truncated. Rewriting it in place for each new worker let an
 * earlier worker load an empty script and exit at once, and the backend's start then
 * waited on it forever: the process ran out of work and exited 0 having done nothing.
 */
function writeOnce(file: string, text: string): void {
  if (fs.existsSync(file) && fs.readFileSync(file, "utf8") === text) return;
  const tmp = `${file}.${process.pid}.${Math.random().toString(16).slice(2)}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/** This machine's name as it goes into scratch folder names (containers sharing /tmp have their own PIDs and, as a rule, their own host names). */
function scratchHost(): string {
  return os.hostname().replace(/[^A-Za-z0-9]/g, "").slice(0, 32) || "host";
}

/**
 * Remove `pbip-wasm-threads-<host>-<pid>-*` folders that this host's processes
 * left when they were interrupted by a signal: only this host's, only our user's,
 * only where the process no longer runs.
 */
export function removeOrphanScratch(tmp = os.tmpdir()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(tmp);
  } catch {
    return removed;
  }
  for (const name of names) {
    const m = /^pbip-wasm-threads-([A-Za-z0-9]+)-(\d+)-/.exec(name);
    if (!m || m[1] !== scratchHost() || Number(m[2]) === process.pid) continue;
    try {
      process.kill(Number(m[2]), 0);
      continue; // still running
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ESRCH") continue; // not ours to judge (EPERM: another user's live process)
    }
    // Only our own user's folders (a shared /tmp holds others'), and never fail the backend's start over one.
    try {
      const dir = path.join(tmp, name);
      if (typeof process.getuid === "function" && fs.statSync(dir).uid !== process.getuid()) continue;
      fs.rmSync(dir, { recursive: true, force: true });
      removed.push(name);
    } catch {
      /* left for its owner */
    }
  }
  return removed;
}

/** tfjs-backend-wasm version whose module-scope helper names the worker prelude knows. */
const KNOWN_WASM_VERSION = "4.22.0";

/**
 * Initialise the WASM backend with the multi-threaded SIMD build and `threads`
 * threads (call instead of `tf.setBackend("wasm")`). Returns the thread count the
 * backend reports. Throws when the build cannot start; the caller falls back.
 */
export async function initWasmThreaded(threads: number, scratchDir?: string): Promise<number> {
  const wasm = require("@tensorflow/tfjs-backend-wasm") as typeof import("@tensorflow/tfjs-backend-wasm");
  if (wasm.version_wasm !== KNOWN_WASM_VERSION) throw new Error(`threaded WASM shim written for tfjs-backend-wasm ${KNOWN_WASM_VERSION}, found ${wasm.version_wasm}`);
  if (typeof SharedArrayBuffer === "undefined") throw new Error("no SharedArrayBuffer in this Node");
  if (!Number.isInteger(threads) || threads < 2) throw new Error(`initWasmThreaded: threads must be an integer >= 2, got ${threads}`);
  if (!scratchDir) {
    // The worker scripts live as long as the process (Emscripten may start workers later).
    // A process killed by a signal skips its exit handler: remove what such processes left.
    removeOrphanScratch();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pbip-wasm-threads-${scratchHost()}-${process.pid}-`));
    process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
    scratchDir = dir;
  }
  const mainFile = path.join(scratchDir, "tfjs-backend-wasm-threaded-simd.main.js");
  const workerFile = path.join(scratchDir, "tfjs-backend-wasm-threaded-simd.worker.js");
  const prelude = [
    "// pbip: module-scope helpers the threaded factory's source refers to, and its main script's path.",
    "globalThis.commonjsGlobal = globalThis;",
    "Object.assign(globalThis, { require$$0: require('fs'), require$$1: require('path'), require$$3: require('perf_hooks'), require$$4: require('os') });",
    `URL.createObjectURL = function () { return ${JSON.stringify(mainFile)}; };`,
    "URL.revokeObjectURL = function () {};",
    "",
  ].join("\n");
  const texts = new WeakMap<object, string>();
  const OrigBlob = globalThis.Blob;
  class RecordingBlob extends OrigBlob {
    constructor(parts: NonNullable<ConstructorParameters<typeof Blob>[0]> = [], options?: ConstructorParameters<typeof Blob>[1]) {
      super(parts, options);
      const text = parts.map((p) => (typeof p === "string" ? p : "")).join("");
      texts.set(this, text);
      if (text.startsWith("var WasmBackendModuleThreadedSimd")) writeOnce(mainFile, text);
    }
  }
  const origCreate = URL.createObjectURL;
  const osm = require("os") as typeof import("os");
  const origCpus = osm.cpus;
  (globalThis as { Blob: typeof Blob }).Blob = RecordingBlob;
  URL.createObjectURL = (obj: Blob) => {
    const text = texts.get(obj);
    if (text === undefined) return origCreate(obj);
    if (text.startsWith("var WasmBackendModuleThreadedSimd")) return mainFile;
    writeOnce(workerFile, prelude + text);
    return workerFile;
  };
  osm.cpus = () => {
    const c = origCpus();
    return Array.from({ length: 2 * threads }, (_, i) => c[i % c.length]!);
  };
  tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", true);
  wasm.setThreadsCount(threads);
  try {
    if (!(await tf.setBackend("wasm"))) throw new Error("the threaded WASM backend did not initialise");
  } catch (e) {
    // Leave the flags as they were, so that a fallback initialises the shipped build.
    tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
    wasm.setThreadsCount(1);
    throw e;
  } finally {
    (globalThis as { Blob: typeof Blob }).Blob = OrigBlob;
    URL.createObjectURL = origCreate;
    osm.cpus = origCpus;
  }
  type PthreadWorker = { unref?: () => void };
  const mod = (tf.backend() as unknown as { wasm: { wasmMemory?: { buffer: ArrayBuffer | SharedArrayBuffer }; PThread?: { runningWorkers: PthreadWorker[]; unusedWorkers: PthreadWorker[] } } }).wasm;
  if (!(mod.wasmMemory?.buffer instanceof SharedArrayBuffer)) throw new Error("the backend did not start the threaded build (memory is not shared)");
  // XNNPACK's pool threads run for the life of the process: let Node exit without them.
  for (const w of [...(mod.PThread?.runningWorkers ?? []), ...(mod.PThread?.unusedWorkers ?? [])]) w.unref?.();
  return wasm.getThreadsCount();
}
