/**
 * `pbip bench`'s printed verdict (summarize): its PyTorch reference figures are CPU
 * figures (two cores), so on a real GPU every comparison must say so instead of
 * reading as "N x faster than PyTorch". The fixture is the report the GPU bundle
 * wrote on an NVIDIA H200 (WebGPU through Vulkan, `./run.sh bench --only
 * release-image,release-feature,cam --reps 2`, 2026-11-30).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { ratioText, summarize, type BenchReport } from "../../src/cli/commands/bench";

const FIXTURE = path.join(__dirname, "..", "fixtures", "bench", "h200-webgpu-release.json");
const load = (): BenchReport => JSON.parse(fs.readFileSync(FIXTURE, "utf8")) as BenchReport;

test("bench summary on a real GPU: the PyTorch figures are named as the CPU reference", () => {
  const rep = load();
  assert.equal(rep.backends[0]!.backend, "webgpu");
  assert.equal(rep.backends[0]!.software, false);
  const lines = summarize(rep);
  const text = lines.join("\n");
  assert.match(lines[0]!, /^webgpu: a GPU; the PyTorch figures below are the CPU reference \(two cores\), not PyTorch on this GPU/);
  // 2.31 s against 25 s, computed from the report's median.
  const step = rep.backends[0]!.cases.find((c) => c.name === "release-image");
  assert.ok(step && step.kind === "train");
  const ratio = (25 / step.median.step).toFixed(1);
  assert.match(text, new RegExp(`release step \\(image mode\\) ${step.median.step.toFixed(2)} s vs PyTorch on 2 CPU cores 25 s: ${ratio.replace(".", "\\.")}x faster than PyTorch on 2 CPU cores`));
  assert.match(text, /pseudo-masks without TTA 14\.5 ms\/patch: 5\.8x faster than PyTorch on 2 CPU cores: 84-96 ms/);
  // Every comparison with PyTorch on this GPU report names the CPU.
  for (const l of lines.filter((l) => /(faster|slower) than PyTorch/.test(l))) assert.match(l, /than PyTorch on 2 CPU cores/, l);
});

test("bench summary on CPU backends and software adapters: plain PyTorch wording, no GPU line", () => {
  const cpu = load();
  cpu.backends[0]!.backend = "wasm";
  cpu.backends[0]!.threads = 2;
  const lines = summarize(cpu);
  assert.ok(!lines.some((l) => /a GPU;|CPU cores/.test(l)), lines.join("\n"));
  assert.match(lines.join("\n"), /vs PyTorch 25 s: \d+\.\dx faster than PyTorch/);

  // The optimiser measured by itself (reports from before it was measured have none).
  assert.ok(!lines.some((l) => /AdamW update alone/.test(l)));
  const withOpt = load();
  const c = withOpt.backends[0]!.cases.find((x) => x.name === "release-image")!;
  assert.ok(c.kind === "train");
  c.optimizerTiming = { tensors: 196, values: 13.94e6, fused: 0.123, perTensor: 0.456 };
  assert.ok(summarize(withOpt).some((l) => l === "  AdamW update alone (196 parameter tensors, 13.9 M values): 0.12 s as flat groups (the default), 0.46 s one tensor at a time"));

  const soft = load();
  soft.backends[0]!.software = true;
  const sl = summarize(soft);
  assert.ok(!sl.some((l) => /a GPU;/.test(l)), "a software adapter is not called a GPU");
  assert.match(sl[0]!, /SOFTWARE adapter, not a GPU/);
});

test("bench verdicts: a factor far from parity, percent near it (where a factor rounds to 1.0x)", () => {
  assert.equal(ratioText(50, 25), "2.0x slower than PyTorch");
  assert.equal(ratioText(2.5, 25), "10.0x faster than PyTorch");
  assert.equal(ratioText(26.7, 25), "7% slower than PyTorch");
  assert.equal(ratioText(23.8, 25), "5% faster than PyTorch");
  assert.equal(ratioText(25.05, 25), "on par with PyTorch");
  assert.equal(ratioText(31.5, 25), "1.3x slower than PyTorch");
  assert.equal(ratioText(0, 25), "n/a");
});
