/**
 * Supplementary material: gather a run folder into a self-contained folder an
 * author can zip and upload (executed notebooks as HTML and .ipynb, every figure
 * as PNG and SVG, the results table as CSV and Markdown, the resolved configs,
 * checksums of the bank and checkpoints, and the environment).
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { writeDirAtomic, assertReplaceable, sha256File, readJson, projectRoot } from "../util/fs";
import { FileError } from "../util/errors";
import { resultsCsv, resultsMarkdown, type ResultRow } from "./results";
import { pbipVersion } from "../io/checkpoint";
import { backendReport, type BackendReport } from "../runtime/backend";

export interface ExportSummary {
  outDir: string;
  notebooks: number;
  figures: number;
  checksums: number;
}

function listFiles(dir: string, filter: (f: string) => boolean, out: string[] = []): string[] {
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) listFiles(p, filter, out);
    else if (filter(p)) out.push(p);
  }
  return out.sort();
}

interface NbOutput {
  output_type: string;
  data?: Record<string, string | string[]>;
}

/** Every PNG and SVG output of an executed notebook, in order. */
export function notebookFigures(file: string): { png?: Buffer; svg?: string; cell: number }[] {
  const nb = readJson<{ cells: { cell_type: string; outputs?: NbOutput[] }[] }>(file);
  const figs: { png?: Buffer; svg?: string; cell: number }[] = [];
  nb.cells.forEach((c, i) => {
    for (const o of c.outputs ?? []) {
      const d = o.data;
      if (!d || (!d["image/png"] && !d["image/svg+xml"])) continue;
      const join = (v: string | string[]) => (Array.isArray(v) ? v.join("") : v);
      figs.push({
        cell: i,
        png: d["image/png"] ? Buffer.from(join(d["image/png"]), "base64") : undefined,
        svg: d["image/svg+xml"] ? join(d["image/svg+xml"]) : undefined,
      });
    }
  });
  return figs;
}

function gitCommit(): string | undefined {
  try {
    return execFileSync("git", ["rev-parse", "HEAD"], { cwd: projectRoot(), encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return undefined;
  }
}

/** True for a folder {@link exportRun} wrote (its environment.json names the source run). */
function isExportDir(dir: string): boolean {
  try {
    return typeof readJson<{ sourceRun?: unknown }>(path.join(dir, "environment.json")).sourceRun === "string";
  } catch {
    return false;
  }
}

const EXPORT_FOLDER_RULE = { what: "an export of a run (environment.json naming its source run)", replaces: isExportDir };

/** Gather `runDir` into `outDir` (an earlier export there is replaced atomically; any other non-empty folder is refused). */
export async function exportRun(runDir: string, outDir: string, backend: BackendReport | undefined = backendReport()): Promise<ExportSummary> {
  const run = path.resolve(runDir);
  if (!fs.existsSync(path.join(run, "run.json"))) throw new FileError(run, "is not a pbip run folder (no run.json); give a folder made by `npm run demo`, `pbip demo` or the notebooks");
  const out = path.resolve(outDir);
  if (run === out || run.startsWith(out + path.sep)) throw new FileError(out, `holds the run being exported (${run}); export to another folder`);
  assertReplaceable(out, EXPORT_FOLDER_RULE);
  let notebooks = 0;
  let figures = 0;
  let checksums = 0;
  await writeDirAtomic(outDir, async (tmp) => {
    const mk = (...p: string[]) => {
      const d = path.join(tmp, ...p);
      fs.mkdirSync(d, { recursive: true });
      return d;
    };
    // Notebooks and their figures.
    const nbDir = path.join(run, "notebooks");
    for (const f of listFiles(nbDir, (p) => p.endsWith(".ipynb") || p.endsWith(".html"))) {
      fs.copyFileSync(f, path.join(mk("notebooks"), path.basename(f)));
      if (f.endsWith(".ipynb")) {
        notebooks++;
        const stem = path.basename(f, ".ipynb");
        notebookFigures(f).forEach((fig, k) => {
          const base = path.join(mk("figures"), `${stem}-cell${String(fig.cell).padStart(2, "0")}-${k + 1}`);
          if (fig.png) fs.writeFileSync(base + ".png", fig.png);
          if (fig.svg) fs.writeFileSync(base + ".svg", fig.svg);
          figures++;
        });
      }
    }
    // Results.
    const resultsFile = path.join(run, "results.json");
    if (fs.existsSync(resultsFile)) {
      fs.copyFileSync(resultsFile, path.join(tmp, "results.json"));
      const table = readJson<{ table?: ResultRow[] }>(resultsFile).table;
      if (table?.length) {
        fs.writeFileSync(path.join(tmp, "results.csv"), resultsCsv(table));
        fs.writeFileSync(path.join(tmp, "results.md"), resultsMarkdown(table, `Scores in %, test split, ${table[0]!.convention} convention.`) + "\n");
      }
    }
    // Configs.
    const cfgFiles = [
      path.join(run, "run.json"),
      path.join(run, "demo.json"),
      ...listFiles(path.join(run, "stage1"), (p) => path.basename(p) === "config.json"),
      ...listFiles(path.join(run, "stage2"), (p) => ["config.json", "stage2.json"].includes(path.basename(p))),
      path.join(run, "bank", "bank.json"),
    ].filter((f) => fs.existsSync(f));
    for (const f of cfgFiles) {
      const rel = path.relative(run, f).split(path.sep).join("__");
      fs.copyFileSync(f, path.join(mk("configs"), rel));
    }
    // Checksums of what a reader would need to reproduce or verify.
    const sums = [
      ...listFiles(path.join(run, "bank"), (p) => /\.(f32|json)$/.test(p)),
      ...listFiles(path.join(run, "stage1"), (p) => p.endsWith(".safetensors")),
      ...listFiles(path.join(run, "stage2"), (p) => p.endsWith(".safetensors")),
    ];
    const lines = sums.map((f) => `${sha256File(f)}  ${path.relative(run, f)}`);
    for (const d of listFiles(path.join(run, "pseudo-masks"), (p) => p.endsWith(".png")).reduce((set, f) => set.add(path.dirname(f)), new Set<string>())) {
      const files = listFiles(d, (p) => p.endsWith(".png"));
      const combined = files.map((f) => `${sha256File(f)}  ${path.basename(f)}`).join("\n");
      lines.push(`${createHash("sha256").update(combined).digest("hex")}  ${path.relative(run, d)}/ (${files.length} masks; sha256 of their sorted sha256sum lines)`);
    }
    checksums = lines.length;
    fs.writeFileSync(path.join(tmp, "checksums.sha256"), lines.join("\n") + "\n");
    // Environment.
    const env = {
      pbip: pbipVersion(),
      gitCommit: gitCommit(),
      node: process.versions.node,
      platform: `${os.platform()} ${os.release()} ${os.arch()}`,
      cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? "?"}`,
      memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
      backend: backend ?? "not initialised in the exporting process; see the notebooks' first cells",
      exportedAt: new Date().toISOString(),
      sourceRun: run,
    };
    fs.writeFileSync(path.join(tmp, "environment.json"), JSON.stringify(env, null, 2) + "\n");
    fs.writeFileSync(
      path.join(tmp, "README.md"),
      [
        `# Supplementary material: PBIP run`,
        ``,
        `Made with pbip ${env.pbip}${env.gitCommit ? ` (commit ${env.gitCommit.slice(0, 12)})` : ""} from \`${path.basename(run)}\`.`,
        ``,
        `- \`notebooks/\`: the executed notebooks (\`.ipynb\`) and static HTML exports that open offline in a browser, interactive plots included.`,
        `- \`figures/\`: every figure of the notebooks as PNG (and SVG where the figure is a vector chart), named \`<notebook>-cell<NN>-<k>\`.`,
        `- \`results.csv\`, \`results.md\`, \`results.json\`: the results table (test split) and everything the run recorded.`,
        `- \`configs/\`: the resolved configuration of every stage, and the image bank's metadata.`,
        `- \`checksums.sha256\`: SHA-256 of the bank, the checkpoints and the pseudo-mask folders, to match this material to the files.`,
        `- \`environment.json\`: versions, machine and compute backend.`,
        ``,
      ].join("\n"),
    );
  }, EXPORT_FOLDER_RULE);
  return { outDir: path.resolve(outDir), notebooks, figures, checksums };
}
