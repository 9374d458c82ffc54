#!/usr/bin/env node
"use strict";
// The `pbip` command. The TypeScript sources are compiled to dist/ by `npm run build`.
require("../dist/cli/main.js").main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code ?? 0; },
  (err) => { console.error(err instanceof Error ? err.message : err); process.exitCode = 1; },
);
