import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { exportRun } from "../../src/pipeline/export";
import { writeDirAtomic } from "../../src/util/fs";
import { tmpDir } from "../tmp";

/** A minimal run folder: run.json, one executed notebook with a PNG output, a results table, a bank, a checkpoint, two pseudo-masks. */
function fakeRun(root: string): { png: Buffer } {
  const png = Buffer.from("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da6360f8cfc0f01f0005000201a2e1c7a40000000049454e44ae426082", "hex");
  const w = (rel: string, data: string | Buffer) => {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), data);
  };
  w("run.json", JSON.stringify({ profile: "notebook" }));
  w("notebooks/01-image-bank.ipynb", JSON.stringify({ cells: [{ cell_type: "code", outputs: [{ output_type: "display_data", data: { "image/png": png.toString("base64"), "text/plain": "x" } }] }] }));
  w("notebooks/01-image-bank.html", "<html></html>");
  w("results.json", JSON.stringify({ table: [{ method: "PBIP stage 1", masks: "pseudo-masks/pbip/test", miou: 0.5, fwiou: 0.5, mbiou: 0.2, mdice: 0.6, iou: { TE: 0.5 }, convention: "count-bg" }] }));
  w("bank/bank.json", "{}");
  w("bank/prototypes.f32", Buffer.alloc(16));
  w("stage1/pbip/config.json", "{}");
  w("stage1/pbip/best.safetensors", Buffer.from("weights"));
  w("pseudo-masks/pbip/test/a.png", "A");
  w("pseudo-masks/pbip/test/b.png", "B");
  return { png };
}

const sha = (b: string | Buffer) => createHash("sha256").update(b).digest("hex");

test("exportRun gathers notebooks, figures, results, configs and checksums; it replaces an earlier export and nothing else", async () => {
  const tmp = tmpDir("pbip-export-");
  const run = path.join(tmp, "run");
  const { png } = fakeRun(run);
  const out = path.join(tmp, "supplementary");
  const s = await exportRun(run, out, undefined);
  assert.deepEqual({ notebooks: s.notebooks, figures: s.figures }, { notebooks: 1, figures: 1 });
  assert.deepEqual(fs.readFileSync(path.join(out, "figures", "01-image-bank-cell00-1.png")), png, "the notebook's PNG, byte for byte");
  assert.ok(fs.existsSync(path.join(out, "notebooks", "01-image-bank.html")));
  assert.match(fs.readFileSync(path.join(out, "results.csv"), "utf8"), /PBIP stage 1/);
  assert.ok(fs.existsSync(path.join(out, "configs", "stage1__pbip__config.json")));
  const sums = fs.readFileSync(path.join(out, "checksums.sha256"), "utf8");
  assert.match(sums, new RegExp(`^${sha("weights")}  stage1/pbip/best.safetensors$`, "m"), "checkpoint checksum, sha256sum format");
  const maskLines = [`${sha("A")}  a.png`, `${sha("B")}  b.png`].join("\n");
  assert.match(sums, new RegExp(`^${sha(maskLines)}  pseudo-masks/pbip/test/ \\(2 masks`, "m"), "a mask folder's checksum over its sorted sha256sum lines");
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, "environment.json"), "utf8")).sourceRun, run);

  // Exporting again replaces the earlier export.
  fs.writeFileSync(path.join(out, "stale.txt"), "left from before");
  await exportRun(run, out, undefined);
  assert.ok(!fs.existsSync(path.join(out, "stale.txt")));

  // A folder that is not an export, or the run itself, is refused and left as it was.
  const foreign = path.join(tmp, "my-data");
  fs.mkdirSync(foreign);
  fs.writeFileSync(path.join(foreign, "data.txt"), "precious");
  await assert.rejects(exportRun(run, foreign, undefined), (e: Error) => e.message.startsWith(foreign) && /not an export of a run .* not empty/.test(e.message));
  assert.equal(fs.readFileSync(path.join(foreign, "data.txt"), "utf8"), "precious");
  await assert.rejects(exportRun(run, run, undefined), /holds the run being exported/);
  await assert.rejects(exportRun(run, tmp, undefined), /holds the run being exported/);
  assert.ok(fs.existsSync(path.join(run, "run.json")), "the run is untouched");
});

test("writeDirAtomic: an absent or empty folder is written; a non-empty one only when the rule recognises it", async () => {
  const tmp = tmpDir("pbip-dir-");
  const dir = path.join(tmp, "out");
  const fill = (t: string) => fs.writeFileSync(path.join(t, "made.txt"), "new");
  await writeDirAtomic(dir, fill);
  assert.deepEqual(fs.readdirSync(dir), ["made.txt"]);
  await assert.rejects(writeDirAtomic(dir, fill), /is a folder that is not one pbip wrote and is not empty/);
  let filled = false;
  await assert.rejects(writeDirAtomic(dir, () => void (filled = true), { what: "a thing", replaces: () => false }), /not a thing/);
  assert.equal(filled, false, "refused before any work");
  await writeDirAtomic(dir, (t) => fs.writeFileSync(path.join(t, "other.txt"), "x"), { what: "a thing", replaces: (d) => fs.existsSync(path.join(d, "made.txt")) });
  assert.deepEqual(fs.readdirSync(dir), ["other.txt"]);
  assert.deepEqual(fs.readdirSync(tmp), ["out"], "no temporary folder left behind");
  fs.writeFileSync(path.join(tmp, "file"), "f");
  await assert.rejects(writeDirAtomic(path.join(tmp, "file"), fill), /exists and is not a folder/);
});
