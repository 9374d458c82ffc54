// Temporary folders for tests. Each test file runs in its own process; the folders it made are
// removed when that process exits cleanly, and kept (and named on stderr) when it exits with a
// failure, so a failing test's files can be inspected. `npm test` used to leave ~200 MB in the
// system's temporary folder per run.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

const made: string[] = [];
let hooked = false;

function cleanUp(code: number): void {
  const failed = code !== 0 || (process.exitCode !== undefined && process.exitCode !== 0);
  const left = made.filter((d) => fs.existsSync(d));
  if (failed) {
    if (left.length > 0) process.stderr.write(`temporary folders kept for inspection:\n${left.map((d) => `  ${d}\n`).join("")}`);
    return;
  }
  for (const d of left) fs.rmSync(d, { recursive: true, force: true });
}

/** Remove `dir` as {@link tmpDir}'s folders are: when the process exits without a failure. Returns it. */
export function removeOnExit(dir: string): string {
  if (!hooked) {
    process.on("exit", cleanUp);
    hooked = true;
  }
  made.push(dir);
  return dir;
}

/** A new empty folder under the system's temporary folder, removed when the process exits without a failure. */
export function tmpDir(prefix = "pbip-test-"): string {
  return removeOnExit(fs.mkdtempSync(path.join(os.tmpdir(), prefix)));
}
