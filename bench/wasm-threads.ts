// Can TensorFlow.js's multi-threaded WASM build (tfjs-backend-wasm-threaded-simd.wasm)
// run in Node? An investigation, not a test:
//
//   npx tsx bench/wasm-threads.ts [--threads 2] [--reps 3] [--skip-swin]
//
// The threaded build is started by `initWasmThreaded` (src/runtime/wasm-threads.ts,
// which says how); `initBackend({ wasmThreads })` / PBIP_WASM_THREADS use it.
//
// The parent runs two children, the shipped single-threaded WASM and the threaded
// build, on the same seeded inputs, and prints times (wall and process CPU), the
// speed-up, whether results agree, whether the child exits by itself (pthread
// workers can keep Node alive), and whether pbip's WASM kernels (which import the
// backend's memory) still work on the shared memory.
import { spawn } from "node:child_process";
import * as os from "node:os";
import * as tf from "@tensorflow/tfjs";
import { registerWasmKernels } from "../src/runtime/wasm-kernels";
import { initWasmThreaded } from "../src/runtime/wasm-threads";
import { buildMiT } from "../src/model/backbones";
import { createSwinEncoder } from "../src/encoders/swin";

// ------------------------------------------------------------------ measurements (children)

interface Item {
  name: string;
  wall: number;
  cpu: number;
  checksum?: number;
  error?: string;
}

async function measure(name: string, reps: number, fn: () => Promise<number | void>): Promise<Item> {
  try {
    let checksum: number | void = await fn(); // warm-up (and the checksum)
    const walls: number[] = [];
    const cpus: number[] = [];
    for (let i = 0; i < reps; i++) {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      checksum = await fn();
      walls.push((performance.now() - t0) / 1000);
      const c = process.cpuUsage(c0);
      cpus.push((c.user + c.system) / 1e6);
    }
    const med = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;
    return { name, wall: med(walls), cpu: med(cpus), checksum: typeof checksum === "number" ? checksum : undefined };
  } catch (e) {
    return { name, wall: NaN, cpu: NaN, error: (e as Error).message.split("\n")[0] };
  }
}

async function child(threads: number, reps: number, skipSwin: boolean): Promise<void> {
  require("@tensorflow/tfjs-backend-wasm");
  registerWasmKernels();
  let got = 1;
  if (threads > 1) got = await initWasmThreaded(threads);
  else await tf.setBackend("wasm");
  const items: Item[] = [];
  const sum = async (t: tf.Tensor) => {
    const s = tf.sum(t);
    const v = (await s.data())[0]!;
    tf.dispose([s, t]);
    return v;
  };
  const a = tf.randomNormal([1024, 1024], 0, 1, "float32", 1);
  const b = tf.randomNormal([1024, 1024], 0, 1, "float32", 2);
  items.push(await measure("matMul 1024x1024x1024", reps, () => sum(tf.matMul(a, b))));
  const x = tf.randomNormal([8, 56, 56, 64], 0, 1, "float32", 3) as tf.Tensor4D;
  const w = tf.randomNormal([3, 3, 64, 64], 0, 0.1, "float32", 4) as tf.Tensor4D;
  items.push(await measure("conv2d 8x56x56x64, 3x3x64x64", reps, () => sum(tf.conv2d(x, w, 1, "same"))));
  const mit = buildMiT("mit-b1", { seed: 0, strides: [4, 2, 2, 1], dropPathRate: 0 });
  const vars = [...mit.namedVariables().values()];
  const xi = tf.randomUniform([2, 224, 224, 3], 0, 1, "float32", 5) as tf.Tensor4D;
  items.push(
    await measure("MiT-b1 forward+backward, batch 2, 224 px", reps, async () => {
      const { value, grads } = tf.variableGrads(() => tf.addN(mit.apply(xi, true).map((m: tf.Tensor) => tf.mean(m))) as tf.Scalar, vars);
      const v = (await value.data())[0]!;
      tf.dispose([value, ...Object.values(grads)]);
      return v;
    }),
  );
  mit.dispose();
  if (!skipSwin) {
    const enc = await createSwinEncoder({ randomSeed: 1 });
    const r = tf.randomNormal([2, 512], 0, 1, "float32", 6);
    const g = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(enc.apply(xx as tf.Tensor4D).pooled, r)));
    items.push(await measure("Swin-T forward+input gradient, 2 images", reps, () => sum(g(xi))));
    enc.dispose();
    r.dispose();
  }
  tf.dispose([a, b, x, w, xi]);
  process.stdout.write(JSON.stringify({ threads: got, items }) + "\n");
  // No process.exit(): the parent checks that the child exits by itself.
}

// ------------------------------------------------------------------ parent

function runChild(threads: number, reps: number, skipSwin: boolean): Promise<{ result?: { threads: number; items: Item[] }; exitedAfter?: number; stderr: string }> {
  return new Promise((resolve) => {
    const args = [...process.execArgv, process.argv[1]!, "--child", String(threads), "--reps", String(reps), ...(skipSwin ? ["--skip-swin"] : [])];
    const c = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    let doneAt = 0;
    c.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("\n") && !doneAt) doneAt = Date.now();
    });
    c.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => c.kill("SIGKILL"), 30 * 60_000);
    let killTimer: NodeJS.Timeout | undefined;
    const poll = setInterval(() => {
      if (doneAt && !killTimer) killTimer = setTimeout(() => c.kill("SIGKILL"), 20_000);
    }, 200);
    c.on("close", () => {
      clearTimeout(timer);
      clearInterval(poll);
      if (killTimer) clearTimeout(killTimer);
      let result;
      try {
        result = JSON.parse(out.trim().split("\n")[0]!);
      } catch {
        result = undefined;
      }
      resolve({ result, exitedAfter: doneAt ? (Date.now() - doneAt) / 1000 : undefined, stderr: err });
    });
  });
}

async function parent(): Promise<void> {
  const i = process.argv.indexOf("--threads");
  const threads = i >= 0 ? Number(process.argv[i + 1]) : Math.max(2, os.cpus().length);
  const j = process.argv.indexOf("--reps");
  const reps = j >= 0 ? Number(process.argv[j + 1]) : 3;
  const skipSwin = process.argv.includes("--skip-swin");
  console.log(`machine: ${os.cpus().length} CPUs (${os.cpus()[0]?.model}), load average ${os.loadavg().map((v) => v.toFixed(1)).join(" ")}`);
  const single = await runChild(1, reps, skipSwin);
  const multi = await runChild(threads, reps, skipSwin);
  for (const [label, r] of [
    ["shipped (single-threaded SIMD)", single],
    [`threaded SIMD, ${threads} threads`, multi],
  ] as const) {
    if (!r.result) {
      console.log(`${label}: FAILED\n${r.stderr.split("\n").filter((l) => !/^\s+at /.test(l)).slice(-12).join("\n")}`);
      continue;
    }
    const exit = r.exitedAfter === undefined ? "?" : r.exitedAfter > 15 ? "did NOT exit by itself (killed)" : `exited by itself ${r.exitedAfter.toFixed(1)} s after its last output`;
    console.log(`${label}: backend reports ${r.result.threads} thread(s); ${exit}`);
  }
  if (!single.result || !multi.result) return;
  console.log(`\n${"measurement".padEnd(44)} ${"single wall".padStart(11)} ${"cpu".padStart(6)} ${"threaded wall".padStart(13)} ${"cpu".padStart(6)}  speed-up  same result`);
  for (const s of single.result.items) {
    const m = multi.result.items.find((x) => x.name === s.name);
    if (!m) continue;
    const same =
      s.checksum === undefined || m.checksum === undefined ? "-" : Math.abs(s.checksum - m.checksum) <= 1e-4 * Math.max(1, Math.abs(s.checksum)) ? "yes" : `NO (${s.checksum} vs ${m.checksum})`;
    const err = s.error ?? m.error;
    const f = (v: number | null) => (v === null || !Number.isFinite(v) ? "-" : v.toFixed(2));
    if (err) {
      console.log(`${s.name.padEnd(44)} ${f(s.wall).padStart(11)} ${f(s.cpu).padStart(6)} ${f(m.wall).padStart(13)} ${f(m.cpu).padStart(6)}  ERROR (${s.error ? "single" : "threaded"}): ${err}`);
      continue;
    }
    console.log(
      `${s.name.padEnd(44)} ${s.wall.toFixed(2).padStart(11)} ${s.cpu.toFixed(2).padStart(6)} ${m.wall.toFixed(2).padStart(13)} ${m.cpu.toFixed(2).padStart(6)}  ${(s.wall / m.wall).toFixed(2).padStart(7)}x  ${same}`,
    );
  }
}

if (process.argv.includes("--child")) {
  const t = Number(process.argv[process.argv.indexOf("--child") + 1]);
  const j = process.argv.indexOf("--reps");
  child(t, j >= 0 ? Number(process.argv[j + 1]) : 3, process.argv.includes("--skip-swin")).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else if (require.main === module) {
  parent().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
