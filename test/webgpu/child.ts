/**
 * Child process of the backend comparison harness (./harness.ts): initialise the
 * backend named by PBIP_BACKEND, run every case of the module given as argv[2],
 * and write a ChildReport to argv[3].
 */
import * as fs from "node:fs";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../src/runtime";
import { float32ToLE } from "../../src/util";
import type { BackendCase, CaseOutput, ChildReport } from "./harness";

async function main(): Promise<void> {
  const [modulePath, outFile] = process.argv.slice(2);
  if (!modulePath || !outFile) throw new Error("usage: child.ts CASE_MODULE OUT_JSON");
  const t0 = Date.now();
  const report = await initBackend({ acceptSoftwareGpu: true });
  const initMs = Date.now() - t0;
  const { cases } = (await import(modulePath)) as { cases: BackendCase[] };
  const results: CaseOutput[] = [];
  for (const c of cases) {
    const before = tf.memory().numTensors;
    const s = Date.now();
    const outputs: CaseOutput["outputs"] = {};
    let error: string | undefined;
    try {
      const named = await c.run();
      for (const [k, t] of Object.entries(named)) {
        const data = (await t.data()) as Float32Array;
        outputs[k] = { shape: t.shape, data: float32ToLE(Float32Array.from(data)).toString("base64") };
      }
      tf.dispose(Object.values(named));
    } catch (e) {
      error = (e as Error).stack ?? String(e);
    }
    results.push({ name: c.name, ms: Date.now() - s, leaked: tf.memory().numTensors - before, outputs, error });
  }
  const out: ChildReport = { backend: report.backend, device: report.device, initMs, cases: results };
  fs.writeFileSync(outFile, JSON.stringify(out));
  process.exit(0); // Dawn keeps the event loop alive
}

main().catch((e) => {
  console.error((e as Error).stack ?? e);
  process.exit(1);
});
