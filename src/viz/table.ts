import { escapeXml } from "./svg";

/** An HTML fragment with a plain-text twin, displayable in a notebook (see `show`). */
export interface HtmlValue {
  kind: "html";
  html: string;
  text: string;
}

/** Wrap HTML (and its plain-text fallback) for display. */
export function html(htmlText: string, text = "[HTML]"): HtmlValue {
  return { kind: "html", html: htmlText, text };
}

/** True for values made by {@link html} or {@link table}. */
export function isHtmlValue(x: unknown): x is HtmlValue {
  return typeof x === "object" && x !== null && (x as { kind?: unknown }).kind === "html" && typeof (x as HtmlValue).html === "string";
}

/** Options of {@link table}. */
export interface TableOptions {
  /** Columns in order (default: keys of all records, in first-seen order). */
  columns?: string[];
  /** Header text per column key. */
  headers?: Record<string, string>;
  /** Significant digits of numbers (default 4); `percent` columns show value * 100 with 2 decimals. */
  digits?: number;
  /** Column keys shown as percentages (value * 100). */
  percent?: string[];
  /** Caption above the table. */
  caption?: string;
  /** Most rows shown (default 200); a final row says how many were left out. */
  limit?: number;
}

/** Format one cell: numbers to `digits` significant digits (NaN/null as "-"), arrays joined, objects as JSON. */
export function formatCell(v: unknown, digits = 4, percent = false): string {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number") {
    if (Number.isNaN(v)) return "-";
    if (percent) return (v * 100).toFixed(2);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a >= 1e6 || a < 1e-3) ? v.toExponential(digits - 1) : String(Number(v.toPrecision(digits)));
  }
  if (Array.isArray(v)) return v.map((x) => formatCell(x, digits, percent)).join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

interface ArqueroLike {
  objects(options?: { limit?: number }): object[];
  columnNames(): string[];
  numRows(): number;
  toHTML(options?: { limit?: number }): string;
}

/** True for arquero tables (anything with `toHTML`, `objects`, `columnNames`, `numRows`). */
export function isArqueroTable(x: unknown): x is ArqueroLike {
  const t = x as ArqueroLike;
  return typeof x === "object" && x !== null && typeof t.toHTML === "function" && typeof t.objects === "function" && typeof t.columnNames === "function" && typeof t.numRows === "function";
}

/**
 * A table for notebooks and logs from an array of records or an arquero table:
 * HTML plus an aligned plain-text twin, numbers formatted alike in both.
 */
export function table(rows: Record<string, unknown>[] | ArqueroLike, opts: TableOptions = {}): HtmlValue {
  const limit = opts.limit ?? 200;
  if (isArqueroTable(rows)) {
    return recordTable(rows.objects({ limit }) as Record<string, unknown>[], opts.columns ?? rows.columnNames(), opts, rows.numRows());
  }
  return recordTable(rows.slice(0, limit), opts.columns ?? [...new Set(rows.flatMap((r) => Object.keys(r)))], opts, rows.length);
}

/** The rows shown (already limited) of a table of `total` rows. */
function recordTable(shown: Record<string, unknown>[], cols: string[], opts: TableOptions, total: number): HtmlValue {
  const pct = new Set(opts.percent ?? []);
  const numeric = cols.map((c) => shown.every((r) => r[c] === undefined || r[c] === null || typeof r[c] === "number"));
  const th = cols.map((c, j) => `<th style="text-align: ${numeric[j] ? "right" : "left"}">${escapeXml(opts.headers?.[c] ?? c)}</th>`).join("");
  const body = shown
    .map(
      (r) =>
        `<tr>${cols.map((c, j) => `<td style="text-align: ${numeric[j] ? "right" : "left"}">${escapeXml(formatCell(r[c], opts.digits, pct.has(c)))}</td>`).join("")}</tr>`,
    )
    .join("");
  const more = total > shown.length ? `<tr><td colspan="${cols.length}">… ${total - shown.length} more rows</td></tr>` : "";
  const cap = opts.caption ? `<caption style="font-weight: bold; text-align: left">${escapeXml(opts.caption)}</caption>` : "";
  return { kind: "html", html: `<table>${cap}<thead><tr>${th}</tr></thead><tbody>${body}${more}</tbody></table>`, text: textTable(shown, cols, opts, total) };
}

function textTable(rows: Record<string, unknown>[], cols: string[], opts: TableOptions, total: number): string {
  const pct = new Set(opts.percent ?? []);
  const head = cols.map((c) => opts.headers?.[c] ?? c);
  const cells = rows.map((r) => cols.map((c) => formatCell(r[c], opts.digits, pct.has(c))));
  const numeric = cols.map((c) => rows.every((r) => r[c] === undefined || r[c] === null || typeof r[c] === "number"));
  const w = cols.map((_, j) => Math.max(head[j]!.length, ...cells.map((r) => r[j]!.length)));
  const line = (vals: string[]) => vals.map((v, j) => (numeric[j] ? v.padStart(w[j]!) : v.padEnd(w[j]!))).join("  ").trimEnd();
  const out = [line(head), w.map((n) => "-".repeat(n)).join("  "), ...cells.map(line)];
  if (total > rows.length) out.push(`… ${total - rows.length} more rows`);
  if (opts.caption) out.unshift(opts.caption);
  return out.join("\n");
}
