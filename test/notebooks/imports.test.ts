/**
 * Every import a notebook uses compiles and loads inside a real tslab kernel.
 *
 * The import statements of all notebooks/*.ipynb are collected; each becomes one
 * cell of a throwaway notebook (plus a namespace import of the same module, so the
 * module is really loaded even when the names are only types), which runs headless
 * through Jupyter with the kernel's working directory in notebooks/, as for the
 * real notebooks. A failure names the notebook, the cell and the statement.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { listNotebooks, runNotebooks, checkNotebookSetup, devPaths } from "../../src/nbrun";
import { collectImports, importsOfSource } from "./collect-imports";
import { tmpDir } from "../tmp";

test("importsOfSource finds single-line, multi-line, type-only and side-effect imports", () => {
  const src = [
    'import * as tf from "@tensorflow/tfjs";',
    "import {",
    "  initBackend,",
    "  formatBackendReport,",
    "} from 'pbip';",
    'import type { BackendReport } from "pbip";',
    'import "./side-effect";',
    "const later = await import(\"sharp\"); // dynamic: not a statement",
    'console.log("import x from nowhere");',
  ].join("\n");
  const got = importsOfSource(src);
  assert.deepEqual(
    got.map((g) => [g.module, g.typeOnly]),
    [
      ["@tensorflow/tfjs", false],
      ["pbip", false],
      ["pbip", true],
      ["./side-effect", false],
    ],
  );
  assert.match(got[1]!.statement, /^import \{\n  initBackend,\n  formatBackendReport,\n\} from 'pbip';$/);
});

test("every notebook import compiles and loads in a tslab kernel", { timeout: 300_000 }, async () => {
  checkNotebookSetup(); // throws "... run `npm run setup`" when Jupyter or the kernelspec is missing
  const notebooks = listNotebooks();
  assert.ok(notebooks.length > 0, "no notebooks in notebooks/");
  const imports = collectImports(notebooks);
  assert.ok(imports.length > 0, "the notebooks import nothing: the collector is broken");
  // One cell per distinct statement; remember where each came from.
  const unique = new Map<string, typeof imports>();
  for (const i of imports) unique.set(i.statement, [...(unique.get(i.statement) ?? []), i]);
  const statements = [...unique.keys()];
  const cells = statements.map((s, k) => {
    const mod = unique.get(s)![0]!.module;
    return {
      cell_type: "code",
      id: `import-${k}`,
      metadata: {},
      execution_count: null,
      outputs: [],
      source: `${s}\nimport * as importCheck${k} from ${JSON.stringify(mod)};\nvoid importCheck${k};`,
    };
  });
  const dir = tmpDir("pbip-imports-");
  const nbFile = path.join(dir, "notebook-imports.ipynb");
  fs.writeFileSync(
    nbFile,
    JSON.stringify({
      cells,
      metadata: { kernelspec: { name: "tslab", display_name: "TypeScript", language: "typescript" } },
      nbformat: 4,
      nbformat_minor: 5,
    }),
  );
  const r = await runNotebooks({
    notebooks: [nbFile],
    runDir: dir,
    html: false,
    kernelCwd: path.join(devPaths().root, "notebooks"),
    log: () => {},
  });
  const res = r.results[0]!;
  if (!res.ok) {
    const f = res.failure!;
    const idx = f.codeCell ? f.codeCell - 1 : -1;
    const where = idx >= 0 ? unique.get(statements[idx]!)!.map((i) => `${path.relative(devPaths().root, i.notebook)} code cell ${i.codeCell}`) : [];
    assert.fail(
      `${idx >= 0 ? `import failed in tslab: ${statements[idx]}\n  used by: ${where.join(", ")}` : `the kernel failed (${f.kind})`}\n` +
        `  error: ${[f.ename !== "<Error>" ? f.ename : "", f.evalue, f.stderr, f.message].filter(Boolean).join(" ").trim()}`,
    );
  }
  fs.rmSync(dir, { recursive: true, force: true });
});
