#!/usr/bin/env node
// Links node_modules/pbip to this checkout so notebooks can `import ... from "pbip"`
// (npm removes such a link as "extraneous" on every install, so postinstall
// recreates it). The link points at the project root; its package.json "main" and
// "types" name the compiled dist/ (built by `npm run setup` / `npm run build`).
import { existsSync, lstatSync, readlinkSync, rmSync, symlinkSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const link = join(root, "node_modules", "pbip");
mkdirSync(join(root, "node_modules"), { recursive: true });
try {
  if (lstatSync(link).isSymbolicLink() && readlinkSync(link) === "..") process.exit(0);
  rmSync(link, { recursive: true, force: true });
} catch {
  /* absent */
}
symlinkSync("..", link, "dir");
if (!existsSync(join(root, "dist", "index.js"))) console.error("pbip: linked node_modules/pbip; run `npm run setup` (or `npm run build`) to compile dist/");
