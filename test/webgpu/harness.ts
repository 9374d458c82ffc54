/**
 * Backend comparison harness: run the same cases on the WebGPU backend (Dawn on
 * Mesa lavapipe here, the vendor's Vulkan driver on a GPU machine) and on the
 * pure-JS CPU backend, each in its own child process, and compare every output.
 *
 * A case module (e.g. ./cases/ops.ts) exports `cases: BackendCase[]`; each case
 * returns named tensors (forward outputs and gradients). The child runs every case
 * of one module on the backend named by PBIP_BACKEND, checks that no tensor leaks,
 * and writes the outputs as float32. The WebGPU child gets the lavapipe
 * environment (`.cache/vulkan/env.json`, written by `npm run setup`) unless the
 * process already has a Vulkan driver configured (VK_ICD_FILENAMES set).
 *
 * To add model blocks: write `cases/<block>.ts` exporting `cases`, and a test file
 * `test/webgpu/<block>.test.ts` that calls `compareBackendsTest("cases/<block>.ts")`.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type * as tf from "@tensorflow/tfjs";
import { readGpuEmulationEnv, withGpuEmulation, GPU_EMULATION_HINT } from "../../src/nbrun";
import { float32FromLE } from "../../src/util";
import { maxRelErr } from "../helpers";
import { tmpDir } from "../tmp";

/** One comparison case: named outputs, typically a forward result and gradients. */
export interface BackendCase {
  name: string;
  /** Relative tolerance for maxRelErr (max |a-b| / max |ref|) of every output; default 1e-4. */
  tol?: number;
  /** Per-output tolerances, overriding `tol`. */
  tols?: Record<string, number>;
  /** Compute the outputs; the harness reads and disposes the returned tensors. */
  run(): Record<string, tf.Tensor> | Promise<Record<string, tf.Tensor>>;
}

/** What a child reports for one case. */
export interface CaseOutput {
  name: string;
  ms: number;
  /** Tensors alive after the case minus before (after disposing its outputs); 0 when nothing leaked. */
  leaked: number;
  outputs: Record<string, { shape: number[]; data: string }>;
  error?: string;
}

/** What a child reports. */
export interface ChildReport {
  backend: string;
  device: string;
  initMs: number;
  cases: CaseOutput[];
}

const CHILD = path.join(__dirname, "child.ts");

/** Run one case module in a child process on `backend`; resolves with its report. */
export function runCasesInChild(caseModule: string, backend: "cpu" | "webgpu" | "wasm", timeoutMs = 600_000): Promise<ChildReport> {
  let env: NodeJS.ProcessEnv = { ...process.env, PBIP_BACKEND: backend };
  if (backend === "webgpu" && !process.env.VK_ICD_FILENAMES) {
    const emu = readGpuEmulationEnv();
    if (!emu) throw new Error(`WebGPU tests: ${GPU_EMULATION_HINT}`);
    env = withGpuEmulation(env, emu);
  }
  const out = path.join(tmpDir("pbip-webgpu-"), "report.json");
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", CHILD, path.resolve(__dirname, caseModule), out], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let log = "";
    child.stdout.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-6000)));
    child.stderr.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-6000)));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0 && fs.existsSync(out)) {
        const report = JSON.parse(fs.readFileSync(out, "utf8")) as ChildReport;
        fs.rmSync(path.dirname(out), { recursive: true, force: true });
        resolve(report);
      } else {
        reject(new Error(`${backend} child for ${caseModule} exited with ${code ?? signal}:\n${log.trim()}`));
      }
    });
  });
}

function decode(o: { data: string }): Float32Array {
  return float32FromLE(Buffer.from(o.data, "base64"));
}

/**
 * Register a node:test test that runs `caseModule` (relative to test/webgpu/) on
 * WebGPU and on the CPU backend and compares every output of every case (one
 * subtest per case). Fails, naming `npm run setup`, when lavapipe is missing.
 */
export function compareBackendsTest(caseModule: string, opts: { timeoutMs?: number } = {}): void {
  test(`WebGPU vs CPU: ${caseModule}`, { timeout: opts.timeoutMs ?? 600_000 }, async (t) => {
    const { cases } = (await import(path.resolve(__dirname, caseModule))) as { cases: BackendCase[] };
    const [gpu, cpu] = await Promise.all([runCasesInChild(caseModule, "webgpu"), runCasesInChild(caseModule, "cpu")]);
    assert.equal(gpu.backend, "webgpu", `the WebGPU child ran on ${gpu.backend}`);
    t.diagnostic(`webgpu: ${gpu.device}; init ${gpu.initMs} ms, cases ${gpu.cases.reduce((s, c) => s + c.ms, 0)} ms`);
    t.diagnostic(`cpu: cases ${cpu.cases.reduce((s, c) => s + c.ms, 0)} ms`);
    for (const c of cases) {
      let worst = 0;
      await t.test(c.name, () => {
        const g: CaseOutput | undefined = gpu.cases.find((x) => x.name === c.name);
        const r: CaseOutput | undefined = cpu.cases.find((x) => x.name === c.name);
        if (!g || !r) return assert.fail(`case ${c.name} missing from a child's report`);
        const head = (e: string) => e.split("\n").slice(0, 4).join("\n");
        assert.ok(r.error === undefined, `cpu: ${head(r.error ?? "")}`);
        assert.ok(g.error === undefined, `webgpu: ${head(g.error ?? "")}`);
        assert.equal(g.leaked, 0, `webgpu: ${g.leaked} tensor(s) leaked`);
        assert.equal(r.leaked, 0, `cpu: ${r.leaked} tensor(s) leaked`);
        assert.deepEqual(Object.keys(g.outputs).sort(), Object.keys(r.outputs).sort());
        assert.ok(Object.keys(r.outputs).length > 0, `case ${c.name} returned no outputs, so nothing would be compared`);
        for (const [k, ref] of Object.entries(r.outputs)) {
          const got: { shape: number[]; data: string } | undefined = g.outputs[k];
          if (!got) return assert.fail(`${k}: missing from the webgpu output`);
          assert.deepEqual(got.shape, ref.shape, `${k}: shape`);
          const a = decode(got);
          const b = decode(ref);
          assert.ok(a.every(Number.isFinite), `${k}: webgpu output has NaN/Inf`);
          const err = maxRelErr(a, b);
          const tol = c.tols?.[k] ?? c.tol ?? 1e-4;
          worst = Math.max(worst, err);
          assert.ok(err <= tol, `${c.name} / ${k}: max relative error ${err.toExponential(2)} > ${tol} (webgpu ${g.ms} ms)`);
        }
        t.diagnostic(`${c.name}: max rel err ${worst.toExponential(1)}, webgpu ${g.ms} ms, cpu ${r.ms} ms`);
      });
    }
  });
}
