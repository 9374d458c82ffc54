/**
 * The development setup: Debian dependency parsing for the private lavapipe fetch,
 * the build staleness check, notebook name resolution, and `setup.sh --check`
 * reporting every step done (CI runs `npm run setup` before the tests).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseDepends, staleSources, resolveNotebooks, devPaths, readGpuEmulationEnv, withGpuEmulation } from "../../src/nbrun";
import { tmpDir } from "../tmp";

test("parseDepends reads alternatives, versions and arch qualifiers", () => {
  assert.deepEqual(parseDepends("libc6 (>= 2.34), libdrm2 (>= 2.4.121), debconf (>= 0.5) | debconf-2.0, libfoo:any, libbar (<< 3~)"), [
    [{ name: "libc6", op: ">=", version: "2.34" }],
    [{ name: "libdrm2", op: ">=", version: "2.4.121" }],
    [
      { name: "debconf", op: ">=", version: "0.5" },
      { name: "debconf-2.0", op: undefined, version: undefined },
    ],
    [{ name: "libfoo", op: undefined, version: undefined }],
    [{ name: "libbar", op: "<<", version: "3~" }],
  ]);
  assert.deepEqual(parseDepends(undefined), []);
});

test("staleSources lists sources newer than their compiled file", () => {
  const tmp = tmpDir("pbip-stale-");
  fs.mkdirSync(path.join(tmp, "src", "a"), { recursive: true });
  fs.mkdirSync(path.join(tmp, "dist", "a"), { recursive: true });
  for (const f of ["x", "y", "z"]) fs.writeFileSync(path.join(tmp, "src", "a", `${f}.ts`), "");
  fs.writeFileSync(path.join(tmp, "src", "a", "types.d.ts"), "");
  const old = new Date(Date.now() - 60_000);
  fs.writeFileSync(path.join(tmp, "dist", "a", "x.js"), "");
  fs.writeFileSync(path.join(tmp, "dist", "a", "y.js"), "");
  fs.utimesSync(path.join(tmp, "dist", "a", "y.js"), old, old); // older than its source
  assert.deepEqual(
    staleSources(tmp).map((f) => path.relative(tmp, f)).sort(),
    [path.join("src", "a", "y.ts"), path.join("src", "a", "z.ts")],
  );
  fs.rmSync(tmp, { recursive: true, force: true });
});

test("notebooks are named by prefix or path; a bad name lists what exists", () => {
  const all = resolveNotebooks(undefined);
  assert.ok(all.some((f) => path.basename(f) === "00-environment.ipynb"));
  assert.deepEqual(resolveNotebooks(["00"]).map((f) => path.basename(f)), ["00-environment.ipynb"]);
  assert.throws(() => resolveNotebooks(["99-nope"]), /no notebook matches "99-nope" \(have: .*00-environment\.ipynb/);
});

test("withGpuEmulation prepends the unpacked libraries and names the ICD", () => {
  const env = withGpuEmulation(
    { LD_LIBRARY_PATH: "/opt/x" },
    { VK_ICD_FILENAMES: "/p/icd.json", libraryDirs: ["/p/lib"], architecture: "amd64", mesaVersion: "25", packages: [], createdAt: "" },
  );
  assert.equal(env.VK_ICD_FILENAMES, "/p/icd.json");
  assert.equal(env.LD_LIBRARY_PATH, "/p/lib:/opt/x");
  assert.throws(() => withGpuEmulation({}, undefined), /npm run setup/);
});

test("setup.sh --check reports every step done, one line each", { timeout: 120_000 }, () => {
  const r = spawnSync("bash", [path.join(devPaths().root, "kernel-setup", "setup.sh"), "--check"], { encoding: "utf8" });
  const lines = r.stdout.trim().split("\n");
  const steps = lines.filter((l) => /^\[(ok|done|skip|FAIL|todo)\s*\]/.test(l));
  assert.deepEqual(
    steps.map((l) => l.slice(7).trim().split(/\s+/)[0]),
    ["build", "jupyter", "kernel", "gpu-emulation", "torch", "fonts", "real-samples"],
    r.stdout + r.stderr,
  );
  const notDone = steps.filter((l) => /^\[(FAIL|todo)/.test(l));
  // The build step may be behind when sources changed since the last build; the rest must be set up.
  assert.deepEqual(notDone.filter((l) => !/\]\s+build\s/.test(l)), [], `run \`npm run setup\` first:\n${r.stdout}`);
  if (readGpuEmulationEnv()) assert.match(r.stdout, /gpu-emulation\s+WebGPU runs on llvmpipe/);
});
