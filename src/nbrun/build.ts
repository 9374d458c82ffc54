/**
 * Keeping dist/ in step with src/: notebooks import the package by name
 * (`import ... from "pbip"`), which resolves through `node_modules/pbip` (a link to
 * the project root) to the compiled `dist/`. A notebook therefore sees an edit to
 * src/ only after a build; the runner and the setup rebuild when any source is
 * newer than its compiled file.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { devPaths } from "./paths";

function walk(dir: string, out: string[] = []): string[] {
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p, out);
    else if (e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

/** Where the last build's type errors are kept (inside dist/, so removing dist/ forgets them). */
function errorsFile(root: string): string {
  return path.join(root, "dist", ".build-errors.txt");
}

/**
 * Sources whose compiled `.js` in dist/ is missing or older than the source (empty:
 * the build is current). After a build with type errors every source counts as
 * stale, so the next build reports the errors again instead of passing silently.
 */
export function staleSources(root = devPaths().root): string[] {
  const src = path.join(root, "src");
  const dist = path.join(root, "dist");
  if (fs.existsSync(errorsFile(root))) return walk(src);
  return walk(src).filter((f) => {
    const js = path.join(dist, path.relative(src, f)).replace(/\.ts$/, ".js");
    try {
      return fs.statSync(js).mtimeMs < fs.statSync(f).mtimeMs;
    } catch {
      return true;
    }
  });
}

/** Outcome of a build: `errors` holds the compiler's report when it found type errors (it still emitted dist/ then). */
export interface BuildResult {
  seconds: number;
  errors?: string;
}

/**
 * Compile src/ to dist/ with the project's TypeScript (`tsc -p .`). Type errors are
 * returned (tsc still emits, exit status 2); a compiler that emitted nothing throws.
 */
export function build(root = devPaths().root): BuildResult {
  const t0 = Date.now();
  let tsc: string;
  try {
    tsc = require.resolve("typescript/bin/tsc", { paths: [root] });
  } catch {
    throw new Error("TypeScript is not installed in node_modules: run `npm ci` first");
  }
  const r = spawnSync(process.execPath, [tsc, "-p", "."], { cwd: root, encoding: "utf8", maxBuffer: 64 << 20 });
  const out = `${r.stdout}${r.stderr}`.trim().split("\n");
  const report = `${out.slice(0, 30).join("\n")}${out.length > 30 ? `\n... ${out.length - 30} more lines` : ""}`;
  if (r.status === 0) {
    fs.rmSync(errorsFile(root), { force: true });
    return { seconds: (Date.now() - t0) / 1000 };
  }
  if (r.status === 2) {
    fs.writeFileSync(errorsFile(root), report + "\n");
    return { seconds: (Date.now() - t0) / 1000, errors: report };
  }
  throw new Error(`tsc -p . failed (exit ${r.status ?? r.signal}) and emitted nothing:\n${report}`);
}

/**
 * Build if any source is newer than its compiled file; returns a one-line account
 * and the compiler's errors, if any (dist/ was still written).
 */
export function ensureBuilt(root = devPaths().root): { message: string; errors?: string } {
  const stale = staleSources(root);
  if (stale.length === 0) return { message: "dist/ is up to date" };
  const r = build(root);
  const what = `rebuilt dist/ (${stale.length} changed source${stale.length === 1 ? "" : "s"}) in ${r.seconds.toFixed(1)} s`;
  return { message: r.errors ? `${what}, with type errors` : what, errors: r.errors };
}

/** State of the `node_modules/pbip` link that lets notebooks import the package by name. */
export function selfLinkState(): { ok: boolean; problem?: string } {
  const { selfLink, root } = devPaths();
  let st: fs.Stats;
  try {
    st = fs.lstatSync(selfLink);
  } catch {
    return { ok: false, problem: "node_modules/pbip does not exist" };
  }
  if (!st.isSymbolicLink()) return { ok: false, problem: "node_modules/pbip is not a link to this checkout" };
  const target = fs.realpathSync(selfLink);
  if (target !== fs.realpathSync(root)) return { ok: false, problem: `node_modules/pbip points at ${target}, not ${root}` };
  return { ok: true };
}

/** Create (or repair) `node_modules/pbip -> ..`. A real folder there is left alone (an error). */
export function linkSelf(): void {
  const { selfLink } = devPaths();
  const state = selfLinkState();
  if (state.ok) return;
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(selfLink);
  } catch {
    st = undefined;
  }
  if (st && !st.isSymbolicLink()) throw new Error(`${selfLink} is a real folder (an installed copy of pbip?); remove it so the checkout can link itself`);
  if (st) fs.unlinkSync(selfLink);
  fs.mkdirSync(path.dirname(selfLink), { recursive: true });
  fs.symlinkSync("..", selfLink, "dir");
}
