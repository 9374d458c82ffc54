/**
 * Every notebook in notebooks/ runs headless, in order, in the reduced-size mode
 * (PBIP_QUICK=1), through Jupyter with the tslab kernel, so no notebook can break
 * unnoticed. Notebook 00 has its own test with output checks (environment.test.ts).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { listNotebooks, runNotebooks, checkNotebookSetup, formatFailure } from "../../src/nbrun";
import { tmpDir } from "../tmp";

const rest = listNotebooks().filter((f) => !path.basename(f).startsWith("00-"));

test("every notebook after 00 runs headless in quick mode", { timeout: 1_500_000, skip: rest.length === 0 ? "no notebooks besides 00 yet" : false }, async () => {
  checkNotebookSetup(); // throws "... run `npm run setup`" when Jupyter or the kernelspec is missing
  const runDir = tmpDir("pbip-notebooks-");
  const r = await runNotebooks({ notebooks: rest, runDir, env: { PBIP_QUICK: "1" }, log: () => {} });
  const failed = r.results.find((x) => !x.ok);
  assert.ok(!failed, failed && formatFailure(failed));
  assert.equal(r.results.length, rest.length);
  fs.rmSync(runDir, { recursive: true, force: true });
});
