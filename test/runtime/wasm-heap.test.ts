import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";

const CHILD = path.join(__dirname, "..", "fixtures", "runtime", "wasm-heap-child.ts");

for (const threads of ["1", "2"]) {
  test(`a full WASM heap (${threads} thread${threads === "1" ? "" : "s"}) throws WasmHeapFullError and corrupts nothing`, () => {
    const r = spawnSync(process.execPath, ["--import", "tsx", CHILD], {
      env: { ...process.env, PBIP_WASM_THREADS: threads, PBIP_BACKEND: "" },
      encoding: "utf8",
      timeout: 180_000,
    });
    assert.equal(r.error, undefined, `the child ends by itself (${r.error?.message})`);
    assert.equal(r.status, 0, `child failed:\n${r.stderr}`);
    const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
    // 768 MiB each: at most five fit below 4 GiB; without the guard the sixth is
    // placed at address 0 and "succeeds", overwriting the first.
    assert.ok(out.allocated >= 3 && out.allocated <= 5, `allocated ${out.allocated} tensors of 768 MiB`);
    assert.equal(out.error?.name, "WasmHeapFullError", JSON.stringify(out.error));
    assert.match(out.error.message, /the WASM heap is full: allocating 768\.0 MiB for a tensor failed/);
    assert.match(out.error.message, /4 GiB/);
    assert.equal(out.intact, true, "every tensor allocated before the error keeps its values");
    assert.equal(out.after, 999_000, "the backend computes correctly after the error");
    assert.equal(out.tensors, 0, "nothing leaks from the failed allocation");
  });
}
