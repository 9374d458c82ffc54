/**
 * `pbip doctor`: what this installation can do, and what is missing.
 *
 * Reports the compute backend `auto` picks (or the one forced with `--backend`)
 * and why each candidate was or was not used, the WebGPU adapter if any, the
 * Mesa lavapipe GPU emulation, the versions of the runtime parts, Jupyter and the
 * tslab kernelspec, the bundled and user-supplied weights, and the datasets
 * present. Exits non-zero only when the package cannot work at all: no backend
 * can start (or the backend forced with `--backend` cannot).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fontReport } from "../../viz/svg";
import type { Command } from "../command";
import { parse, str, flag, backendArg } from "../command";
import {
  initBackend,
  parseBackendChoice,
  probeWebGpuAdapter,
  packageVersion,
  type AdapterInfo,
  type BackendAttempt,
  type BackendName,
} from "../../runtime/backend";
import { projectRoot } from "../../util/fs";
import { BUNDLED_MOBILENETV2 } from "../../encoders/bundled";
import { sidecarPathFor } from "../../encoders/onnx";
import { cacheBase, devPaths } from "../../nbrun/paths";
import { findJupyterPython, findTslabKernelspec, kernelspecIsCurrent, JUPYTER_INSTALL_HINT } from "../../nbrun/jupyter";
import { readGpuEmulationEnv } from "../../nbrun/lavapipe";
import { selfLinkState, staleSources } from "../../nbrun/build";
import { realSamplesDir, realSamplesPresent } from "../../data/real-samples";

/** A weights file found in `weights/` or `$PBIP_WEIGHTS`. */
export interface FoundWeights {
  file: string;
  format: "safetensors" | "onnx";
  bytes: number;
  /** The JSON sidecar beside it (same base name), or null when there is none. */
  sidecar: string | null;
}

/** A dataset folder found in `data/` or `$PBIP_DATA`. */
export interface FoundDataset {
  name: string;
  path: string;
  /** `synthetic`: pbip's generated set, recognised by its card.json; `manifest`: its folder name matches data-manifests/<name>.json. */
  kind: "synthetic" | "manifest" | "unknown";
  manifest?: string;
  /** From the synthetic set's card: generator version and seed. */
  card?: { version: string; seed: number; counts?: Record<string, number> };
  /** Image files per split folder present (train/, val/img, test/img). */
  splits: Record<string, number>;
}

/** Everything `pbip doctor` reports (its `--json` output). */
export interface DoctorReport {
  pbip: { version: string; root: string };
  backend: {
    ok: boolean;
    requested: string;
    name?: BackendName;
    chosenBy?: string;
    device?: string;
    threads?: number;
    attempts: BackendAttempt[];
    error?: string;
  };
  webgpu: { adapter?: AdapterInfo; note?: string };
  gpuEmulation: { installed: boolean; active: boolean; mesaVersion?: string; envFile: string };
  versions: Record<string, string | null>;
  notebooks: {
    jupyter: { found: boolean; python?: string; versions?: Record<string, string>; problem?: string };
    kernelspec: { found: boolean; dir?: string; scope?: string; current?: boolean; problem?: string };
    packageLink: { ok: boolean; problem?: string };
    staleSources: number;
  };
  weights: {
    bundled: { id: string; description: string; file: string; present: boolean; extracted: boolean }[];
    user: FoundWeights[];
    searched: string[];
  };
  datasets: { found: FoundDataset[]; searched: string[] };
  /** The real H&E / IHC samples (`pbip data samples`): their folder, and whether all are there with the right hashes. */
  realSamples: { dir: string; present: boolean };
  /** The font figure labels render in (sharp/fontconfig). */
  fonts: { ok: boolean; family: string | null; note: string };
  ok: boolean;
}

function listFiles(dir: string, depth: number, keep: (f: string) => boolean, out: string[] = []): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory() && depth > 0) listFiles(p, depth - 1, keep, out);
    else if (e.isFile() && keep(e.name)) out.push(p);
  }
  return out;
}

function envDirs(name: string): string[] {
  return (process.env[name] ?? "").split(path.delimiter).filter(Boolean).map((d) => path.resolve(d));
}

/** Weights files (`*.safetensors`, `*.onnx`, up to two folders deep) and their sidecars. */
export function findUserWeights(dirs: string[]): FoundWeights[] {
  const out: FoundWeights[] = [];
  const seen = new Set<string>();
  for (const dir of dirs) {
    for (const f of listFiles(dir, 2, (n) => /\.(safetensors|onnx)$/i.test(n))) {
      const real = fs.realpathSync(f);
      if (seen.has(real)) continue;
      seen.add(real);
      const sidecar = sidecarPathFor(f);
      out.push({
        file: f,
        format: f.toLowerCase().endsWith(".onnx") ? "onnx" : "safetensors",
        bytes: fs.statSync(f).size,
        sidecar: fs.existsSync(sidecar) ? sidecar : null,
      });
    }
  }
  return out;
}

const IMAGE = /\.(png|jpe?g|tiff?|bmp|webp)$/i;

function countImages(dir: string): number | undefined {
  try {
    return fs.readdirSync(dir).filter((f) => IMAGE.test(f)).length;
  } catch {
    return undefined;
  }
}

function looksLikeDataset(dir: string): boolean {
  return ["card.json", "train", "val", "test"].some((f) => fs.existsSync(path.join(dir, f)));
}

/** Describe one dataset folder: the synthetic set by its card, others by a manifest of the same name. */
export function describeDataset(dir: string, manifestsDir = path.join(projectRoot(), "data-manifests")): FoundDataset {
  const name = path.basename(dir);
  const splits: Record<string, number> = {};
  for (const [split, sub] of [
    ["train", "train"],
    ["val", path.join("val", "img")],
    ["test", path.join("test", "img")],
  ] as const) {
    const n = countImages(path.join(dir, sub));
    if (n !== undefined) splits[split] = n;
  }
  const ds: FoundDataset = { name, path: dir, kind: "unknown", splits };
  const cardFile = path.join(dir, "card.json");
  if (fs.existsSync(cardFile)) {
    try {
      const card = JSON.parse(fs.readFileSync(cardFile, "utf8")) as {
        generator?: { name?: string; version?: string; seed?: number };
        counts?: Record<string, number>;
      };
      if (card.generator?.name === "pbip-synthetic") {
        ds.kind = "synthetic";
        ds.card = { version: String(card.generator.version ?? "?"), seed: Number(card.generator.seed ?? NaN), counts: card.counts };
        return ds;
      }
    } catch {
      /* not a card we know: fall through */
    }
  }
  const manifest = path.join(manifestsDir, `${name}.json`);
  if (fs.existsSync(manifest)) {
    ds.kind = "manifest";
    ds.manifest = path.relative(projectRoot(), manifest);
  }
  return ds;
}

/** Dataset folders under `data/` and `$PBIP_DATA` (each either a dataset or a folder of datasets). */
export function findDatasets(dirs: string[]): FoundDataset[] {
  const out: FoundDataset[] = [];
  for (const dir of dirs) {
    if (!fs.existsSync(dir)) continue;
    if (looksLikeDataset(dir)) {
      out.push(describeDataset(dir));
      continue;
    }
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if ((e.isDirectory() || e.isSymbolicLink()) && fs.existsSync(p) && fs.statSync(p).isDirectory() && looksLikeDataset(p)) out.push(describeDataset(p));
    }
  }
  return out;
}

function pbipVersion(root: string): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { version?: string }).version ?? "?";
  } catch {
    return "?";
  }
}

/** Gather the doctor's report. `backend` forces a backend (as `--backend`); default auto (or PBIP_BACKEND). */
export async function doctorReport(options: { backend?: string } = {}): Promise<DoctorReport> {
  const root = projectRoot();
  const requested = options.backend ?? process.env.PBIP_BACKEND ?? "auto";
  const backend: DoctorReport["backend"] = { ok: false, requested, attempts: [] };
  try {
    const r = await initBackend(options.backend ? { backend: parseBackendChoice(options.backend, "--backend") } : {});
    Object.assign(backend, { ok: true, name: r.backend, chosenBy: r.chosenBy, device: r.device, threads: r.threads, attempts: r.attempts });
  } catch (e) {
    backend.error = (e as Error).message;
  }

  const webgpu: DoctorReport["webgpu"] = {};
  try {
    webgpu.adapter = await probeWebGpuAdapter();
    if (webgpu.adapter.software) webgpu.note = "a software rasteriser: `auto` does not count it as a GPU; force it with --backend webgpu";
  } catch (e) {
    webgpu.note = (e as Error).message;
  }

  const emu = readGpuEmulationEnv();
  const p = devPaths();
  const gpuEmulation = {
    installed: emu !== undefined,
    active: emu !== undefined && process.env.VK_ICD_FILENAMES === emu.VK_ICD_FILENAMES,
    mesaVersion: emu?.mesaVersion,
    envFile: p.vulkanEnvSh,
  };

  const versions: Record<string, string | null> = { node: process.versions.node };
  for (const pkg of [
    "@tensorflow/tfjs",
    "@tensorflow/tfjs-backend-wasm",
    "@tensorflow/tfjs-backend-webgpu",
    "webgpu",
    "@tensorflow/tfjs-node",
    "@tensorflow/tfjs-node-gpu",
    "onnxruntime-node",
    "sharp",
    "tslab",
  ]) {
    versions[pkg] = packageVersion(pkg) ?? null;
  }
  try {
    versions.libvips = (require("sharp") as { versions: { vips: string } }).versions.vips;
  } catch {
    versions.libvips = null;
  }

  const notebooks: DoctorReport["notebooks"] = {
    jupyter: { found: false },
    kernelspec: { found: false },
    packageLink: selfLinkState(),
    staleSources: fs.existsSync(path.join(root, "src")) ? staleSources(root).length : 0,
  };
  const search = findJupyterPython();
  if (search.found) {
    notebooks.jupyter = { found: true, python: search.jupyter.python, versions: search.jupyter.versions };
    const spec = findTslabKernelspec(search.jupyter.python);
    if (spec) {
      const cur = kernelspecIsCurrent(spec);
      notebooks.kernelspec = { found: true, dir: spec.dir, scope: spec.scope, current: cur.ok, problem: cur.problem };
    } else {
      notebooks.kernelspec = { found: false, problem: "no tslab kernelspec: run `npm run setup`" };
    }
  } else {
    notebooks.jupyter = { found: false, problem: `${JUPYTER_INSTALL_HINT} (tried ${search.tried.map((t) => t.python).join(", ")})` };
  }

  let bundledFile = "";
  try {
    bundledFile = path.join(path.dirname(require.resolve("nsfwjs")), "..", "models", "mobilenet_v2", "model.min.js");
  } catch {
    bundledFile = path.join(root, "node_modules", "nsfwjs", "dist", "models", "mobilenet_v2", "model.min.js");
  }
  const weightDirs = [path.join(root, "weights"), ...envDirs("PBIP_WEIGHTS")];
  const weights: DoctorReport["weights"] = {
    bundled: [
      {
        id: BUNDLED_MOBILENETV2.id,
        description: BUNDLED_MOBILENETV2.description,
        file: path.normalize(bundledFile),
        present: fs.existsSync(bundledFile),
        extracted: fs.existsSync(path.join(cacheBase(), "models", BUNDLED_MOBILENETV2.id, "model.json")),
      },
    ],
    user: findUserWeights(weightDirs),
    searched: weightDirs,
  };
  const dataDirs = [path.join(root, "data"), ...envDirs("PBIP_DATA")];
  const datasets = { found: findDatasets(dataDirs), searched: dataDirs };

  return {
    pbip: { version: pbipVersion(root), root },
    backend,
    webgpu,
    gpuEmulation,
    fonts: fontReport(),
    versions,
    notebooks,
    weights,
    datasets,
    realSamples: { dir: realSamplesDir(), present: realSamplesPresent() !== undefined },
    ok: backend.ok,
  };
}

function mib(bytes: number): string {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
}

/** The report as text, one topic per block. */
export function formatDoctor(r: DoctorReport): string {
  const rel = (f: string) => {
    const x = path.relative(r.pbip.root, f);
    return x.startsWith("..") ? f : x;
  };
  const L: string[] = [`pbip ${r.pbip.version} in ${r.pbip.root}`, ""];
  if (r.backend.ok) {
    L.push(`backend:  ${r.backend.name} (${r.backend.chosenBy}): ${r.backend.device}`);
  } else {
    L.push(`backend:  NONE CAN START (requested ${r.backend.requested})`, `  ${r.backend.error}`);
  }
  for (const a of r.backend.attempts) L.push(`  ${a.ok ? "+" : "-"} ${a.backend.padEnd(10)} ${a.note}`);
  const sameAsAbove = r.backend.attempts.some((a) => a.backend === "webgpu" && a.note === r.webgpu.note);
  L.push(
    r.webgpu.adapter
      ? `webgpu adapter: ${r.webgpu.adapter.description || r.webgpu.adapter.device} (${r.webgpu.adapter.vendor}${r.webgpu.adapter.software ? ", software" : ""})${r.webgpu.note ? `: ${r.webgpu.note}` : ""}`
      : `webgpu adapter: none${sameAsAbove ? " (see above)" : ` (${r.webgpu.note})`}`,
  );
  L.push(
    r.gpuEmulation.installed
      ? `gpu emulation:  Mesa lavapipe ${r.gpuEmulation.mesaVersion} unpacked${r.gpuEmulation.active ? ", active in this process" : `; to use it: . ${rel(r.gpuEmulation.envFile)} && pbip doctor --backend webgpu`}`
      : "gpu emulation:  not set up (`npm run setup` unpacks Mesa lavapipe for WebGPU on the CPU)",
  );
  L.push("", "versions:");
  for (const [k, v] of Object.entries(r.versions)) L.push(`  ${k.padEnd(32)} ${v ?? "not installed"}`);
  const nb = r.notebooks;
  L.push("", "notebooks:");
  L.push(
    nb.jupyter.found
      ? `  jupyter:     ${nb.jupyter.python} (jupyter_client ${nb.jupyter.versions?.jupyter_client}, nbclient ${nb.jupyter.versions?.nbclient}, nbconvert ${nb.jupyter.versions?.nbconvert})`
      : `  jupyter:     NOT FOUND: ${nb.jupyter.problem}`,
  );
  L.push(
    nb.kernelspec.found
      ? `  kernelspec:  tslab in ${nb.kernelspec.dir} (${nb.kernelspec.scope === "project" ? "project-local" : "outside the project"})${nb.kernelspec.current ? "" : `: STALE, ${nb.kernelspec.problem}; run \`npm run setup\``}`
      : `  kernelspec:  ${nb.jupyter.found ? "NOT INSTALLED: run `npm run setup`" : "needs Jupyter"}`,
  );
  L.push(`  "pbip" link: ${nb.packageLink.ok ? "node_modules/pbip -> checkout" : `${nb.packageLink.problem}: run \`npm run setup\``}`);
  if (nb.staleSources > 0) L.push(`  build:       ${nb.staleSources} source(s) newer than dist/: notebooks see the old code until \`npm run build\``);
  L.push(`  fonts:       ${r.fonts.note}`);
  L.push("", "weights:");
  for (const b of r.weights.bundled) {
    L.push(`  bundled ${b.id}: ${b.present ? rel(b.file) : "MISSING (run `npm ci`)"}${b.extracted ? " (extracted to the cache)" : ""}`);
    L.push(`    ${b.description}`);
  }
  if (r.weights.user.length === 0) L.push(`  user files: none in ${r.weights.searched.map(rel).join(", ")} (set PBIP_WEIGHTS to add a folder)`);
  for (const w of r.weights.user) L.push(`  ${rel(w.file)} (${w.format}, ${mib(w.bytes)}) sidecar: ${w.sidecar ? rel(w.sidecar) : "none"}`);
  L.push("", "datasets:");
  if (r.datasets.found.length === 0) L.push(`  none in ${r.datasets.searched.map(rel).join(", ")} (set PBIP_DATA to add a folder)`);
  for (const d of r.datasets.found) {
    const kind =
      d.kind === "synthetic"
        ? `synthetic set (pbip-synthetic ${d.card?.version}, seed ${d.card?.seed}; a stand-in, not real tissue)`
        : d.kind === "manifest"
          ? `matches ${d.manifest}`
          : "no card, no manifest of this name";
    const splits = Object.entries(d.splits).map(([k, v]) => `${k} ${v}`).join(", ") || "no split folders";
    L.push(`  ${rel(d.path)}: ${kind}; ${splits}`);
  }
  L.push(
    "",
    `real samples (H&E, IHC; no labels): ${r.realSamples.present ? `in ${rel(r.realSamples.dir)}` : `not fetched (npx pbip data samples puts them in ${rel(r.realSamples.dir)})`}`,
  );
  L.push("", r.ok ? "ok: pbip can run here" : "NOT OK: no compute backend can start");
  return L.join("\n");
}

const USAGE = `  --backend NAME  force a backend (auto, webgpu, tensorflow, wasm, cpu); exit 1 if it cannot start
  --json          print the report as JSON
Exit status 1 only when no backend can start (or the forced one cannot).`;

export const commands: Command[] = [
  {
    name: ["doctor"],
    summary: "what backend, GPU, Jupyter kernel, weights and datasets this installation has",
    usage: USAGE,
    async run(argv: string[]): Promise<number> {
      const p = parse("doctor", argv, { backend: { type: "string" }, json: { type: "boolean" } });
      backendArg(str(p, "backend")); // an unknown name is a usage error, not a failed report
      const report = await doctorReport({ backend: str(p, "backend") });
      console.log(flag(p, "json") ? JSON.stringify(report, null, 2) : formatDoctor(report));
      return report.ok ? 0 : 1;
    },
  },
];
