#!/usr/bin/env node
// `npm run notebooks`: execute notebooks/*.ipynb headless through Jupyter with the
// tslab kernel (see src/nbrun/run.ts). In a checkout the TypeScript source runs
// through tsx; in an installed package, the compiled dist/nbrun/run-main.js.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const src = join(root, "src", "nbrun", "run-main.ts");
const useTsx = existsSync(src) && existsSync(join(root, "node_modules", "tsx"));
const args = useTsx ? ["--import", "tsx", src] : [join(root, "dist", "nbrun", "run-main.js")];
const child = spawn(process.execPath, [...args, ...process.argv.slice(2)], { stdio: "inherit" });
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("close", (code, signal) => {
  process.exitCode = code ?? (signal ? 1 : 0);
});
