/**
 * Finding Jupyter and the tslab kernelspec.
 *
 * Jupyter is a Python program, and the `python3` first on PATH is often not the
 * one it lives in (pyenv, conda, a virtualenv). So every Python that might hold it
 * is asked, in order, whether it can import `jupyter_client`, `nbclient` and
 * `nbconvert`; the first that can is used for everything (kernelspec install,
 * headless execution, HTML export).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { devPaths } from "./paths";

/** A Python that can run Jupyter, with the versions of the parts pbip uses. */
export interface JupyterPython {
  python: string;
  pythonVersion: string;
  versions: { jupyter_client: string; nbclient: string; nbconvert: string; nbformat: string };
}

/** Result of the search: the Python found, or every candidate tried with why it was not usable. */
export type JupyterSearch =
  | { found: true; jupyter: JupyterPython; tried: { python: string; problem: string }[] }
  | { found: false; tried: { python: string; problem: string }[] };

// Finds the modules and reads their versions without importing them (importing
// nbconvert takes seconds on a cold disk); the runner reports any import failure.
const PROBE = [
  "import sys, json, importlib.util, importlib.metadata as md",
  "mods = ['jupyter_client', 'nbclient', 'nbconvert', 'nbformat']",
  "missing = [m for m in mods if importlib.util.find_spec(m) is None]",
  "if missing: sys.exit('missing Python modules: ' + ', '.join(missing))",
  "def ver(m):",
  "    try: return md.version(m)",
  "    except Exception: return '?'",
  "print(json.dumps({'python': sys.executable, 'pythonVersion': sys.version.split()[0],",
  " 'versions': {m: ver(m) for m in mods}}))",
].join("\n");

/** Resolve a command name on PATH (like `which`), or undefined. */
export function which(cmd: string): string | undefined {
  if (cmd.includes("/")) return fs.existsSync(cmd) ? cmd : undefined;
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** The interpreter named on the `#!` line of a script (e.g. the `jupyter` launcher), if it is a plain path. */
function shebangPython(script: string): string | undefined {
  try {
    const first = fs.readFileSync(script, "utf8").split("\n", 1)[0] ?? "";
    const m = /^#!\s*(\S+)(?:\s+(\S+))?/.exec(first);
    if (!m) return undefined;
    if (m[1]!.endsWith("/env") && m[2]) return which(m[2]);
    return m[1];
  } catch {
    return undefined;
  }
}

/**
 * Candidate Pythons, most trusted first: `$PBIP_JUPYTER_PYTHON`, `/usr/bin/python3`
 * (Debian's, where the apt packages install), the interpreter of the `jupyter`
 * launcher on PATH, then `python3` and `python` on PATH.
 */
export function pythonCandidates(): string[] {
  const list = [
    process.env.PBIP_JUPYTER_PYTHON,
    "/usr/bin/python3",
    which("jupyter") ? shebangPython(which("jupyter")!) : undefined,
    which("python3"),
    which("python"),
  ];
  const seen = new Set<string>();
  const out: string[] = [];
  for (const p of list) {
    if (!p || seen.has(p)) continue;
    seen.add(p);
    out.push(p);
  }
  return out;
}

/** Find a Python that has jupyter_client, nbclient, nbconvert and nbformat. */
export function findJupyterPython(): JupyterSearch {
  const tried: { python: string; problem: string }[] = [];
  for (const python of pythonCandidates()) {
    if (!fs.existsSync(python)) {
      tried.push({ python, problem: "does not exist" });
      continue;
    }
    const r = spawnSync(python, ["-c", PROBE], { encoding: "utf8", timeout: 60_000 });
    if (r.status === 0) {
      try {
        return { found: true, jupyter: JSON.parse(r.stdout.trim().split("\n").pop()!) as JupyterPython, tried };
      } catch {
        tried.push({ python, problem: `unexpected output: ${r.stdout.slice(0, 200)}` });
        continue;
      }
    }
    const err = (r.stderr || r.error?.message || "").trim().split("\n").pop() ?? "";
    tried.push({ python, problem: err || `exit ${r.status}` });
  }
  if (process.env.PBIP_JUPYTER_PYTHON && tried[0]?.python === process.env.PBIP_JUPYTER_PYTHON) {
    tried[0]!.problem += " (from PBIP_JUPYTER_PYTHON)";
  }
  return { found: false, tried };
}

/** What to install to get Jupyter, in words a user can act on. */
export const JUPYTER_INSTALL_HINT =
  "Jupyter (jupyter_client, nbclient, nbconvert) was not found in any Python. On Debian/Ubuntu: " +
  "`sudo apt-get install -y --no-install-recommends jupyter-nbconvert jupyter-client python3-nbclient python3-ipython`; " +
  "elsewhere: `python3 -m pip install jupyter_client nbclient nbconvert ipython` in the Python you use, " +
  "and point PBIP_JUPYTER_PYTHON at that interpreter if it is not /usr/bin/python3 or first on PATH. Then run `npm run setup`.";

/** A kernelspec as Jupyter sees it. */
export interface KernelspecInfo {
  /** Folder holding kernel.json. */
  dir: string;
  argv: string[];
  /** Where it was found: the project-local prefix, or elsewhere on Jupyter's path (e.g. user-wide). */
  scope: "project" | "other";
}

/** The environment Jupyter must run with to see the project-local kernelspec (JUPYTER_PATH prepended). */
export function jupyterEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const p = devPaths();
  const jp = [p.jupyterDataDir, ...(base.JUPYTER_PATH ? base.JUPYTER_PATH.split(path.delimiter) : [])];
  return { ...base, JUPYTER_PATH: jp.join(path.delimiter) };
}

/** Ask Jupyter (through `python`) where the `tslab` kernelspec is, with the project prefix on JUPYTER_PATH. */
export function findTslabKernelspec(python: string): KernelspecInfo | undefined {
  const code = [
    "import json",
    "from jupyter_client.kernelspec import KernelSpecManager",
    "m = KernelSpecManager()",
    "try:",
    "    s = m.get_kernel_spec('tslab')",
    "    print(json.dumps({'dir': s.resource_dir, 'argv': s.argv}))",
    "except Exception:",
    "    print('null')",
  ].join("\n");
  const r = spawnSync(python, ["-c", code], { encoding: "utf8", env: jupyterEnv(), timeout: 60_000 });
  if (r.status !== 0) return undefined;
  const v = JSON.parse(r.stdout.trim().split("\n").pop() || "null") as { dir: string; argv: string[] } | null;
  if (!v) return undefined;
  const local = path.resolve(v.dir) === path.resolve(devPaths().kernelspecDir);
  return { dir: v.dir, argv: v.argv, scope: local ? "project" : "other" };
}

/** Whether a kernelspec's launcher (argv[0]) exists and is this checkout's. */
export function kernelspecIsCurrent(spec: KernelspecInfo): { ok: boolean; problem?: string } {
  const exe = spec.argv[0] ?? "";
  if (!exe || !fs.existsSync(exe)) return { ok: false, problem: `its launcher ${exe || "(none)"} does not exist` };
  if (path.resolve(exe) !== path.resolve(devPaths().kernelLauncher)) {
    return { ok: false, problem: `it starts ${exe}, not this checkout's ${devPaths().kernelLauncher}` };
  }
  return { ok: true };
}
