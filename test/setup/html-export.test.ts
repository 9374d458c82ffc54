// The notebook HTML export's post-processing (MathJax inlining + plotly.js injection),
// checked the way a browser would meet it: every inline <script> must parse, the page
// must still be one page, and the MathJax source must arrive byte for byte.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import vm from "node:vm";
import { postProcessHtml } from "../../src/nbrun/run";
import { injectPlotly } from "../../src/viz/html-export";
import { plotlyFigure, plotlyHtml, resetPlotlySession } from "../../src/viz";
import { tmpDir } from "../tmp";

/** The bodies of the page's inline JavaScript <script> elements (no src, no data types). */
function inlineScripts(html: string): string[] {
  const out: string[] = [];
  const re = /<script\b([^>]*)>([\s\S]*?)<\/script>/gi;
  for (let m = re.exec(html); m; m = re.exec(html)) {
    const attrs = m[1]!;
    const type = /\btype=["']?([^"'\s>]+)/i.exec(attrs)?.[1];
    if (/\bsrc=/i.test(attrs) || (type && !/javascript|module/i.test(type))) continue;
    out.push(m[2]!);
  }
  return out;
}

test("exported notebook pages: MathJax and plotly.js inlined intact, every script parses", async () => {
  const dir = tmpDir("pbip-html-");
  resetPlotlySession();
  const fig = await plotlyHtml(plotlyFigure([{ type: "bar", x: [1], y: [2] }]), { includeLibrary: false });
  const page = `<!DOCTYPE html><html><head><title>nb</title>\n<!-- pbip:mathjax -->\n</head><body><p>$L = \\alpha$</p>${fig}</body></html>`;
  const html = path.join(dir, "nb.html");
  const ipynb = path.join(dir, "nb.ipynb");
  fs.writeFileSync(html, page);
  fs.writeFileSync(ipynb, JSON.stringify({ cells: [{ cell_type: "markdown", source: ["The loss $L = \\alpha$."] }] }));
  postProcessHtml(html, ipynb, injectPlotly);
  const out = fs.readFileSync(html, "utf8");

  // MathJax: its source contains "$'" and "$&" (String.replace patterns); it must be
  // inlined verbatim, not expanded into copies of the page.
  const mjSource = fs.readFileSync(require.resolve("mathjax/es5/tex-svg-full.js"), "utf8").replace(/<\/script/gi, "<\\/script");
  assert.ok(mjSource.includes("$'") || mjSource.includes("$&"), "fixture premise: the MathJax source has replacement patterns");
  assert.ok(out.includes(mjSource), "MathJax inlined byte for byte");
  assert.equal(out.split("</html>").length, 2, "still exactly one page");
  assert.equal(out.split("<!DOCTYPE html>").length, 2);
  assert.ok(!out.includes("<!-- pbip:mathjax -->"));

  // plotly.js: in the page's own head, after MathJax, before <body>.
  const lib = out.indexOf('data-pbip="plotly-library"');
  assert.ok(lib > out.indexOf(mjSource) && lib < out.search(/<body[\s>]/), "plotly.js injected in the real <head>");

  // Every inline script parses as JavaScript (the bug this guards against was a
  // SyntaxError in the browser console).
  const scripts = inlineScripts(out);
  assert.ok(scripts.length >= 3, `found ${scripts.length} inline scripts`);
  for (const [i, s] of scripts.entries()) {
    assert.doesNotThrow(() => new vm.Script(s, { filename: `inline-script-${i}.js` }), `inline script ${i} parses`);
  }

  // Re-running is a no-op (idempotent export).
  postProcessHtml(html, ipynb, injectPlotly);
  assert.equal(fs.readFileSync(html, "utf8").length, out.length);
});
