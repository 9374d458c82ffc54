/**
 * Bank files: deterministic bytes, round trip, consistency checks, encoder
 * mismatch, and the tensor/index helpers. Uses hand-made features (no encoder).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend } from "../helpers";
import { bankFromFeatures } from "../../src/bank/build";
import {
  saveBank,
  loadBank,
  prototypesTensor,
  prototypesTensor3d,
  subclassClassIndex,
  classRows,
  prototypeRow,
  subclassLabels,
  numPrototypes,
  BANK_JSON,
  BANK_PROTOTYPES,
  prototypesSha256,
} from "../../src/bank/bank";
import { loadClassNet } from "../../src/pipeline/core";
import { saveVariables } from "../../src/io/checkpoint";
import { NOTEBOOK } from "../../src/config/profiles";
import { norm } from "../../src/bank/matrix";
import { handFeatures, TEST_ENCODER } from "./fixtures";
import { tmpDir } from "../tmp";

const tmp = () => tmpDir("pbip-bank-");

test("the same features and seed give byte-identical bank files; another seed does not", async () => {
  const f = handFeatures();
  for (const rule of ["centroid", "nearest", "random"] as const) {
    const cfg = { rule, k: 2, nK: 5, seed: 7 };
    const a = path.join(tmp(), "bank");
    const b = path.join(tmp(), "bank");
    await saveBank(a, bankFromFeatures(f, { config: cfg }));
    await saveBank(b, bankFromFeatures(handFeatures(), { config: cfg }));
    for (const file of [BANK_JSON, BANK_PROTOTYPES]) {
      assert.ok(fs.readFileSync(path.join(a, file)).equals(fs.readFileSync(path.join(b, file))), `${rule}: ${file} differs between two builds`);
    }
    const c = path.join(tmp(), "bank");
    await saveBank(c, bankFromFeatures(f, { config: { ...cfg, seed: 8 } }));
    assert.ok(!fs.readFileSync(path.join(a, BANK_JSON)).equals(fs.readFileSync(path.join(c, BANK_JSON))), `${rule}: the seed is not recorded or not used`);
  }
});

test("prototypes are [sum K, d]; centroid rows have unit norm; K per class is honoured", () => {
  const f = handFeatures();
  const bank = bankFromFeatures(f, { config: { rule: "centroid", k: [1, 2, 3], seed: 1 } });
  assert.deepEqual(bank.meta.k, [1, 2, 3]);
  assert.deepEqual(bank.meta.offsets, [0, 1, 3, 6]);
  assert.equal(numPrototypes(bank), 6);
  assert.equal(bank.prototypes.length, 6 * 8);
  for (let r = 0; r < 6; r++) assert.ok(Math.abs(norm(bank.prototypes.subarray(r * 8, r * 8 + 8)) - 1) < 1e-6, `row ${r} norm`);
  assert.deepEqual(subclassClassIndex(bank), [0, 1, 1, 2, 2, 2]);
  assert.deepEqual(classRows(bank, 2), [3, 6]);
  assert.equal(prototypeRow(bank, 1, 1), 2);
  assert.throws(() => prototypeRow(bank, 0, 1), /has 1 subclasses/);
  assert.deepEqual(subclassLabels(bank), ["A.0", "B.0", "B.1", "C.0", "C.1", "C.2"]);
  assert.throws(() => prototypesTensor3d(bank), /K differs/);
  // Each class's members are exactly its patches, each patch once.
  for (let c = 0; c < 3; c++) {
    const members = bank.meta.subclasses.filter((s) => s.classIndex === c).flatMap((s) => s.members.map((m) => m.id));
    const expected = f.ids.filter((_, i) => f.classIndex[i] === c);
    assert.deepEqual([...members].sort(), [...expected].sort());
  }
  // Two true sub-groups per class: with K = 2 each subclass is one sub-group (12 + 12).
  const k2 = bankFromFeatures(f, { config: { rule: "centroid", k: 2, seed: 3 } });
  assert.deepEqual(k2.meta.subclasses.map((s) => s.size), [12, 12, 12, 12, 12, 12]);
});

test("a saved bank loads back equal, as tensors too, and rejects another encoder", async () => {
  await onBackend("cpu", async () => {
    const dir = path.join(tmp(), "bank");
    const bank = bankFromFeatures(handFeatures(), { config: { rule: "nearest", k: 2, nK: 4, seed: 1 }, datasetRoot: "/data/hand" });
    await saveBank(dir, bank);
    const back = loadBank(dir, { encoder: TEST_ENCODER });
    assert.deepEqual(back.meta, bank.meta);
    assert.deepEqual(Array.from(back.prototypes), Array.from(bank.prototypes));
    assert.equal(back.meta.dataset.root, "/data/hand");
    assert.equal(back.meta.encoder.standInNote, "hand-made features");
    assert.match(back.meta.pbipVersion, /^\d+\.\d+\.\d+/);
    const before = tf.memory().numTensors;
    const t = prototypesTensor(back);
    assert.deepEqual(t.shape, [6, 8]);
    assert.deepEqual(Array.from(t.dataSync()), Array.from(bank.prototypes));
    const t3 = prototypesTensor3d(back);
    assert.deepEqual(t3.shape, [3, 2, 8]);
    tf.dispose([t, t3]);
    assert.equal(tf.memory().numTensors, before);

    const mismatches: [Partial<typeof TEST_ENCODER>, RegExp][] = [
      [{ name: "other-encoder" }, /name test-encoder vs other-encoder/],
      [{ weightsHash: "ffffffffffffffff" }, /weights hash 0123456789abcdef vs ffffffffffffffff/],
      [{ dim: 16 }, /d 8 vs 16/],
      [{ preprocessing: { ...TEST_ENCODER.preprocessing, inputSize: 224 } }, /preprocessing.inputSize 32 vs 224/],
      [{ preprocessing: { ...TEST_ENCODER.preprocessing, channelOrder: "BGR" } }, /preprocessing.channelOrder "RGB" vs "BGR"/],
    ];
    for (const [change, re] of mismatches) {
      assert.throws(
        () => loadBank(dir, { encoder: { ...TEST_ENCODER, ...change } }),
        (e: Error) => e.message.startsWith(path.join(dir, BANK_JSON)) && re.test(e.message) && /Rebuild the bank/.test(e.message),
      );
    }
  });
});

test("damaged bank folders are errors naming the file", async () => {
  const dir = path.join(tmp(), "bank");
  await saveBank(dir, bankFromFeatures(handFeatures(), { config: { k: 2, seed: 1 } }));
  const bin = path.join(dir, BANK_PROTOTYPES);
  const json = path.join(dir, BANK_JSON);
  const good = fs.readFileSync(bin);
  fs.writeFileSync(bin, good.subarray(0, good.length - 4));
  assert.throws(() => loadBank(dir), (e: Error) => e.message.startsWith(json) && /prototypes hold 47 floats, expected sum K x d = 6 x 8/.test(e.message));
  fs.writeFileSync(bin, good.subarray(0, good.length - 2));
  assert.throws(() => loadBank(dir), (e: Error) => e.message.startsWith(bin) && /not a multiple of 4/.test(e.message));
  fs.writeFileSync(bin, good);
  const meta = JSON.parse(fs.readFileSync(json, "utf8"));
  fs.writeFileSync(json, JSON.stringify({ ...meta, formatVersion: 99 }));
  assert.throws(() => loadBank(dir), /format version 99/);
  fs.writeFileSync(json, JSON.stringify({ ...meta, offsets: [0, 2, 3, 6] }));
  assert.throws(() => loadBank(dir), /offsets\[2\] is 3, expected 4/);
  fs.rmSync(bin);
  fs.writeFileSync(json, JSON.stringify(meta));
  assert.throws(() => loadBank(dir), (e: Error) => e.message.startsWith(bin) && /missing/.test(e.message));
  assert.throws(() => loadBank(path.join(dir, "nope")), /bank folder not found/);
  // Non-finite prototypes are refused when saving.
  const bad = bankFromFeatures(handFeatures(), { config: { k: 2, seed: 1 } });
  bad.prototypes[3] = NaN;
  await assert.rejects(saveBank(path.join(tmp(), "bank"), bad), /not finite/);
});

test("a bank of zero or identical prototypes (a dead or constant encoder) is refused when saving", async () => {
  const zero = bankFromFeatures(handFeatures(), { config: { k: 2, seed: 1 } });
  zero.prototypes.fill(0, 8, 24);
  await assert.rejects(saveBank(path.join(tmp(), "bank"), zero), /prototype rows 1, 2 are all zeros \(the encoder gave zero features/);
  const same = bankFromFeatures(handFeatures(), { config: { k: 2, seed: 1 } });
  for (let r = 1; r < 6; r++) same.prototypes.copyWithin(r * 8, 0, 8);
  await assert.rejects(saveBank(path.join(tmp(), "bank"), same), /all 6 prototypes are the same vector/);
});

test("saveBank replaces an earlier bank, but never a non-empty folder that is not a bank", async () => {
  const root = tmp();
  const dir = path.join(root, "bank");
  await saveBank(dir, bankFromFeatures(handFeatures(), { config: { k: 2, seed: 1 } }));
  await saveBank(dir, bankFromFeatures(handFeatures(), { config: { k: 1, seed: 1 } }));
  assert.deepEqual(loadBank(dir).meta.k, [1, 1, 1], "an earlier bank is replaced");
  const data = path.join(root, "dataset");
  fs.mkdirSync(data);
  fs.writeFileSync(path.join(data, "patch.png"), "x");
  await assert.rejects(saveBank(data, bankFromFeatures(handFeatures(), { config: { k: 2, seed: 1 } })), (e: Error) => e.message.startsWith(data) && /not an image bank \(bank\.json\) and is not empty/.test(e.message));
  assert.deepEqual(fs.readdirSync(data), ["patch.png"], "left as it was");
});

test("loadClassNet refuses a bank the checkpoint was not trained with, or a dataset with other classes, naming both", async () => {
  await onBackend("cpu", async () => {
    const dir = tmp();
    const bank = bankFromFeatures(handFeatures(), { config: { k: 2, seed: 1 } });
    await saveBank(path.join(dir, "bank"), bank);
    const spec = { name: "hand", codes: [...bank.meta.codes], classes: [...bank.meta.classes] } as never;
    const x = tf.zeros([1]);
    const ck = path.join(dir, "ck.safetensors");
    await saveVariables(ck, new Map([["x", x]]), { task: "classnet", step: 1, config: NOTEBOOK, identity: { prototypesSha256: "0000000000000000" } });
    await assert.rejects(loadClassNet(ck, bank, spec), (e: Error) => e.message.startsWith(ck) && e.message.includes(`was trained with other prototypes than the bank (${path.join(dir, "bank")}) holds (prototype hash 0000000000000000, the bank's ${prototypesSha256(bank.prototypes)})`));
    const other = { name: "bcss", codes: ["TUM", "STR", "LYM", "NEC"], classes: ["a", "b", "c", "d"] } as never;
    await assert.rejects(loadClassNet(ck, bank, other), /the bank .* has classes A, B, C but the dataset bcss has TUM, STR, LYM, NEC/);
    assert.notEqual(prototypesSha256(bank.prototypes), prototypesSha256(Float32Array.from(bank.prototypes, (v, i) => (i === 0 ? v + 1e-7 : v))), "one value's last bits change the hash");
    x.dispose();
  });
});
