import * as path from "node:path";
import { inspect } from "node:util";
import sharp from "sharp";
import { displayBundle, inNotebook, type MimeBundle } from "./display";
import { rgbToPng, isPngBuffer, pngDimensions, type RgbImage } from "./raster";
import { isSvg, svgSize, escapeXml } from "./svg";
import { isPlotlyFigure, plotlyHtml, type PlotlyFigure } from "./plotly";
import { isArqueroTable, isHtmlValue, table, type HtmlValue } from "./table";
import { writeFileAtomic, writeJsonAtomic, UsageError } from "../util";

/**
 * Anything {@link show} and {@link saveFigure} accept: a PNG buffer, an SVG string,
 * an {@link RgbImage}, a plotly figure, an HTML value or table, an arquero
 * table, an array of records (shown as a table), or any other value (as text).
 */
export type Showable = Buffer | string | RgbImage | PlotlyFigure | HtmlValue | Record<string, unknown>[] | unknown;

function isRgbImage(x: unknown): x is RgbImage {
  const r = x as RgbImage;
  return typeof x === "object" && x !== null && r.data instanceof Uint8Array && Number.isInteger(r.width) && Number.isInteger(r.height) && r.data.length === r.width * r.height * 3;
}

function isRecordArray(x: unknown): x is Record<string, unknown>[] {
  return Array.isArray(x) && x.length > 0 && x.every((r) => typeof r === "object" && r !== null && !Array.isArray(r));
}

/** Rasterise an SVG string to PNG at its own pixel size (sharp/librsvg). */
export async function svgToPng(svg: string): Promise<Buffer> {
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/**
 * An SVG as an HTML `<img>` with a data URI. Front ends and exporters treat it
 * as plain HTML: JupyterLab and classic Notebook keep it in untrusted notebooks
 * (their sanitizers let data URIs through on img), nbconvert's HTML export
 * prefers it to image/svg+xml (which its templates pass through `clean_html`,
 * stripping every SVG element), and as an image it can run no script.
 */
export function svgImgHtml(svg: string): string {
  const { width, height } = svgSize(svg);
  return `<img src="data:image/svg+xml;base64,${Buffer.from(svg, "utf8").toString("base64")}" width="${width}" height="${height}" alt="chart"/>`;
}

/**
 * The Jupyter MIME bundle for a value: PNG for images; for SVG charts an HTML
 * `<img>` of the SVG (see {@link svgImgHtml}) plus the SVG, a PNG and text, so
 * every front end and exporter finds one it renders without scripts; HTML
 * (+ text) for plotly figures and tables; text for the rest.
 */
export async function toMimeBundle(x: Showable): Promise<MimeBundle> {
  if (isPngBuffer(x)) {
    const { width, height } = pngDimensions(x);
    return { "image/png": Buffer.from(x), "text/plain": `<PNG ${width} x ${height}>` };
  }
  if (isSvg(x)) {
    const { width, height } = svgSize(x);
    return { "text/html": svgImgHtml(x), "image/svg+xml": x, "image/png": await svgToPng(x), "text/plain": `<SVG ${width} x ${height}>` };
  }
  if (isRgbImage(x)) return { "image/png": await rgbToPng(x), "text/plain": `<image ${x.width} x ${x.height}>` };
  if (isPlotlyFigure(x)) return { "text/html": await plotlyHtml(x), "text/plain": `<plotly figure: ${x.data.length} trace(s); run the notebook trusted to interact>` };
  if (isHtmlValue(x)) return { "text/html": x.html, "text/plain": x.text };
  if (isArqueroTable(x) || isRecordArray(x)) {
    const t = table(x as Record<string, unknown>[]);
    return { "text/html": t.html, "text/plain": t.text };
  }
  if (typeof x === "string") return { "text/plain": x };
  return { "text/plain": inspect(x, { depth: 4, colors: false }) };
}

/**
 * Display a value in the running tslab notebook (`await show(x)`), as the richest
 * representation each front end can render. Outside a kernel it does nothing, so
 * library code and the CLI can call it freely ({@link inNotebook} tells which).
 * Resolves to nothing, so a cell ending in `await show(x)` prints no value.
 */
export async function show(x: Showable): Promise<void> {
  if (!inNotebook()) return;
  displayBundle(await toMimeBundle(x));
}

/**
 * Write a value to a file chosen by extension, atomically: `.png` (PNG, or an SVG
 * rasterised), `.svg`, `.html` (a standalone page; plotly figures carry plotly.js
 * inline so the page works offline), `.json` (a plotly figure's spec), `.txt`.
 */
export async function saveFigure(x: Showable, file: string): Promise<void> {
  const ext = path.extname(file).toLowerCase();
  const fail = (what: string) => new UsageError(`${file}: cannot save ${what} as ${ext || "a file without extension"}`);
  if (ext === ".png") {
    if (isPngBuffer(x)) return writeFileAtomic(file, x);
    if (isSvg(x)) return writeFileAtomic(file, await svgToPng(x));
    if (isRgbImage(x)) return writeFileAtomic(file, await rgbToPng(x));
    if (isPlotlyFigure(x) && x.staticSvg) return writeFileAtomic(file, await svgToPng(x.staticSvg));
    throw fail(describe(x));
  }
  if (ext === ".svg") {
    if (isSvg(x)) return writeFileAtomic(file, x);
    if (isPlotlyFigure(x) && x.staticSvg) return writeFileAtomic(file, x.staticSvg);
    throw fail(describe(x));
  }
  if (ext === ".json") {
    if (isPlotlyFigure(x)) return writeJsonAtomic(file, { data: x.data, layout: x.layout, config: x.config });
    return writeJsonAtomic(file, x);
  }
  if (ext === ".html" || ext === ".htm") {
    let body: string;
    if (isPlotlyFigure(x)) body = await plotlyHtml(x, { includeLibrary: true });
    else if (isSvg(x)) body = x;
    else if (isPngBuffer(x)) body = `<img src="data:image/png;base64,${Buffer.from(x).toString("base64")}"/>`;
    else if (isRgbImage(x)) body = `<img src="data:image/png;base64,${(await rgbToPng(x)).toString("base64")}"/>`;
    else {
      const b = await toMimeBundle(x);
      body = b["text/html"] ?? `<pre>${escapeXml(b["text/plain"] ?? "")}</pre>`;
    }
    return writeFileAtomic(
      file,
      `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${escapeXml(path.basename(file, ext))}</title></head>\n<body>\n${body}\n</body></html>\n`,
    );
  }
  if (ext === ".txt") return writeFileAtomic(file, ((await toMimeBundle(x))["text/plain"] ?? "") + "\n");
  throw fail(describe(x));
}

function describe(x: unknown): string {
  if (isPngBuffer(x)) return "a PNG";
  if (isSvg(x)) return "an SVG";
  if (isPlotlyFigure(x)) return "a plotly figure without a static rendering";
  if (isRgbImage(x)) return "an image";
  return typeof x === "object" ? "this value" : `a ${typeof x}`;
}
