import { test } from "node:test";
import assert from "node:assert/strict";
import sharp from "sharp";
import { lineChart, barChart, scatterChart, heatmapChart, panels, niceTicks, decimate, isSvg, svgSize, svgToPng, pngDimensions, fontReport } from "../../src/viz";
import { textWidth } from "../../src/viz/svg";

/** librsvg rejects malformed XML, so rasterising is a well-formedness check; the PNG must have the SVG's size. */
async function assertRenders(svg: string): Promise<{ width: number; height: number }> {
  assert.ok(isSvg(svg), "is an SVG document");
  assert.doesNotMatch(svg, /<script|<style|href="http/i, "no script, style or remote reference");
  const size = svgSize(svg);
  const png = await svgToPng(svg);
  assert.deepEqual(pngDimensions(png), size);
  const meta = await sharp(png).metadata();
  assert.equal(meta.format, "png");
  return size;
}

test("nice ticks", () => {
  assert.deepEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0, 10, 4), [0, 2.5, 5, 7.5, 10]);
  assert.deepEqual(niceTicks(-3, 7, 5), [-2, 0, 2, 4, 6]);
  assert.deepEqual(niceTicks(0.013, 0.087, 3), [0.025, 0.05, 0.075]);
  assert.deepEqual(niceTicks(5, 5), [5]);
});

test("decimation keeps each bucket's extremes and the last point", () => {
  const x = Array.from({ length: 10000 }, (_, i) => i);
  const y = x.map((i) => (i === 4321 ? 100 : i === 777 ? -50 : Math.sin(i / 100)));
  const d = decimate(x, y, 200);
  assert.ok(d.x.length <= 202, `${d.x.length} points`);
  assert.ok(d.y.includes(100) && d.y.includes(-50), "spikes survive");
  assert.equal(d.x[d.x.length - 1], 9999);
  assert.deepEqual(decimate([1, 2], [3, 4], 10), { x: [1, 2], y: [3, 4] });
});

test("line chart: several series, legend, escaped names, gaps at NaN, log scale; renders at its size", async () => {
  const x = [0, 1, 2, 3, 4, 5];
  const svg = lineChart(
    [
      { name: "L_CLS <a&b>", x, y: [1, 0.8, NaN, 0.5, 0.4, 0.3] },
      { name: "val mIoU", x: [0, 5], y: [0.2, 0.6], markers: true, dashed: true },
    ],
    { title: "losses", xLabel: "step", yLabel: "loss", width: 500, height: 300 },
  );
  assert.deepEqual(await assertRenders(svg), { width: 500, height: 300 });
  assert.match(svg, /L_CLS &lt;a&amp;b&gt;/);
  const path = /<path d="([^"]+)" fill="none" stroke="#1f77b4"/.exec(svg)![1]!;
  assert.equal(path.match(/M/g)!.length, 2, "NaN breaks the first line into two pieces");
  assert.equal((svg.match(/<circle /g) ?? []).length, 2, "markers on the second series");
  const log = lineChart([{ name: "loss", x, y: [10, 1, 0.1, 0.01, -1, 0.001] }], { logY: true, width: 400, height: 240 });
  await assertRenders(log);
  assert.match(log, />0\.001</);
  await assertRenders(lineChart([], { title: "empty" }));
});

test("bar, scatter and heatmap charts render; gradient ids are unique across charts", async () => {
  await assertRenders(barChart(["TE", "NEC"], [{ name: "PBIP", values: [0.7, 0.6] }, { name: "CLS", values: [0.5, NaN] }], { showValues: true, valueScale: 100 }));
  await assertRenders(barChart(["a", "b"], [{ name: "delta", values: [-0.2, 0.3] }], { width: 300 }));
  await assertRenders(scatterChart([{ name: "TE", x: [0, 1], y: [1, 0] }, { name: "NEC", x: [2], y: [2] }], { xLabel: "PC1", yLabel: "PC2" }));
  const m = [
    [1, 0.5, NaN],
    [0.5, 1, 0.2],
  ];
  const h1 = heatmapChart(m, { rowLabels: ["TE-0", "TE-1"], colLabels: ["a", "b", "longer label"], colorbarLabel: "cos", title: "similarity" });
  const h2 = heatmapChart(m, { colormap: "jet" });
  await assertRenders(h1);
  assert.match(h1, />0\.50</, "values written in cells");
  const id1 = /linearGradient id="([^"]+)"/.exec(h1)![1];
  const id2 = /linearGradient id="([^"]+)"/.exec(h2)![1];
  assert.notEqual(id1, id2);
  assert.throws(() => heatmapChart([]), /empty/);
  // A title longer than the grid widens the chart instead of being cut at its edges.
  const title = "confusion (rows: true class, columns: predicted)";
  const h3 = heatmapChart(m, { title });
  assert.ok(svgSize(h3).width >= textWidth(title, 13), `width ${svgSize(h3).width} holds the title`);
  assert.ok(svgSize(heatmapChart(m)).width < textWidth(title, 13), "without the title the chart is narrower");
});

test("panels lay out charts side by side in one SVG", async () => {
  const a = lineChart([{ name: "a", x: [0, 1], y: [0, 1] }], { width: 300, height: 200 });
  const b = lineChart([{ name: "b", x: [0, 1], y: [1, 0] }], { width: 200, height: 150 });
  const p = panels([a, b], { gap: 10 });
  assert.deepEqual(await assertRenders(p), { width: 510, height: 200 });
  assert.deepEqual(svgSize(panels([a, b], { columns: 1, gap: 0 })), { width: 300, height: 350 });
});

test("a labelling font is installed (DejaVu Sans from Debian fonts-dejavu-core expected)", () => {
  const r = fontReport();
  assert.ok(r.ok, r.note);
});
