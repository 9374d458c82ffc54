import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { commands } from "../../src/cli/commands/eval";
import { evaluateDirs } from "../../src/eval/dirs";
import { writeMask } from "../../src/data/image";
import { evaluateMasks } from "../../src/eval";
import { Rng } from "../../src/util";
import { tmpDir } from "../tmp";

const PALETTE: [number, number, number][] = [
  [205, 51, 51],
  [0, 255, 0],
  [65, 105, 225],
  [255, 165, 0],
  [255, 255, 255],
];

function setup(): { dir: string; manifest: string; gt: string; pred: string } {
  const dir = tmpDir("pbip-eval-");
  const manifest = path.join(dir, "toy.json");
  fs.writeFileSync(
    manifest,
    JSON.stringify({
      name: "toy",
      title: "toy",
      description: "test manifest",
      layout: { kind: "luad", tree: [] },
      splits: {},
      normalizationSource: "none",
      spec: {
        name: "toy",
        classes: ["tumor epithelium", "necrosis", "lymphocyte", "tumor-associated stroma"],
        codes: ["TE", "NEC", "LYM", "TAS"],
        palette: PALETTE,
        backgroundId: 4,
        labelFormat: "luad",
        patchSize: 16,
        normalization: { mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2] },
      },
    }),
  );
  const gt = path.join(dir, "gt");
  const pred = path.join(dir, "pred");
  fs.mkdirSync(gt);
  fs.mkdirSync(pred);
  return { dir, manifest, gt, pred };
}

test("pbip eval reads palette PNGs, prints the table with the convention, writes the JSON report", async () => {
  const { dir, manifest, gt, pred } = setup();
  const rng = new Rng(11);
  const pairs: { id: string; gt: Uint8Array; pred: Uint8Array; height: number; width: number }[] = [];
  for (let k = 0; k < 4; k++) {
    const g = new Uint8Array(16 * 16).map(() => rng.int(5));
    const p = g.map((v) => (rng.next() < 0.3 ? rng.int(4) : v));
    writeMask(path.join(gt, `p${k}.png`), g, 16, 16, PALETTE);
    writeMask(path.join(pred, `p${k}.png`), p, 16, 16, PALETTE);
    pairs.push({ id: `p${k}.png`, gt: g, pred: p, height: 16, width: 16 });
  }
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  let code: number | void;
  try {
    code = await commands[0]!.run(["--pred", pred, "--gt", gt, "--dataset", manifest, "--convention", "ignore-bg", "--band", "2"]);
  } finally {
    console.log = log;
  }
  assert.equal(code, 0);
  const out = lines.join("\n");
  assert.match(out, /convention ignore-bg/);
  assert.match(out, /MLPS/);
  assert.match(out, /^TE\s/m);
  assert.match(out, /FwIoU/);
  const file = path.join(pred, "eval-ignore-bg.json");
  const json = JSON.parse(fs.readFileSync(file, "utf8"));
  assert.equal(json.convention, "ignore-bg");
  assert.equal(json.images, 4);
  assert.deepEqual(json.band, { pixels: 2, ratio: null });
  // Same numbers as evaluating the arrays directly.
  const direct = evaluateMasks(pairs, { classes: ["TE", "NEC", "LYM", "TAS"], backgroundId: 4, convention: "ignore-bg", band: 2 });
  assert.deepEqual(json.scores.iou, direct.scores.iou);
  assert.equal(json.scores.mbiou, direct.scores.mbiou);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("pbip eval errors name the missing prediction, the size mismatch and bad options", async () => {
  const { dir, manifest, gt, pred } = setup();
  const ids = new Uint8Array(16 * 16);
  writeMask(path.join(gt, "a.png"), ids, 16, 16, PALETTE);
  writeMask(path.join(gt, "b.png"), ids, 16, 16, PALETTE);
  writeMask(path.join(pred, "a.png"), new Uint8Array(8 * 8), 8, 8, PALETTE);
  assert.throws(() => evaluateDirs({ pred, gt, dataset: manifest, progress: false }), /no prediction for 1 of 2 ground-truth masks \(first: b\.png\)/);
  writeMask(path.join(pred, "b.png"), ids, 16, 16, PALETTE);
  assert.throws(() => evaluateDirs({ pred, gt, dataset: manifest, progress: false }), /a\.png: prediction is 8x8 but ground truth .*a\.png is 16x16/);
  await assert.rejects(commands[0]!.run(["--pred", pred, "--gt", gt]), /--dataset are required/);
  await assert.rejects(commands[0]!.run(["--pred", pred, "--gt", gt, "--dataset", manifest, "--band", "0"]), /--band/);
  await assert.rejects(commands[0]!.run(["--pred", pred, "--gt", gt, "--dataset", manifest, "--convention", "both"]), /--convention/);
  fs.rmSync(dir, { recursive: true, force: true });
});
