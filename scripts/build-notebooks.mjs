#!/usr/bin/env node
// Builds notebooks/NN-*.ipynb from their sources notebooks/src/NN-*.ts (percent
// format: `// %% [markdown]` starts a markdown cell whose lines are `// ` comments,
// `// %%` starts a code cell). The .ipynb files are committed without outputs;
// `--check` fails when one differs from its source (the test suite runs it).
// Usage: node scripts/build-notebooks.mjs [--check]
import { readFileSync, writeFileSync, readdirSync, existsSync } from "node:fs";
import { join, basename } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const srcDir = join(root, "notebooks", "src");
const check = process.argv.includes("--check");

function toCells(text) {
  const cells = [];
  let cur = null;
  for (const line of text.split("\n")) {
    const m = /^\/\/ %%( \[markdown\])?\s*$/.exec(line);
    if (m) {
      if (cur) cells.push(cur);
      cur = { type: m[1] ? "markdown" : "code", lines: [] };
      continue;
    }
    if (!cur) {
      if (line.trim() === "") continue;
      throw new Error(`text before the first cell marker: ${line}`);
    }
    if (cur.type === "markdown") {
      if (line !== "//" && !line.startsWith("// ") && line.trim() !== "") throw new Error(`markdown line must start with "// ": ${line}`);
      cur.lines.push(line === "//" ? "" : line.slice(3));
    } else cur.lines.push(line);
  }
  if (cur) cells.push(cur);
  return cells.map((c) => {
    while (c.lines.length && c.lines[c.lines.length - 1].trim() === "") c.lines.pop();
    while (c.lines.length && c.lines[0].trim() === "") c.lines.shift();
    const source = c.lines.map((l, i) => (i < c.lines.length - 1 ? l + "\n" : l));
    return c.type === "markdown"
      ? { cell_type: "markdown", metadata: {}, source }
      : { cell_type: "code", execution_count: null, metadata: {}, outputs: [], source };
  });
}

function notebook(cells) {
  return {
    cells,
    metadata: {
      kernelspec: { display_name: "TypeScript", language: "typescript", name: "tslab" },
      language_info: { file_extension: ".ts", mimetype: "text/typescript", name: "typescript" },
    },
    nbformat: 4,
    nbformat_minor: 5,
  };
}

let stale = 0;
for (const f of readdirSync(srcDir).filter((n) => n.endsWith(".ts")).sort()) {
  const out = join(root, "notebooks", basename(f, ".ts") + ".ipynb");
  const cells = toCells(readFileSync(join(srcDir, f), "utf8"));
  cells.forEach((c, i) => (c.id = `${basename(f, ".ts").slice(0, 2)}-${String(i).padStart(2, "0")}`));
  const text = JSON.stringify(notebook(cells), null, 1) + "\n";
  const old = existsSync(out) ? readFileSync(out, "utf8") : "";
  if (old === text) continue;
  if (check) {
    console.error(`${out} differs from notebooks/src/${f}: run node scripts/build-notebooks.mjs`);
    stale++;
  } else {
    writeFileSync(out, text);
    console.log(`wrote ${out}`);
  }
}
process.exit(stale ? 1 : 0);
