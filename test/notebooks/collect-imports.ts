/**
 * Collect the `import` statements of notebooks' code cells, so a test can run each
 * of them inside a real tslab kernel.
 */
import * as fs from "node:fs";

/** One import statement and where it came from. */
export interface NotebookImport {
  notebook: string;
  /** 1-based number among the notebook's code cells. */
  codeCell: number;
  statement: string;
  module: string;
  /** `import type ...`: checked by the compiler only. */
  typeOnly: boolean;
}

// `import ... from "m"` (possibly over several lines) and side-effect `import "m"`,
// at the start of a line; `import(...)` and `import.meta` are not statements.
const IMPORT = /^[ \t]*import\s+(?:(type)\s+)?(?:[\w$*{][\s\S]*?\s)?from\s*(["'])([^"']+)\2;?|^[ \t]*import\s*(["'])([^"']+)\4;?/gm;

/** The import statements of one cell's source, in order. */
export function importsOfSource(source: string): { statement: string; module: string; typeOnly: boolean }[] {
  const out: { statement: string; module: string; typeOnly: boolean }[] = [];
  for (const m of source.matchAll(IMPORT)) {
    out.push({ statement: m[0].trim(), module: (m[3] ?? m[5])!, typeOnly: m[1] === "type" });
  }
  return out;
}

/** Every import statement of every code cell of the given notebooks. */
export function collectImports(notebooks: string[]): NotebookImport[] {
  const out: NotebookImport[] = [];
  for (const nb of notebooks) {
    const json = JSON.parse(fs.readFileSync(nb, "utf8")) as { cells: { cell_type: string; source: string | string[] }[] };
    let codeCell = 0;
    for (const cell of json.cells) {
      if (cell.cell_type !== "code") continue;
      codeCell++;
      const src = Array.isArray(cell.source) ? cell.source.join("") : cell.source;
      for (const i of importsOfSource(src)) out.push({ notebook: nb, codeCell, ...i });
    }
  }
  return out;
}
