/**
 * Ablations a researcher runs (the paper's Tables 2, 4, 5 and Figure 4), each a
 * config switch and a row of one table: every (variant, seed) trains stage 1 in its
 * own run folder (resumable), writes test pseudo-masks, and is scored by the same
 * evaluator; rows give mean and standard deviation over seeds and a paired t-test
 * of per-image mIoU against the reference variant.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { ConfigOverride, PbipConfig } from "../config/profiles";
import type { EncoderIdentity, ImageEncoder } from "../encoders/types";
import type { PbipHooks } from "../train/trainer";
import { openRun, type OpenRunOptions, type PbipRun } from "./run";
import type { ImageBank } from "../bank";
import { createEncoderFor } from "./core";
import { ensureBank, stage1, loadStage1, ensurePseudoMasks } from "./stages";
import { resultRow } from "./results";
import { meanStd, pairedTTest } from "../eval/stats";
import { writeJsonAtomic, readJson } from "../util/fs";
import { latestCheckpoint, resumeMismatch, type TrainEvent } from "../train/loop";
import { readMetadata } from "../io/checkpoint";
import { stableStringify } from "../util/json";

export interface AblationVariant {
  description: string;
  overrides: ConfigOverride;
  /** Code-level changes to the objective; their `name` is kept in the records, so changed hooks need a new name to rerun. */
  hooks?: PbipHooks;
}

const over = <T>(x: T) => x as never;

/** The named variants. `pbip` is the profile unchanged and the reference of the t-tests. */
export const ABLATIONS: Record<string, AblationVariant> = {
  pbip: { description: "PBIP (the profile as is)", overrides: {} },
  "cls-only": { description: "L_CLS only (no prototype matching)", overrides: { loss: over({ useFg: false, useBg: false }) } },
  "no-fgs": { description: "without L_FGS", overrides: { loss: over({ useFg: false }) } },
  "no-bgs": { description: "without L_BGS", overrides: { loss: over({ useBg: false }) } },
  "conv1x1-head": { description: "1x1-conv head instead of similarity to prototypes (Table 5)", overrides: { model: over({ head: "conv1x1" }) } },
  "no-adaptive-threshold": { description: "no adaptive threshold: regions M*X and (1-M)*X (Table 4)", overrides: { match: over({ adaptiveThreshold: false }) } },
  "paper-similarity": { description: "eq. 2 as a true cosine (the paper) instead of the release's form", overrides: { model: over({ similarity: "paper" }) } },
  "image-mode": { description: "regions through the encoder in the graph (the method's image mode)", overrides: { match: over({ regionMode: "image" }) } },
  k1: { description: "K = 1 subclass per class", overrides: { bank: over({ k: 1 }) } },
  k2: { description: "K = 2", overrides: { bank: over({ k: 2 }) } },
  k3: { description: "K = 3", overrides: { bank: over({ k: 3 }) } },
  k4: { description: "K = 4", overrides: { bank: over({ k: 4 }) } },
  k5: { description: "K = 5", overrides: { bank: over({ k: 5 }) } },
  "bank-centroid": { description: "prototypes: L2-normalised centroid (release)", overrides: { bank: over({ rule: "centroid" }) } },
  "bank-nearest": { description: "prototypes: mean of the N_K nearest to the centre (paper)", overrides: { bank: over({ rule: "nearest" }) } },
  "bank-random": { description: "prototypes: N_K random patches, no clustering (Fig. 4)", overrides: { bank: over({ rule: "random" }) } },
};

export interface AblationRecord {
  variant: string;
  seed: number;
  /** Val pseudo-mask mIoU at the last validation (the end of training). */
  valMiou?: number;
  /** The best val mIoU over the run's validations: that of the checkpoint whose test masks are scored. */
  bestValMiou?: number;
  test: { miou: number; fwiou: number; mbiou: number; mdice: number };
  /** Per-image test mIoU, by patch id. */
  perImage: Record<string, number>;
  /** The run's resolved config, frozen encoder and hooks' name: a record is reused only while these still match. */
  config?: PbipConfig;
  encoder?: EncoderIdentity;
  hooks?: string;
}

export interface AblationRow {
  variant: string;
  description: string;
  seeds: number;
  miou: { mean: number; std: number };
  fwiou: { mean: number; std: number };
  mbiou: { mean: number; std: number };
  mdice: { mean: number; std: number };
  /** Val pseudo-mask mIoU at the end of training, over the seeds that recorded it. */
  val?: { mean: number; std: number; n: number };
  /** The best epoch's val mIoU (the scored checkpoint's), over the seeds that recorded it. */
  bestVal?: { mean: number; std: number; n: number };
  /** Paired t-test of per-image test mIoU against the reference (pooled over seeds). */
  vsReference?: { meanDiff: number; t: number; p: number; n: number };
}

export interface AblationOptions extends Omit<OpenRunOptions, "root" | "overrides"> {
  /** Folder of the study: one run folder per variant and seed. */
  out: string;
  variants: string[];
  /** Variants of your own, by name, beside (or replacing) the built-in {@link ABLATIONS}. */
  variantDefs?: Record<string, AblationVariant>;
  seeds: number[];
  /** Applied to every variant (e.g. a shorter budget). */
  overrides?: ConfigOverride;
  /** Reference of the t-tests (default `pbip`). */
  reference?: string;
  log?: (line: string) => void;
  onEvent?: (variant: string, seed: number, ev: TrainEvent) => void;
}

/**
 * Why a finished record cannot stand for this run (undefined when it can): its
 * config or encoder differ from the run's. A record written before records kept
 * their config is checked against its stage-1 checkpoint's config instead.
 */
function staleRecord(rec: AblationRecord, run: PbipRun, encoder: () => Promise<ImageEncoder>, hooks: string | undefined): Promise<string | undefined> | string | undefined {
  if ((rec.config || hooks) && rec.hooks !== hooks) return `was made with ${rec.hooks ? `hooks "${rec.hooks}"` : "no hooks"}, now ${hooks ? `hooks "${hooks}"` : "none"}`;
  let config = rec.config;
  if (!config) {
    const ckpt = latestCheckpoint(run.paths.stage1("model"));
    if (!ckpt) return undefined;
    config = readMetadata<{ config: PbipConfig }>(ckpt).config;
  }
  const why = resumeMismatch({ config }, run.config);
  if (why) return why;
  if (!rec.encoder) return undefined;
  const recorded = rec.encoder;
  return encoder().then((e) => (stableStringify(e.identity) === stableStringify(recorded) ? undefined : `was made with another encoder (${recorded.name} ${recorded.weightsHash}, now ${e.identity.name} ${e.identity.weightsHash})`));
}

/**
 * Run (or resume) every variant and seed; returns the records. A finished
 * (variant, seed) is reused while its config and encoder match; otherwise its
 * record is set aside (renamed, nothing deleted) and it runs again.
 */
export async function runAblation(o: AblationOptions): Promise<AblationRecord[]> {
  const log = o.log ?? ((l: string) => console.error(l));
  const defs = { ...ABLATIONS, ...(o.variantDefs ?? {}) };
  for (const v of o.variants) if (!defs[v]) throw new Error(`unknown ablation variant "${v}"; known: ${Object.keys(defs).join(", ")}`);
  const records: AblationRecord[] = [];
  for (const variant of o.variants) {
    for (const seed of o.seeds) {
      const root = path.resolve(o.out, variant, `seed${seed}`);
      const recFile = path.join(root, "ablation-record.json");
      const def = defs[variant]!;
      const seedOver: ConfigOverride = { train: over({ seed }), bank: over({ seed }) };
      const run = await openRun({ ...o, root, overrides: mergeOverrides(o.overrides, def.overrides, seedOver), verbose: false });
      let enc: ImageEncoder | undefined;
      const encoder = async () => (enc ??= await createEncoderFor(run.config));
      try {
        if (fs.existsSync(recFile)) {
          const rec = readJson<AblationRecord>(recFile);
          const why = await staleRecord(rec, run, encoder, def.hooks?.name);
          if (!why) {
            records.push(rec);
            log(`${variant} seed ${seed}: done earlier`);
            continue;
          }
          const aside = recFile.replace(/\.json$/, `.old-${Date.now()}.json`);
          fs.renameSync(recFile, aside);
          log(`${variant} seed ${seed}: the finished run ${why}; its record moved to ${aside}, running again`);
        }
        const e = await encoder();
        const { bank } = await ensureBank(run, e);
        const h = await stage1(run, { name: "model", hooks: def.hooks }, e, bank);
        let valMiou: number | undefined;
        let bestValMiou: number | undefined;
        for await (const ev of h.events()) {
          o.onEvent?.(variant, seed, ev);
          if (ev.type === "validation") valMiou = ev.score.miou;
          if (ev.type === "done") {
            valMiou = valMiou ?? ev.bestMiou;
            bestValMiou = ev.bestMiou;
          }
        }
        const rec = await scoreStage1Run(run, "model", bank, { variant, seed, valMiou, bestValMiou, config: run.config, encoder: e.identity, ...(def.hooks ? { hooks: def.hooks.name } : {}) }, recFile);
        records.push(rec);
        log(`${variant} seed ${seed}: test mIoU ${(100 * rec.test.miou).toFixed(2)}%${valMiou !== undefined ? `, val ${(100 * valMiou).toFixed(2)}%` : ""}`);
      } finally {
        enc?.dispose();
      }
    }
  }
  return records;
}

/**
 * Score a finished stage-1 run for a study: its best checkpoint's test pseudo-masks
 * (written once, reused), evaluated against the test masks; the record (with the
 * per-image mIoU the t-tests pair on) is written atomically to `file`.
 */
export async function scoreStage1Run(run: PbipRun, stage1Variant: string, bank: ImageBank, id: Pick<AblationRecord, "variant" | "seed" | "valMiou" | "bestValMiou" | "config" | "encoder" | "hooks">, file: string): Promise<AblationRecord> {
  const { net, config, file: ckpt } = await loadStage1(run, stage1Variant, bank);
  let maskDir: string;
  try {
    maskDir = (await ensurePseudoMasks(run, stage1Variant, "test", net, config, ckpt)).outDir;
  } finally {
    net.dispose();
  }
  const row = resultRow(run, id.variant, maskDir);
  const rec: AblationRecord = {
    ...id,
    test: { miou: row.miou, fwiou: row.fwiou, mbiou: row.mbiou, mdice: row.mdice },
    perImage: Object.fromEntries(row.report.perImage.map((p) => [p.id, p.miou])),
  };
  writeJsonAtomic(file, rec);
  return rec;
}

/** Merge config overrides section by section; a later one wins key by key. */
export function mergeOverrides(...list: (ConfigOverride | undefined)[]): ConfigOverride {
  const out: Record<string, Record<string, unknown>> = {};
  for (const o of list) {
    if (!o) continue;
    for (const [k, v] of Object.entries(o)) out[k] = { ...(out[k] ?? {}), ...(v as Record<string, unknown>) };
  }
  return out as ConfigOverride;
}

/** Rows of the ablation table: mean and std over seeds, and the t-test against the reference. */
export function ablationTable(records: AblationRecord[], reference = "pbip", defs: Record<string, AblationVariant> = ABLATIONS): AblationRow[] {
  const variants = [...new Set(records.map((r) => r.variant))];
  const ref = records.filter((r) => r.variant === reference);
  return variants.map((variant) => {
    const rs = records.filter((r) => r.variant === variant);
    const ms = (k: keyof AblationRecord["test"]) => {
      const m = meanStd(rs.map((r) => r.test[k]));
      return { mean: m.mean, std: m.std };
    };
    const vs = (k: "valMiou" | "bestValMiou") => {
      const xs = rs.map((r) => r[k]).filter((x): x is number => typeof x === "number");
      if (!xs.length) return undefined;
      const m = meanStd(xs);
      return { mean: m.mean, std: m.std, n: xs.length };
    };
    let vsReference: AblationRow["vsReference"];
    if (variant !== reference && ref.length) {
      const a: number[] = [];
      const b: number[] = [];
      for (const r of rs) {
        const rr = ref.find((x) => x.seed === r.seed);
        if (!rr) continue;
        for (const [id, v] of Object.entries(r.perImage)) {
          if (id in rr.perImage) {
            a.push(v);
            b.push(rr.perImage[id]!);
          }
        }
      }
      if (a.length >= 2) {
        const t = pairedTTest(a, b);
        vsReference = { meanDiff: t.meanDiff, t: t.t, p: t.p, n: t.n };
      }
    }
    return { variant, description: defs[variant]?.description ?? ABLATIONS[variant]?.description ?? variant, seeds: rs.length, miou: ms("miou"), fwiou: ms("fwiou"), mbiou: ms("mbiou"), mdice: ms("mdice"), val: vs("valMiou"), bestVal: vs("bestValMiou"), vsReference };
  });
}

/**
 * The table as text (percentages; std over seeds; p of the paired t-test). Val mIoU is
 * the end of training's; a second val column, the best epoch's, appears when it differs
 * from the first in some row (runs that validated more than once, best epoch not the last).
 */
export function formatAblationTable(rows: AblationRow[], reference = "pbip"): string {
  const pct = (m: { mean: number; std: number }, n: number) => `${(100 * m.mean).toFixed(2)}${n > 1 ? ` ± ${(100 * m.std).toFixed(2)}` : ""}`;
  // A study resumed across versions may hold records without val: say over how many seeds.
  const opt = (m: { mean: number; std: number; n: number } | undefined, seeds: number) => (m ? `${pct(m, m.n)}${m.n < seeds ? ` (${m.n} seeds)` : ""}` : "");
  const withBest = rows.some((r) => r.bestVal && (!r.val || Math.abs(r.bestVal.mean - r.val.mean) > 1e-12 || r.bestVal.n !== r.val.n));
  const head = ["variant", "seeds", "val mIoU", ...(withBest ? ["val, best epoch"] : []), "test mIoU", "FwIoU", "bIoU", "Dice", `vs ${reference}: per-image test mIoU diff (points), paired t p`];
  const body = rows.map((r) => [
    r.variant,
    String(r.seeds),
    opt(r.val, r.seeds),
    ...(withBest ? [opt(r.bestVal, r.seeds)] : []),
    pct(r.miou, r.seeds),
    pct(r.fwiou, r.seeds),
    pct(r.mbiou, r.seeds),
    pct(r.mdice, r.seeds),
    r.vsReference ? `${(100 * r.vsReference.meanDiff).toFixed(2)}, p=${r.vsReference.p.toExponential(1)}` : "",
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join("  ");
  return [line(head), line(w.map((n) => "-".repeat(n))), ...body.map(line)].join("\n");
}
