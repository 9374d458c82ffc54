import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import * as fs from "node:fs";
import * as os from "node:os";
import { removeOrphanScratch } from "../../src/runtime/wasm-threads";
import { initBackend, parseWasmThreads } from "../../src/runtime";
import { tmpDir } from "../tmp";

const CHILD = path.join(__dirname, "..", "fixtures", "runtime", "wasm-threads-child.ts");

function runChild(threads: string): { threads: number; device: string; results: Record<string, string> } {
  const r = spawnSync(process.execPath, ["--import", "tsx", CHILD], {
    env: { ...process.env, PBIP_WASM_THREADS: threads, PBIP_BACKEND: "" },
    encoding: "utf8",
    timeout: 120_000,
  });
  assert.equal(r.error, undefined, `the child with PBIP_WASM_THREADS=${threads} exits by itself (${r.error?.message})`);
  assert.equal(r.status, 0, `child with PBIP_WASM_THREADS=${threads} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

test("parseWasmThreads reads counts and auto, and names bad values", () => {
  assert.equal(parseWasmThreads("1"), 1);
  assert.equal(parseWasmThreads(" 4 "), 4);
  assert.equal(parseWasmThreads("auto"), 0);
  assert.equal(parseWasmThreads("0"), 0);
  assert.throws(() => parseWasmThreads("two", "PBIP_WASM_THREADS"), /PBIP_WASM_THREADS: "two" is not a thread count/);
  assert.throws(() => parseWasmThreads("-1"), /not a thread count/);
  assert.throws(() => parseWasmThreads("1.5"), /not a thread count/);
});

test("the multi-threaded WASM build starts, gives bit-identical results to one thread, runs pbip's kernels on its shared memory, and lets Node exit", () => {
  const one = runChild("1");
  const two = runChild("2");
  assert.equal(one.threads, 1, one.device);
  assert.match(one.device, /1 thread$/);
  assert.equal(two.threads, 2, `two threads requested: ${two.device}`);
  assert.deepEqual(two.results, one.results, "the same bits from XNNPACK on 2 threads and on 1, and from pbip's kernels on the shared memory");
});

test("asking for another thread count once WASM has started says that it cannot change, instead of failing", async () => {
  const first = await initBackend({ backend: "wasm" });
  const again = await initBackend({ backend: "wasm", wasmThreads: first.threads + 1 });
  assert.equal(again.threads, first.threads);
  assert.match(again.device, new RegExp(`\\(${first.threads + 1} requested: the WASM backend had already started in this process`));
});

test("removeOrphanScratch removes the scratch folders of processes that are gone, and only those", () => {
  const tmp = tmpDir("pbip-orphans-");
  // On this host: a pid that cannot be running (above the kernel's largest pid_max) and our own;
  // the same dead pid on another host (a container sharing /tmp); unrelated folders.
  const host = os.hostname().replace(/[^A-Za-z0-9]/g, "").slice(0, 32) || "host";
  const kept = [`pbip-wasm-threads-${host}-${process.pid}-def`, "pbip-wasm-threads-otherhost0-4194305-ghi", "pbip-wasm-threads-x", "other"];
  for (const n of [`pbip-wasm-threads-${host}-4194305-abc`, ...kept]) fs.mkdirSync(path.join(tmp, n));
  assert.deepEqual(removeOrphanScratch(tmp), [`pbip-wasm-threads-${host}-4194305-abc`]);
  assert.deepEqual(fs.readdirSync(tmp).sort(), kept.sort());
});
