/**
 * Static SVG charts: line, bar, scatter and heatmap. They are plain SVG
 * (attributes only, no script, no <style>, unique gradient ids), so they render
 * the same in JupyterLab, classic Notebook, VS Code, nbconvert's HTML export and
 * a file viewer, with no JavaScript and no network.
 */
import { colormap, hex, SERIES_COLORS, type ColormapName } from "./colormap";
import { fmt, svgDocument, svgText, textWidth } from "./svg";

let uid = 0;
function uniqueId(prefix: string): string {
  return `pbip-${prefix}-${(uid++).toString(36)}-${Math.floor(Math.random() * 1e9).toString(36)}`;
}

/** Evenly spaced "nice" tick values (steps 1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (lo === hi) return [lo];
  if (lo > hi) [lo, hi] = [hi, lo];
  const raw = (hi - lo) / Math.max(1, count);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw - 1e-12 * p) ?? 10 * p;
  const start = Math.ceil(lo / step - 1e-9) * step;
  const out: number[] = [];
  for (let v = start; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  return out;
}

/** Domain widened to nice tick boundaries. */
function niceDomain(lo: number, hi: number, count = 5): [number, number] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  if (lo === hi) {
    const d = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    return [lo - d, hi + d];
  }
  const t = niceTicks(lo, hi, count);
  const step = t.length > 1 ? t[1]! - t[0]! : hi - lo;
  return [Math.min(lo, t[0]! > lo ? t[0]! - step : t[0]!), Math.max(hi, t[t.length - 1]! < hi ? t[t.length - 1]! + step : t[t.length - 1]!)];
}

/** Short label for a tick value. */
export function formatNumber(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(1).replace("e+", "e");
  return Number(v.toPrecision(4)).toString();
}

/** One line of a {@link lineChart}. */
export interface LineSeries {
  name: string;
  x: ArrayLike<number>;
  y: ArrayLike<number>;
  color?: string;
  /** Dashed line. */
  dashed?: boolean;
  /** Draw a dot at each point (for sparse series, e.g. per-epoch validation). */
  markers?: boolean;
}

/** Options shared by the charts. */
export interface ChartOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
  fontSize?: number;
  /** Legend placement (default: right of the plot when the chart is at least 480 px wide, else below it). */
  legend?: LegendPlacement;
}

/** Options of {@link lineChart}. */
export interface LineChartOptions extends ChartOptions {
  /** Logarithmic y axis (non-positive values are skipped). */
  logY?: boolean;
  yMin?: number;
  yMax?: number;
  /** Fixed x range (default: the data's); e.g. [0, total steps] so a live chart does not rescale. */
  xMin?: number;
  xMax?: number;
  /** Most points drawn per series; longer series are reduced by min/max buckets (default 1000). */
  maxPoints?: number;
}

/** Reduce a series to about `max` points keeping each bucket's min and max (spikes stay visible). */
export function decimate(x: ArrayLike<number>, y: ArrayLike<number>, max: number): { x: number[]; y: number[] } {
  const n = Math.min(x.length, y.length);
  if (n <= max) return { x: Array.from({ length: n }, (_, i) => x[i]!), y: Array.from({ length: n }, (_, i) => y[i]!) };
  const buckets = Math.max(1, Math.floor(max / 2));
  const size = n / buckets;
  const ox: number[] = [];
  const oy: number[] = [];
  for (let b = 0; b < buckets; b++) {
    const s = Math.floor(b * size);
    const e = Math.min(n, Math.floor((b + 1) * size));
    let iMin = s;
    let iMax = s;
    for (let i = s; i < e; i++) {
      if (!(y[i]! >= y[iMin]!)) iMin = Number.isFinite(y[i]!) ? i : iMin;
      if (!(y[i]! <= y[iMax]!)) iMax = Number.isFinite(y[i]!) ? i : iMax;
    }
    for (const i of iMin <= iMax ? [iMin, iMax] : [iMax, iMin]) {
      if (ox.length && ox[ox.length - 1] === x[i]) continue;
      ox.push(x[i]!);
      oy.push(y[i]!);
    }
  }
  if (ox[ox.length - 1] !== x[n - 1]) {
    ox.push(x[n - 1]!);
    oy.push(y[n - 1]!);
  }
  return { x: ox, y: oy };
}

interface Frame {
  left: number;
  top: number;
  width: number;
  height: number;
}

type LegendKind = "line" | "box" | "dot";
interface LegendItem {
  name: string;
  color: string;
  dashed?: boolean;
  kind: LegendKind;
}

function legendMark(e: LegendItem, x: number, cy: number): string {
  if (e.kind === "line") return `<line x1="${fmt(x)}" y1="${fmt(cy)}" x2="${fmt(x + 18)}" y2="${fmt(cy)}" stroke="${e.color}" stroke-width="2"${e.dashed ? ' stroke-dasharray="5 3"' : ""}/>`;
  if (e.kind === "dot") return `<circle cx="${fmt(x + 9)}" cy="${fmt(cy)}" r="4" fill="${e.color}"/>`;
  return `<rect x="${fmt(x + 3)}" y="${fmt(cy - 6)}" width="12" height="12" fill="${e.color}"/>`;
}

/** Where a chart's legend goes: right of the plot, in rows below it, or nowhere. */
export type LegendPlacement = "right" | "bottom" | "none";

/** Space a legend takes and how to draw it once the plot frame is known. */
function planLegend(items: LegendItem[], W: number, H: number, fs: number, placement: LegendPlacement): { right: number; bottom: number; draw: (f: Frame) => string } {
  if (placement === "none" || items.length === 0) return { right: 0, bottom: 0, draw: () => "" };
  const itemW = (e: LegendItem) => 24 + textWidth(e.name, fs);
  if (placement === "right") {
    const right = 24 + Math.max(...items.map((e) => textWidth(e.name, fs))) + 12;
    return {
      right,
      bottom: 0,
      draw: (f) => items.map((e, i) => legendMark(e, W - right - 4, f.top + 10 + i * (fs + 6)) + svgText(W - right + 20, f.top + 10 + i * (fs + 6) + fs / 3, e.name, { size: fs })).join(""),
    };
  }
  // Bottom: items flow left to right and wrap.
  const lines: LegendItem[][] = [[]];
  let used = 0;
  for (const e of items) {
    const w = itemW(e) + 14;
    if (used + w > W - 20 && lines[lines.length - 1]!.length) {
      lines.push([]);
      used = 0;
    }
    lines[lines.length - 1]!.push(e);
    used += w;
  }
  const lineH = fs + 6;
  const bottom = lines.length * lineH + 4;
  return {
    right: 0,
    bottom,
    draw: () => {
      let out = "";
      lines.forEach((ln, li) => {
        let x = 10;
        const cy = H - bottom + li * lineH + lineH / 2;
        for (const e of ln) {
          out += legendMark(e, x, cy) + svgText(x + 24, cy + fs / 3, e.name, { size: fs });
          x += itemW(e) + 14;
        }
      });
      return out;
    },
  };
}

function axes(f: Frame, xt: { v: number; px: number }[], yt: { v: number; px: number }[], o: ChartOptions, fs: number, xTickText?: (v: number) => string): string {
  let s = `<rect x="${fmt(f.left)}" y="${fmt(f.top)}" width="${fmt(f.width)}" height="${fmt(f.height)}" fill="none" stroke="#888" stroke-width="1"/>`;
  for (const t of yt) {
    s += `<line x1="${fmt(f.left)}" y1="${fmt(t.px)}" x2="${fmt(f.left + f.width)}" y2="${fmt(t.px)}" stroke="#e4e4e4" stroke-width="1"/>`;
    s += svgText(f.left - 5, t.px + fs / 3, formatNumber(t.v), { size: fs - 1, anchor: "end", fill: "#444" });
  }
  for (const t of xt) {
    s += `<line x1="${fmt(t.px)}" y1="${fmt(f.top + f.height)}" x2="${fmt(t.px)}" y2="${fmt(f.top + f.height + 4)}" stroke="#888" stroke-width="1"/>`;
    s += svgText(t.px, f.top + f.height + fs + 4, xTickText ? xTickText(t.v) : formatNumber(t.v), { size: fs - 1, anchor: "middle", fill: "#444" });
  }
  if (o.xLabel) s += svgText(f.left + f.width / 2, f.top + f.height + 2 * fs + 10, o.xLabel, { size: fs, anchor: "middle" });
  if (o.yLabel) s += svgText(14, f.top + f.height / 2, o.yLabel, { size: fs, anchor: "middle", rotate: -90 });
  return s;
}

function titleText(o: ChartOptions, width: number, fs: number): string {
  return o.title ? svgText(width / 2, fs + 6, o.title, { size: fs + 1, anchor: "middle", weight: "bold" }) : "";
}

/**
 * A line chart of several series with a legend (e.g. training loss terms against
 * step), as an SVG string. NaN and infinite values break the line.
 */
export function lineChart(series: LineSeries[], opts: LineChartOptions = {}): string {
  const W = opts.width ?? 640;
  const H = opts.height ?? 360;
  const fs = opts.fontSize ?? 12;
  const maxPts = opts.maxPoints ?? 1000;
  const logY = !!opts.logY;
  const data = series.map((s, i) => {
    const d = decimate(s.x, s.y, maxPts);
    return { ...s, color: s.color ?? SERIES_COLORS[i % SERIES_COLORS.length]!, px: d.x, py: d.y };
  });
  const ok = (v: number) => Number.isFinite(v) && (!logY || v > 0);
  let xlo = Infinity;
  let xhi = -Infinity;
  let ylo = Infinity;
  let yhi = -Infinity;
  for (const s of data)
    s.px.forEach((x, i) => {
      const y = s.py[i]!;
      if (!Number.isFinite(x) || !ok(y)) return;
      xlo = Math.min(xlo, x);
      xhi = Math.max(xhi, x);
      const ty = logY ? Math.log10(y) : y;
      ylo = Math.min(ylo, ty);
      yhi = Math.max(yhi, ty);
    });
  if (opts.xMin !== undefined) xlo = Number.isFinite(xlo) ? Math.min(xlo, opts.xMin) : opts.xMin;
  if (opts.xMax !== undefined) xhi = Number.isFinite(xhi) ? Math.max(xhi, opts.xMax) : opts.xMax;
  if (opts.yMin !== undefined) ylo = logY ? Math.log10(opts.yMin) : opts.yMin;
  if (opts.yMax !== undefined) yhi = logY ? Math.log10(opts.yMax) : opts.yMax;
  const empty = !Number.isFinite(ylo) || !Number.isFinite(yhi);
  if (!Number.isFinite(xlo) || !Number.isFinite(xhi)) [xlo, xhi] = [0, 1];
  if (empty) [ylo, yhi] = [0, 1];
  if (xlo === xhi) [xlo, xhi] = [xlo - 1, xhi + 1];
  const [y0, y1] = logY ? [Math.floor(ylo), Math.max(Math.ceil(yhi), Math.floor(ylo) + 1)] : opts.yMin !== undefined && opts.yMax !== undefined ? [ylo, yhi] : niceDomain(ylo, yhi);
  const leg = planLegend(
    data.map((s) => ({ name: s.name, color: s.color, dashed: s.dashed, kind: "line" as const })),
    W,
    H,
    fs,
    opts.legend ?? (W >= 480 ? "right" : "bottom"),
  );
  const f: Frame = { left: 58, top: opts.title ? fs + 18 : 12, width: 0, height: 0 };
  f.width = W - f.left - 14 - leg.right;
  f.height = H - f.top - (opts.xLabel ? 2 * fs + 18 : fs + 14) - leg.bottom;
  const sx = (x: number) => f.left + ((x - xlo) / (xhi - xlo)) * f.width;
  const sy = (y: number) => f.top + f.height - (((logY ? Math.log10(y) : y) - y0) / (y1 - y0)) * f.height;
  const xt = niceTicks(xlo, xhi, Math.max(2, Math.floor(f.width / 80))).map((v) => ({ v, px: sx(v) }));
  const ytv = logY ? Array.from({ length: y1 - y0 + 1 }, (_, i) => Math.pow(10, y0 + i)) : niceTicks(y0, y1, Math.max(2, Math.floor(f.height / 50)));
  const yt = ytv.map((v) => ({ v, px: sy(v) }));
  const clip = uniqueId("clip");
  let body = titleText(opts, W, fs) + axes(f, xt, yt, opts, fs);
  body += `<defs><clipPath id="${clip}"><rect x="${fmt(f.left - 4)}" y="${fmt(f.top - 4)}" width="${fmt(f.width + 8)}" height="${fmt(f.height + 8)}"/></clipPath></defs><g clip-path="url(#${clip})">`;
  for (const s of data) {
    let d = "";
    let pen = false;
    const dots: string[] = [];
    s.px.forEach((x, i) => {
      const y = s.py[i]!;
      if (!Number.isFinite(x) || !ok(y)) {
        pen = false;
        return;
      }
      d += `${pen ? "L" : "M"}${fmt(sx(x))} ${fmt(sy(y))}`;
      pen = true;
      if (s.markers) dots.push(`<circle cx="${fmt(sx(x))}" cy="${fmt(sy(y))}" r="3" fill="${s.color}"/>`);
    });
    if (d) body += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6" stroke-linejoin="round"${s.dashed ? ' stroke-dasharray="5 3"' : ""}/>`;
    body += dots.join("");
  }
  body += "</g>";
  if (empty) body += svgText(f.left + f.width / 2, f.top + f.height / 2, "no data yet", { size: fs, anchor: "middle", fill: "#888" });
  body += leg.draw(f);
  return svgDocument(W, H, body);
}

/** One group of bars of a {@link barChart}. */
export interface BarSeries {
  name: string;
  values: ArrayLike<number>;
  color?: string;
}

/**
 * A grouped bar chart (e.g. per-class IoU of two methods), as an SVG string.
 * `showValues` writes each bar's value above it (multiplied by `valueScale`).
 */
export function barChart(categories: string[], series: BarSeries[], opts: ChartOptions & { showValues?: boolean; valueScale?: number; digits?: number; yMin?: number; yMax?: number } = {}): string {
  const W = opts.width ?? 640;
  const H = opts.height ?? 360;
  const fs = opts.fontSize ?? 12;
  let lo = opts.yMin ?? 0;
  let hi = opts.yMax ?? -Infinity;
  for (const s of series)
    for (let i = 0; i < s.values.length; i++)
      if (Number.isFinite(s.values[i]!)) {
        if (opts.yMin === undefined) lo = Math.min(lo, s.values[i]!);
        if (opts.yMax === undefined) hi = Math.max(hi, s.values[i]!);
      }
  if (!Number.isFinite(hi)) hi = 1;
  // Headroom for value labels above the tallest bar.
  if (opts.showValues && opts.yMax === undefined) hi += (hi - lo) * 0.08;
  const [y0, y1] = opts.yMin !== undefined && opts.yMax !== undefined ? [lo, hi] : niceDomain(lo, hi);
  const leg = planLegend(
    series.map((s, i) => ({ name: s.name, color: s.color ?? SERIES_COLORS[i % SERIES_COLORS.length]!, kind: "box" as const })),
    W,
    H,
    fs,
    series.length > 1 ? (opts.legend ?? (W >= 480 ? "right" : "bottom")) : "none",
  );
  const f: Frame = { left: 58, top: opts.title ? fs + 18 : 12, width: 0, height: 0 };
  f.width = W - f.left - 14 - leg.right;
  f.height = H - f.top - (opts.xLabel ? 2 * fs + 18 : fs + 14) - leg.bottom;
  const sy = (v: number) => f.top + f.height - ((v - y0) / (y1 - y0)) * f.height;
  const yt = niceTicks(y0, y1, Math.max(2, Math.floor(f.height / 50))).map((v) => ({ v, px: sy(v) }));
  const groupW = f.width / Math.max(1, categories.length);
  const barW = (groupW * 0.8) / Math.max(1, series.length);
  let body = titleText(opts, W, fs) + axes(f, [], yt, opts, fs);
  const scale = opts.valueScale ?? 1;
  categories.forEach((c, ci) => {
    const gx = f.left + ci * groupW + groupW * 0.1;
    series.forEach((s, si) => {
      const v = s.values[ci]!;
      if (!Number.isFinite(v)) return;
      const color = s.color ?? SERIES_COLORS[si % SERIES_COLORS.length]!;
      const b0 = sy(Math.min(Math.max(0, y0), y1));
      const yv = sy(Math.min(Math.max(v, y0), y1));
      const x = gx + si * barW;
      body += `<rect x="${fmt(x)}" y="${fmt(Math.min(yv, b0))}" width="${fmt(barW * 0.92)}" height="${fmt(Math.abs(b0 - yv))}" fill="${color}"/>`;
      if (opts.showValues) body += svgText(x + barW * 0.46, Math.min(yv, b0) - 3, (v * scale).toFixed(opts.digits ?? 1), { size: fs - 2, anchor: "middle", fill: "#333" });
    });
    body += svgText(f.left + ci * groupW + groupW / 2, f.top + f.height + fs + 4, c, { size: fs - 1, anchor: "middle", fill: "#444" });
  });
  body += leg.draw(f);
  return svgDocument(W, H, body);
}

/** One group of points of a {@link scatterChart}. */
export interface ScatterSeries {
  name: string;
  x: ArrayLike<number>;
  y: ArrayLike<number>;
  color?: string;
  /** Dot radius (default 3.5). */
  size?: number;
}

/** A scatter plot with a legend (e.g. a 2-D PCA of bank features by class), as an SVG string. */
export function scatterChart(series: ScatterSeries[], opts: ChartOptions = {}): string {
  const W = opts.width ?? 560;
  const H = opts.height ?? 420;
  const fs = opts.fontSize ?? 12;
  let [xlo, xhi, ylo, yhi] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const s of series)
    for (let i = 0; i < Math.min(s.x.length, s.y.length); i++) {
      if (!Number.isFinite(s.x[i]!) || !Number.isFinite(s.y[i]!)) continue;
      xlo = Math.min(xlo, s.x[i]!);
      xhi = Math.max(xhi, s.x[i]!);
      ylo = Math.min(ylo, s.y[i]!);
      yhi = Math.max(yhi, s.y[i]!);
    }
  // 5% margin so points never sit on the frame.
  const padX = (xhi - xlo) * 0.05 || 1;
  const padY = (yhi - ylo) * 0.05 || 1;
  [xlo, xhi] = niceDomain(xlo - padX, xhi + padX);
  [ylo, yhi] = niceDomain(ylo - padY, yhi + padY);
  const colors = series.map((s, i) => s.color ?? SERIES_COLORS[i % SERIES_COLORS.length]!);
  const leg = planLegend(
    series.map((s, i) => ({ name: s.name, color: colors[i]!, kind: "dot" as const })),
    W,
    H,
    fs,
    opts.legend ?? (W >= 480 ? "right" : "bottom"),
  );
  const f: Frame = { left: 58, top: opts.title ? fs + 18 : 12, width: 0, height: 0 };
  f.width = W - f.left - 14 - leg.right;
  f.height = H - f.top - (opts.xLabel ? 2 * fs + 18 : fs + 14) - leg.bottom;
  const sx = (x: number) => f.left + ((x - xlo) / (xhi - xlo)) * f.width;
  const sy = (y: number) => f.top + f.height - ((y - ylo) / (yhi - ylo)) * f.height;
  const xt = niceTicks(xlo, xhi, Math.max(2, Math.floor(f.width / 80))).map((v) => ({ v, px: sx(v) }));
  const yt = niceTicks(ylo, yhi, Math.max(2, Math.floor(f.height / 50))).map((v) => ({ v, px: sy(v) }));
  let body = titleText(opts, W, fs) + axes(f, xt, yt, opts, fs);
  series.forEach((s, si) => {
    for (let i = 0; i < Math.min(s.x.length, s.y.length); i++) {
      if (!Number.isFinite(s.x[i]!) || !Number.isFinite(s.y[i]!)) continue;
      body += `<circle cx="${fmt(sx(s.x[i]!))}" cy="${fmt(sy(s.y[i]!))}" r="${s.size ?? 3.5}" fill="${colors[si]}" fill-opacity="0.75"/>`;
    }
  });
  body += leg.draw(f);
  return svgDocument(W, H, body);
}

/** Options of {@link heatmapChart}. */
export interface HeatmapChartOptions extends ChartOptions {
  rowLabels?: string[];
  colLabels?: string[];
  colormap?: ColormapName;
  /** Colour range (default: data min and max). */
  vmin?: number;
  vmax?: number;
  /** Write each cell's value (default: when the matrix has at most 20 x 20 cells). */
  showValues?: boolean;
  digits?: number;
  /** Caption of the colour bar. */
  colorbarLabel?: string;
  /** Side of a cell in px (default: fit the width, at most 48). */
  cellSize?: number;
}

/**
 * A heatmap of a matrix with row and column labels and a colour bar (e.g. a
 * confusion matrix, or prototype-to-prototype cosine similarity), as an SVG string.
 */
export function heatmapChart(values: ArrayLike<number>[], opts: HeatmapChartOptions = {}): string {
  const fs = opts.fontSize ?? 12;
  const rows = values.length;
  const cols = Math.max(0, ...values.map((r) => r.length));
  if (!rows || !cols) throw new Error("heatmapChart: empty matrix");
  let lo = Infinity;
  let hi = -Infinity;
  for (const r of values)
    for (let j = 0; j < r.length; j++)
      if (Number.isFinite(r[j]!)) {
        lo = Math.min(lo, r[j]!);
        hi = Math.max(hi, r[j]!);
      }
  lo = opts.vmin ?? (Number.isFinite(lo) ? lo : 0);
  hi = opts.vmax ?? (Number.isFinite(hi) ? hi : 1);
  if (hi === lo) hi = lo + 1;
  const cmap = opts.colormap ?? "viridis";
  const rl = opts.rowLabels ?? [];
  const cl = opts.colLabels ?? [];
  const labelW = rl.length ? Math.max(...rl.map((s) => textWidth(s, fs))) + 10 : 6;
  const colLabelH = cl.length ? Math.min(90, Math.max(...cl.map((s) => textWidth(s, fs))) * (cl.some((s) => s.length > 4) ? 0.75 : 0.3) + fs + 6) : 6;
  const cs = opts.cellSize ?? Math.max(8, Math.min(48, Math.floor(((opts.width ?? 560) - labelW - 100) / cols)));
  const top = (opts.title ? fs + 18 : 8) + colLabelH;
  const left = labelW + (opts.yLabel ? fs + 10 : 0);
  const gridW = cols * cs;
  const gridH = rows * cs;
  const barX = left + gridW + 14;
  // Wide enough for the title (bold, one size up) as well as the grid and colour bar.
  const W = opts.width ?? Math.ceil(Math.max(barX + 16 + 60, opts.title ? textWidth(opts.title, fs + 1) + 20 : 0));
  const H = opts.height ?? Math.ceil(top + gridH + (opts.xLabel ? 2 * fs + 10 : 10));
  const show = opts.showValues ?? rows * cols <= 400;
  const grad = uniqueId("cbar");
  let body = titleText(opts, W, fs);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < cols; j++) {
      const v = values[i]![j]!;
      const x = left + j * cs;
      const y = top + i * cs;
      if (!Number.isFinite(v)) {
        body += `<rect x="${x}" y="${y}" width="${cs}" height="${cs}" fill="#ffffff" stroke="#ddd" stroke-width="0.5"/>`;
        continue;
      }
      const c = colormap(cmap, (v - lo) / (hi - lo));
      body += `<rect x="${x}" y="${y}" width="${cs}" height="${cs}" fill="${hex(c)}"/>`;
      if (show && cs >= 18) {
        const lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
        body += svgText(x + cs / 2, y + cs / 2 + fs / 3, v.toFixed(opts.digits ?? 2), { size: Math.min(fs - 1, cs / 2.6), anchor: "middle", fill: lum > 140 ? "#111" : "#fff" });
      }
    }
    if (rl[i]) body += svgText(left - 5, top + i * cs + cs / 2 + fs / 3, rl[i]!, { size: fs - 1, anchor: "end", fill: "#333" });
  }
  cl.forEach((c, j) => {
    const x = left + j * cs + cs / 2;
    const y = top - 5;
    body += c.length > 4 ? svgText(x, y, c, { size: fs - 1, anchor: "start", rotate: -60, fill: "#333" }) : svgText(x, y, c, { size: fs - 1, anchor: "middle", fill: "#333" });
  });
  if (opts.xLabel) body += svgText(left + gridW / 2, top + gridH + fs + 10, opts.xLabel, { size: fs, anchor: "middle" });
  if (opts.yLabel) body += svgText(fs, top + gridH / 2, opts.yLabel, { size: fs, anchor: "middle", rotate: -90 });
  const stops = Array.from({ length: 17 }, (_, i) => `<stop offset="${(i / 16).toFixed(4)}" stop-color="${hex(colormap(cmap, 1 - i / 16))}"/>`).join("");
  body += `<defs><linearGradient id="${grad}" x1="0" y1="0" x2="0" y2="1">${stops}</linearGradient></defs>`;
  body += `<rect x="${barX}" y="${top}" width="14" height="${gridH}" fill="url(#${grad})" stroke="#666" stroke-width="0.5"/>`;
  for (const v of niceTicks(lo, hi, 4)) {
    const y = top + gridH - ((v - lo) / (hi - lo)) * gridH;
    body += `<line x1="${barX + 14}" y1="${fmt(y)}" x2="${barX + 18}" y2="${fmt(y)}" stroke="#666" stroke-width="1"/>`;
    body += svgText(barX + 21, y + fs / 3, formatNumber(v), { size: fs - 1, fill: "#333" });
  }
  if (opts.colorbarLabel) body += svgText(barX, top - 6, opts.colorbarLabel, { size: fs - 1, fill: "#333" });
  return svgDocument(W, H, body);
}

/**
 * Several SVG charts laid out in a grid of `columns`, as one SVG (nested <svg>
 * elements; each keeps its own size).
 */
export function panels(svgs: string[], opts: { columns?: number; gap?: number } = {}): string {
  const cols = Math.max(1, opts.columns ?? svgs.length);
  const gap = opts.gap ?? 8;
  const sizes = svgs.map((s) => {
    const m = /<svg[^>]*?\swidth="([\d.]+)"[^>]*?\sheight="([\d.]+)"/.exec(s);
    if (!m) throw new Error("panels: an SVG has no width/height");
    return { w: Number(m[1]), h: Number(m[2]) };
  });
  const rows = Math.ceil(svgs.length / cols);
  const colW = Array.from({ length: cols }, (_, j) => Math.max(0, ...sizes.filter((_, i) => i % cols === j).map((s) => s.w)));
  const rowH = Array.from({ length: rows }, (_, r) => Math.max(0, ...sizes.slice(r * cols, (r + 1) * cols).map((s) => s.h)));
  const W = colW.reduce((a, b) => a + b, 0) + gap * (cols - 1);
  const H = rowH.reduce((a, b) => a + b, 0) + gap * (rows - 1);
  let body = "";
  svgs.forEach((s, i) => {
    const r = Math.floor(i / cols);
    const c = i % cols;
    const x = colW.slice(0, c).reduce((a, b) => a + b, 0) + gap * c;
    const y = rowH.slice(0, r).reduce((a, b) => a + b, 0) + gap * r;
    body += s.replace(/^\s*(<\?xml[^>]*>\s*)?<svg\b/, `<svg x="${x}" y="${y}"`);
  });
  return svgDocument(W, H, body);
}
