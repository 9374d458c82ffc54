/**
 * Headless notebook execution (`npm run notebooks`, and the demo).
 *
 * Each notebook runs through real Jupyter: nbclient, in the Python that has it,
 * starts the project's tslab kernel (found through JUPYTER_PATH), executes every
 * cell, and nbconvert writes a static HTML export. Per notebook the runner writes
 * `<runDir>/notebooks/<name>.ipynb` (executed, with outputs) and `<name>.html`
 * (self-contained: images inline, no network scripts), even when a cell fails.
 *
 * The kernel's working directory is the notebook's own folder (`notebooks/`), as
 * when the notebook is opened in Jupyter, so relative paths mean the same in both;
 * outputs belong under `process.env.PBIP_RUN_DIR`, which the runner sets to the
 * run folder. The rest of the environment passes through (PBIP_QUICK=1 shrinks
 * data and steps; PBIP_BACKEND picks the backend; with PBIP_BACKEND=webgpu and
 * the lavapipe setup present, its environment is added so the kernel sees it).
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { writeFileAtomic, writeJsonAtomic } from "../util/fs";
import { devPaths } from "./paths";
import { ensureBuilt, selfLinkState } from "./build";
import { findJupyterPython, findTslabKernelspec, jupyterEnv, kernelspecIsCurrent, JUPYTER_INSTALL_HINT } from "./jupyter";
import { readGpuEmulationEnv, withGpuEmulation } from "./lavapipe";

/** Options of {@link runNotebooks}. */
export interface RunNotebooksOptions {
  /** Notebooks to run: file paths, or name prefixes matched in notebooks/ (e.g. `"00"`). Default: all, in name order. */
  notebooks?: string[];
  /** Run folder; notebooks go to `<runDir>/notebooks/`. Default `runs/<timestamp>`. */
  runDir?: string;
  /** Seconds one cell may take (default 1800, or PBIP_CELL_TIMEOUT). */
  cellTimeout?: number;
  /** Write the HTML export (default true). */
  html?: boolean;
  /** Extra environment for the kernels (on top of this process's). */
  env?: Record<string, string>;
  /** Rebuild dist/ first when src/ changed (default true): notebooks import the compiled package. */
  build?: boolean;
  /** Working directory of the kernels (default: each notebook's own folder, as in Jupyter). */
  kernelCwd?: string;
  /** Go on with later notebooks after a failure (default false: later notebooks usually need earlier outputs). */
  keepGoing?: boolean;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

/** Where and why a notebook failed. */
export interface NotebookFailure {
  kind: "error" | "timeout" | "dead-kernel" | "startup" | "invalid" | "html" | "crash";
  /** 1-based number among the notebook's code cells. */
  codeCell?: number;
  cellIndex?: number;
  source?: string;
  ename?: string;
  evalue?: string;
  traceback?: string[];
  stderr?: string;
  message?: string;
}

export interface NotebookResult {
  notebook: string;
  ok: boolean;
  seconds: number;
  ipynb: string;
  html?: string;
  failure?: NotebookFailure;
}

export interface RunNotebooksResult {
  ok: boolean;
  runDir: string;
  notebooksDir: string;
  results: NotebookResult[];
}

/** Raised when Jupyter or the kernelspec is missing; the message says to run the setup. */
export class NotebookSetupError extends Error {}

/** `notebooks/*.ipynb` of the checkout, in name order. */
export function listNotebooks(dir = path.join(devPaths().root, "notebooks")): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith(".ipynb") && !f.startsWith("."))
    .sort()
    .map((f) => path.join(dir, f));
}

/** Resolve the user's notebook arguments (paths or name prefixes) to files. */
export function resolveNotebooks(args: string[] | undefined): string[] {
  const all = listNotebooks();
  if (!args || args.length === 0) return all;
  return args.map((a) => {
    if (a.endsWith(".ipynb") && fs.existsSync(a)) return path.resolve(a);
    const hits = all.filter((f) => path.basename(f).startsWith(a) || path.basename(f) === a);
    if (hits.length === 1) return hits[0]!;
    if (hits.length === 0) throw new Error(`no notebook matches "${a}" (have: ${all.map((f) => path.basename(f)).join(", ") || "none"})`);
    throw new Error(`"${a}" matches several notebooks: ${hits.map((f) => path.basename(f)).join(", ")}`);
  });
}

/** A run folder name from the current time, e.g. `runs/2025-06-01T12-30-05`. */
export function defaultRunDir(root = devPaths().root): string {
  const stamp = new Date().toISOString().replace(/\.\d+Z$/, "").replace(/:/g, "-");
  let dir = path.join(root, "runs", stamp);
  for (let i = 2; fs.existsSync(dir); i++) dir = path.join(root, "runs", `${stamp}-${i}`);
  return dir;
}

/** Check that Jupyter, the tslab kernelspec and the package link are in place; returns the Python to use. */
export function checkNotebookSetup(): { python: string } {
  const search = findJupyterPython();
  if (!search.found) {
    throw new NotebookSetupError(`cannot run notebooks: ${JUPYTER_INSTALL_HINT}\n(tried ${search.tried.map((t) => `${t.python}: ${t.problem}`).join("; ")})`);
  }
  const python = search.jupyter.python;
  const spec = findTslabKernelspec(python);
  if (!spec) throw new NotebookSetupError("cannot run notebooks: the tslab kernelspec is not installed; run `npm run setup`");
  const cur = kernelspecIsCurrent(spec);
  if (!cur.ok && spec.scope === "project") {
    throw new NotebookSetupError(`cannot run notebooks: the tslab kernelspec in ${spec.dir} is stale (${cur.problem}); run \`npm run setup\``);
  }
  const link = selfLinkState();
  if (!link.ok) throw new NotebookSetupError(`cannot run notebooks: ${link.problem} (notebooks import "pbip" through it); run \`npm run setup\``);
  return { python };
}

/** The failing cell, its source and the error, as printed on failure. */
export function formatFailure(r: NotebookResult): string {
  const f = r.failure;
  if (!f) return `${r.notebook}: ok`;
  const lines = [`notebook ${r.notebook} failed${f.codeCell ? ` in code cell ${f.codeCell} (cell index ${f.cellIndex})` : ""}: ${f.kind}`];
  if (f.source !== undefined) {
    lines.push("--- cell source ---", ...f.source.split("\n").map((l) => `  ${l}`));
  }
  // tslab reports compile and runtime errors on the cell's stderr, with an empty "<Error>".
  if (f.evalue || (f.ename && f.ename !== "<Error>")) lines.push("--- error ---", `${f.ename ?? "Error"}: ${f.evalue ?? ""}`);
  if (f.traceback?.length) {
    const tb = f.traceback.join("\n").split("\n");
    lines.push("--- traceback ---", ...tb.slice(0, 60), ...(tb.length > 60 ? [`... ${tb.length - 60} more lines`] : []));
  }
  if (f.stderr) lines.push("--- cell stderr (tail) ---", f.stderr.trimEnd());
  if (f.message) lines.push(f.message);
  lines.push(`executed copy (with outputs up to the failure): ${r.ipynb}`);
  return lines.join("\n");
}

type HtmlHook = (html: string) => string;

/**
 * The viz hook: `injectPlotly(html)` from src/viz/html-export (dist/viz/html-export.js
 * once built), called on every exported HTML so interactive plots work offline.
 * Absent module: no hook.
 */
function plotlyHook(): HtmlHook | undefined {
  try {
    const m = require("../viz/html-export") as { injectPlotly?: HtmlHook };
    return typeof m.injectPlotly === "function" ? m.injectPlotly : undefined;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "MODULE_NOT_FOUND" && /viz\/html-export/.test((e as Error).message)) return undefined;
    throw e;
  }
}

/** MathJax 3 (npm `mathjax`, if installed) inlined so the notebooks' equations typeset offline. */
function mathjaxScript(): string | undefined {
  let file: string;
  try {
    file = require.resolve("mathjax/es5/tex-svg-full.js", { paths: [devPaths().root] });
  } catch {
    return undefined;
  }
  const config = "window.MathJax={tex:{inlineMath:[['$','$'],['\\\\(','\\\\)']],processEscapes:true},svg:{fontCache:'global'}};";
  return `<script>${config}</script>\n<script>${fs.readFileSync(file, "utf8").replace(/<\/script/gi, "<\\/script")}</script>`;
}

function notebookHasMath(ipynb: string): boolean {
  try {
    const nb = JSON.parse(fs.readFileSync(ipynb, "utf8")) as { cells: { cell_type: string; source: string | string[] }[] };
    return nb.cells.some((c) => c.cell_type === "markdown" && /\$[^$]+\$|\\\(|\\\[/.test(Array.isArray(c.source) ? c.source.join("") : c.source));
  } catch {
    return false;
  }
}

/** Inline MathJax (when the notebook has math) and run the viz hook on an exported page; atomic. */
export function postProcessHtml(htmlFile: string, ipynb: string, hook: HtmlHook | undefined): void {
  let html = fs.readFileSync(htmlFile, "utf8");
  const before = html;
  if (notebookHasMath(ipynb)) {
    const mj = mathjaxScript();
    // A replacement function, not a string: the script contains "$'" and "$&", which
    // String.replace would expand (and once copied the rest of the page into it).
    if (mj) html = html.replace("<!-- pbip:mathjax -->", () => mj);
  }
  if (hook) html = hook(html);
  if (html !== before) writeFileAtomic(htmlFile, html);
}

/** Run one notebook through nbclient; resolves when the Python driver exits. */
function executeOne(
  python: string,
  notebook: string,
  outDir: string,
  env: NodeJS.ProcessEnv,
  o: Required<Pick<RunNotebooksOptions, "cellTimeout" | "html" | "log">> & Pick<RunNotebooksOptions, "kernelCwd">,
): Promise<NotebookResult> {
  const { root } = devPaths();
  const name = path.basename(notebook, ".ipynb");
  const ipynb = path.join(outDir, `${name}.ipynb`);
  const html = o.html ? path.join(outDir, `${name}.html`) : undefined;
  const errorJson = path.join(outDir, `.${name}.error.json`);
  fs.rmSync(errorJson, { force: true });
  const args = [
    path.join(root, "kernel-setup", "execute_notebook.py"),
    notebook,
    "--out-ipynb",
    ipynb,
    ...(html ? ["--out-html", html] : []),
    "--cwd",
    o.kernelCwd ?? path.dirname(notebook),
    "--timeout",
    String(o.cellTimeout),
    "--error-json",
    errorJson,
    "--template-dir",
    path.join(root, "kernel-setup", "nbconvert"),
  ];
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(python, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let tail = "";
    const relay = (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      tail = (tail + text).slice(-8000);
      for (const line of text.split("\n")) if (line.trim()) o.log(`  ${line.trimEnd()}`);
    };
    child.stdout.on("data", relay);
    child.stderr.on("data", relay);
    child.on("error", (e) => resolve({ notebook, ok: false, seconds: 0, ipynb, failure: { kind: "crash", message: e.message } }));
    child.on("close", (code, signal) => {
      const seconds = (Date.now() - t0) / 1000;
      let failure: NotebookFailure | undefined;
      if (fs.existsSync(errorJson)) {
        try {
          failure = JSON.parse(fs.readFileSync(errorJson, "utf8")) as NotebookFailure;
        } catch {
          failure = { kind: "crash", message: `unreadable ${errorJson}` };
        }
        fs.rmSync(errorJson, { force: true });
      } else if (code !== 0) {
        failure = { kind: "crash", message: `the Jupyter driver exited with ${code ?? signal}:\n${tail.trim()}` };
      }
      resolve({ notebook, ok: code === 0 && !failure, seconds, ipynb, html: html && fs.existsSync(html) ? html : undefined, failure });
    });
  });
}

/**
 * Execute notebooks headless through Jupyter with the tslab kernel, in order.
 * Stops at the first failure unless `keepGoing`; never throws for a failing cell
 * (see the results), only when Jupyter or the kernel setup is missing.
 */
export async function runNotebooks(options: RunNotebooksOptions = {}): Promise<RunNotebooksResult> {
  const log = options.log ?? ((l: string) => process.stderr.write(l + "\n"));
  const { python } = checkNotebookSetup();
  const notebooks = resolveNotebooks(options.notebooks);
  if (notebooks.length === 0) throw new Error(`no notebooks to run in ${path.join(devPaths().root, "notebooks")}`);
  if (options.build ?? true) {
    const b = ensureBuilt();
    log(`build: ${b.message}`);
    if (b.errors) log(b.errors);
  }
  const runDir = path.resolve(options.runDir ?? defaultRunDir());
  const notebooksDir = path.join(runDir, "notebooks");
  fs.mkdirSync(notebooksDir, { recursive: true });

  let env: NodeJS.ProcessEnv = jupyterEnv({ ...process.env, ...options.env, PBIP_RUN_DIR: runDir });
  if (env.PBIP_BACKEND === "webgpu" && !env.VK_ICD_FILENAMES) {
    const emu = readGpuEmulationEnv();
    if (emu) {
      env = withGpuEmulation(env, emu);
      log(`PBIP_BACKEND=webgpu: kernels see the Mesa lavapipe driver (${emu.mesaVersion}) from .cache/vulkan`);
    }
  }
  const cellTimeout = options.cellTimeout ?? Number(process.env.PBIP_CELL_TIMEOUT ?? 1800);
  const hook = options.html === false ? undefined : plotlyHook();
  const results: NotebookResult[] = [];
  for (const nb of notebooks) {
    const rel = path.relative(devPaths().root, nb);
    log(`executing ${rel} -> ${path.relative(process.cwd(), notebooksDir) || "."}/`);
    const r = await executeOne(python, nb, notebooksDir, { ...env, PBIP_NOTEBOOK: path.basename(nb, ".ipynb") }, {
      cellTimeout,
      html: options.html ?? true,
      log,
      kernelCwd: options.kernelCwd,
    });
    if (r.html) postProcessHtml(r.html, r.ipynb, hook);
    results.push(r);
    log(`${r.ok ? "ok  " : "FAIL"} ${rel} (${r.seconds.toFixed(1)} s)`);
    if (!r.ok) {
      log(formatFailure(r));
      if (!options.keepGoing) break;
    }
  }
  const ok = results.length === notebooks.length && results.every((r) => r.ok);
  writeJsonAtomic(path.join(notebooksDir, "summary.json"), {
    ok,
    runDir,
    results: results.map((r) => ({ ...r, notebook: path.relative(devPaths().root, r.notebook) })),
    finishedAt: new Date().toISOString(),
  });
  return { ok, runDir, notebooksDir, results };
}
