/** Script entry of `npm run notebooks` (scripts/run-notebooks.mjs); see ./run.ts. */
import { parseArgs } from "node:util";
import * as path from "node:path";
import { runNotebooks, NotebookSetupError } from "./run";

const USAGE = `usage: npm run notebooks -- [NOTEBOOK ...] [--quick] [--run-dir DIR] [--timeout SECONDS] [--no-html] [--keep-going] [--no-build]

Executes notebooks/*.ipynb (or those named, by path or name prefix such as 00) in order,
headless through Jupyter with the tslab kernel. Writes DIR/notebooks/<name>.ipynb (executed)
and <name>.html (static, offline) for each; DIR defaults to runs/<timestamp>.
Each kernel runs in notebooks/ with PBIP_RUN_DIR=DIR; --quick sets PBIP_QUICK=1, which shrinks
data and steps (as the tests do). --timeout is per cell (default 1800 s, or PBIP_CELL_TIMEOUT).
Exit status 1 when a notebook fails (its failing cell, source and error are printed).`;

async function main(): Promise<number> {
  let p;
  try {
    p = parseArgs({
      args: process.argv.slice(2),
      allowPositionals: true,
      options: {
        "run-dir": { type: "string" },
        quick: { type: "boolean" },
        timeout: { type: "string" },
        "no-html": { type: "boolean" },
        "keep-going": { type: "boolean" },
        "no-build": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (p.values.help) {
    console.log(USAGE);
    return 0;
  }
  const timeout = p.values.timeout === undefined ? undefined : Number(p.values.timeout);
  if (timeout !== undefined && !(timeout > 0)) {
    console.error(`--timeout must be a positive number of seconds, got "${p.values.timeout}"`);
    return 2;
  }
  const t0 = Date.now();
  try {
    const r = await runNotebooks({
      notebooks: p.positionals,
      runDir: p.values["run-dir"],
      cellTimeout: timeout,
      html: !p.values["no-html"],
      keepGoing: Boolean(p.values["keep-going"]),
      build: !p.values["no-build"],
      env: p.values.quick ? { PBIP_QUICK: "1" } : undefined,
    });
    const rel = (f: string) => path.relative(process.cwd(), f) || ".";
    console.log(`\n${r.ok ? "all notebooks ran" : "notebooks FAILED"} in ${((Date.now() - t0) / 1000).toFixed(1)} s; outputs in ${rel(r.runDir)}`);
    for (const n of r.results) console.log(`  ${n.ok ? "ok  " : "FAIL"} ${rel(n.ipynb)}${n.html ? `  ${rel(n.html)}` : ""}  (${n.seconds.toFixed(1)} s)`);
    return r.ok ? 0 : 1;
  } catch (e) {
    console.error(e instanceof NotebookSetupError ? e.message : ((e as Error).stack ?? String(e)));
    return 1;
  }
}

void main().then((code) => {
  process.exitCode = code;
});
