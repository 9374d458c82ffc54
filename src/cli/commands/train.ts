import * as path from "node:path";
import { type Command, parse, datasetArg, interruptOnCtrlC, interruptedLine, str, flag, intArg, startBackend } from "../command";
import { resolveConfig, parseSetOverrides, PROFILES, type PbipConfig, type ConfigOverride } from "../../config/profiles";
import { openDataset } from "../../data/dataset";
import { createEncoderFor, createClassNet, stage1Loaders, openBank } from "../../pipeline";
import { trainClassNet } from "../../train/trainer";
import type { TrainEvent } from "../../train/loop";
import { ProgressBar, formatDuration } from "../../util/progress";
import { UsageError } from "../../util/errors";
import { prototypesTensor } from "../../bank";
import { formatBytes } from "../../runtime/memory";

/** Options shared by the commands that build a config: `--profile`, `--set`, and a few shortcuts. */
export const configOptions = {
  profile: { type: "string" as const },
  set: { type: "string" as const, multiple: true as const },
  epochs: { type: "string" as const },
  batch: { type: "string" as const },
  seed: { type: "string" as const },
  "max-steps": { type: "string" as const },
  "region-mode": { type: "string" as const },
  "no-sim": { type: "boolean" as const },
};

export const configUsage = [
  "--profile NAME     notebook (default; MobileNetV2, 112 px, 2 CPU cores), release, paper",
  "--set key=value    override any config value, e.g. --set loss.temperature=0.1 (repeatable)",
  "--epochs N --batch N --seed S --max-steps N   shortcuts for train.*",
  "--region-mode M    image (regions through the encoder, the method) | feature (dense-feature variant)",
  "--no-sim           classification loss only (L_FGS and L_BGS off): the baseline of notebook 03",
];

/** Build the config from `--profile`, the shortcuts and `--set`. */
export function configFromArgs(values: Record<string, unknown>): PbipConfig {
  const profile = (values.profile as string | undefined) ?? "notebook";
  if (!PROFILES[profile]) throw new UsageError(`--profile: unknown profile "${profile}"; use one of ${Object.keys(PROFILES).join(", ")}`);
  const num = (k: string) => {
    const v = values[k] as string | undefined;
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${k} must be a non-negative integer, got "${v}"`);
    return n;
  };
  const shortcut: ConfigOverride = {
    train: { epochs: num("epochs"), batchSize: num("batch"), seed: num("seed"), maxSteps: num("max-steps") } as PbipConfig["train"],
  };
  const rm = values["region-mode"] as string | undefined;
  if (rm !== undefined && rm !== "image" && rm !== "feature") throw new UsageError(`--region-mode must be image or feature, got "${rm}"`);
  const extra: ConfigOverride = {};
  if (rm) extra.match = { regionMode: rm } as PbipConfig["match"];
  if (values["no-sim"]) extra.loss = { useFg: false, useBg: false } as PbipConfig["loss"];
  let sets: ConfigOverride;
  try {
    sets = parseSetOverrides((values.set as string[] | undefined) ?? [], PROFILES[profile]);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  try {
    return resolveConfig(profile, shortcut, extra, sets);
  } catch (e) {
    // A value a key does not take (e.g. --epochs 0): name the option's key, exit as a usage error.
    throw new UsageError((e as Error).message);
  }
}

/** A one-line description of a step event for progress bars and logs. */
export function describeStep(ev: Extract<TrainEvent, { type: "step" }>): string {
  const l = ev.losses;
  const terms = ["cls", "fg", "bg"].filter((k) => k in l).map((k) => `${k} ${l[k]!.toFixed(3)}`);
  return `loss ${l.total.toFixed(4)} (${terms.join(", ")}) lr ${ev.lr.toExponential(2)}${"pairs" in ev.counts ? ` pairs ${ev.counts.pairs}` : ""} ${ev.seconds.step.toFixed(2)}s/step`;
}

const train: Command = {
  name: ["train"],
  summary: "train ClassNet with PBIP (stage 1): progress bar, per-epoch val pseudo-mask mIoU, resumable",
  usage: [
    "--data DIR         dataset folder (LUAD-HistoSeg/BCSS-WSSS layout or generic)",
    "--dataset NAME     its manifest name (synthetic, luad-histoseg, bcss-wsss, ...)",
    "--bank DIR         image bank from `pbip bank build` (built with the same encoder)",
    "--out DIR          run folder: checkpoints, train-log.jsonl, config.json; an existing one is resumed",
    ...configUsage,
    "--no-resume        start over even if --out has checkpoints",
    "--resize N         resize patches of another size to N on load (default: they are an error)",
    "--backend NAME     auto | webgpu | tensorflow | wasm | cpu (default: PBIP_BACKEND, else auto)",
    "--json             print one JSON event per line instead of a progress bar",
  ].join("\n"),
  async run(argv) {
    const p = parse("train", argv, {
      data: { type: "string" },
      dataset: { type: "string" },
      bank: { type: "string" },
      out: { type: "string" },
      "no-resume": { type: "boolean" },
      resize: { type: "string" },
      backend: { type: "string" },
      json: { type: "boolean" },
      ...configOptions,
    });
    const data = str(p, "data");
    const bankDir = str(p, "bank");
    const out = str(p, "out");
    if (!data || !bankDir || !out) throw new UsageError("pbip train: --data, --bank and --out are required (see --help)");
    const cfg = configFromArgs(p.values);
    await startBackend(str(p, "backend"));
    const dataset = datasetArg("train", data, str(p, "dataset"));
    const ds = openDataset(data, { dataset, resize: intArg("train", "resize", str(p, "resize"), 16) });
    const encoder = await createEncoderFor(cfg);
    const bank = openBank(bankDir, encoder);
    const net = await createClassNet(cfg, bank, ds.spec);
    const { train: trainL, val } = stage1Loaders(ds, cfg);
    const protos = prototypesTensor(bank);
    const json = flag(p, "json");
    let bar: ProgressBar | undefined;
    const ctrlC = interruptOnCtrlC();
    let interrupted = false;
    try {
      for await (const ev of trainClassNet({
        signal: ctrlC.signal,
        config: cfg,
        net,
        encoder,
        bankPrototypes: protos,
        backgroundId: ds.spec.backgroundId,
        train: trainL,
        val,
        outDir: path.resolve(out),
        resume: !flag(p, "no-resume"),
        bankIdentity: { dir: path.resolve(bankDir), encoder: bank.meta.encoder, k: bank.meta.k, rule: bank.meta.rule, seed: bank.meta.seed },
      })) {
        if (ev.type === "interrupted") interrupted = true;
        if (json) {
          console.log(JSON.stringify(ev.type === "start" ? { ...ev, config: undefined } : ev));
          continue;
        }
        if (ev.type === "start") {
          console.error(
            `training ${cfg.model.backbone} (${cfg.profile} profile), ${ev.totalSteps} steps (${ev.epochs} epochs of ${ev.stepsPerEpoch}), region mode ${cfg.match.regionMode}, L_FGS ${cfg.loss.useFg ? "on" : "off"}, L_BGS ${cfg.loss.useBg ? "on" : "off"}` +
              (ev.resumedFrom ? `; resumed from ${ev.resumedFrom} at step ${ev.step}` : ""),
          );
          bar = new ProgressBar("train", ev.totalSteps);
          bar.update(ev.step);
        } else if (ev.type === "step") bar?.update(ev.step, describeStep(ev));
        else if (ev.type === "validation") console.error(`\nepoch ${ev.epoch + 1}: val pseudo-mask mIoU ${(100 * ev.score.miou).toFixed(2)}%${ev.best ? " (best)" : ""}`);
        else if (ev.type === "checkpoint") console.error(`checkpoint ${ev.file}`);
        else if (ev.type === "interrupted") {
          console.error(interruptedLine(ev));
        } else if (ev.type === "done") {
          console.log(
            `done in ${formatDuration(ev.seconds)}: last ${ev.lastCheckpoint ?? "-"}, best ${ev.bestCheckpoint ?? "-"}` +
              (ev.bestMiou !== undefined ? ` (val mIoU ${(100 * ev.bestMiou).toFixed(2)}%)` : "") +
              `, rss ${formatBytes(process.memoryUsage().rss)}`,
          );
        }
      }
    } finally {
      ctrlC.dispose();
      protos.dispose();
      net.dispose();
      encoder.dispose();
    }
    return interrupted ? 130 : 0;
  },
};

export const commands: Command[] = [train];
