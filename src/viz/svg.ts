import { execFileSync } from "node:child_process";

/**
 * Font stack of every SVG pbip writes. Browsers pick the first installed family;
 * sharp (librsvg + fontconfig) does the same when rasterising, so any sans-serif
 * font on the machine works. DejaVu Sans (Debian `fonts-dejavu-core`) is what the
 * layout's width estimates assume.
 */
export const FONT_FAMILY = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif";

/** Escape text for SVG/HTML content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** Approximate rendered width of `text` at `fontSize` px in DejaVu Sans (average advance 0.62 em; wider fonts overflow a little). */
export function textWidth(text: string, fontSize: number): number {
  return text.length * fontSize * 0.62;
}

/** A `<text>` element. */
export function svgText(
  x: number,
  y: number,
  text: string,
  opts: { size?: number; anchor?: "start" | "middle" | "end"; weight?: "normal" | "bold"; fill?: string; rotate?: number; baseline?: "auto" | "middle" | "hanging" } = {},
): string {
  const size = opts.size ?? 12;
  const attrs = [
    `x="${fmt(x)}"`,
    `y="${fmt(y)}"`,
    `font-family="${FONT_FAMILY}"`,
    `font-size="${size}"`,
    opts.anchor && opts.anchor !== "start" ? `text-anchor="${opts.anchor}"` : "",
    opts.weight === "bold" ? `font-weight="bold"` : "",
    `fill="${opts.fill ?? "#222"}"`,
    opts.baseline && opts.baseline !== "auto" ? `dominant-baseline="${opts.baseline}"` : "",
    opts.rotate ? `transform="rotate(${opts.rotate} ${fmt(x)} ${fmt(y)})"` : "",
  ].filter(Boolean);
  return `<text ${attrs.join(" ")}>${escapeXml(text)}</text>`;
}

/** A number for SVG attributes: at most 2 decimals, no trailing zeros. */
export function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : (Math.round(v * 100) / 100).toString();
}

/** Wrap content in an `<svg>` root with a white background. */
export function svgDocument(width: number, height: number, body: string, background = "#ffffff"): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${fmt(width)}" height="${fmt(height)}" viewBox="0 0 ${fmt(width)} ${fmt(height)}">` +
    (background !== "none" ? `<rect width="100%" height="100%" fill="${background}"/>` : "") +
    body +
    `</svg>`
  );
}

/** True if `s` looks like an SVG document (optionally after an XML declaration or comments). */
export function isSvg(s: unknown): s is string {
  return typeof s === "string" && /^\s*(<\?xml[^>]*>\s*)?(<!--[\s\S]*?-->\s*)*<svg[\s>]/.test(s);
}

/** Width and height attributes of an SVG root (pixels). */
export function svgSize(svg: string): { width: number; height: number } {
  const m = /<svg[^>]*?\swidth="([\d.]+)"[^>]*?\sheight="([\d.]+)"/.exec(svg);
  if (!m) throw new Error("SVG root has no numeric width and height");
  return { width: Number(m[1]), height: Number(m[2]) };
}

let fontCache: string[] | undefined;

/**
 * Font families fontconfig knows (`fc-list : family`), for `pbip doctor`-style
 * checks; empty if fc-list is missing. Text still renders with any fallback font.
 */
export function installedFontFamilies(): string[] {
  if (fontCache) return fontCache;
  try {
    const out = execFileSync("fc-list", [":", "family"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 5000 });
    fontCache = [...new Set(out.split("\n").flatMap((l) => l.split(",").map((s) => s.trim())).filter(Boolean))].sort();
  } catch {
    fontCache = [];
  }
  return fontCache;
}

/** Whether a font of {@link FONT_FAMILY} is installed, and which; a note says what to install if none is. */
export function fontReport(): { ok: boolean; family: string | null; note: string } {
  const fams = installedFontFamilies();
  const want = FONT_FAMILY.split(",").map((s) => s.trim()).filter((f) => f !== "sans-serif");
  const found = want.find((w) => fams.includes(w)) ?? null;
  if (found) return { ok: true, family: found, note: `labels render in ${found}` };
  return {
    ok: false,
    family: null,
    note: fams.length
      ? `none of ${want.join(", ")} is installed; labels fall back to ${fams[0]} (install Debian fonts-dejavu-core for the intended layout)`
      : "no fonts found by fontconfig: PNG renderings will have no text (install Debian fonts-dejavu-core)",
  };
}
