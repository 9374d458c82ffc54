/**
 * The development setup behind `npm run setup` (`kernel-setup/setup.sh`).
 *
 * Idempotent steps, each skipped when already done and each printing one line:
 *   build    compile src/ to dist/ and link `node_modules/pbip` to the checkout,
 *            so notebooks `import { ... } from "pbip"`;
 *   jupyter  find a Python with jupyter_client + nbclient + nbconvert, or install
 *            Debian's packages (root or passwordless sudo), or say what to install;
 *   kernel   install the tslab kernelspec project-local (`.cache/jupyter`), or
 *            user-wide with `--user`;
 *   gpu-emu  unpack Mesa lavapipe into `.cache/vulkan` and prove that the WebGPU
 *            backend starts on it (skipped with `--no-gpu-emulation`);
 *   torch    PyTorch in /usr/bin/python3 for the reference tests (apt when possible);
 *   real-samples  the real H&E and IHC images (and the Visium spot list) into
 *            `.cache/real-samples`, from Debian's archive or upstream (`fetchRealSamples`);
 *            skipped with `--no-real-samples`.
 * `--check` reports the state of each step and changes nothing.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic } from "../util/fs";
import { devPaths } from "./paths";
import { ensureBuilt, staleSources, selfLinkState, linkSelf } from "./build";
import { findJupyterPython, findTslabKernelspec, kernelspecIsCurrent, which, JUPYTER_INSTALL_HINT, type JupyterPython } from "./jupyter";
import { installLavapipe, readGpuEmulationEnv, lddProblems, probeWebGpuWithLavapipe, type Log } from "./lavapipe";
import { fetchRealSamples, realSamplesPresent, REAL_SAMPLES } from "../data/real-samples";

/** Options of the setup (the flags of kernel-setup/setup.sh). */
export interface SetupOptions {
  /** Skip the Mesa lavapipe step (`--no-gpu-emulation`). */
  gpuEmulation: boolean;
  /** Install the kernelspec user-wide instead of project-local (`--user`). */
  user: boolean;
  /** Report only; change nothing (`--check`). */
  check: boolean;
  /** Skip the PyTorch step (`--no-torch`). */
  torch: boolean;
  /** Skip fetching the real samples (`--no-real-samples`). */
  realSamples: boolean;
}

type Status = "ok" | "done" | "skip" | "FAIL" | "todo";

/** One step's outcome. */
export interface StepResult {
  step: string;
  status: Status;
  message: string;
  seconds: number;
}

const DEBIAN_JUPYTER = ["jupyter-nbconvert", "jupyter-client", "python3-nbclient", "python3-ipython"];

/** How apt-get can be run with root rights here: directly, through `sudo -n`, or not at all. */
function aptRunner(): string[] | undefined {
  if (!which("apt-get")) return undefined;
  if (process.getuid?.() === 0) return [];
  if (which("sudo") && spawnSync("sudo", ["-n", "true"]).status === 0) return ["sudo", "-n"];
  return undefined;
}

/** `apt-get install` system packages, refreshing the system lists once if a package is unknown. */
function aptInstall(packages: string[]): void {
  const pre = aptRunner();
  if (!pre) throw new Error("apt-get with root rights is not available");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const cmd = (args: string[]) => {
    const all = [...pre, "apt-get", ...args];
    return spawnSync(all[0]!, all.slice(1), { encoding: "utf8", env, maxBuffer: 64 << 20 });
  };
  let r = cmd(["install", "-y", "-q", "--no-install-recommends", ...packages]);
  if (r.status !== 0 && /Unable to locate|no installation candidate|404|Failed to fetch/i.test(r.stderr + r.stdout)) {
    cmd(["update", "-q"]);
    r = cmd(["install", "-y", "-q", "--no-install-recommends", ...packages]);
  }
  if (r.status !== 0) {
    throw new Error(`apt-get install ${packages.join(" ")} failed:\n${`${r.stderr}\n${r.stdout}`.trim().split("\n").slice(-6).join("\n")}`);
  }
}

function stepBuild(o: SetupOptions): StepResult {
  const t0 = Date.now();
  const stale = staleSources();
  const link = selfLinkState();
  if (stale.length === 0 && link.ok) return res("build", "skip", "dist/ is up to date; node_modules/pbip links to the checkout", t0);
  if (o.check) {
    const what = [stale.length ? `${stale.length} source(s) newer than dist/` : "", link.ok ? "" : link.problem].filter(Boolean).join("; ");
    return res("build", "todo", what, t0);
  }
  try {
    const built = ensureBuilt();
    linkSelf();
    if (built.errors) return res("build", "FAIL", `${built.message}; node_modules/pbip -> ..\n${built.errors}`, t0);
    return res("build", "done", `${built.message}; node_modules/pbip -> ..`, t0);
  } catch (e) {
    return res("build", "FAIL", (e as Error).message, t0);
  }
}

function stepJupyter(o: SetupOptions): { result: StepResult; jupyter?: JupyterPython } {
  const t0 = Date.now();
  let search = findJupyterPython();
  const describe = (j: JupyterPython) =>
    `${j.python} (Python ${j.pythonVersion}; jupyter_client ${j.versions.jupyter_client}, nbclient ${j.versions.nbclient}, nbconvert ${j.versions.nbconvert})`;
  if (search.found) return { result: res("jupyter", "skip", describe(search.jupyter), t0), jupyter: search.jupyter };
  const tried = search.tried.map((t) => `${t.python}: ${t.problem}`).join("; ");
  if (o.check) return { result: res("jupyter", "todo", `not found (tried ${tried})`, t0) };
  if (!aptRunner()) {
    return { result: res("jupyter", "FAIL", `${JUPYTER_INSTALL_HINT} (tried ${tried})`, t0) };
  }
  try {
    aptInstall(DEBIAN_JUPYTER);
  } catch (e) {
    return { result: res("jupyter", "FAIL", `${(e as Error).message}\n${JUPYTER_INSTALL_HINT}`, t0) };
  }
  search = findJupyterPython();
  if (!search.found) return { result: res("jupyter", "FAIL", `installed ${DEBIAN_JUPYTER.join(" ")} but still not found; ${JUPYTER_INSTALL_HINT}`, t0) };
  return { result: res("jupyter", "done", `apt-get installed ${DEBIAN_JUPYTER.join(" ")}: ${describe(search.jupyter)}`, t0), jupyter: search.jupyter };
}

/** The kernel launcher: this Node, then tslab from node_modules (a Jupyter started from a desktop may lack Node on PATH). */
function launcherText(): string {
  const { root } = devPaths();
  const tslab = path.join(root, "node_modules", "tslab", "bin", "tslab");
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  return [
    "#!/bin/sh",
    "# tslab (TypeScript) Jupyter kernel for the pbip checkout; written by kernel-setup/setup.sh.",
    `exec ${q(process.execPath)} ${q(tslab)} "$@"`,
    "",
  ].join("\n");
}

function userKernelspecDir(python: string): string | undefined {
  const r = spawnSync(python, ["-c", "from jupyter_core.paths import jupyter_data_dir; print(jupyter_data_dir())"], { encoding: "utf8" });
  return r.status === 0 ? path.join(r.stdout.trim(), "kernels", "tslab") : undefined;
}

function kernelJsonArgv(dir: string): string[] | undefined {
  try {
    return (JSON.parse(fs.readFileSync(path.join(dir, "kernel.json"), "utf8")) as { argv: string[] }).argv;
  } catch {
    return undefined;
  }
}

function stepKernel(o: SetupOptions, jupyter: JupyterPython | undefined): StepResult {
  const t0 = Date.now();
  const p = devPaths();
  if (!jupyter) return res("kernel", o.check ? "todo" : "FAIL", "needs Jupyter (previous step)", t0);
  const target = o.user ? userKernelspecDir(jupyter.python) : p.kernelspecDir;
  if (!target) return res("kernel", "FAIL", `cannot ask ${jupyter.python} for Jupyter's user data folder`, t0);
  const launcherOk = fs.existsSync(p.kernelLauncher) && fs.readFileSync(p.kernelLauncher, "utf8") === launcherText();
  const argv = kernelJsonArgv(target);
  const specOk = argv !== undefined && argv[0] === p.kernelLauncher;
  if (launcherOk && specOk) {
    const seen = findTslabKernelspec(jupyter.python);
    const note = seen && path.resolve(seen.dir) !== path.resolve(target) ? ` (note: Jupyter picks ${seen.dir} first)` : "";
    return res("kernel", "skip", `tslab kernelspec in ${target}${note}`, t0);
  }
  if (o.check) return res("kernel", "todo", `no current tslab kernelspec in ${target}`, t0);
  fs.mkdirSync(path.dirname(p.kernelLauncher), { recursive: true });
  writeFileAtomic(p.kernelLauncher, launcherText());
  fs.chmodSync(p.kernelLauncher, 0o755);
  const tslab = path.join(p.root, "node_modules", "tslab", "bin", "tslab");
  if (!fs.existsSync(tslab)) return res("kernel", "FAIL", "node_modules/tslab is missing: run `npm ci` first", t0);
  const where = o.user ? ["--user"] : ["--prefix", p.jupyterPrefix];
  const r = spawnSync(process.execPath, [tslab, "install", `--python=${jupyter.python}`, `--binary=${p.kernelLauncher}`, ...where], {
    encoding: "utf8",
    cwd: p.root,
  });
  if (r.status !== 0) return res("kernel", "FAIL", `tslab install failed: ${(r.stderr || r.stdout).trim().split("\n").slice(-4).join(" | ")}`, t0);
  if (kernelJsonArgv(target)?.[0] !== p.kernelLauncher) return res("kernel", "FAIL", `tslab install did not write ${target}/kernel.json`, t0);
  const seen = findTslabKernelspec(jupyter.python);
  if (!seen || !kernelspecIsCurrent(seen).ok) return res("kernel", "FAIL", `Jupyter does not see the new kernelspec (sees ${seen?.dir ?? "none"})`, t0);
  return res("kernel", "done", `installed the tslab kernelspec in ${target}`, t0);
}

function stepGpu(o: SetupOptions): StepResult {
  const t0 = Date.now();
  if (!o.gpuEmulation) return res("gpu-emulation", "skip", "--no-gpu-emulation: the WebGPU tests will fail until it is set up", t0);
  let env = readGpuEmulationEnv();
  const present = env !== undefined && lddProblems(env).length === 0;
  let did = false;
  if (!present) {
    if (o.check) return res("gpu-emulation", "todo", "Mesa lavapipe is not unpacked in .cache/vulkan", t0);
    try {
      env = installLavapipe();
      did = true;
    } catch (e) {
      return res("gpu-emulation", "FAIL", (e as Error).message, t0);
    }
  }
  const probe = probeWebGpuWithLavapipe(env);
  if (!probe.ok) return res("gpu-emulation", "FAIL", `lavapipe is unpacked but WebGPU did not start on it: ${probe.error}`, t0);
  if (!probe.adapter?.software) return res("gpu-emulation", "FAIL", `expected the llvmpipe software adapter, got ${probe.device}`, t0);
  return res(
    "gpu-emulation",
    did ? "done" : "skip",
    `WebGPU runs on ${probe.adapter.description} (Mesa ${env!.mesaVersion}, software); source ${path.relative(process.cwd(), devPaths().vulkanEnvSh) || devPaths().vulkanEnvSh} to use it`,
    t0,
  );
}

function stepTorch(o: SetupOptions): StepResult {
  const t0 = Date.now();
  if (!o.torch) return res("torch", "skip", "--no-torch: reference tests against PyTorch will fail", t0);
  const py = "/usr/bin/python3";
  const code = [
    "import sys, importlib.util, importlib.metadata as md",
    "missing = [m for m in ('torch', 'numpy') if importlib.util.find_spec(m) is None]",
    "if missing: sys.exit('missing ' + ', '.join(missing))",
    "print(md.version('torch'))",
  ].join("\n");
  const probe = () => spawnSync(py, ["-c", code], { encoding: "utf8" });
  let r = fs.existsSync(py) ? probe() : undefined;
  if (r?.status === 0) return res("torch", "skip", `PyTorch ${r.stdout.trim()} in ${py}`, t0);
  const hint = "install Debian's python3-torch (`apt-get install -y --no-install-recommends python3-torch python3-numpy`)";
  if (o.check) return res("torch", "todo", `no PyTorch in ${py}: ${hint}`, t0);
  if (!aptRunner()) return res("torch", "FAIL", `no PyTorch in ${py} and no root apt-get here: ${hint}`, t0);
  try {
    aptInstall(["python3-torch", "python3-numpy"]);
  } catch (e) {
    return res("torch", "FAIL", `${(e as Error).message}`, t0);
  }
  r = probe();
  if (r.status !== 0) return res("torch", "FAIL", `python3-torch installed but ${py} cannot find torch: ${r.stderr.trim().split("\n").pop()}`, t0);
  return res("torch", "done", `apt-get installed python3-torch: PyTorch ${r.stdout.trim()} in ${py}`, t0);
}

/** A font for the labels of PNG figures (sharp renders SVG text through fontconfig). */
function stepFonts(o: SetupOptions): StepResult {
  const t0 = Date.now();
  const has = () => {
    const r = spawnSync("fc-list", [":", "family"], { encoding: "utf8" });
    return r.status === 0 && /DejaVu Sans/.test(r.stdout);
  };
  if (has()) return res("fonts", "skip", "DejaVu Sans is installed (figure labels)", t0);
  const hint = "install Debian's fonts-dejavu-core (`apt-get install -y --no-install-recommends fonts-dejavu-core fontconfig`)";
  if (o.check) return res("fonts", "todo", `no DejaVu Sans: figure labels fall back to another font or none; ${hint}`, t0);
  if (!aptRunner()) return res("fonts", "todo", `no DejaVu Sans and no root apt-get here (labels may fall back): ${hint}`, t0);
  try {
    aptInstall(["fonts-dejavu-core", "fontconfig"]);
  } catch (e) {
    return res("fonts", "FAIL", (e as Error).message, t0);
  }
  return has() ? res("fonts", "done", "apt-get installed fonts-dejavu-core", t0) : res("fonts", "FAIL", "fonts-dejavu-core installed but fontconfig does not list DejaVu Sans", t0);
}

/** The real H&E / IHC samples that the real-tissue tests and notebook 00 use. */
async function stepRealSamples(o: SetupOptions): Promise<StepResult> {
  const t0 = Date.now();
  const what = `${REAL_SAMPLES.length} real samples (Visium H&E with Space Ranger's spots, IHC)`;
  if (!o.realSamples) return res("real-samples", "skip", "--no-real-samples: the real-tissue tests and notebooks 00 and 04 fetch them on first use (or say how)", t0);
  const have = realSamplesPresent();
  const rel = (d: string) => path.relative(process.cwd(), d) || d;
  if (have) return res("real-samples", "skip", `${what} in ${rel(have.dir)}`, t0);
  if (o.check) return res("real-samples", "todo", `${what} not fetched: npx pbip data samples`, t0);
  try {
    const got = await fetchRealSamples();
    return res("real-samples", "done", `${what} fetched from ${got.source === "debian" ? "Debian's archive" : "upstream"} into ${rel(got.dir)}`, t0);
  } catch (e) {
    return res("real-samples", "FAIL", (e as Error).message, t0);
  }
}

function res(step: string, status: Status, message: string, t0: number): StepResult {
  return { step, status, message, seconds: (Date.now() - t0) / 1000 };
}

/** One printed line per step. */
export function formatStep(r: StepResult): string {
  return `[${r.status.padEnd(4)}] ${r.step.padEnd(13)} ${r.message} (${r.seconds.toFixed(1)} s)`;
}

/** Run every step in order; failures do not stop later steps. */
export async function runSetup(o: SetupOptions, print: Log = (l) => console.log(l)): Promise<StepResult[]> {
  const results: StepResult[] = [];
  const emit = (r: StepResult) => {
    results.push(r);
    print(formatStep(r));
  };
  emit(stepBuild(o));
  const j = stepJupyter(o);
  emit(j.result);
  emit(stepKernel(o, j.jupyter));
  emit(stepGpu(o));
  emit(stepTorch(o));
  emit(stepFonts(o));
  emit(await stepRealSamples(o));
  return results;
}

const USAGE = `usage: kernel-setup/setup.sh [--check] [--user] [--no-gpu-emulation] [--no-torch] [--no-real-samples]

  --check             report what is set up; change nothing (exit 1 if something is missing)
  --user              install the tslab kernelspec user-wide (default: project-local in .cache/jupyter)
  --no-gpu-emulation  skip Mesa lavapipe (CPU Vulkan for the WebGPU tests)
  --no-torch          skip PyTorch (for the reference tests)
  --no-real-samples   skip fetching the real H&E / IHC samples (for the real-tissue tests)`;

/** Entry point of kernel-setup/setup.sh; returns the exit code. */
export async function setupMain(argv: string[]): Promise<number> {
  const o: SetupOptions = { gpuEmulation: true, user: false, check: false, torch: true, realSamples: true };
  for (const a of argv) {
    if (a === "--check") o.check = true;
    else if (a === "--user") o.user = true;
    else if (a === "--no-gpu-emulation") o.gpuEmulation = false;
    else if (a === "--no-torch") o.torch = false;
    else if (a === "--no-real-samples") o.realSamples = false;
    else if (a === "--help" || a === "-h") {
      console.log(USAGE);
      return 0;
    } else {
      console.error(`setup: unknown option ${a}\n${USAGE}`);
      return 2;
    }
  }
  const t0 = Date.now();
  console.log(`pbip setup${o.check ? " --check" : ""} in ${devPaths().root}`);
  const results = await runSetup(o);
  const failed = results.filter((r) => r.status === "FAIL" || r.status === "todo");
  console.log(
    failed.length
      ? `setup: ${failed.map((r) => r.step).join(", ")} ${o.check ? "not done" : "failed"} (${((Date.now() - t0) / 1000).toFixed(1)} s)`
      : `setup: all done (${((Date.now() - t0) / 1000).toFixed(1)} s)`,
  );
  return failed.length ? 1 : 0;
}
