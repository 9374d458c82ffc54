/**
 * `pbip bank build | info | zeroshot`: the image bank of METHOD.md section 2 from
 * the command line (the library side is `src/bank`).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parse, str, flag, backendOption, startBackend, numberArg, type Command } from "../command";
import { FileError, UsageError, ProgressBar } from "../../util";
import { readJson, writeJsonAtomic, assertReplaceable } from "../../util/fs";
import { openDataset, type Dataset } from "../../data/dataset";
import type { DatasetSpec } from "../../data/types";
import { createEncoder, describeEncoder, ENCODER_NAMES } from "../../encoders/factory";
import { createEncoderFor } from "../../pipeline/core";
import { MobileNetV2Encoder } from "../../encoders/mobilenetv2";
import { BUNDLED_MOBILENETV2 } from "../../encoders/bundled";
import { resolveConfig, kPerClass, PROFILES, type PbipConfig } from "../../config/profiles";
import { buildBankEvents, saveBank, loadBank, withinAcrossCosine, zeroShotEvents, type ImageBank } from "../../bank";
import { BANK_FOLDER_RULE } from "../../bank/bank";

const COMMON = `  --data DIR          dataset folder (LUAD-HistoSeg layout, BCSS-WSSS layout, or labels.csv)
  --dataset NAME      dataset manifest (luad-histoseg, bcss-wsss, synthetic, ...); default: the folder's card.json (synthetic sets)
  --encoder NAME      ${ENCODER_NAMES.join(" | ")} (build: default the profile's encoder, the bundled stand-in at the profile's input size; zeroshot: the bank's when bundled)
  --weights FILE      weights for encoders that take a file (swin-t)
  --resize N          resize patches of another size to N (default: they are an error)
  --batch N           patches per encoder batch (default 16)
  --backend NAME      auto | webgpu | tensorflow | wasm | cpu (default: PBIP_BACKEND, else auto)`;

const BUILD_USAGE = `${COMMON}
  --out DIR           bank folder to write (prototypes.f32 + bank.json; an earlier bank there is replaced atomically, any other non-empty folder refused)
  --profile NAME      defaults from a profile: ${Object.keys(PROFILES).join(", ")} (default notebook, as pbip train: the bundled stand-in at 112 px)
  --k K               subclasses per class: one number or one per class, e.g. 3 or 3,3,2,4 (profile: 3)
  --rule R            centroid (release) | nearest (paper: mean of the N_K nearest the centre) | random (Fig. 4 ablation)
  --nk N              N_K: patches per subclass (nearest) or per sub-bank (random) (profile: 100)
  --seed S            seed of clustering and random draws (profile: 42)
  --white-grey G      white filter: grey level above which a pixel is white (default 200)
  --white-max F       white filter: drop patches with more than this share of white pixels (default 0.5; 1 = off)
  --max-per-class N   use at most N single-label patches per class (seeded draw; quick runs)
  --no-cache          do not reuse or store encoded features in the cache
  --zero-shot SPLIT   afterwards, score image-prompt zero-shot classification on val, test or val,test (Table 6)`;

const ZS_USAGE = `  --bank DIR          bank folder (from pbip bank build)
${COMMON}
  --split S           val, test or val,test (default test): patches whose mask has one dominant class
  --min-share F       dominant class: at least this share of the foreground pixels (default 0.9)
  --min-foreground F  and foreground at least this share of the patch (default 0.5)
  --json FILE         also write the scores as JSON`;

function parseK(cmd: string, v: string | undefined): number | number[] | undefined {
  if (v === undefined) return undefined;
  const parts = v.split(",").map((s) => Number(s.trim()));
  if (parts.some((k) => !Number.isInteger(k) || k < 1)) throw new UsageError(`pbip ${cmd}: --k must be a positive integer or a comma-separated list of them, got "${v}"`);
  return parts.length === 1 ? parts[0]! : parts;
}

/** Open the dataset folder: by manifest name, or by the spec in the folder's card.json (synthetic sets). */
export function openBankDataset(cmd: string, data: string | undefined, dataset: string | undefined, resize?: number): Dataset {
  if (!data) throw new UsageError(`pbip ${cmd}: --data DIR is required`);
  if (!fs.existsSync(data)) throw new FileError(data, "dataset folder not found");
  let spec: string | DatasetSpec | undefined = dataset;
  if (!spec) {
    const card = path.join(data, "card.json");
    if (!fs.existsSync(card)) throw new UsageError(`pbip ${cmd}: --dataset NAME is required (${data} has no card.json naming its dataset)`);
    const c = readJson<{ spec?: DatasetSpec }>(card);
    if (!c.spec) throw new FileError(card, "has no spec; give --dataset NAME");
    spec = c.spec;
  }
  return openDataset(data, { dataset: spec, ...(resize ? { resize } : {}) });
}

function bankSummary(bank: ImageBank): string {
  const m = bank.meta;
  const lines: string[] = [];
  const w = Math.max(12, ...m.selection.steps.map((s) => s.step.length));
  lines.push(`${"step".padEnd(w)}  ${m.codes.map((c) => c.padStart(6)).join(" ")}   total`);
  for (const s of m.selection.steps) lines.push(`${s.step.padEnd(w)}  ${s.perClass.map((v) => String(v).padStart(6)).join(" ")}  ${String(s.total).padStart(6)}`);
  lines.push("");
  lines.push(`rule ${m.rule}${m.rule === "centroid" ? "" : `, N_K ${m.nK}`}, seed ${m.seed}, d ${m.dim}, K per class ${m.k.join(",")} (${m.offsets[m.classes.length]} prototypes)`);
  m.classes.forEach((c, i) => {
    const subs = m.subclasses.filter((s) => s.classIndex === i);
    lines.push(`  ${m.codes[i]!.padEnd(6)} ${c}: subclass sizes ${subs.map((s) => s.size).join(", ")}; spread (mean cosine distance) ${subs.map((s) => s.meanDistance.toFixed(3)).join(", ")}`);
  });
  const wa = withinAcrossCosine(bank);
  lines.push(`prototype cosine: within class ${Number.isNaN(wa.within) ? "- (K = 1)" : wa.within.toFixed(4)}, across classes ${wa.across.toFixed(4)}`);
  lines.push(`encoder ${m.encoder.name}, weights ${m.encoder.weightsHash}${m.encoder.isStandIn ? ` (STAND-IN: ${m.encoder.standInNote ?? "not the paper's encoder"})` : ""}`);
  return lines.join("\n");
}

async function runZeroShot(bank: ImageBank, ds: Dataset, splitName: string, encoder: Awaited<ReturnType<typeof createEncoder>>, o: { batch?: number; minShare?: number; minForeground?: number; json?: string }): Promise<void> {
  const split = splitName.split(",").map((s) => ds.split(s as "val" | "test"));
  let bar: ProgressBar | undefined;
  for await (const ev of zeroShotEvents(bank, split, encoder, { batchSize: o.batch, minShare: o.minShare, minForeground: o.minForeground })) {
    if (ev.type === "selected") {
      console.error(`zero-shot on ${splitName}: ${ev.patches} patches with a dominant class (${bank.meta.codes.map((c, i) => `${c} ${ev.perClass[i]}`).join(", ")}); ${ev.skipped} mixed patches skipped`);
      bar = new ProgressBar("encode", ev.patches);
    } else if (ev.type === "encode") bar?.update(ev.done);
    else {
      const r = ev.report;
      console.log(`\nimage-prompt zero-shot classification, ${splitName} (${r.n} patches)`);
      console.log(`${"class".padEnd(8)} support precision recall     F1`);
      for (const row of r.table.objects() as { code: string; support: number; precision: number; recall: number; f1: number }[]) {
        console.log(`${row.code.padEnd(8)} ${String(row.support).padStart(7)} ${row.precision.toFixed(3).padStart(9)} ${Number.isNaN(row.recall) ? "     -" : row.recall.toFixed(3).padStart(6)} ${Number.isNaN(row.f1) ? "     -" : row.f1.toFixed(3).padStart(6)}`);
      }
      console.log(`accuracy ${r.accuracy.toFixed(3)} (chance ${r.chanceAccuracy.toFixed(3)}, most frequent class ${r.majorityAccuracy.toFixed(3)}); macro F1 ${r.macroF1.toFixed(3)} (chance ${r.chanceMacroF1.toFixed(3)})`);
      if (o.json) {
        writeJsonAtomic(o.json, { split: splitName, bank: bank.dir, encoder: bank.meta.encoder.name, n: r.n, accuracy: r.accuracy, macroF1: r.macroF1, chanceAccuracy: r.chanceAccuracy, majorityAccuracy: r.majorityAccuracy, chanceMacroF1: r.chanceMacroF1, perClass: r.table.objects(), confusion: r.confusion });
      }
    }
  }
}

export const commands: Command[] = [
  {
    name: ["bank", "build"],
    summary: "build the image bank: single-label patches -> encoder -> per-class cosine k-means -> prototypes",
    usage: BUILD_USAGE,
    async run(argv: string[]): Promise<number> {
      const cmd = "bank build";
      const p = parse(cmd, argv, {
        data: { type: "string" },
        dataset: { type: "string" },
        encoder: { type: "string" },
        weights: { type: "string" },
        resize: { type: "string" },
        batch: { type: "string" },
        out: { type: "string" },
        profile: { type: "string" },
        k: { type: "string" },
        rule: { type: "string" },
        nk: { type: "string" },
        seed: { type: "string" },
        "white-grey": { type: "string" },
        "white-max": { type: "string" },
        "max-per-class": { type: "string" },
        "no-cache": { type: "boolean" },
        "zero-shot": { type: "string" },
        ...backendOption,
      });
      const out = str(p, "out");
      if (!out) throw new UsageError(`pbip ${cmd}: --out DIR is required`);
      assertReplaceable(out, BANK_FOLDER_RULE);
      const rule = str(p, "rule");
      if (rule !== undefined && !["centroid", "nearest", "random"].includes(rule)) throw new UsageError(`pbip ${cmd}: --rule must be centroid, nearest or random, got "${rule}"`);
      const zs = str(p, "zero-shot");
      if (zs !== undefined && !/^(val|test)(,(val|test))?$/.test(zs)) throw new UsageError(`pbip ${cmd}: --zero-shot must be val, test or val,test, got "${zs}"`);
      const isInt = (n: number) => Number.isInteger(n) && n >= 0;
      const profile = str(p, "profile") ?? "notebook";
      if (!PROFILES[profile]) throw new UsageError(`pbip ${cmd}: unknown --profile "${profile}"; use ${Object.keys(PROFILES).join(", ")}`);
      const over: Partial<PbipConfig["bank"]> = {
        k: parseK(cmd, str(p, "k")),
        rule: rule as PbipConfig["bank"]["rule"] | undefined,
        nK: numberArg(cmd, "nk", str(p, "nk"), (n) => Number.isInteger(n) && n >= 1, "a positive integer"),
        seed: numberArg(cmd, "seed", str(p, "seed"), isInt, "a non-negative integer"),
        whiteGrey: numberArg(cmd, "white-grey", str(p, "white-grey"), (n) => n >= 0 && n <= 255, "a grey level 0-255"),
        whiteMaxFraction: numberArg(cmd, "white-max", str(p, "white-max"), (n) => n >= 0 && n <= 1, "a fraction 0-1"),
      };
      const cfg = resolveConfig(profile, { bank: Object.fromEntries(Object.entries(over).filter(([, v]) => v !== undefined)) as Partial<PbipConfig["bank"]> });
      const resize = numberArg(cmd, "resize", str(p, "resize"), (n) => Number.isInteger(n) && n >= 16, "an integer >= 16");
      const batch = numberArg(cmd, "batch", str(p, "batch"), (n) => Number.isInteger(n) && n >= 1, "a positive integer");
      const maxPerClass = numberArg(cmd, "max-per-class", str(p, "max-per-class"), (n) => Number.isInteger(n) && n >= 1, "a positive integer");
      const ds = openBankDataset(cmd, str(p, "data"), str(p, "dataset"), resize);
      try {
        kPerClass(cfg, ds.spec.classes.length); // a K list of the wrong length, before any encoding
      } catch (e) {
        throw new UsageError(`pbip ${cmd}: --k: ${(e as Error).message} (${ds.spec.codes.join(", ")})`);
      }
      await startBackend(str(p, "backend"));
      // The profile's encoder (with its input size: the notebook profile runs the
      // bundled MobileNetV2 at 112 px), unless --encoder names another.
      const encoderName = str(p, "encoder");
      const weights = str(p, "weights");
      const encCfg = resolveConfig(cfg, encoderName || weights ? { encoder: { name: encoderName ?? cfg.encoder.name, weights } as PbipConfig["encoder"] } : {});
      if (encoderName && !/^mobilenetv2/.test(encoderName)) {
        delete encCfg.encoder.inputSize;
        delete encCfg.encoder.featureLayer;
      }
      const encoder = await createEncoderFor(encCfg);
      try {
        console.error(describeEncoder(encoder));
        const split = ds.split("train");
        let bar: ProgressBar | undefined;
        let bank: ImageBank | undefined;
        for await (const ev of buildBankEvents({ split, encoder, config: cfg.bank, batchSize: batch, maxPerClass, cache: !flag(p, "no-cache") })) {
          if (ev.type === "selected") {
            console.error(`${ev.candidates} single-label training patches to encode (of ${split.samples.length})`);
            bar = new ProgressBar("encode", ev.candidates);
          } else if (ev.type === "cache") {
            if (ev.hit) console.error(`encoded features found in the cache (${ev.file})`);
          } else if (ev.type === "encode") bar?.update(ev.done, `${ev.white} white`);
          else if (ev.type === "cluster") console.error(`cluster ${ev.className}: K = ${ev.k}, sizes ${ev.sizes.join(", ")}${ev.iterations !== undefined ? `, ${ev.iterations} iterations${ev.converged ? "" : " (not converged)"}` : ""}`);
          else if (ev.type === "done") bank = ev.bank;
        }
        await saveBank(out, bank!);
        console.log(bankSummary(bank!));
        console.log(`\nbank written to ${path.resolve(out)}`);
        if (zs) await runZeroShot(bank!, ds, zs, encoder, { batch });
      } finally {
        encoder.dispose();
      }
      return 0;
    },
  },
  {
    name: ["bank", "info"],
    summary: "summarise a bank folder: selection, subclasses, prototype similarity, encoder",
    usage: "  pbip bank info DIR",
    async run(argv: string[]): Promise<number> {
      const p = parse("bank info", argv, {}, true);
      const dir = p.positionals[0];
      if (!dir || p.positionals.length > 1) throw new UsageError("pbip bank info: give one bank folder");
      console.log(bankSummary(loadBank(dir)));
      return 0;
    },
  },
  {
    name: ["bank", "zeroshot"],
    summary: "image-prompt zero-shot classification with a bank (the paper's Table 6): per-class F1",
    usage: ZS_USAGE,
    async run(argv: string[]): Promise<number> {
      const cmd = "bank zeroshot";
      const p = parse(cmd, argv, {
        bank: { type: "string" },
        data: { type: "string" },
        dataset: { type: "string" },
        encoder: { type: "string" },
        weights: { type: "string" },
        resize: { type: "string" },
        batch: { type: "string" },
        split: { type: "string" },
        "min-share": { type: "string" },
        "min-foreground": { type: "string" },
        json: { type: "string" },
        ...backendOption,
      });
      const bankDir = str(p, "bank");
      if (!bankDir) throw new UsageError(`pbip ${cmd}: --bank DIR is required`);
      const split = str(p, "split") ?? "test";
      if (!/^(val|test)(,(val|test))?$/.test(split)) throw new UsageError(`pbip ${cmd}: --split must be val, test or val,test, got "${split}"`);
      const frac = (n: number) => n >= 0 && n <= 1;
      const resize = numberArg(cmd, "resize", str(p, "resize"), (n) => Number.isInteger(n) && n >= 16, "an integer >= 16");
      const ds = openBankDataset(cmd, str(p, "data"), str(p, "dataset"), resize);
      const bank = loadBank(bankDir);
      await startBackend(str(p, "backend"));
      const weights = str(p, "weights");
      let encoderName = str(p, "encoder");
      if (!encoderName) {
        if (!bank.meta.encoder.name.startsWith(BUNDLED_MOBILENETV2.id)) throw new UsageError(`pbip ${cmd}: the bank was built with ${bank.meta.encoder.name}; give --encoder for it`);
        encoderName = "mobilenetv2";
      }
      // The bundled encoder runs at the input size the bank was built with.
      const encoder = /^mobilenetv2/.test(encoderName)
        ? await MobileNetV2Encoder.forIdentity(bank.meta.encoder)
        : await createEncoder(encoderName, weights ? { weights } : {});
      try {
        await runZeroShot(bank, ds, split, encoder, {
          batch: numberArg(cmd, "batch", str(p, "batch"), (n) => Number.isInteger(n) && n >= 1, "a positive integer"),
          minShare: numberArg(cmd, "min-share", str(p, "min-share"), frac, "a fraction 0-1"),
          minForeground: numberArg(cmd, "min-foreground", str(p, "min-foreground"), frac, "a fraction 0-1"),
          json: str(p, "json"),
        });
      } finally {
        encoder.dispose();
      }
      return 0;
    },
  },
];
