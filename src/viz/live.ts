/**
 * Live training plots for tslab notebooks (issue 6, item 6): the loss terms of
 * METHOD.md's total L = alpha L_CLS + beta (theta1 L_FGS + theta2 L_BGS) against
 * step, and per-epoch validation pseudo-mask mIoU, drawn as one SVG chart that
 * replaces itself in a single output while training runs.
 *
 * Each update sends the chart at once (as an HTML <img> of the SVG, plus the SVG
 * itself; see `svgImgHtml`), then again with a PNG once sharp has rasterised it.
 * Nothing needs a network or JavaScript, and the representations survive
 * untrusted notebooks and nbconvert's sanitising HTML export, so the final chart
 * stays visible in the saved .ipynb and its HTML.
 *
 * ```ts
 * const live = new LivePlot({ title: "PBIP training" });
 * for await (const ev of trainer) live.push(ev);   // trainer step/epoch events
 * await live.close();                               // final chart, with the last point
 * ```
 */
import { lineChart, panels, formatNumber, type LineSeries } from "./charts";
import { newDisplayHandle, type DisplayHandle, type MimeBundle } from "./display";
import { svgToPng, svgImgHtml } from "./show";

/** One step's values (e.g. loss terms) for {@link LivePlot.push}. */
export interface LivePoint {
  step: number;
  /** The epoch as people count it, from 1 (the trainer's events index epochs from 0; {@link trainerEventToLive} adds 1). */
  epoch?: number;
  values: Record<string, number>;
}

/** One epoch's values (e.g. validation mIoU) for {@link LivePlot.pushEpoch}. */
export interface LiveEpochPoint {
  /** Counted from 1, as in {@link LivePoint.epoch}. */
  epoch: number;
  values: Record<string, number>;
}

/** The trainer's step event, as far as the live plot reads it. */
export interface TrainerStepEventLike {
  type: "step";
  step: number;
  epoch?: number;
  /** Loss terms: total, cls, fg, bg, ... (non-numbers are skipped). */
  losses: Record<string, unknown>;
  lr?: number;
}

/** The trainer's epoch event, as far as the live plot reads it. */
export interface TrainerEpochEventLike {
  type: "epoch";
  epoch: number;
  /** Validation results; `miou` is plotted as "val mIoU", other numbers as "val <key>". */
  val?: Record<string, unknown>;
}

/** The trainer's validation event (src/train: `{type: "validation", epoch, step, score: {miou, ...}}`). */
export interface TrainerValidationEventLike {
  type: "validation";
  epoch: number;
  score: Record<string, unknown>;
}

/** The trainer's start event, which fixes the axes' extent. */
export interface TrainerStartEventLike {
  type: "start";
  task?: string;
  totalSteps?: number;
  epochs?: number;
}

/** What {@link trainerEventToLive} makes of an event. */
export type LiveUpdate =
  | { kind: "step"; point: LivePoint; lr?: number }
  | { kind: "epoch"; point: LiveEpochPoint }
  | { kind: "start"; task?: string; totalSteps?: number; epochs?: number }
  | { kind: "end" }
  | null;

function numericEntries(o: Record<string, unknown> | undefined, rename: (k: string) => string = (k) => k): Record<string, number> {
  const out: Record<string, number> = {};
  if (!o) return out;
  for (const [k, v] of Object.entries(o)) if (typeof v === "number" && !Number.isNaN(v)) out[rename(k)] = v;
  return out;
}

/**
 * Adapter from the trainer's events (src/train's `TrainEvent`) to live-plot
 * points: `step` events give their numeric `losses` (and `lr`); `validation`
 * events give `score.miou` as "val mIoU" and any other numeric score as
 * "val <key>" (an `epoch` event with a `val` record works the same); `start`
 * fixes the axes to the run's total steps and epochs; `done`/`end`/`finish` end
 * the run; anything else (checkpoints, ...) is ignored (null). The trainer's epoch
 * index (from 0) becomes the epoch number people read (from 1), as the CLI and the
 * notebooks print it.
 */
export function trainerEventToLive(ev: unknown): LiveUpdate {
  if (typeof ev !== "object" || ev === null) return null;
  const e = ev as { type?: unknown };
  if (e.type === "step") {
    const s = ev as TrainerStepEventLike;
    if (typeof s.step !== "number") return null;
    return { kind: "step", point: { step: s.step, ...(typeof s.epoch === "number" ? { epoch: s.epoch + 1 } : {}), values: numericEntries(s.losses) }, ...(typeof s.lr === "number" ? { lr: s.lr } : {}) };
  }
  const valName = (k: string) => (k === "miou" ? "val mIoU" : `val ${k}`);
  if (e.type === "epoch" || e.type === "validation") {
    const s = ev as { epoch?: unknown; score?: Record<string, unknown>; val?: Record<string, unknown> };
    if (typeof s.epoch !== "number") return null;
    return { kind: "epoch", point: { epoch: s.epoch + 1, values: numericEntries(e.type === "validation" ? s.score : s.val, valName) } };
  }
  if (e.type === "start") {
    const s = ev as TrainerStartEventLike;
    return {
      kind: "start",
      ...(typeof s.task === "string" ? { task: s.task } : {}),
      ...(typeof s.totalSteps === "number" ? { totalSteps: s.totalSteps } : {}),
      ...(typeof s.epochs === "number" ? { epochs: s.epochs } : {}),
    };
  }
  if (e.type === "done" || e.type === "end" || e.type === "finish") return { kind: "end" };
  return null;
}

/** Options of {@link LivePlot}. */
export interface LivePlotOptions {
  title?: string;
  /** Step series to plot, in order (default: every key pushed, first seen first). */
  series?: string[];
  /** Epoch series to plot (default: every key pushed). Listing them shows the panel before the first epoch ends. */
  epochSeries?: string[];
  /** Least time between two redraws, ms (default 1000). */
  intervalMs?: number;
  /** Redraw once the interval has passed even without a new push (default true; needs the event loop to turn). */
  trailing?: boolean;
  /** Logarithmic y axis for the step panel (default false). */
  logY?: boolean;
  /** Exponential moving average of the step series, 0 (off, default) to 0.99. */
  smoothing?: number;
  /** Also plot the learning rate of step events, in its own panel (default false). */
  showLr?: boolean;
  /** Width and height of the whole chart, px (default 860 x 340). */
  width?: number;
  height?: number;
  /** Send a PNG alongside each SVG (default true). */
  png?: boolean;
  /** Where to draw (default: a new tslab display entry; does nothing outside a kernel). */
  display?: DisplayHandle;
  /** Clock in ms (default Date.now), for tests. */
  now?: () => number;
}

/**
 * A chart of training curves that updates in place in a notebook output, at
 * most once per `intervalMs`, always drawing the latest point on {@link close}.
 * Generic ({@link push} takes any named values per step) with an adapter for
 * the trainer's step and epoch events.
 */
export class LivePlot {
  private readonly opts: LivePlotOptions;
  private readonly display: DisplayHandle;
  private readonly now: () => number;
  private readonly steps = new Map<string, { x: number[]; y: number[] }>();
  private readonly epochs = new Map<string, { x: number[]; y: number[] }>();
  private readonly lr = { x: [] as number[], y: [] as number[] };
  private extent: { steps?: number; epochs?: number; task?: string } = {};
  private lastStep: LivePoint | undefined;
  private lastEpoch: LiveEpochPoint | undefined;
  private lastRender = -Infinity;
  private dirty = false;
  private generation = 0;
  private timer: NodeJS.Timeout | undefined;
  private pngPending: Promise<void> = Promise.resolve();
  private closed = false;
  /** Number of redraws sent so far (SVG updates, not counting PNG follow-ups). */
  renders = 0;

  constructor(opts: LivePlotOptions = {}) {
    this.opts = opts;
    this.display = opts.display ?? newDisplayHandle();
    this.now = opts.now ?? Date.now;
  }

  /**
   * Add a step's values, or a trainer event (step, epoch or done; see
   * {@link trainerEventToLive}). Redraws when the interval has passed. The
   * returned promise resolves after a turn of the event loop when a redraw was
   * sent (awaiting it lets the kernel flush the update during a busy loop);
   * ignoring it is fine.
   */
  push(ev: LivePoint | TrainerStepEventLike | TrainerEpochEventLike | TrainerValidationEventLike | TrainerStartEventLike | { type: string }): Promise<void> {
    if ("type" in ev) {
      const u = trainerEventToLive(ev);
      if (!u) return Promise.resolve();
      if (u.kind === "end") return this.close();
      if (u.kind === "start") {
        this.extent = { steps: u.totalSteps, epochs: u.epochs, task: u.task };
        return Promise.resolve();
      }
      if (u.kind === "epoch") return this.pushEpoch(u.point);
      if (u.lr !== undefined) {
        this.lr.x.push(u.point.step);
        this.lr.y.push(u.lr);
      }
      return this.addStep(u.point);
    }
    return this.addStep(ev as LivePoint);
  }

  /** Add an epoch's values (e.g. `{epoch: 3, values: {"val mIoU": 0.61}}`); redraws at once. */
  pushEpoch(p: LiveEpochPoint): Promise<void> {
    for (const [k, v] of Object.entries(p.values)) {
      if (!Number.isFinite(v)) continue;
      const s = this.epochs.get(k) ?? { x: [], y: [] };
      s.x.push(p.epoch);
      s.y.push(v);
      this.epochs.set(k, s);
    }
    this.lastEpoch = p;
    this.dirty = true;
    return this.maybeRender(true);
  }

  private addStep(p: LivePoint): Promise<void> {
    if (typeof p.step !== "number" || typeof p.values !== "object" || p.values === null) return Promise.resolve();
    for (const [k, v] of Object.entries(p.values)) {
      if (typeof v !== "number") continue;
      const s = this.steps.get(k) ?? { x: [], y: [] };
      s.x.push(p.step);
      s.y.push(v);
      this.steps.set(k, s);
    }
    this.lastStep = p;
    this.dirty = true;
    return this.maybeRender(false);
  }

  private maybeRender(force: boolean): Promise<void> {
    if (this.closed && !force) return Promise.resolve();
    const t = this.now();
    const interval = this.opts.intervalMs ?? 1000;
    if (!force && t - this.lastRender < interval) {
      if ((this.opts.trailing ?? true) && !this.timer && !this.closed) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          if (this.dirty && !this.closed) this.render();
        }, Math.max(1, interval - (t - this.lastRender)));
        this.timer.unref?.();
      }
      return Promise.resolve();
    }
    this.render();
    return new Promise((resolve) => setImmediate(resolve));
  }

  private render(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.lastRender = this.now();
    this.dirty = false;
    const gen = ++this.generation;
    const svg = this.svg();
    const text = this.summary();
    const img = svgImgHtml(svg);
    this.display.update({ "text/html": img, "image/svg+xml": svg, "text/plain": text });
    this.renders++;
    if (this.opts.png ?? true) {
      this.pngPending = svgToPng(svg)
        .then((png) => {
          if (gen === this.generation) this.display.update({ "text/html": img, "image/svg+xml": svg, "image/png": png, "text/plain": text } satisfies MimeBundle);
        })
        .catch(() => undefined);
    }
  }

  /** Draw now, regardless of the interval, and wait for the PNG. */
  async flush(): Promise<void> {
    this.render();
    await this.pngPending;
  }

  /** Final redraw with every point pushed (PNG included), and stop timers. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return this.pngPending;
    this.closed = true;
    await this.flush();
  }

  /**
   * Pass a trainer's events through while plotting them, yielding to the event
   * loop after each redraw so updates reach the notebook during a busy loop, and
   * closing the plot when the loop ends (also on break or error):
   * `for await (const ev of live.watch(trainer)) { ... }`.
   */
  async *watch<T>(events: AsyncIterable<T> | Iterable<T>): AsyncGenerator<T> {
    try {
      for await (const ev of events as AsyncIterable<T>) {
        if (typeof ev === "object" && ev !== null) await this.push(ev as unknown as LivePoint);
        yield ev;
      }
    } finally {
      await this.close();
    }
  }

  /** One-line text of the latest values (the text/plain twin of the chart). */
  summary(): string {
    const parts: string[] = [];
    if (this.opts.title) parts.push(this.opts.title + ":");
    if (this.lastStep) {
      parts.push(`step ${this.lastStep.step}${this.lastStep.epoch !== undefined ? ` (epoch ${this.lastStep.epoch})` : ""}`);
      parts.push(
        this.stepNames()
          .filter((k) => this.lastStep!.values[k] !== undefined)
          .map((k) => `${k}=${formatNumber(this.lastStep!.values[k]!)}`)
          .join(" "),
      );
    }
    if (this.lastEpoch) {
      parts.push(
        `| epoch ${this.lastEpoch.epoch}: ` +
          Object.entries(this.lastEpoch.values)
            .map(([k, v]) => `${k}=${formatNumber(v)}`)
            .join(" "),
      );
    }
    if (parts.length <= 1) parts.push("no data yet");
    return parts.join(" ");
  }

  private stepNames(): string[] {
    return this.opts.series ?? [...this.steps.keys()];
  }

  private ema(y: number[], a: number): number[] {
    const out: number[] = [];
    let m = NaN;
    for (const v of y) {
      if (Number.isFinite(v)) m = Number.isNaN(m) ? v : a * m + (1 - a) * v;
      out.push(Number.isFinite(v) ? m : NaN);
    }
    return out;
  }

  /** The current chart as an SVG string. */
  svg(): string {
    const W = this.opts.width ?? 860;
    const H = this.opts.height ?? 340;
    const sm = this.opts.smoothing ?? 0;
    const stepSeries: LineSeries[] = this.stepNames().map((k) => {
      const s = this.steps.get(k) ?? { x: [], y: [] };
      const last = s.y[s.y.length - 1];
      return { name: `${k}${last !== undefined ? ` ${formatNumber(last)}` : ""}`, x: s.x, y: sm > 0 ? this.ema(s.y, sm) : s.y };
    });
    const epochNames = this.opts.epochSeries ?? [...this.epochs.keys()];
    const showEpoch = epochNames.length > 0;
    const showLr = !!this.opts.showLr;
    const nSide = (showEpoch ? 1 : 0) + (showLr ? 1 : 0);
    const sideW = nSide ? Math.round(W * 0.34) : 0;
    const mainW = W - nSide * sideW - nSide * 8;
    const where = this.lastStep ? ` (step ${this.lastStep.step}${this.lastStep.epoch !== undefined ? `, epoch ${this.lastStep.epoch}` : ""})` : "";
    const charts = [
      lineChart(stepSeries, {
        title: `${this.opts.title ?? this.extent.task ?? "training"}${where}`,
        xLabel: this.extent.steps ? `step (of ${this.extent.steps})` : "step",
        yLabel: sm > 0 ? `loss (EMA ${sm})` : "loss",
        width: mainW,
        height: H,
        logY: this.opts.logY,
        ...(this.extent.steps ? { xMin: 0, xMax: this.extent.steps } : {}),
      }),
    ];
    if (showEpoch) {
      const eps: LineSeries[] = epochNames.map((k) => {
        const s = this.epochs.get(k) ?? { x: [], y: [] };
        const last = s.y[s.y.length - 1];
        return { name: `${k}${last !== undefined ? ` ${formatNumber(last)}` : ""}`, x: s.x, y: s.y, markers: true };
      });
      const allY = eps.flatMap((s) => Array.from(s.y));
      const inUnit = allY.every((v) => v >= 0 && v <= 1);
      charts.push(
        lineChart(eps, {
          title: "per epoch",
          xLabel: "epoch",
          width: sideW,
          height: H,
          ...(inUnit ? { yMin: 0, yMax: 1 } : {}),
          ...(this.extent.epochs ? { xMin: 1, xMax: Math.max(2, this.extent.epochs) } : {}),
        }),
      );
    }
    if (showLr) charts.push(lineChart([{ name: "lr", x: this.lr.x, y: this.lr.y, color: "#7f7f7f" }], { title: "learning rate", xLabel: "step", width: sideW, height: H }));
    return charts.length === 1 ? charts[0]! : panels(charts, { columns: charts.length });
  }
}
