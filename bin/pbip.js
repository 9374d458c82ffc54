#!/usr/bin/env node
"use strict";
// The `pbip` command. The TypeScript sources are compiled to dist/ by `npm run build`
// (`npm run setup` does it once); this runs the compiled dist/.
const fs = require("node:fs");
const path = require("node:path");

const root = path.join(__dirname, "..");
if (!fs.existsSync(path.join(root, "dist", "cli", "main.js"))) {
  console.error(`pbip: ${path.join(root, "dist")} is not built yet; run \`npm run setup\` (or \`npm run build\`) in ${root}`);
  process.exit(1);
}
// In a checkout, an edit to src/ does not reach the command until dist/ is rebuilt: say so
// rather than run old code silently.
try {
  const stale = require("../dist/nbrun/build.js").staleSources(root);
  if (stale.length > 0) {
    const first = path.relative(root, stale[0]);
    console.error(`pbip: warning: ${stale.length} source file(s) newer than dist/ (${first}${stale.length > 1 ? ", ..." : ""}); this runs the old build: \`npm run build\` to update it`);
  }
} catch {
  // no src/ beside dist/ (an installed package without sources): nothing to compare
}
let settled = false;
// If the event loop runs dry while the command is still pending (a promise nothing will
// ever settle, e.g. a worker thread that died while the backend started), Node would exit
// 0 having done nothing: say so and fail instead.
process.on("beforeExit", () => {
  if (settled) return;
  settled = true;
  console.error("pbip: the command stopped before finishing (it was left waiting on work that can no longer complete, such as a worker thread that ended early); nothing was completed. Run it again; if it repeats, report it with `pbip doctor`'s output");
  process.exitCode = 1;
});
require("../dist/cli/main.js").main(process.argv.slice(2)).then(
  (code) => { settled = true; process.exitCode = code ?? 0; },
  (err) => { settled = true; console.error(err instanceof Error ? err.message : err); process.exitCode = 1; },
);
