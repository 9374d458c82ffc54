import * as fs from "node:fs";
import * as path from "node:path";
import { type Command, parse, str, flag } from "../command";
import { UsageError } from "../../util/errors";
import { projectRoot, readJson, writeJsonAtomic } from "../../util/fs";
import { formatDuration } from "../../util/progress";
import { openRun } from "../../pipeline/run";
import { runHeadless } from "../../pipeline/headless";
import { formatResultsTable, type ResultRow } from "../../pipeline/results";
import { initBackend, formatBackendReport, parseBackendChoice } from "../../runtime/backend";
import { stage2Runner } from "../../pipeline/stage2";
import { runNotebooks } from "../../nbrun/run";

const NOTEBOOKS = ["01", "02", "03", "04", "05"];

interface DemoMarker {
  kind: "pbip-demo";
  dataset: string;
  data: string | null;
  quick: boolean;
  mode: "notebooks" | "headless";
  createdAt: string;
}

function timestamp(): string {
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** The newest earlier demo run with the same settings (so a rerun resumes it), else a new timestamped folder. */
function chooseRunDir(runsDir: string, marker: Omit<DemoMarker, "createdAt">, fresh: boolean): { dir: string; reused: boolean } {
  if (!fresh && fs.existsSync(runsDir)) {
    const same = fs
      .readdirSync(runsDir)
      .filter((d) => fs.existsSync(path.join(runsDir, d, "demo.json")))
      .map((d) => ({ d, m: readJson<DemoMarker>(path.join(runsDir, d, "demo.json")) }))
      .filter(({ m }) => m.dataset === marker.dataset && m.data === marker.data && m.quick === marker.quick && m.mode === marker.mode)
      .sort((a, b) => (a.d < b.d ? 1 : -1));
    if (same.length) return { dir: path.join(runsDir, same[0]!.d), reused: true };
  }
  return { dir: path.join(runsDir, timestamp()), reused: false };
}

const demo: Command = {
  name: ["demo"],
  summary: "the main job: the whole method on the embedded data (or a real dataset), notebooks 01-05 executed headless, results table",
  usage: [
    "--headless         run the stages without Jupyter (what the GPU bundle runs); default: execute notebooks 01-05",
    "--quick            small data and few steps (PBIP_QUICK=1), for tests",
    "--dataset NAME --data DIR   a real dataset (verified against its manifest first) instead of the synthetic one",
    "--no-counts        do not compare its split sizes with the published ones (a subset, a re-split, your own data)",
    "--run-dir DIR      where to write (default: runs/<timestamp>; a rerun with the same settings resumes the newest one)",
    "--fresh            start a new run folder even if an earlier one could be resumed",
    "--backend NAME     compute backend (default: PBIP_BACKEND, else auto)",
    "",
    "Environment passed to the notebooks: PBIP_ENCODER, PBIP_ENCODER_WEIGHTS, PBIP_BACKBONE, PBIP_BACKBONE_WEIGHTS, PBIP_PROFILE.",
  ].join("\n"),
  async run(argv) {
    const p = parse("demo", argv, {
      headless: { type: "boolean" },
      quick: { type: "boolean" },
      dataset: { type: "string" },
      data: { type: "string" },
      "no-counts": { type: "boolean" },
      "run-dir": { type: "string" },
      fresh: { type: "boolean" },
      backend: { type: "string" },
    });
    const t0 = Date.now();
    const quick = flag(p, "quick") || ["1", "true"].includes((process.env.PBIP_QUICK ?? "").toLowerCase());
    const dataset = str(p, "dataset") ?? "synthetic";
    const data = str(p, "data") ? path.resolve(str(p, "data")!) : null;
    if (dataset !== "synthetic" && !data) throw new UsageError("pbip demo: --dataset NAME needs --data DIR (the downloaded dataset folder)");
    const mode = flag(p, "headless") ? "headless" : "notebooks";
    const marker = { kind: "pbip-demo" as const, dataset, data, quick, mode: mode as DemoMarker["mode"] };
    const { dir, reused } = str(p, "run-dir") ? { dir: path.resolve(str(p, "run-dir")!), reused: fs.existsSync(path.resolve(str(p, "run-dir")!)) } : chooseRunDir(path.join(projectRoot(), "runs"), marker, flag(p, "fresh"));
    fs.mkdirSync(dir, { recursive: true });
    if (!fs.existsSync(path.join(dir, "demo.json"))) writeJsonAtomic(path.join(dir, "demo.json"), { ...marker, createdAt: new Date().toISOString() });
    const backendChoice = str(p, "backend") ? parseBackendChoice(str(p, "backend")!, "--backend") : undefined;
    if (backendChoice) process.env.PBIP_BACKEND = backendChoice;
    const report = await initBackend(backendChoice ? { backend: backendChoice } : {});
    console.error(formatBackendReport(report).split("\n").slice(0, 2).join("\n"));
    console.error(report.backend === "webgpu" && !report.adapter?.software ? `GPU backend: ${report.device}` : `no GPU backend in use (${report.backend}); on two CPU cores the full demo takes 10 to 15 minutes (10 min 18 s and 13 min 16 s measured with nothing else running)`);
    console.error(`${reused ? "resuming" : "writing"} ${dir}${quick ? " (quick mode)" : ""}`);
    // The dataset is generated (or verified) here, once, before any notebook needs it.
    const checkCounts = !flag(p, "no-counts");
    const run = await openRun({ root: dir, quick, dataset, data: data ?? undefined, checkCounts });
    let rows: ResultRow[] | undefined;
    if (mode === "headless") {
      rows = await runHeadless(run, { stage2: stage2Runner });
    } else {
      const env: Record<string, string> = { PBIP_RUN_DIR: dir, PBIP_DATASET: dataset };
      if (quick) env.PBIP_QUICK = "1";
      if (data) env.PBIP_DATA = data;
      if (!checkCounts) env.PBIP_CHECK_COUNTS = "0";
      if (backendChoice) env.PBIP_BACKEND = backendChoice;
      const r = await runNotebooks({ notebooks: NOTEBOOKS, runDir: dir, env, html: true });
      for (const n of r.results) console.error(`  ${n.ok ? "ok  " : "FAIL"} ${path.relative(process.cwd(), n.ipynb)}  (${n.seconds.toFixed(0)} s)`);
      if (!r.ok) {
        console.error(`\nthe demo stopped at a failing notebook; fix it and run the same command again to resume from ${dir}`);
        return 1;
      }
    }
    const results = run.results() as { table?: ResultRow[] };
    const table = rows ?? results.table;
    const rel = (f: string) => path.relative(process.cwd(), f) || ".";
    console.log(`\ndone in ${formatDuration((Date.now() - t0) / 1000)} on ${report.backend} (${report.device})`);
    console.log(`run folder        ${rel(dir)}`);
    if (mode === "notebooks") console.log(`notebooks         ${rel(path.join(dir, "notebooks"))}/*.ipynb and *.html (open the .html offline in a browser)`);
    console.log(`image bank        ${rel(run.paths.bank)}`);
    console.log(`checkpoints       ${rel(path.join(dir, "stage1"))}/*/best.safetensors, ${rel(run.paths.stage2)}`);
    console.log(`pseudo-masks      ${rel(path.join(dir, "pseudo-masks"))}`);
    console.log(`results           ${rel(run.paths.results)}`);
    console.log(`export for a paper: pbip export ${rel(dir)} --out <folder>`);
    if (table?.length) console.log(`\ntest split, ${table[0]!.convention} convention (%):\n${formatResultsTable(table)}`);
    return 0;
  },
};

export const commands: Command[] = [demo];
