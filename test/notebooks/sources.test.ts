import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";

test("every notebook equals what its percent-format source in notebooks/src builds (no hand edits lost)", () => {
  const r = spawnSync(process.execPath, [path.join(__dirname, "..", "..", "scripts", "build-notebooks.mjs"), "--check"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
});
