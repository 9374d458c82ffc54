/**
 * The self-contained GPU bundle (scripts/bundle-gpu.mjs, launcher
 * scripts/gpu-bundle/run.sh): it builds (or a fresh dist-gpu/ is reused), stays
 * under 60 MiB with no node_modules folder, and its launcher runs the smoke
 * benchmark on the WebGPU backend with Mesa lavapipe (the CPU Vulkan driver of
 * `npm run setup`) from a PATH that has no Node.js, reporting the llvmpipe adapter
 * as software and writing the benchmark JSON. It also refuses the software
 * adapter when --allow-software is not given, and fills in glvnd's libraries from
 * the bundle only where the system's linker cache lacks them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { readGpuEmulationEnv, withGpuEmulation, GPU_EMULATION_HINT } from "../../src/nbrun";
import type { BenchReport } from "../../src/cli/commands/bench";
import { tmpDir } from "../tmp";

const ROOT = path.resolve(__dirname, "..", "..");
const DIST = path.join(ROOT, "dist-gpu");
const LIMIT = 60 * 1024 * 1024;
/** What the launcher needs from the system (no node among them). */
const TOOLS = ["bash", "sh", "sed", "grep", "tar", "gzip", "mkdir", "mktemp", "mv", "rm", "ln", "touch", "date", "uname", "id", "head", "basename", "dirname", "cat", "cksum", "cut"];
/**
 * The measured paths the smoke run covers here: the release step in both region
 * modes (MiT + Swin code paths, tiny configurations) and pseudo-mask generation.
 * The notebook profile's MobileNetV2 cases are left out to keep the test within a
 * few minutes on lavapipe (shader compilation dominates); `./run.sh bench --smoke`
 * and `npm run bench -- --smoke` run them too.
 */
const SMOKE_CASES = "release-image,release-feature,cam";

/** Newest modification time under the bundle's inputs. */
function newestInput(): number {
  let newest = 0;
  const walk = (p: string) => {
    if (!fs.existsSync(p)) return;
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) walk(path.join(p, e));
    else newest = Math.max(newest, st.mtimeMs);
  };
  for (const p of ["src", "data-manifests", "scripts/bundle-gpu.mjs", "scripts/gpu-bundle", "bench/torch-reference.py", "package-lock.json"]) walk(path.join(ROOT, p));
  return newest;
}

function duBytes(dir: string): number {
  const r = spawnSync("du", ["-sk", dir], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return Number(r.stdout.split(/\s/)[0]) * 1024;
}

function findAll(dir: string, name: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.name === name) out.push(p);
    if (e.isDirectory()) out.push(...findAll(p, name));
  }
  return out;
}

/** A folder of links to the launcher's tools only: a PATH on which no `node` exists. */
function toolboxPath(dir: string, extra: string[]): string {
  fs.mkdirSync(dir, { recursive: true });
  for (const t of [...TOOLS, ...extra]) {
    const r = spawnSync("sh", ["-c", `command -v ${t}`], { encoding: "utf8" });
    assert.equal(r.status, 0, `the launcher test needs ${t} on this machine`);
    fs.symlinkSync(r.stdout.trim(), path.join(dir, t));
  }
  return dir;
}

function runLauncher(args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; out: string; err: string; seconds: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn("bash", [path.join(DIST, "run.sh"), ...args], { env, cwd: os.tmpdir(), stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, out, err, seconds: (Date.now() - t0) / 1000 });
    });
  });
}

test("GPU bundle: under 60 MiB, no node_modules, smoke benchmark on lavapipe without Node on PATH", { timeout: 20 * 60_000 }, async () => {
  assert.ok(process.platform === "linux" && process.arch === "x64", "the GPU bundle is built and tested on linux-x64");
  const emu = readGpuEmulationEnv();
  if (!emu) throw new Error(`GPU bundle test: ${GPU_EMULATION_HINT}`);

  // 1. Build, unless dist-gpu/ is newer than every input.
  const manifest = path.join(DIST, "manifest.json");
  const fresh = fs.existsSync(manifest) && fs.existsSync(path.join(DIST, "run.sh")) && fs.statSync(manifest).mtimeMs > newestInput();
  const tb = Date.now();
  if (!fresh) {
    const r = spawnSync(process.execPath, [path.join(ROOT, "scripts", "bundle-gpu.mjs"), "--out", DIST], { cwd: ROOT, encoding: "utf8", timeout: 15 * 60_000 });
    assert.equal(r.status, 0, `bundle build failed:\n${r.stderr.slice(-3000)}`);
  }
  console.log(`bundle ${fresh ? "reused (fresh)" : "built"} in ${((Date.now() - tb) / 1000).toFixed(1)} s`);

  // 2. Size and contents.
  const bytes = duBytes(DIST);
  console.log(`du dist-gpu: ${(bytes / 1024 / 1024).toFixed(1)} MiB`);
  assert.ok(bytes < LIMIT, `dist-gpu is ${(bytes / 1024 / 1024).toFixed(1)} MiB, over 60 MiB`);
  assert.deepEqual(findAll(DIST, "node_modules"), [], "the bundle holds no node_modules folder");
  for (const f of ["run.sh", "app/pbip.cjs", "app/tfjs-backend-wasm-simd.wasm", "README.txt", "torch-reference.py"]) assert.ok(fs.existsSync(path.join(DIST, f)), `dist-gpu/${f} exists`);

  // 3. A PATH without Node, a fresh unpack folder, a fresh HOME; the lavapipe driver.
  const tmp = tmpDir("pbip-bundle-test-");
  const payload = (JSON.parse(fs.readFileSync(manifest, "utf8")) as { payload: { file: string } }).payload.file;
  const bin = toolboxPath(path.join(tmp, "bin"), payload.endsWith(".xz") ? ["xz"] : []);
  assert.notEqual(spawnSync("sh", ["-c", "command -v node"], { env: { PATH: bin } }).status, 0, "node must not be on the test PATH");
  const lava = withGpuEmulation({}, emu);
  const env: NodeJS.ProcessEnv = {
    PATH: bin,
    HOME: path.join(tmp, "home"),
    PBIP_GPU_CACHE: path.join(tmp, "unpacked"),
    VK_ICD_FILENAMES: lava.VK_ICD_FILENAMES,
    LD_LIBRARY_PATH: lava.LD_LIBRARY_PATH,
    // lavapipe compiles every shader on first use (most of this test's time); its
    // disk cache in the project makes reruns faster (a fresh clone starts cold).
    MESA_SHADER_CACHE_DIR: path.join(ROOT, ".cache", "mesa-shader-cache"),
  };
  fs.mkdirSync(env.HOME!, { recursive: true });

  // The software adapter is refused without --allow-software (this run also unpacks the payload).
  const probe = await runLauncher(["probe"], env, 5 * 60_000);
  console.log(`run.sh probe (first run: unpack + adapter): ${probe.seconds.toFixed(1)} s, exit ${probe.code}`);
  assert.equal(probe.code, 3, `probe on lavapipe must refuse the software adapter (exit 3):\n${probe.err.slice(-2000)}`);
  assert.match(probe.err, /llvmpipe/);
  assert.match(probe.err, /SOFTWARE/);
  assert.ok(fs.existsSync(path.join(env.PBIP_GPU_CACHE!)), "the payload was unpacked into PBIP_GPU_CACHE");
  assert.doesNotMatch(probe.err, /the system lacks/, "this machine has glvnd and the X11 libraries: no bundled copy is used");

  // A system without glvnd's dispatcher and EGL (an NVIDIA driver mounted alone: its
  // ICD then yields no vkCreateInstance): the launcher fills in exactly those two.
  const realLdconfig = ["/sbin/ldconfig", "/usr/sbin/ldconfig"].find((f) => fs.existsSync(f));
  assert.ok(realLdconfig, "the launcher test needs ldconfig");
  const hide = path.join(tmp, "hide-glvnd");
  fs.mkdirSync(hide);
  fs.writeFileSync(path.join(hide, "ldconfig"), `#!/bin/sh\n${realLdconfig} -p | grep -v -e 'libGLdispatch\\.so\\.0 ' -e 'libEGL\\.so\\.1 '\n`, { mode: 0o755 });
  const hidden = await runLauncher(["probe"], { ...env, PATH: `${hide}:${bin}` }, 5 * 60_000);
  assert.equal(hidden.code, 3, `probe without glvnd in the linker cache:\n${hidden.err.slice(-2000)}`);
  assert.match(hidden.err, /the system lacks (libEGL\.so\.1 libGLdispatch\.so\.0|libGLdispatch\.so\.0 libEGL\.so\.1): using the bundled copies/);
  const unpacked = fs.readdirSync(env.PBIP_GPU_CACHE!).filter((d) => fs.existsSync(path.join(env.PBIP_GPU_CACHE!, d, ".complete")));
  assert.equal(unpacked.length, 1);
  const fills = fs.readdirSync(path.join(env.PBIP_GPU_CACHE!, unpacked[0]!)).filter((d) => d.startsWith("fill-"));
  assert.equal(fills.length, 1, "one folder of links for the missing set");
  const links = fs.readdirSync(path.join(env.PBIP_GPU_CACHE!, unpacked[0]!, fills[0]!)).sort();
  assert.deepEqual(links, ["libEGL.so.1", "libGLdispatch.so.0"]);
  for (const l of links) assert.ok(fs.statSync(path.join(env.PBIP_GPU_CACHE!, unpacked[0]!, fills[0]!, l)).size > 10_000, `${l} resolves to the bundled library`);

  // The smoke benchmark with --allow-software.
  const out = path.join(tmp, "runs");
  const r = await runLauncher(["bench", "--smoke", "--allow-software", "--only", SMOKE_CASES, "--out", out], env, 15 * 60_000);
  console.log(`run.sh bench --smoke --allow-software --only ${SMOKE_CASES}: ${r.seconds.toFixed(1)} s, exit ${r.code}`);
  assert.equal(r.code, 0, `smoke benchmark failed:\n${r.err.slice(-4000)}\n${r.out.slice(-2000)}`);
  assert.match(r.err, /SOFTWARE adapter/);
  const benchDir = path.join(out, "bench");
  const stamps = fs.readdirSync(benchDir);
  assert.equal(stamps.length, 1);
  const file = path.join(benchDir, stamps[0]!, "bench.json");
  const rep = JSON.parse(fs.readFileSync(file, "utf8")) as BenchReport;
  assert.equal(rep.kind, "pbip-bench");
  assert.equal(rep.backends.length, 1);
  const b = rep.backends[0]!;
  assert.equal(b.backend, "webgpu");
  assert.equal(b.software, true);
  assert.match(`${b.adapter?.description} ${b.adapter?.device}`, /llvmpipe/i);
  assert.equal(b.sizes, "smoke");
  assert.deepEqual(b.failures, []);
  assert.deepEqual(
    b.cases.map((c) => c.name),
    SMOKE_CASES.split(","),
  );
  for (const c of b.cases) {
    if (c.kind === "train") {
      assert.ok(c.median.step > 0 && Number.isFinite(c.median.step), `${c.name}: a timed step`);
      assert.ok(c.median.pairs > 0, `${c.name}: the step matched pairs`);
    } else {
      assert.ok(c.noTta.msPerPatch > 0 && c.tta.msPerPatch > 0, "cam timings");
    }
  }
  assert.match(r.out, /webgpu \(software\) \[smoke\]/, "the printed table labels the adapter as software");
  assert.ok(fs.existsSync(file.replace(/\.json$/, ".txt")), "bench.txt beside bench.json");
});
