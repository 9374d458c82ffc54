import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import sharp from "sharp";
import * as aq from "arquero";
import {
  show,
  toMimeBundle,
  saveFigure,
  setDisplayWriter,
  inNotebook,
  newDisplayHandle,
  lineChart,
  table,
  plotlyFigure,
  plotlyHtml,
  plotlyScatter,
  plotlyHeatmap,
  plotlyLibraryScript,
  resetPlotlySession,
  plotlyLibrarySent,
  injectPlotlyIntoHtmlPage,
  injectPlotlyIntoHtmlFile,
  rgbToPng,
  pngDimensions,
  type DisplayMessage,
} from "../../src/viz";
import { injectPlotly } from "../../src/viz/html-export";
import { tmpDir } from "../tmp";

afterEach(() => setDisplayWriter(undefined));

const chart = () => lineChart([{ name: "loss", x: [0, 1, 2], y: [3, 2, 1] }], { width: 320, height: 200 });

test("outside a kernel show() does nothing; handles report false", async () => {
  assert.equal(inNotebook(), false);
  assert.equal(await show(chart()), undefined);
  assert.equal(newDisplayHandle().update({ "text/plain": "x" }), false);
});

test("inside a tslab kernel (found among loaded modules) show() sends a display_data message", async () => {
  // Stand in for tslab's dist/jupyter.js as the kernel has it loaded.
  const key = path.join(os.tmpdir(), "fake", "node_modules", "tslab", "dist", "jupyter.js");
  const sent: { msg: DisplayMessage; update: boolean }[] = [];
  const fake = { lastWriteDisplayData: (msg: DisplayMessage, update: boolean) => sent.push({ msg, update }) };
  require.cache[key] = { id: key, filename: key, loaded: true, exports: fake } as unknown as NodeJS.Module;
  try {
    assert.equal(inNotebook(), true);
    await show(chart());
    assert.equal(sent.length, 1);
    const d = sent[0]!.msg.data;
    assert.ok(d["image/svg+xml"]!.startsWith("<svg"));
    // The HTML twin is an <img> whose data URI decodes to the same SVG.
    const uri = /^<img src="data:image\/svg\+xml;base64,([^"]+)" width="320" height="200"/.exec(d["text/html"]!)!;
    assert.equal(Buffer.from(uri[1]!, "base64").toString("utf8"), d["image/svg+xml"]);
    const png = Buffer.from(d["image/png"]!, "base64");
    assert.deepEqual(pngDimensions(png), { width: 320, height: 200 });
    assert.match(d["text/plain"]!, /SVG 320 x 200/);
    assert.equal(sent[0]!.update, false);
    // A display handle replaces its entry: first display_data, then update_display_data with the same id.
    const h = newDisplayHandle();
    h.update({ "text/plain": "a" });
    h.update({ "text/plain": "b" });
    assert.equal(sent[1]!.update, false);
    assert.equal(sent[2]!.update, true);
    assert.equal(sent[1]!.msg.transient.display_id, sent[2]!.msg.transient.display_id);
  } finally {
    delete require.cache[key];
  }
  assert.equal(inNotebook(), false);
});

test("MIME bundles: PNG, SVG (+PNG fallback), tables, arquero, records, text", async () => {
  const png = await rgbToPng({ width: 3, height: 2, data: new Uint8Array(18).fill(7) });
  const b1 = await toMimeBundle(png);
  assert.deepEqual(Object.keys(b1).sort(), ["image/png", "text/plain"]);
  const b2 = await toMimeBundle(chart());
  assert.deepEqual(Object.keys(b2).sort(), ["image/png", "image/svg+xml", "text/html", "text/plain"]);
  assert.doesNotMatch(b2["text/html"]!, /<svg|<script/, "the HTML holds the SVG only as an image");
  const b3 = await toMimeBundle([{ class: "TE", iou: 0.5 }]);
  assert.match(b3["text/html"]!, /<table>.*TE.*0\.5/s);
  const b4 = await toMimeBundle(aq.table({ a: [1, 2], b: ["x", "<y>"] }));
  assert.match(b4["text/html"]!, /&lt;y&gt;/);
  assert.match(b4["text/plain"]!, /a\s+b/);
  // An arquero table's numbers are formatted as a record array's are, in the HTML too.
  const b5 = await toMimeBundle(aq.table({ f1: [0.904762, 0.655172], n: [29, 3] }));
  assert.match(b5["text/html"]!, />0\.9048</);
  assert.doesNotMatch(b5["text/html"]!, /0\.904762/);
  assert.match(b5["text/plain"]!, /0\.9048\s+29/);
  assert.deepEqual(await toMimeBundle("hello"), { "text/plain": "hello" });
  assert.match((await toMimeBundle({ a: 1 }))["text/plain"]!, /a: 1/);
});

test("table(): HTML escaped, numbers aligned and formatted, percent columns, row limit", () => {
  const t = table(
    [
      { cls: "TE", iou: 0.71234, n: 3 },
      { cls: "<b>", iou: NaN, n: 10 },
    ],
    { percent: ["iou"], caption: "IoU" },
  );
  assert.match(t.html, /&lt;b&gt;/);
  assert.doesNotMatch(t.html, /<b>/);
  assert.equal(t.text, ["IoU", "cls    iou   n", "---  -----  --", "TE   71.23   3", "<b>      -  10"].join("\n"));
  const many = table(
    Array.from({ length: 5 }, (_, i) => ({ i })),
    { limit: 2 },
  );
  assert.match(many.text, /… 3 more rows/);
});

test("plotly: library inlined once per session, previews, safe JSON embedding", async () => {
  resetPlotlySession();
  const fig = plotlyScatter([{ name: "TE </script><b>", x: [0, 1], y: [1, 0], text: ["a.png", "b.png"] }], { title: "PCA" });
  const first = await plotlyHtml(fig);
  assert.ok(plotlyLibrarySent());
  assert.match(first, /data-pbip="plotly-library"/);
  assert.ok(first.length > 1_000_000, "the library is inlined");
  const second = await plotlyHtml(fig);
  assert.doesNotMatch(second, /data-pbip="plotly-library"/);
  assert.ok(second.length < 200_000);
  // The only </script> tags are the ones we close; the trace name's is escaped.
  assert.equal((second.match(/<\/script>/g) ?? []).length, 1);
  assert.match(second, /\\u003c\/script\\u003e/);
  // Static preview: a PNG data URI of the scatter's SVG rendering.
  const m = /src="data:image\/png;base64,([^"]+)"/.exec(second)!;
  const meta = await sharp(Buffer.from(m[1]!, "base64")).metadata();
  assert.equal(meta.format, "png");
  // Explicit includeLibrary (saving a standalone file) does not change the session state.
  resetPlotlySession();
  await plotlyHtml(fig, { includeLibrary: true });
  assert.equal(plotlyLibrarySent(), false);
  const lib = plotlyLibraryScript();
  assert.equal((lib.match(/<\/script/gi) ?? []).length, 1, "library text carries no </script");
  assert.match(lib, /if \(typeof window !== "undefined" && !window\.Plotly\)/);
  const heat = plotlyHeatmap([[1, NaN], [0.5, 1]], { rowLabels: ["a", "b"], colLabels: ["a", "b"] });
  assert.equal((heat.data[0] as { z: unknown[][] }).z[0]![1], null);
  const bare = await plotlyHtml(plotlyFigure([{ type: "bar", x: [1], y: [2] }]), { includeLibrary: false });
  assert.match(bare, /run the notebook \(trusted\)/);
});

test("injecting plotly.js into an exported page's head: once, only where pbip figures are", async () => {
  resetPlotlySession();
  const fig = await plotlyHtml(plotlyFigure([{ type: "bar", x: [1], y: [2] }]), { includeLibrary: false });
  const page = `<!DOCTYPE html><html><head><title>nb</title></head><body>${fig}</body></html>`;
  const out = injectPlotlyIntoHtmlPage(page);
  const head = out.slice(0, out.indexOf("</head>"));
  assert.match(head, /data-pbip="plotly-library"/);
  assert.equal(injectPlotlyIntoHtmlPage(out), out, "idempotent");
  assert.equal(injectPlotlyIntoHtmlPage("<html><head></head><body>no figures</body></html>"), "<html><head></head><body>no figures</body></html>");
  const dir = tmpDir("pbip-viz-");
  const file = path.join(dir, "nb.html");
  fs.writeFileSync(file, page);
  assert.equal(injectPlotlyIntoHtmlFile(file), true);
  assert.equal(injectPlotlyIntoHtmlFile(file), false);
  assert.throws(() => injectPlotlyIntoHtmlFile(path.join(dir, "missing.html")), /missing\.html: cannot read/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("saveFigure writes PNG, SVG, HTML and JSON by extension", async () => {
  const dir = tmpDir("pbip-viz-");
  const svg = chart();
  await saveFigure(svg, path.join(dir, "c.png"));
  assert.deepEqual(pngDimensions(fs.readFileSync(path.join(dir, "c.png"))), { width: 320, height: 200 });
  await saveFigure(svg, path.join(dir, "c.svg"));
  assert.equal(fs.readFileSync(path.join(dir, "c.svg"), "utf8"), svg);
  const fig = plotlyScatter([{ name: "a", x: [1], y: [2] }]);
  await saveFigure(fig, path.join(dir, "f.html"));
  const html = fs.readFileSync(path.join(dir, "f.html"), "utf8");
  assert.match(html, /^<!DOCTYPE html>/);
  assert.match(html, /data-pbip="plotly-library"/);
  await saveFigure(fig, path.join(dir, "f.json"));
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, "f.json"), "utf8")).data[0].type, "scatter");
  await saveFigure(fig, path.join(dir, "f.png"));
  await saveFigure(table([{ a: 1 }]), path.join(dir, "t.html"));
  assert.match(fs.readFileSync(path.join(dir, "t.html"), "utf8"), /<table>/);
  await assert.rejects(saveFigure("plain text", path.join(dir, "x.png")), /cannot save a string as \.png/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("the notebook runner's hook module exports injectPlotly", () => {
  const page = `<html><head></head><body><div class="pbip-plotly"></div></body></html>`;
  assert.match(injectPlotly(page), /<head>[\s\S]*data-pbip="plotly-library"[\s\S]*<\/head>/);
});
