/**
 * `pbip train` killed mid-epoch (SIGKILL, no chance to clean up) and started again
 * reaches the same final weights as an uninterrupted run. Runs the built CLI
 * (dist/), as a user would.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { onBackend } from "../helpers";
import { generateSynthetic, syntheticManifest } from "../../src/data/synthetic/generate";
import { openDataset } from "../../src/data/dataset";
import { MobileNetV2Encoder } from "../../src/encoders/mobilenetv2";
import { buildBank, saveBank } from "../../src/bank";
import { readSafetensors } from "../../src/io/safetensors";
import { tmpDir } from "../tmp";

const ROOT = path.join(__dirname, "..", "..");
const CLI = path.join(ROOT, "bin", "pbip.js");

test("pbip train: SIGKILL or Ctrl-C mid-epoch, then resume, ends with the uninterrupted run's weights", { timeout: 600_000 }, async () => {
  assert.ok(fs.existsSync(path.join(ROOT, "dist", "cli", "main.js")), "dist/ is missing: run `npm run build` (npm test builds first)");
  await onBackend("wasm", () => undefined);
  const tmp = tmpDir("pbip-cli-resume-");
  const data = path.join(tmp, "data");
  await generateSynthetic({ out: data, train: 24, val: 8, test: 2, size: 64, seed: 5, workers: 1 });
  const encoder = await MobileNetV2Encoder.create({ preprocessing: { inputSize: 64 } });
  const { bank } = await buildBank({ split: openDataset(data, { dataset: syntheticManifest() }).split("train"), encoder, config: { k: 2, seed: 1 } });
  await saveBank(path.join(tmp, "bank"), bank);
  encoder.dispose();
  const args = (out: string) => [
    CLI, "train", "--data", data, "--dataset", "synthetic", "--bank", path.join(tmp, "bank"), "--out", out,
    "--profile", "notebook", "--epochs", "2", "--batch", "4", "--backend", "wasm", "--json",
    "--set", "data.inputSize=64", "--set", "encoder.inputSize=64", "--set", "bank.k=2", "--set", "bank.seed=1", "--set", "train.valLimit=8",
  ];
  // Uninterrupted: 2 epochs x 6 batches.
  const a = spawnSync(process.execPath, args(path.join(tmp, "A")), { encoding: "utf8" });
  assert.equal(a.status, 0, a.stderr);
  const doneA = JSON.parse(a.stdout.trim().split("\n").pop()!) as { type: string; step: number; lastCheckpoint: string };
  assert.equal(doneA.type, "done");
  assert.equal(doneA.step, 12);
  // Interrupted: kill -9 two steps after the epoch-1 checkpoint.
  const b = spawn(process.execPath, args(path.join(tmp, "B")), { stdio: ["ignore", "pipe", "pipe"] });
  let buf = "";
  let sawCheckpoint = false;
  let stepsAfter = 0;
  const killedAtStep = await new Promise<number>((resolve, reject) => {
    b.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const ev = JSON.parse(buf.slice(0, nl)) as { type: string; step?: number };
        buf = buf.slice(nl + 1);
        if (ev.type === "checkpoint") sawCheckpoint = true;
        else if (ev.type === "step" && sawCheckpoint && ++stepsAfter === 2) {
          b.kill("SIGKILL");
          resolve(ev.step!);
        }
      }
    });
    b.on("exit", (code, sig) => (sig === "SIGKILL" ? undefined : reject(new Error(`pbip train ended (${code}) before it could be killed`))));
  });
  assert.equal(killedAtStep, 8);
  const c = spawnSync(process.execPath, args(path.join(tmp, "B")), { encoding: "utf8" });
  assert.equal(c.status, 0, c.stderr);
  const lines = c.stdout.trim().split("\n").map((l) => JSON.parse(l) as { type: string; step: number; resumedFrom?: string; lastCheckpoint?: string });
  assert.equal(lines[0]!.type, "start");
  assert.equal(lines[0]!.step, 6, "resumed from the epoch-1 checkpoint");
  assert.ok(lines[0]!.resumedFrom?.endsWith("step-000006.safetensors"));
  const doneB = lines.pop()!;
  assert.equal(doneB.step, 12);
  const wa = readSafetensors(doneA.lastCheckpoint);
  const wb = readSafetensors(doneB.lastCheckpoint!);
  assert.ok(wa.size > 100);
  for (const [name, t] of wa) assert.deepEqual(Array.from(wb.get(name)!.data), Array.from(t.data), `${name} differs`);
  // The log keeps one line per step and one per epoch's validation (the killed run's extra steps were dropped on resume).
  const log = fs
    .readFileSync(path.join(tmp, "B", "train-log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as { type: string; step: number })
    .map((l) => (l.type === "step" ? l.step : `${l.type}@${l.step}`));
  assert.deepEqual(log, [1, 2, 3, 4, 5, 6, "validation@6", 7, 8, 9, 10, 11, 12, "validation@12"]);

  // Ctrl-C (SIGINT) mid-epoch 1: the step in progress finishes, the steps so far are saved, exit
  // 130; the same command resumes there and ends with the uninterrupted weights.
  const d = spawn(process.execPath, args(path.join(tmp, "D")), { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  let sent = false;
  d.stderr.on("data", (x: Buffer) => (err += x.toString()));
  const code = await new Promise<number | null>((resolve) => {
    d.stdout.on("data", (x: Buffer) => {
      out += x.toString();
      if (!sent && out.split("\n").some((l) => l.startsWith("{") && l.endsWith("}") && (JSON.parse(l) as { type: string; step?: number }).step === 3)) {
        sent = true;
        d.kill("SIGINT");
      }
    });
    d.on("exit", (c) => resolve(c));
  });
  assert.equal(code, 130, err);
  assert.match(err, /Ctrl-C: stopping after this step/);
  const stopped = JSON.parse(out.trim().split("\n").pop()!) as { type: string; step: number; checkpoint?: string };
  assert.equal(stopped.type, "interrupted");
  assert.ok(stopped.step === 3 || stopped.step === 4, `stopped at step ${stopped.step}`);
  assert.equal(stopped.checkpoint, path.join(tmp, "D", `step-00000${stopped.step}.safetensors`));
  const e = spawnSync(process.execPath, args(path.join(tmp, "D")), { encoding: "utf8" });
  assert.equal(e.status, 0, e.stderr);
  const linesE = e.stdout.trim().split("\n").map((l) => JSON.parse(l) as { type: string; step: number; lastCheckpoint?: string });
  assert.equal(linesE[0]!.step, stopped.step, "resumed where Ctrl-C stopped it");
  const wd = readSafetensors(linesE.pop()!.lastCheckpoint!);
  for (const [name, t] of wa) assert.deepEqual(Array.from(wd.get(name)!.data), Array.from(t.data), `after Ctrl-C and resume: ${name} differs`);
});
