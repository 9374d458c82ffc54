// Options a command cannot take are usage errors (exit 2) found before any work:
// no backend started, no dataset read, no folder made.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { UsageError } from "../../src/util/errors";
import { commands as doctor } from "../../src/cli/commands/doctor";
import { commands as cam } from "../../src/cli/commands/cam";
import { commands as train } from "../../src/cli/commands/train";
import { commands as bank } from "../../src/cli/commands/bank";
import { generateSynthetic } from "../../src/data/synthetic/generate";
import { dominantClassSamples } from "../../src/bank/zeroshot";
import { openDataset } from "../../src/data/dataset";
import { encodePalettePng } from "../../src/data/png";
import { tmpDir } from "../tmp";
import { loadManifest } from "../../src/data/manifest";
import { createClassNet } from "../../src/pipeline/core";
import { resolveConfig } from "../../src/config/profiles";
import type { ImageBank } from "../../src/bank";

const usage = (re: RegExp) => (e: unknown) => e instanceof UsageError && re.test(e.message);
const find = (cmds: typeof doctor, name: string) => cmds.find((c) => c.name.join(" ") === name)!;

test("unknown backends, contradicting flags and out-of-range values are usage errors before any work", async () => {
  await assert.rejects(find(doctor, "doctor").run(["--backend", "foo"]), usage(/--backend: unknown backend "foo"; use one of auto, webgpu/));
  const camArgs = ["--checkpoint", "c", "--bank", "b", "--data", "/nonexistent-pbip", "--out", "o"];
  await assert.rejects(find(cam, "cam").run([...camArgs, "--tta", "--no-tta"]), usage(/--tta and --no-tta contradict/));
  await assert.rejects(find(cam, "cam").run([...camArgs, "--backend", "gpu9"]), usage(/unknown backend "gpu9"/));
  // Checked before any file is opened (the data folder does not exist).
  await assert.rejects(find(cam, "cam").run([...camArgs, "--merge", "max"]), usage(/--merge must be softmax or mean, got "max"/));
  await assert.rejects(find(cam, "cam").run([...camArgs, "--gate", "labels"]), usage(/--gate must be gt or pred, got "labels"/));
  await assert.rejects(find(cam, "cam").run([...camArgs, "--background", "glass"]), usage(/--background must be none, power, white or power-white/));
  const trainArgs = ["--data", "/nonexistent-pbip", "--bank", "b", "--out", "o"];
  await assert.rejects(find(train, "train").run([...trainArgs, "--epochs", "0"]), usage(/train\.epochs takes an integer of at least 1, got 0/));
  await assert.rejects(find(train, "train").run([...trainArgs, "--batch", "0"]), usage(/train\.batchSize takes an integer of at least 1, got 0/));
  await assert.rejects(find(train, "train").run([...trainArgs, "--set", "train.epochs=abc"]), usage(/--set train\.epochs=abc: train\.epochs takes an integer/));
});

test("bank build: a K list of the wrong length is a usage error before encoding; --out never replaces a folder that is not a bank", async () => {
  const dir = tmpDir("pbip-cli-");
  const data = path.join(dir, "data");
  await generateSynthetic({ out: data, train: 8, val: 2, test: 2, size: 32, seed: 1 } as never);
  const build = find(bank, "bank build");
  await assert.rejects(build.run(["--data", data, "--out", path.join(dir, "bank"), "--k", "3,3"]), usage(/--k: bank\.k has 2 entries for 4 classes/));
  assert.ok(!fs.existsSync(path.join(dir, "bank")));
  const before = fs.readdirSync(data).sort();
  await assert.rejects(build.run(["--data", data, "--out", data]), (e: Error) => e.message.startsWith(data) && /not an image bank \(bank\.json\) and is not empty/.test(e.message));
  assert.deepEqual(fs.readdirSync(data).sort(), before, "the dataset is untouched");
});

test("zero-shot scoring reads masks as the loader does: a mask of another size than its patch is an error naming it", async () => {
  const dir = tmpDir("pbip-zs-");
  const data = path.join(dir, "data");
  await generateSynthetic({ out: data, train: 4, val: 2, test: 2, size: 32, seed: 1 } as never);
  const ds = openDataset(data, { dataset: JSON.parse(fs.readFileSync(path.join(data, "card.json"), "utf8")).spec });
  assert.equal(dominantClassSamples(ds.split("val")).samples.length + dominantClassSamples(ds.split("val")).skipped, 2);
  const mask = path.join(data, "val", "mask", fs.readdirSync(path.join(data, "val", "mask")).sort()[0]!);
  fs.writeFileSync(mask, encodePalettePng(new Uint8Array(20 * 20), 20, 20, ds.spec.palette));
  assert.throws(() => dominantClassSamples(ds.split("val")), (e: Error) => e.message.startsWith(mask) && /20x20/.test(e.message));
});

test("train and cam: a folder with no card.json needs --dataset (no silent `synthetic`); a bank of other classes is refused", async () => {
  const dir = tmpDir("pbip-cli-ds-");
  const noCard = path.join(dir, "LUAD-HistoSeg");
  fs.mkdirSync(noCard);
  await assert.rejects(find(train, "train").run(["--data", noCard, "--bank", "b", "--out", path.join(dir, "o"), "--backend", "cpu"]), usage(/pbip train: --dataset NAME is required \(.*LUAD-HistoSeg has no card\.json/));
  await assert.rejects(find(cam, "cam").run(["--checkpoint", "c", "--bank", "b", "--data", noCard, "--out", path.join(dir, "o"), "--backend", "cpu"]), usage(/pbip cam: --dataset NAME is required/));
  assert.ok(!fs.existsSync(path.join(dir, "o")), "nothing written");
  // ClassNet is built only from a bank of the dataset's own classes (a BCSS bank on LUAD data was accepted).
  const spec = loadManifest("luad-histoseg").spec;
  await assert.rejects(
    createClassNet(resolveConfig("notebook"), { dir: "/runs/bcss/bank", meta: { codes: ["TUM", "STR", "LYM", "NEC"] } } as unknown as ImageBank, spec),
    /the bank \(\/runs\/bcss\/bank\) has classes TUM, STR, LYM, NEC but the dataset luad-histoseg has TE, NEC, LYM, TAS/,
  );
});
