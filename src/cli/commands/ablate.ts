import * as path from "node:path";
import { type Command, parse, str, flag, startBackend } from "../command";
import { UsageError } from "../../util/errors";
import { writeJsonAtomic, writeFileAtomic } from "../../util/fs";
import { ProgressBar } from "../../util/progress";
import { runAblation, ablationTable, formatAblationTable, mergeOverrides, ABLATIONS, type AblationVariant } from "../../pipeline/ablation";
import { parseSetOverrides, PROFILES } from "../../config/profiles";

const ablate: Command = {
  name: ["ablate"],
  summary: "ablation study: each variant a config switch and a row (mean ± std over seeds, paired t-test vs pbip)",
  usage: [
    "--out DIR          study folder (one resumable run per variant and seed)",
    `--variants LIST    comma-separated, default pbip,cls-only; known: ${Object.keys(ABLATIONS).join(", ")}`,
    "--variant NAME:key=value   define a variant of your own (repeat to set more keys; added to --variants),",
    "                   e.g. --variant t1:loss.temperature=1 --variant t1:loss.useBg=false",
    "--seeds LIST       comma-separated seeds, default 0",
    "--profile NAME     default notebook",
    "--set key=value    applied to every variant (repeatable)",
    "--dataset NAME --data DIR   a real dataset instead of the embedded synthetic one",
    "--no-counts        do not compare its split sizes with the published ones (a subset, a re-split, your own data)",
    "--quick            small data and few steps",
    "--backend NAME",
  ].join("\n"),
  async run(argv) {
    const p = parse("ablate", argv, {
      out: { type: "string" },
      variants: { type: "string" },
      seeds: { type: "string" },
      profile: { type: "string" },
      set: { type: "string", multiple: true },
      variant: { type: "string", multiple: true },
      dataset: { type: "string" },
      data: { type: "string" },
      "no-counts": { type: "boolean" },
      quick: { type: "boolean" },
      backend: { type: "string" },
    });
    const out = str(p, "out");
    if (!out) throw new UsageError("pbip ablate: --out DIR is required");
    const variants = (str(p, "variants") ?? "pbip,cls-only").split(",").map((s) => s.trim()).filter(Boolean);
    const profile = str(p, "profile") ?? "notebook";
    if (!PROFILES[profile]) throw new UsageError(`--profile: unknown profile "${profile}"`);
    const variantDefs: Record<string, AblationVariant> = {};
    for (const d of (p.values.variant as string[] | undefined) ?? []) {
      const m = /^([A-Za-z0-9][\w.-]*):(.+)$/.exec(d);
      if (!m) throw new UsageError(`--variant: expected NAME:key=value (e.g. t1:loss.temperature=1), got "${d}"`);
      const [, name, setting] = m as unknown as [string, string, string];
      if (ABLATIONS[name]) throw new UsageError(`--variant: "${name}" is a built-in variant; give yours another name`);
      let o;
      try {
        o = parseSetOverrides([setting], PROFILES[profile]);
      } catch (e) {
        throw new UsageError(`--variant ${d}: ${(e as Error).message.replace(/^--set [^:]*: /, "")}`);
      }
      const prev = variantDefs[name];
      variantDefs[name] = { description: prev ? `${prev.description}, ${setting}` : setting, overrides: mergeOverrides(prev?.overrides, o) };
      if (!variants.includes(name)) variants.push(name);
    }
    for (const v of variants) if (!ABLATIONS[v] && !variantDefs[v]) throw new UsageError(`--variants: unknown variant "${v}"; known: ${Object.keys(ABLATIONS).join(", ")} (or define one with --variant ${v}:key=value)`);
    const seeds = (str(p, "seeds") ?? "0").split(",").map((s) => Number(s.trim()));
    if (seeds.some((s) => !Number.isInteger(s) || s < 0)) throw new UsageError(`--seeds must be non-negative integers, got "${str(p, "seeds")}"`);
    let overrides;
    try {
      overrides = parseSetOverrides((p.values.set as string[] | undefined) ?? [], PROFILES[profile]);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    await startBackend(str(p, "backend"));
    const bars = new Map<string, ProgressBar>();
    const records = await runAblation({
      out,
      variants,
      variantDefs,
      seeds,
      profile,
      overrides,
      dataset: str(p, "dataset"),
      data: str(p, "data"),
      checkCounts: !flag(p, "no-counts"),
      quick: p.values.quick === true ? true : undefined,
      onEvent: (v, s, ev) => {
        const key = `${v}/seed${s}`;
        if (ev.type === "start") bars.set(key, new ProgressBar(key, ev.totalSteps));
        if (ev.type === "step") bars.get(key)?.update(ev.step, `loss ${ev.losses.total.toFixed(3)}`);
      },
    });
    const rows = ablationTable(records, "pbip", { ...ABLATIONS, ...variantDefs });
    const text = formatAblationTable(rows, "pbip");
    console.log(text);
    writeJsonAtomic(path.join(out, "ablation.json"), { profile, seeds, variants, variantDefs, overrides, rows, records: records.map((r) => ({ ...r, perImage: undefined })) });
    writeFileAtomic(path.join(out, "ablation.txt"), text + "\n");
    console.log(`\nwrote ${path.join(out, "ablation.json")} and ablation.txt (val: pseudo-mask mIoU on the validation patches; test: the best checkpoint's test pseudo-masks; ground-truth background counted in both)`);
    return 0;
  },
};

export const commands: Command[] = [ablate];
