// bin/pbip.js runs the compiled dist/: it must say so when dist/ is missing, and warn
// (not silently run old code) when a source file is newer than its build.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { devPaths } from "../../src/nbrun/paths";
import { tmpDir } from "../tmp";

const realRoot = devPaths().root;

function fakeRoot(withDist: boolean): string {
  const r = tmpDir("pbip-bin-");
  fs.mkdirSync(path.join(r, "bin"));
  fs.copyFileSync(path.join(realRoot, "bin", "pbip.js"), path.join(r, "bin", "pbip.js"));
  if (withDist) fs.symlinkSync(path.join(realRoot, "dist"), path.join(r, "dist"));
  return r;
}

test("bin/pbip.js: a missing dist/ is a clear error; a source newer than dist/ is a warning", { timeout: 60_000 }, () => {
  const none = fakeRoot(false);
  const r0 = spawnSync(process.execPath, [path.join(none, "bin", "pbip.js"), "--help"], { encoding: "utf8" });
  assert.equal(r0.status, 1);
  assert.match(r0.stderr, /is not built yet; run `npm run setup`/);

  const root = fakeRoot(true);
  const r1 = spawnSync(process.execPath, [path.join(root, "bin", "pbip.js"), "--help"], { encoding: "utf8" });
  assert.equal(r1.status, 0, r1.stderr);
  assert.doesNotMatch(r1.stderr, /newer than dist/, "no src/ beside dist/: nothing to warn about");

  fs.mkdirSync(path.join(root, "src"));
  fs.writeFileSync(path.join(root, "src", "edited.ts"), "export const x = 1;\n");
  const r2 = spawnSync(process.execPath, [path.join(root, "bin", "pbip.js"), "--help"], { encoding: "utf8" });
  assert.equal(r2.status, 0, r2.stderr);
  assert.match(r2.stderr, /1 source file\(s\) newer than dist\/ \(src\/edited\.ts\).*npm run build/);
  for (const d of [none, root]) fs.rmSync(d, { recursive: true, force: true });
});

test("bin/pbip.js: a command left waiting on work that can never finish fails with a message instead of exiting 0", { timeout: 60_000 }, () => {
  const r = fakeRoot(false);
  fs.mkdirSync(path.join(r, "dist", "cli"), { recursive: true });
  // A command whose promise nothing will settle, with nothing else keeping the process alive.
  fs.writeFileSync(path.join(r, "dist", "cli", "main.js"), "exports.main = () => new Promise(() => {});\n");
  const hung = spawnSync(process.execPath, [path.join(r, "bin", "pbip.js"), "cam"], { encoding: "utf8" });
  assert.equal(hung.status, 1);
  assert.match(hung.stderr, /the command stopped before finishing .* nothing was completed/);
  fs.writeFileSync(path.join(r, "dist", "cli", "main.js"), "exports.main = async () => { await new Promise((res) => setTimeout(res, 50)); return 0; };\n");
  const ok = spawnSync(process.execPath, [path.join(r, "bin", "pbip.js"), "cam"], { encoding: "utf8" });
  assert.equal(ok.status, 0, ok.stderr);
  assert.equal(ok.stderr, "");
  fs.rmSync(r, { recursive: true, force: true });
});
