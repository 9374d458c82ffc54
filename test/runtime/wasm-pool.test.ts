import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { partition } from "../../src/runtime/wasm-pool";

const CHILD = path.join(__dirname, "..", "fixtures", "runtime", "wasm-pool-child.ts");

test("partition splits units into contiguous aligned parts, and keeps small work on one thread", () => {
  assert.deepEqual(partition(10, 2, 1), [[0, 5], [5, 5]]);
  assert.deepEqual(partition(11, 2, 1), [[0, 6], [6, 5]]);
  assert.deepEqual(partition(10, 2, 6), [[0, 10]], "fewer than two parts' worth: one part");
  assert.deepEqual(partition(10, 1, 1), [[0, 10]]);
  assert.deepEqual(partition(13, 2, 1, 4), [[0, 8], [8, 5]], "sizes in multiples of the alignment, the last excepted");
  assert.deepEqual(partition(9, 3, 2), [[0, 3], [3, 3], [6, 3]]);
  assert.deepEqual(partition(0, 2, 1), [[0, 0]]);
  for (const [total, threads, min, align] of [[1000, 3, 7, 4], [37, 2, 1, 6], [5, 4, 1, 1]] as const) {
    const parts = partition(total, threads, min, align);
    assert.equal(parts.reduce((s, [, c]) => s + c, 0), total, "the parts cover every unit");
    parts.forEach(([s, c], i) => {
      assert.equal(s, i === 0 ? 0 : parts[i - 1]![0] + parts[i - 1]![1], "contiguous");
      assert.ok(c > 0);
      if (i < parts.length - 1) assert.equal(c % align, 0);
    });
  }
});

test("pbip's kernels split across the WASM threads give the same bits as on one thread, and a failing part is reported, not hung on", () => {
  const r = spawnSync(process.execPath, ["--import", "tsx", CHILD], { env: { ...process.env, PBIP_BACKEND: "" }, encoding: "utf8", timeout: 180_000 });
  assert.equal(r.error, undefined, `the child exits by itself (${r.error?.message})`);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as { threads: number; device: string; results: Record<string, { same: boolean; split: boolean }>; linear: { diff: number; scale: number }; trap: string; afterSame: boolean };
  assert.equal(out.threads, 2, out.device);
  assert.equal(Object.keys(out.results).length, 21);
  for (const [name, v] of Object.entries(out.results)) {
    assert.ok(v.split, `${name}: the pool split the call across threads`);
    assert.ok(v.same, `${name}: same bits on two threads as on one`);
  }
  assert.ok(out.linear.diff <= 1e-5 * out.linear.scale, `linearMatMul within 1e-5 of TF.js's product (max |diff| ${out.linear.diff}, max |y| ${out.linear.scale})`);
  assert.match(out.trap, /a worker's part failed: RuntimeError: memory access out of bounds/);
  assert.ok(out.afterSame, "the pool computes correctly after a failed part");
});
