// Every TypeScript block of the README compiles against the built package, as a user's
// ES module inside the project would (`import ... from "pbip"`, top-level await).
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { removeOnExit } from "../tmp";
import { devPaths } from "../../src/nbrun/paths";

const root = devPaths().root;

/** The ```ts blocks of a Markdown text, in order. */
export function tsBlocks(md: string): string[] {
  return [...md.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

test("tsBlocks finds fenced TypeScript blocks only", () => {
  assert.deepEqual(tsBlocks("a\n```ts\nconst x = 1;\n```\n```sh\nls\n```\n```ts\nlet y;\n```\n"), ["const x = 1;\n", "let y;\n"]);
});

test("every TypeScript example in README.md compiles against the package", { timeout: 120_000 }, () => {
  const blocks = tsBlocks(fs.readFileSync(path.join(root, "README.md"), "utf8"));
  assert.ok(blocks.length >= 5, `found ${blocks.length} blocks`);
  assert.ok(fs.existsSync(path.join(root, "dist", "index.d.ts")), "the package is built (npm test builds first)");
  // Under node_modules (ignored by git and lint), where `pbip` resolves through node_modules/pbip.
  const dir = removeOnExit(path.join(root, "node_modules", ".cache", `pbip-readme-${process.pid}`));
  fs.mkdirSync(dir, { recursive: true });
  const files = blocks.map((b, i) => {
    const f = path.join(dir, `example-${i + 1}.mts`);
    fs.writeFileSync(f, b);
    return f;
  });
  const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc");
  const r = spawnSync(process.execPath, [tsc, "--noEmit", "--strict", "--target", "ES2022", "--module", "nodenext", "--moduleResolution", "nodenext", "--skipLibCheck", "--types", "node", ...files], { encoding: "utf8", cwd: root });
  assert.equal(r.status, 0, `tsc on the README's examples:\n${r.stdout}${r.stderr}\n${blocks.map((b, i) => `--- example-${i + 1}.mts\n${b}`).join("")}`);
});
