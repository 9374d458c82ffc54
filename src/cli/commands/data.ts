import * as path from "node:path";
import { UsageError } from "../../util/errors";
import { ProgressBar, formatDuration } from "../../util/progress";
import { type Command, flag, intOption, numberArg, parse, str } from "../command";
import { defaultSyntheticDir, generateSynthetic, synthDefaults } from "../../data/synthetic/generate";
import { formatVerifyReport, verifyDataset } from "../../data/verify";
import { listManifests, loadManifest } from "../../data/manifest";
import { computeBaselines } from "../../data/baselines";
import { openDataset, type LayoutChoice } from "../../data/dataset";
import type { SynthCard } from "../../data/synthetic/card";
import { fetchRealSamples, REAL_SAMPLES } from "../../data/real-samples";

function layoutOption(v: string | undefined): LayoutChoice | undefined {
  if (v === undefined) return undefined;
  if (!["auto", "luad", "bcss", "csv"].includes(v)) throw new UsageError(`--layout must be auto, luad, bcss or csv, got "${v}"`);
  return v as LayoutChoice;
}

function summarizeCard(c: SynthCard): string {
  const pct = (v: number): string => (100 * v).toFixed(1);
  const lines = [
    `patches: train ${c.counts.train}, val ${c.counts.val}, test ${c.counts.test} at ${c.spec.patchSize}px, seed ${c.generator.seed}`,
    `normalisation (train): mean [${c.normalization.mean.join(", ")}], std [${c.normalization.std.join(", ")}]`,
    `content sha256: ${c.contentSha256}`,
  ];
  if (c.baselines) {
    const b = c.baselines;
    lines.push(
      `baselines on test (mIoU over TE/NEC/LYM/TAS, GT background counted): (a) most frequent label class ${pct(b.mostFrequent.mIoU)}%, (b) nearest class-mean colour RGB ${pct(b.nearestMeanRgb.mIoU)}%, optical density ${pct(b.nearestMeanOd.mIoU)}%`,
    );
  }
  return lines.join("\n");
}

const synth: Command = {
  name: ["data", "synth"],
  summary: "generate the synthetic H&E benchmark (LUAD-HistoSeg layout) with its card",
  usage: [
    `--out DIR       output folder (default ${path.relative(process.cwd(), defaultSyntheticDir()) || defaultSyntheticDir()}); replaced atomically`,
    `--train N       training patches (default ${synthDefaults.train})`,
    `--val N         validation patches (default ${synthDefaults.val})`,
    `--test N        test patches (default ${synthDefaults.test})`,
    `--size PX       patch side (default ${synthDefaults.size})`,
    `--seed S        seed (default ${synthDefaults.seed}); same seed, same bytes`,
    `--workers W     worker threads (default: all cores; 1 = no workers)`,
    `--no-train-masks  do not write train-mask/ (ground truth of the training patches)`,
    `--force         replace an existing folder that is not a synthetic set`,
    `--quiet         no progress bar`,
  ].join("\n"),
  async run(argv) {
    const p = parse("data synth", argv, {
      out: { type: "string" },
      train: { type: "string" },
      val: { type: "string" },
      test: { type: "string" },
      size: { type: "string" },
      seed: { type: "string" },
      workers: { type: "string" },
      "no-train-masks": { type: "boolean" },
      force: { type: "boolean" },
      quiet: { type: "boolean" },
    });
    const c = "data synth";
    const train = intOption(c, "train", str(p, "train"), synthDefaults.train);
    const val = intOption(c, "val", str(p, "val"), synthDefaults.val);
    const test = intOption(c, "test", str(p, "test"), synthDefaults.test);
    const size = intOption(c, "size", str(p, "size"), synthDefaults.size);
    const seed = intOption(c, "seed", str(p, "seed"), synthDefaults.seed);
    const workersStr = str(p, "workers");
    const workers = workersStr === undefined ? undefined : intOption(c, "workers", workersStr, 1);
    const out = path.resolve(str(p, "out") ?? defaultSyntheticDir());
    const quiet = flag(p, "quiet");
    let bar: ProgressBar | undefined;
    const r = await generateSynthetic({
      out,
      train,
      val,
      test,
      size,
      seed,
      workers,
      trainMasks: !flag(p, "no-train-masks"),
      force: flag(p, "force"),
      onProgress: quiet
        ? undefined
        : (e) => {
            if (e.phase === "paint") {
              bar ??= new ProgressBar("painting", e.total);
              bar.update(e.done);
            } else if (e.done === 0) process.stderr.write("writing the card (baselines, statistics, picture)\n");
          },
    });
    console.log(`wrote ${r.out} in ${formatDuration(r.seconds)} with ${r.workers} worker${r.workers > 1 ? "s" : ""}`);
    console.log(summarizeCard(r.card));
    console.log(`card: ${path.join(r.out, "card.md")}`);
    return 0;
  },
};

const verify: Command = {
  name: ["data", "verify"],
  summary: "check a dataset folder against its manifest; lists every problem",
  usage: [
    "pbip data verify DIR --dataset NAME",
    `--dataset NAME  one of ${listManifests().join(", ") || "the manifests in data-manifests/"}`,
    "--layout L      auto (default), luad, bcss or csv",
    "--split S       only this split (train, val, test); repeatable",
    "--no-counts     do not compare split sizes with the published ones",
    "--white-grey N  the white level whose glass check is reported (default 200, as the profiles)",
    "--json          print the report as JSON",
    "--quiet         no progress bar",
    "Exits 1 when anything is wrong, naming each offending file.",
  ].join("\n"),
  async run(argv) {
    const p = parse(
      "data verify",
      argv,
      {
        dataset: { type: "string" },
        layout: { type: "string" },
        split: { type: "string", multiple: true },
        "no-counts": { type: "boolean" },
        "white-grey": { type: "string" },
        json: { type: "boolean" },
        quiet: { type: "boolean" },
      },
      true,
    );
    const dir = p.positionals[0];
    if (!dir || p.positionals.length > 1) throw new UsageError("pbip data verify: give exactly one dataset folder (pbip data verify DIR --dataset NAME)");
    const dataset = str(p, "dataset");
    if (!dataset) throw new UsageError(`pbip data verify: --dataset is required (${listManifests().join(", ")})`);
    loadManifest(dataset);
    const splitsRaw = p.values.split as string[] | undefined;
    const splits = splitsRaw?.map((s) => (s === "valid" ? "val" : s));
    for (const s of splits ?? []) if (!["train", "val", "test"].includes(s)) throw new UsageError(`--split must be train, val or test, got "${s}"`);
    const whiteGrey = numberArg("data verify", "white-grey", str(p, "white-grey"), (n) => n >= 0 && n <= 255, "a grey level 0-255");
    let bar: ProgressBar | undefined;
    const report = await verifyDataset(path.resolve(dir), {
      dataset,
      layout: layoutOption(str(p, "layout")),
      splits: splits as ("train" | "val" | "test")[] | undefined,
      checkCounts: !flag(p, "no-counts"),
      whiteGrey,
      onProgress:
        flag(p, "quiet") || flag(p, "json")
          ? undefined
          : (d, t) => {
              bar ??= new ProgressBar("checking", t);
              if (d === t || d % 50 === 0) bar.update(d);
            },
    });
    console.log(flag(p, "json") ? JSON.stringify(report, null, 2) : formatVerifyReport(report));
    return report.ok ? 0 : 1;
  },
};

const baselines: Command = {
  name: ["data", "baselines"],
  summary: "difficulty baselines (most frequent class; nearest class-mean colour) on a dataset's test split",
  usage: ["pbip data baselines DIR --dataset NAME", "--layout L   auto (default), luad, bcss or csv", "--resize PX  resize patches of another size", "--json       print JSON"].join("\n"),
  async run(argv) {
    const p = parse("data baselines", argv, { dataset: { type: "string" }, layout: { type: "string" }, resize: { type: "string" }, json: { type: "boolean" } }, true);
    const dir = p.positionals[0];
    const dataset = str(p, "dataset");
    if (!dir || !dataset) throw new UsageError("pbip data baselines DIR --dataset NAME");
    const rs = str(p, "resize");
    const ds = openDataset(dir, { dataset, layout: layoutOption(str(p, "layout")), resize: rs === undefined ? undefined : intOption("data baselines", "resize", rs, 0) });
    const train = ds.split("train");
    const test = ds.split("test");
    const bar = flag(p, "json") ? undefined : new ProgressBar("reading", train.samples.length + test.samples.length);
    const r = await computeBaselines(train, test, (d) => {
      if (bar && (d % 50 === 0 || d === train.samples.length + test.samples.length)) bar.update(d);
    });
    if (flag(p, "json")) console.log(JSON.stringify(r, null, 2));
    else {
      console.log(r.convention);
      for (const s of [r.mostFrequent, r.nearestMeanRgb, r.nearestMeanOd]) {
        console.log(`${s.name.padEnd(48)} mIoU ${(100 * s.mIoU).toFixed(2)}%   IoU ${s.iou.map((v) => (Number.isNaN(v) ? "n/a" : (100 * v).toFixed(1))).join(" / ")}`);
      }
    }
    return 0;
  },
};

const samples: Command = {
  name: ["data", "samples"],
  summary: "fetch the real H&E and IHC samples (Debian's archive, else upstream) and say what they are",
  usage: [
    "pbip data samples [--dir DIR]",
    "--dir DIR  where to keep them (default .cache/real-samples, or $PBIP_CACHE/real-samples)",
    "--json     print the paths and sources as JSON",
    "Every file is checked against its SHA-256. Nothing is installed: the Debian packages are only unpacked.",
  ].join("\n"),
  async run(argv) {
    const p = parse("data samples", argv, { dir: { type: "string" }, json: { type: "boolean" } });
    const dir = str(p, "dir");
    const got = await fetchRealSamples({ dir: dir === undefined ? undefined : path.resolve(dir), log: flag(p, "json") ? undefined : (l) => console.error(l) });
    if (flag(p, "json")) console.log(JSON.stringify(got, null, 2));
    else {
      console.log(`real samples in ${got.dir}${got.source === "cache" ? " (already there)" : ` (fetched from ${got.source})`}:`);
      for (const s of REAL_SAMPLES) console.log(`  ${s.file.padEnd(26)} ${s.description}\n  ${"".padEnd(26)} licence: ${s.licence}`);
      console.log("Real stained tissue without pixel labels: for checks of colour and glass rules, not for segmentation scores.");
    }
    return 0;
  },
};

/** `pbip data synth`, `pbip data verify`, `pbip data baselines`, `pbip data samples`. */
export const commands: Command[] = [synth, verify, baselines, samples];
