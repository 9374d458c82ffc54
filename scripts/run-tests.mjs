#!/usr/bin/env node
// Runs the test suite with the Node test runner (Node 20 has no --test globs).
// Usage: node scripts/run-tests.mjs [substring ...]   e.g. `npm run test:unit -- runtime data`
// Every *.test.ts under test/ runs, in file-name order, one file at a time (the
// machine has two cores and the WASM backend is single-threaded; tests that time
// things must not compete).
import { spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const filters = process.argv.slice(2);
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith(".test.ts")) files.push(relative(root, p));
  }
})(join(root, "test"));
const chosen = filters.length ? files.filter((f) => filters.some((s) => f.includes(s))) : files;
if (chosen.length === 0) {
  console.error(`no test files match ${filters.join(", ")}`);
  process.exit(2);
}
const r = spawnSync(process.execPath, ["--import", "tsx", "--test", "--test-concurrency=1", "--test-reporter=spec", ...chosen], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, PBIP_TEST: "1" },
});
process.exit(r.status ?? 1);
