/**
 * Notebook 00 runs headless through Jupyter with the tslab kernel, and its saved
 * outputs hold text (the backend report), HTML (the versions table) and a PNG;
 * its HTML export is self-contained (the image inline, no script from the network).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { runNotebooks, checkNotebookSetup, formatFailure } from "../../src/nbrun";
import { tmpDir } from "../tmp";

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, string | string[]>;
}

test("notebook 00 executes headless with text, HTML and PNG outputs", { timeout: 300_000 }, async () => {
  checkNotebookSetup(); // throws "... run `npm run setup`" when Jupyter or the kernelspec is missing
  const runDir = tmpDir("pbip-nb00-");
  const r = await runNotebooks({ notebooks: ["00"], runDir, env: { PBIP_QUICK: "1" }, log: () => {} });
  const res = r.results[0]!;
  assert.ok(res.ok, formatFailure(res));
  const nb = JSON.parse(fs.readFileSync(res.ipynb, "utf8")) as { cells: { cell_type: string; outputs?: Output[] }[] };
  const outputs = nb.cells.flatMap((c) => c.outputs ?? []);
  const join = (t: string | string[] | undefined) => (Array.isArray(t) ? t.join("") : (t ?? ""));
  const text = outputs.filter((o) => o.output_type === "stream" && o.name === "stdout").map((o) => join(o.text)).join("");
  assert.match(text, /backend: (webgpu|tensorflow|wasm|cpu) \(/, "the backend report is printed");
  const html = outputs.find((o) => o.data?.["text/html"]);
  assert.ok(html, "an HTML output (versions table)");
  assert.match(join(html.data!["text/html"]), /<table>[\s\S]*@tensorflow\/tfjs/);
  const png = outputs.find((o) => o.data?.["image/png"]);
  assert.ok(png, "a PNG output");
  const bytes = Buffer.from(join(png.data!["image/png"]), "base64");
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], "PNG signature");

  assert.ok(res.html && fs.existsSync(res.html), "HTML export written");
  const page = fs.readFileSync(res.html, "utf8");
  assert.match(page, /<img src="data:image\/png;base64,/, "the image is inline");
  assert.doesNotMatch(page, /<script[^>]+src="https?:/, "no script is fetched from the network");
  const summary = JSON.parse(fs.readFileSync(path.join(runDir, "notebooks", "summary.json"), "utf8")) as { ok: boolean };
  assert.equal(summary.ok, true);
  fs.rmSync(runDir, { recursive: true, force: true });
});
