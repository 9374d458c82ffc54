/**
 * `pbip doctor`: the report in-process (backend choice and reasons, weights and
 * datasets found in temporary folders) and through the built CLI (auto, forced
 * WebGPU on Mesa lavapipe, a forced backend that cannot start, a bad name).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { doctorReport, formatDoctor, findUserWeights, findDatasets, type DoctorReport } from "../../src/cli/commands/doctor";
import { BACKEND_NAMES, packageVersion } from "../../src/runtime";
import { devPaths, readGpuEmulationEnv, withGpuEmulation, GPU_EMULATION_HINT } from "../../src/nbrun";
import { tmpDir } from "../tmp";

const root = devPaths().root;

function cli(args: string[], env: NodeJS.ProcessEnv = process.env): { code: number | null; stdout: string; stderr: string } {
  assert.ok(fs.existsSync(path.join(root, "dist", "cli", "main.js")), "dist/ is not built: run `npm run build` (or `npm run setup`)");
  const r = spawnSync(process.execPath, [path.join(root, "bin", "pbip.js"), "doctor", ...args], { env, encoding: "utf8", timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test("the report names the chosen backend and why the others were not used", async () => {
  const r = await doctorReport();
  assert.equal(r.ok, true);
  assert.ok(r.backend.name && BACKEND_NAMES.includes(r.backend.name));
  const last = r.backend.attempts.at(-1)!;
  assert.deepEqual([last.backend, last.ok, last.note], [r.backend.name, true, "selected"]);
  for (const a of r.backend.attempts.slice(0, -1)) assert.ok(!a.ok && a.note.length > 0, `${a.backend} has a reason`);
  // auto never counts a software adapter (lavapipe) as a GPU.
  if (r.webgpu.adapter?.software) assert.notEqual(r.backend.name, "webgpu");
  assert.equal(r.versions["@tensorflow/tfjs"], packageVersion("@tensorflow/tfjs"));
  assert.ok(r.versions.tslab && r.versions.sharp && r.versions["onnxruntime-node"]);
  assert.equal(r.weights.bundled[0]!.present, true, "the bundled MobileNetV2 (nsfwjs) is in node_modules");
  const text = formatDoctor(r);
  assert.match(text, new RegExp(`backend:  ${r.backend.name} \\(`));
  assert.match(text, /ok: pbip can run here/);
  // The setup fetched the real samples; a folder without them reads "not fetched".
  assert.equal(r.realSamples.present, true, `run \`npm run setup\` first (${r.realSamples.dir})`);
  assert.match(text, /real samples \(H&E, IHC; no labels\): in /);
  assert.match(formatDoctor({ ...r, realSamples: { dir: "/nowhere/real-samples", present: false } }), /real samples \(H&E, IHC; no labels\): not fetched \(npx pbip data samples puts them in \/nowhere\/real-samples\)/);
});

test("user weights with their sidecars, and datasets recognised by card or manifest name", () => {
  const tmp = tmpDir("pbip-doctor-");
  const w = path.join(tmp, "weights");
  fs.mkdirSync(path.join(w, "mit"), { recursive: true });
  fs.writeFileSync(path.join(w, "medclip.onnx"), "x".repeat(10));
  fs.writeFileSync(path.join(w, "medclip.json"), "{}");
  fs.writeFileSync(path.join(w, "mit", "mit_b1.safetensors"), "y".repeat(20));
  fs.writeFileSync(path.join(w, "notes.txt"), "ignored");
  const found = findUserWeights([w, path.join(tmp, "absent")]);
  assert.deepEqual(
    found.map((f) => [path.relative(w, f.file), f.format, f.bytes, f.sidecar && path.relative(w, f.sidecar)]),
    [
      ["medclip.onnx", "onnx", 10, "medclip.json"],
      [path.join("mit", "mit_b1.safetensors"), "safetensors", 20, null],
    ],
  );

  const d = path.join(tmp, "data");
  const synth = path.join(d, "synthetic");
  fs.mkdirSync(path.join(synth, "train"), { recursive: true });
  fs.mkdirSync(path.join(synth, "val", "img"), { recursive: true });
  fs.writeFileSync(path.join(synth, "card.json"), JSON.stringify({ generator: { name: "pbip-synthetic", version: "1", seed: 7 }, counts: { train: 2 } }));
  for (const f of ["a-[1 0 0 0].png", "b-[0 1 0 0].png"]) fs.writeFileSync(path.join(synth, "train", f), "");
  fs.writeFileSync(path.join(synth, "val", "img", "c.png"), "");
  fs.mkdirSync(path.join(d, "mystery", "test", "img"), { recursive: true });
  fs.mkdirSync(path.join(d, "not-a-dataset"), { recursive: true });
  const ds = findDatasets([d]);
  assert.deepEqual(
    ds.map((x) => [x.name, x.kind, x.splits]),
    [
      ["mystery", "unknown", { test: 0 }],
      ["synthetic", "synthetic", { train: 2, val: 1 }],
    ],
  );
  assert.equal(ds[1]!.card?.seed, 7);
  // A folder given directly (PBIP_DATA=/path/to/one/dataset) is itself the dataset.
  assert.deepEqual(
    findDatasets([synth]).map((x) => x.name),
    ["synthetic"],
  );
  fs.rmSync(tmp, { recursive: true, force: true });
});

test("the built CLI prints JSON and exits 0 with the auto backend", () => {
  const r = cli(["--json"]);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as DoctorReport;
  assert.equal(rep.ok, true);
  assert.ok(rep.backend.name && BACKEND_NAMES.includes(rep.backend.name));
  // Auto tries the backends in order and takes the first that starts; without a native
  // TensorFlow binding and a GPU (this machine), that is WASM.
  const attempts = rep.backend.attempts.map((a) => a.backend);
  assert.deepEqual(attempts, BACKEND_NAMES.slice(0, BACKEND_NAMES.indexOf(rep.backend.name) + 1));
  assert.ok(rep.backend.attempts.slice(0, -1).every((a) => !a.ok && a.note), "each backend passed over says why");
  const resolves = (m: string) => {
    try {
      require.resolve(m);
      return true;
    } catch {
      return false;
    }
  };
  const native = ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"].some(resolves);
  if (!native && rep.backend.name !== "webgpu") assert.equal(rep.backend.name, "wasm");
  assert.ok(Array.isArray(rep.datasets.searched) && rep.datasets.searched.length >= 1);
  assert.equal(typeof rep.notebooks.jupyter.found, "boolean");
});

test("forced --backend webgpu reports the lavapipe adapter after the setup", () => {
  const emu = readGpuEmulationEnv();
  assert.ok(emu, GPU_EMULATION_HINT);
  const r = cli(["--backend", "webgpu", "--json"], withGpuEmulation({ ...process.env, PBIP_BACKEND: "" }, emu));
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as DoctorReport;
  assert.equal(rep.backend.name, "webgpu");
  assert.match(rep.backend.chosenBy ?? "", /forced/);
  assert.equal(rep.webgpu.adapter?.software, true);
  assert.match(rep.webgpu.adapter?.description ?? "", /llvmpipe/);
  assert.equal(rep.gpuEmulation.active, true);
});

test("a forced backend that cannot start exits 1; an unknown name is a usage error", () => {
  if (packageVersion("@tensorflow/tfjs-node") === undefined && packageVersion("@tensorflow/tfjs-node-gpu") === undefined) {
    const r = cli(["--backend", "tensorflow"]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /NONE CAN START[\s\S]*no native TensorFlow binding/);
  }
  const bad = cli(["--backend", "quantum"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr + bad.stdout, /unknown backend "quantum"/);
});
