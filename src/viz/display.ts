/**
 * Notebook display for pbip's figures: turn a value (PNG buffer, SVG string,
 * plotly figure, HTML table) into a Jupyter MIME bundle and send it to the
 * running tslab kernel, or do nothing outside a kernel.
 *
 * Bundles carry more than one representation on purpose. Jupyter front ends
 * render SVG only in trusted notebooks (JupyterLab and classic Notebook treat
 * image/svg+xml as unsafe, so a saved notebook reopened elsewhere falls back to
 * the next representation), while PNG is always safe. So an SVG chart is sent as
 * SVG + PNG + text, and nbconvert's HTML export, which prefers SVG, stays vector.
 */

/** A Jupyter MIME bundle: representation type to payload (binary types are base64 on the wire). */
export interface MimeBundle {
  "text/plain"?: string;
  "text/html"?: string;
  "image/svg+xml"?: string;
  "image/png"?: Buffer;
  "text/markdown"?: string;
}

/** One message for Jupyter's display_data / update_display_data. */
export interface DisplayMessage {
  data: Record<string, string>;
  metadata: Record<string, unknown>;
  transient: { display_id?: string };
}

/** Sends a display message; `update` replaces the output with the same display id. */
export type DisplayWriter = (msg: DisplayMessage, update: boolean) => void;

let writerOverride: DisplayWriter | null | undefined;

/**
 * Use `writer` for every display (tests, or a host other than tslab); `null`
 * disables display; `undefined` restores detection of the tslab kernel.
 */
export function setDisplayWriter(writer: DisplayWriter | null | undefined): void {
  writerOverride = writer;
}

/**
 * The running tslab kernel's display writer, or null outside a kernel. tslab
 * keeps it in `tslab/dist/jupyter.js` (`lastWriteDisplayData`, set while a cell
 * executes). We look for that module among those already loaded rather than
 * requiring tslab, so nothing is loaded outside a kernel and a globally installed
 * tslab kernel is found as well as the project's own.
 */
function kernelWriter(): DisplayWriter | null {
  if (writerOverride !== undefined) return writerOverride;
  const cache = typeof require !== "undefined" ? require.cache : undefined;
  if (!cache) return null;
  for (const key of Object.keys(cache)) {
    if (!/[\\/]tslab[\\/]dist[\\/]jupyter\.js$/.test(key)) continue;
    const mod = cache[key]?.exports as { lastWriteDisplayData?: ((m: DisplayMessage, u: boolean) => void) | null } | undefined;
    const fn = mod?.lastWriteDisplayData;
    if (typeof fn === "function") return (m, u) => (mod!.lastWriteDisplayData as (m: DisplayMessage, u: boolean) => void)(m, u);
  }
  return null;
}

/** True inside a tslab kernel (or when a writer was set with {@link setDisplayWriter}). */
export function inNotebook(): boolean {
  return kernelWriter() !== null;
}

function toWire(bundle: MimeBundle): Record<string, string> {
  const data: Record<string, string> = {};
  for (const [k, v] of Object.entries(bundle)) {
    if (v === undefined) continue;
    data[k] = typeof v === "string" ? v : Buffer.from(v as Uint8Array).toString("base64");
  }
  return data;
}

/** A display entry that can be replaced in place (tslab's `newDisplay()`, with full MIME bundles). */
export interface DisplayHandle {
  /** Show `bundle` in this entry (the first call creates it, later calls replace it). Returns false outside a kernel. */
  update(bundle: MimeBundle): boolean;
  readonly id: string;
}

let displayCounter = 0;

/** A new display entry that updates in place, for live figures. Does nothing outside a kernel. */
export function newDisplayHandle(): DisplayHandle {
  const id = `pbip-${process.pid.toString(16)}-${Date.now().toString(16)}-${(displayCounter++).toString(16)}`;
  let shown = false;
  return {
    id,
    update(bundle: MimeBundle): boolean {
      const w = kernelWriter();
      if (!w) return false;
      w({ data: toWire(bundle), metadata: {}, transient: { display_id: id } }, shown);
      shown = true;
      return true;
    },
  };
}

/** Send one bundle as a new output. Returns false (and does nothing) outside a kernel. */
export function displayBundle(bundle: MimeBundle): boolean {
  const w = kernelWriter();
  if (!w) return false;
  w({ data: toWire(bundle), metadata: {}, transient: {} }, false);
  return true;
}
