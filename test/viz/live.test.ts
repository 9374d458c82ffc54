import { test } from "node:test";
import assert from "node:assert/strict";
import { LivePlot, trainerEventToLive, pngDimensions, svgSize, type DisplayHandle, type MimeBundle } from "../../src/viz";
import type { TrainEvent } from "../../src/train/loop";

// Compile-time contract with the trainer: every TrainEvent can be pushed, and a trainer can be watched.
export const pushTrainEvent = (live: LivePlot, ev: TrainEvent): Promise<void> => live.push(ev);
export const watchTrainer = (live: LivePlot, events: AsyncIterable<TrainEvent>): AsyncGenerator<TrainEvent> => live.watch(events);

/** A mock display entry that records every bundle it is given. */
function mockDisplay(): DisplayHandle & { bundles: MimeBundle[] } {
  const bundles: MimeBundle[] = [];
  return { id: "mock", bundles, update: (b) => (bundles.push(b), true) };
}

const svgs = (d: { bundles: MimeBundle[] }) => d.bundles.filter((b) => !b["image/png"]);

test("trainer events map to live points (the trainer's epoch index 0 is epoch 1)", () => {
  assert.deepEqual(trainerEventToLive({ type: "step", step: 7, epoch: 1, losses: { total: 1.5, cls: 1, fg: 0.3, bg: NaN, note: "x" }, lr: 5e-5 }), {
    kind: "step",
    point: { step: 7, epoch: 2, values: { total: 1.5, cls: 1, fg: 0.3 } },
    lr: 5e-5,
  });
  assert.deepEqual(trainerEventToLive({ type: "epoch", epoch: 2, val: { miou: 0.61, fwiou: 0.7, ids: ["a"] } }), {
    kind: "epoch",
    point: { epoch: 3, values: { "val mIoU": 0.61, "val fwiou": 0.7 } },
  });
  // src/train's TrainEvent shapes: validation carries `score`, start fixes the axes.
  assert.deepEqual(trainerEventToLive({ type: "validation", epoch: 3, step: 40, score: { miou: 0.55, perClass: [1] }, best: true }), {
    kind: "epoch",
    point: { epoch: 4, values: { "val mIoU": 0.55 } },
  });
  assert.deepEqual(trainerEventToLive({ type: "start", task: "pbip", step: 0, totalSteps: 80, stepsPerEpoch: 10, epochs: 8 }), {
    kind: "start",
    task: "pbip",
    totalSteps: 80,
    epochs: 8,
  });
  assert.deepEqual(trainerEventToLive({ type: "done" }), { kind: "end" });
  assert.equal(trainerEventToLive({ type: "checkpoint", path: "x" }), null);
  assert.equal(trainerEventToLive(42), null);
});

test("throttles redraws to one per interval and the final chart holds the last point", async () => {
  let now = 0;
  const d = mockDisplay();
  const live = new LivePlot({ title: "run", intervalMs: 1000, trailing: false, display: d, now: () => now });
  for (let s = 1; s <= 100; s++) {
    live.push({ step: s, values: { total: 1 / s, cls: 0.5 / s } });
    now += 10; // 100 pushes over one second
  }
  assert.equal(live.renders, 1, "only the first push redraws within the interval");
  assert.match(svgs(d)[0]!["text/plain"]!, /step 1 /);
  now += 1000;
  live.push({ step: 101, values: { total: 0.00990099, cls: 0.004950495 } });
  assert.equal(live.renders, 2);
  live.push({ step: 102, values: { total: 0.0098, cls: 0.0049 } }); // throttled
  assert.equal(live.renders, 2);
  await live.close();
  assert.equal(live.renders, 3);
  const last = d.bundles[d.bundles.length - 1]!;
  assert.ok(last["image/png"], "the final update carries a PNG");
  assert.match(last["text/html"]!, /^<img src="data:image\/svg\+xml;base64,/, "and the SVG as an HTML image (survives sanitising exporters)");
  assert.deepEqual(pngDimensions(last["image/png"]!), svgSize(last["image/svg+xml"]!));
  assert.match(last["text/plain"]!, /step 102 total=0\.0098 cls=0\.0049/);
  assert.match(last["image/svg+xml"]!, /step 102/);
  assert.match(last["image/svg+xml"]!, />total 0\.0098</);
  await live.close(); // idempotent
  assert.equal(live.renders, 3);
});

test("epoch values redraw at once, in their own panel; trainer events go through the adapter", async () => {
  const now = 0;
  const d = mockDisplay();
  const live = new LivePlot({ intervalMs: 60_000, trailing: false, display: d, now: () => now, png: false });
  live.push({ type: "start", task: "pbip", totalSteps: 40, epochs: 4 });
  live.push({ type: "step", step: 1, epoch: 0, losses: { total: 2, cls: 1, fg: 0.6, bg: 0.4 } });
  live.push({ type: "step", step: 2, epoch: 0, losses: { total: 1.8, cls: 0.9, fg: 0.5, bg: 0.4 } });
  assert.equal(live.renders, 1);
  live.push({ type: "validation", epoch: 0, score: { miou: 0.42 } });
  assert.equal(live.renders, 2, "an epoch event redraws even inside the interval");
  const b = d.bundles[d.bundles.length - 1]!;
  assert.match(b["image/svg+xml"]!, /per epoch/);
  assert.match(b["image/svg+xml"]!, /step \(of 40\)/, "the start event fixes the step axis");
  assert.match(b["image/svg+xml"]!, />pbip \(step 2, epoch 1\)</, "and names the task, counting epochs from 1");
  assert.match(b["image/svg+xml"]!, />40</, "tick at the last step");
  assert.match(b["image/svg+xml"]!, /val mIoU 0\.42/);
  assert.match(b["text/plain"]!, /epoch 1: val mIoU=0\.42/);
  assert.equal(d.bundles.every((x) => !x["image/png"]), true, "png: false sends SVG only");
  live.push({ type: "done" });
  await live.close();
  assert.match(d.bundles[d.bundles.length - 1]!["text/plain"]!, /step 2 \(epoch 1\) total=1\.8/);
});

test("watch() passes events through and closes with the final chart, also on break", async () => {
  const d = mockDisplay();
  let now = 0;
  const live = new LivePlot({ intervalMs: 1000, trailing: false, display: d, now: () => (now += 1) });
  async function* trainer() {
    for (let s = 1; s <= 20; s++) yield { type: "step" as const, step: s, epoch: 0, losses: { total: 1 / s } };
    yield { type: "epoch" as const, epoch: 0, val: { miou: 0.5 } };
  }
  const seen: unknown[] = [];
  for await (const ev of live.watch(trainer())) seen.push(ev);
  assert.equal(seen.length, 21);
  const last = d.bundles[d.bundles.length - 1]!;
  assert.ok(last["image/png"]);
  assert.match(last["text/plain"]!, /step 20 .*total=0\.05 .*val mIoU=0\.5/);

  const d2 = mockDisplay();
  const live2 = new LivePlot({ intervalMs: 1000, trailing: false, display: d2, now: () => 0 });
  for await (const ev of live2.watch(trainer())) if ((ev as { step?: number }).step === 5) break;
  assert.match(d2.bundles[d2.bundles.length - 1]!["text/plain"]!, /step 5 /);
});

test("trailing redraw after the interval without a new push", async () => {
  const d = mockDisplay();
  const live = new LivePlot({ intervalMs: 40, display: d, png: false });
  live.push({ step: 1, values: { a: 1 } });
  live.push({ step: 2, values: { a: 2 } });
  assert.equal(live.renders, 1);
  await new Promise((r) => setTimeout(r, 120));
  assert.equal(live.renders, 2);
  assert.match(d.bundles[1]!["text/plain"]!, /step 2 a=2/);
  await live.close();
});

test("outside a kernel a LivePlot is harmless", async () => {
  const live = new LivePlot({ title: "headless" });
  await live.push({ step: 1, values: { total: 1 } });
  await live.close();
  assert.match(live.summary(), /headless: step 1 total=1/);
});
