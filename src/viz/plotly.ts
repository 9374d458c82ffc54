/**
 * Interactive plotly figures for notebooks, fully offline: plotly.js comes from
 * the installed `plotly.js-dist-min` package (never a CDN). The first figure a
 * kernel session displays carries the library inline; later figures reuse
 * `window.Plotly` (waiting briefly for it, since front ends may render outputs
 * lazily). Each figure's HTML also holds a static PNG preview, which stays
 * visible where scripts don't run (an untrusted notebook, a viewer without JS)
 * and is replaced by the live plot where they do.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { scatterChart, heatmapChart, type ScatterSeries, type HeatmapChartOptions } from "./charts";
import { escapeXml, textWidth } from "./svg";
import { SERIES_COLORS } from "./colormap";
import { FileError, writeFileAtomic } from "../util";

/** A plotly figure spec plus an optional static SVG rendering of the same data. */
export interface PlotlyFigure {
  kind: "plotly";
  data: Record<string, unknown>[];
  layout: Record<string, unknown>;
  config: Record<string, unknown>;
  /** Static SVG of the same data (pbip's own chart), used as the preview image. */
  staticSvg?: string;
}

/** A plotly figure from traces, layout and config (https://plotly.com/javascript/reference/). */
export function plotlyFigure(data: Record<string, unknown>[], layout: Record<string, unknown> = {}, config: Record<string, unknown> = {}, staticSvg?: string): PlotlyFigure {
  return { kind: "plotly", data, layout: { width: 640, height: 420, ...layout }, config: { responsive: true, displaylogo: false, ...config }, ...(staticSvg ? { staticSvg } : {}) };
}

/** True for values made by {@link plotlyFigure}. */
export function isPlotlyFigure(x: unknown): x is PlotlyFigure {
  return typeof x === "object" && x !== null && (x as { kind?: unknown }).kind === "plotly" && Array.isArray((x as PlotlyFigure).data);
}

/** One group of points of {@link plotlyScatter}, with optional hover text per point (e.g. the patch file name). */
export interface PlotlyScatterSeries extends ScatterSeries {
  text?: string[];
}

/**
 * Interactive scatter (e.g. the 2-D PCA of bank features, one series per class
 * or sub-class, hover text naming each patch), with a static SVG preview.
 */
export function plotlyScatter(series: PlotlyScatterSeries[], opts: { title?: string; xLabel?: string; yLabel?: string; width?: number; height?: number } = {}): PlotlyFigure {
  const traces = series.map((s, i) => ({
    type: "scatter",
    mode: "markers",
    name: s.name,
    x: Array.from(s.x),
    y: Array.from(s.y),
    ...(s.text ? { text: s.text, hoverinfo: "text+name" } : {}),
    marker: { color: s.color ?? SERIES_COLORS[i % SERIES_COLORS.length], size: 2 * (s.size ?? 3.5), opacity: 0.8 },
  }));
  const width = opts.width ?? 640;
  const height = opts.height ?? 460;
  return plotlyFigure(
    traces,
    { title: opts.title ? { text: opts.title } : undefined, xaxis: { title: { text: opts.xLabel ?? "" } }, yaxis: { title: { text: opts.yLabel ?? "" } }, width, height },
    {},
    scatterChart(series, { ...opts, width, height }),
  );
}

/**
 * Interactive heatmap (e.g. cosine similarity between the N x K prototypes), with
 * hover values and a static SVG preview.
 */
export function plotlyHeatmap(z: ArrayLike<number>[], opts: HeatmapChartOptions = {}): PlotlyFigure {
  const zz = z.map((r) => Array.from(r, (v) => (Number.isFinite(v) ? v : null)));
  const cs = opts.colormap === "jet" ? "Jet" : opts.colormap === "gray" ? "Greys" : "Viridis";
  const n = zz.length;
  // At least as wide as the title (plotly does not wrap it) and the grid.
  const width = opts.width ?? Math.max(360, Math.min(900, Math.max(160 + 28 * (zz[0]?.length ?? 1), opts.title ? textWidth(opts.title, 17) + 40 : 0)));
  const height = opts.height ?? Math.max(320, Math.min(900, 140 + 28 * n));
  return plotlyFigure(
    [
      {
        type: "heatmap",
        z: zz,
        ...(opts.colLabels ? { x: opts.colLabels } : {}),
        ...(opts.rowLabels ? { y: opts.rowLabels } : {}),
        colorscale: cs,
        reversescale: opts.colormap === "gray",
        ...(opts.vmin !== undefined ? { zmin: opts.vmin } : {}),
        ...(opts.vmax !== undefined ? { zmax: opts.vmax } : {}),
        colorbar: opts.colorbarLabel ? { title: { text: opts.colorbarLabel } } : {},
      },
    ],
    {
      title: opts.title ? { text: opts.title } : undefined,
      yaxis: { autorange: "reversed", title: { text: opts.yLabel ?? "" } },
      xaxis: { title: { text: opts.xLabel ?? "" } },
      width,
      height,
    },
    {},
    heatmapChart(z, opts),
  );
}

let libraryCache: string | undefined;

/** Path of the installed plotly.js bundle (`plotly.js-dist-min/plotly.min.js`). */
export function plotlyLibraryPath(): string {
  try {
    return require.resolve("plotly.js-dist-min/plotly.min.js");
  } catch {
    throw new FileError("node_modules/plotly.js-dist-min/plotly.min.js", "not installed; run npm install (plotly.js-dist-min is a dependency of pbip)");
  }
}

/** Version of the installed plotly.js. */
export function plotlyVersion(): string {
  const pkg = path.join(path.dirname(plotlyLibraryPath()), "package.json");
  return (JSON.parse(fs.readFileSync(pkg, "utf8")) as { version: string }).version;
}

/**
 * The `<script>` element that defines `window.Plotly` from the installed bundle,
 * guarded so it runs once per page and never registers as a CommonJS/AMD module
 * (notebook pages may have require.js). `</script` inside the library is escaped.
 */
export function plotlyLibraryScript(): string {
  if (libraryCache === undefined) {
    const src = fs.readFileSync(plotlyLibraryPath(), "utf8").replace(/<\/script/gi, "<\\/script");
    libraryCache =
      `<script type="text/javascript" data-pbip="plotly-library" data-plotly-version="${escapeXml(plotlyVersion())}">\n` +
      `if (typeof window !== "undefined" && !window.Plotly) { (function (module, exports, define) {\n${src}\n}).call(window); }\n</script>`;
  }
  return libraryCache;
}

let librarySent = false;

/** Make the next displayed figure carry plotly.js again (e.g. after clearing the output that held it). */
export function resetPlotlySession(): void {
  librarySent = false;
}

/** Whether this process has already emitted plotly.js into an output. */
export function plotlyLibrarySent(): boolean {
  return librarySent;
}

let figCounter = 0;

function jsonForScript(v: unknown): string {
  return JSON.stringify(v)
    .replace(/</g, "\\u003c")
    .replace(/>/g, "\\u003e")
    .replace(/&/g, "\\u0026")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

/** Options of {@link plotlyHtml}. */
export interface PlotlyHtmlOptions {
  /** Inline plotly.js: `auto` (default) does so for the first figure of the session only. */
  includeLibrary?: boolean | "auto";
  /** PNG preview (default: rasterised from `staticSvg` when the figure has one). */
  previewPng?: Buffer;
}

/**
 * HTML for a figure: a div with the static preview, the library when needed, and
 * a script that draws the figure once `window.Plotly` exists (retrying for 10 s,
 * then leaving the preview with a note).
 */
export async function plotlyHtml(fig: PlotlyFigure, opts: PlotlyHtmlOptions = {}): Promise<string> {
  const auto = opts.includeLibrary === undefined || opts.includeLibrary === "auto";
  const include = auto ? !librarySent : opts.includeLibrary === true;
  const id = `pbip-plotly-${process.pid.toString(36)}-${Date.now().toString(36)}-${(figCounter++).toString(36)}`;
  const png = opts.previewPng ?? (fig.staticSvg ? await sharp(Buffer.from(fig.staticSvg)).png().toBuffer() : undefined);
  const w = Number(fig.layout.width) || 640;
  const h = Number(fig.layout.height) || 420;
  const preview = png
    ? `<img src="data:image/png;base64,${png.toString("base64")}" alt="static preview of an interactive plotly figure" width="${w}" height="${h}"/>`
    : `<div style="padding: 8px; color: #666">interactive plotly figure: run the notebook (trusted) to see it</div>`;
  const script =
    `<script type="text/javascript">(function () {` +
    `var id = ${jsonForScript(id)}, spec = ${jsonForScript({ data: fig.data, layout: fig.layout, config: fig.config })}, tries = 0;` +
    `function draw() { var el = document.getElementById(id); if (!el) return;` +
    ` if (window.Plotly) { el.innerHTML = ""; window.Plotly.newPlot(el, spec.data, spec.layout, spec.config); return; }` +
    ` if (tries++ < 100) { setTimeout(draw, 100); return; }` +
    ` el.setAttribute("title", "plotly.js did not load: showing the static preview"); }` +
    ` draw(); })();</script>`;
  const html = `${include ? plotlyLibraryScript() + "\n" : ""}<div id="${id}" class="pbip-plotly" style="width: ${w}px; min-height: ${h}px">${preview}</div>\n${script}`;
  if (include && auto) librarySent = true;
  return html;
}

/** Marker comment of {@link injectPlotlyIntoHtmlPage}, so injection is idempotent. */
const INJECTED_MARK = "<!-- pbip: plotly.js inlined for offline viewing -->";

/**
 * For the notebook runner: put plotly.js into an exported HTML page's <head>
 * (once), so every pbip plotly figure on the page draws offline even when the
 * output that carried the library was cleared or the page is opened standalone.
 * Pages without pbip plotly figures are returned unchanged.
 */
export function injectPlotlyIntoHtmlPage(html: string): string {
  if (!html.includes('class="pbip-plotly"') || html.includes(INJECTED_MARK)) return html;
  const block = `${INJECTED_MARK}\n${plotlyLibraryScript()}\n`;
  // The page's own </head>: the last one before <body> (inlined scripts such as MathJax
  // may contain the text "</head>" earlier).
  const bodyAt = html.search(/<body[\s>]/i);
  const headEnd = html.slice(0, bodyAt >= 0 ? bodyAt : html.length).search(/<\/head\s*>(?![\s\S]*<\/head\s*>)/i);
  if (headEnd >= 0) return html.slice(0, headEnd) + block + html.slice(headEnd);
  const b = /<body[^>]*>/i.exec(html);
  if (b) return html.slice(0, b.index + b[0].length) + block + html.slice(b.index + b[0].length);
  return block + html;
}

/** {@link injectPlotlyIntoHtmlPage} on a file, rewritten atomically; returns whether it changed. */
export function injectPlotlyIntoHtmlFile(file: string): boolean {
  let html: string;
  try {
    html = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new FileError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const out = injectPlotlyIntoHtmlPage(html);
  if (out === html) return false;
  writeFileAtomic(file, out);
  return true;
}
