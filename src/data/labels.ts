/**
 * Image-level labels written in file names, as published:
 * - LUAD-HistoSeg: `1031280-2300-27920-[1 0 0 1].png` (digits separated by spaces);
 * - BCSS-WSSS: `TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+0[1101].png` (no spaces).
 * The label is the multi-hot vector over the dataset's N classes in label order
 * (LUAD: TE, NEC, LYM, TAS; BCSS-WSSS: TUM, STR, LYM, NEC), the weak supervision
 * of PBIP's classification loss (paper section 3.2).
 */
import * as path from "node:path";
import { FileError } from "../util/errors";
import type { LabelFormat } from "./types";

const LUAD_RE = /\[\s*([01](?:\s+[01])*)\s*\]\.[A-Za-z0-9]+$/;
const BCSS_RE = /\[([01]+)\]\.[A-Za-z0-9]+$/;

/** An example file name for each format, used in error messages. */
export const LABEL_EXAMPLES: Record<Exclude<LabelFormat, "csv">, string> = {
  luad: "...-[1 0 0 1].png",
  bcss: "...+0[1101].png",
};

/**
 * Parse a label from a file name; returns the label or a description of what is
 * wrong (never throws). `numClasses` checks the length when given.
 */
export function tryParseLabelFromName(fileName: string, format: Exclude<LabelFormat, "csv">, numClasses?: number): { label: number[] } | { problem: string } {
  const base = path.basename(fileName);
  const m = (format === "luad" ? LUAD_RE : BCSS_RE).exec(base);
  if (!m) {
    const other = format === "luad" ? BCSS_RE.exec(base) : LUAD_RE.exec(base);
    const hint = other ? ` (it looks like the ${format === "luad" ? "bcss" : "luad"} format; check --dataset)` : "";
    return { problem: `no ${format === "luad" ? "LUAD-HistoSeg" : "BCSS-WSSS"} label suffix like ${LABEL_EXAMPLES[format]}${hint}` };
  }
  const label = (format === "luad" ? m[1]!.trim().split(/\s+/) : m[1]!.split("")).map(Number);
  if (numClasses !== undefined && label.length !== numClasses) return { problem: `label [${m[1]}] has ${label.length} entries, the dataset has ${numClasses} classes` };
  if (!label.some((v) => v === 1)) return { problem: `label [${m[1]}] has no class` };
  return { label };
}

/**
 * The multi-hot label in a file name (LUAD-HistoSeg `-[1 0 0 1].png` or
 * BCSS-WSSS `+0[1101].png`). Throws a {@link FileError} naming the file when the
 * suffix is missing, malformed, of the wrong length or empty.
 */
export function parseLabelFromName(fileName: string, format: Exclude<LabelFormat, "csv">, numClasses?: number): number[] {
  const r = tryParseLabelFromName(fileName, format, numClasses);
  if ("problem" in r) throw new FileError(fileName, r.problem);
  return r.label;
}

/**
 * A file name carrying `label` in the given format: `luad` gives
 * `<stem>-[1 0 0 1].png`, `bcss` gives `<stem>[1101].png` (the published BCSS-WSSS
 * names put `+<index>` at the end of the stem).
 */
export function formatLabelName(stem: string, label: readonly number[], format: Exclude<LabelFormat, "csv">, ext = ".png"): string {
  if (!label.every((v) => v === 0 || v === 1)) throw new Error(`formatLabelName: label must be 0/1 values, got [${label.join(",")}]`);
  return format === "luad" ? `${stem}-[${label.join(" ")}]${ext}` : `${stem}[${label.join("")}]${ext}`;
}

/**
 * Parse a label written in a CSV cell: `1 0 0 1`, `[1 0 0 1]`, `1101`, `1,0,0,1`
 * or `1;0;0;1`. Returns undefined when it is not such a label.
 */
export function parseLabelText(text: string, numClasses: number): number[] | undefined {
  const t = text.trim().replace(/^\[|\]$/g, "").trim();
  const parts = /^[01]+$/.test(t) ? t.split("") : t.split(/[\s,;]+/);
  if (parts.length !== numClasses || !parts.every((p) => p === "0" || p === "1")) return undefined;
  return parts.map(Number);
}
