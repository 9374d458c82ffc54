/**
 * Every notebook in notebooks/ runs headless, in order, in the reduced-size mode
 * (PBIP_QUICK=1), through Jupyter with the tslab kernel, so no notebook can break
 * unnoticed, and its saved outputs hold its pictures (valid PNGs), its interactive
 * plots where it has them, and nothing on stderr. Notebook 00 has its own test
 * (environment.test.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { listNotebooks, runNotebooks, checkNotebookSetup, formatFailure } from "../../src/nbrun";
import { tmpDir } from "../tmp";

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, string | string[]>;
}

const rest = listNotebooks().filter((f) => !path.basename(f).startsWith("00-"));

test("every notebook after 00 runs headless in quick mode", { timeout: 1_500_000, skip: rest.length === 0 ? "no notebooks besides 00 yet" : false }, async () => {
  checkNotebookSetup(); // throws "... run `npm run setup`" when Jupyter or the kernelspec is missing
  const runDir = tmpDir("pbip-notebooks-");
  const r = await runNotebooks({ notebooks: rest, runDir, env: { PBIP_QUICK: "1" }, log: () => {} });
  const failed = r.results.find((x) => !x.ok);
  assert.ok(!failed, failed && formatFailure(failed));
  assert.equal(r.results.length, rest.length);
  const join = (t: string | string[] | undefined) => (Array.isArray(t) ? t.join("") : (t ?? ""));
  for (const res of r.results) {
    const name = path.basename(res.ipynb);
    const nb = JSON.parse(fs.readFileSync(res.ipynb, "utf8")) as { cells: { outputs?: Output[] }[] };
    const outputs = nb.cells.flatMap((c) => c.outputs ?? []);
    const pngs = outputs.flatMap((o) => (o.data?.["image/png"] ? [Buffer.from(join(o.data["image/png"]), "base64")] : []));
    const svgs = outputs.filter((o) => o.data?.["image/svg+xml"]).length;
    const inlineImgs = outputs.filter((o) => /<img src="data:image\/png;base64,/.test(join(o.data?.["text/html"]))).length;
    assert.ok(pngs.length + svgs + inlineImgs >= 1, `${name}: no picture among its saved outputs`);
    for (const b of pngs) assert.deepEqual([...b.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], `${name}: an image/png output is not a PNG`);
    const stderr = outputs.filter((o) => o.output_type === "stream" && o.name === "stderr").map((o) => join(o.text));
    assert.deepEqual(stderr, [], `${name} wrote to stderr`);
    if (/^01-/.test(name)) assert.ok(outputs.some((o) => /plotly/i.test(join(o.data?.["text/html"]))), `${name}: the interactive PCA plot is missing`);
  }
  fs.rmSync(runDir, { recursive: true, force: true });
});
