/**
 * Learning-rate schedules as pure functions of the step (METHOD.md section 6:
 * the release uses AdamW with polynomial decay, power 1; the paper states only a
 * fixed learning rate).
 *
 * `step` counts optimiser updates already taken (0 for the first update), as the
 * release's `PolyWarmupAdamW.global_step` and PyTorch's `LambdaLR` count: the
 * update with index `step` uses `baseLr * lrFactor(schedule, step)`.
 */
import { UsageError } from "../util/errors";

/**
 * Linear warm-up: the factor rises from `startFactor` at step 0 to 1 at step
 * `steps`, i.e. `startFactor + (1 - startFactor) * step / steps`. This is the
 * release's `1 - (1 - step/warmup_iter) * (1 - warmup_ratio)`: the release's
 * `warmup_ratio` (1e-6) is this `startFactor`, not a fraction of training. The
 * release's own profile has no warm-up (`warmup_iter: 0`).
 */
export interface Warmup {
  /** Warm-up length in updates. Give this or `fraction`. */
  steps?: number;
  /** Warm-up length as a fraction of `maxSteps` (rounded to whole updates). Give this or `steps`. */
  fraction?: number;
  /** The factor at step 0. Default 0. */
  startFactor?: number;
}

/** A constant learning rate (after an optional warm-up). */
export interface ConstantSchedule {
  kind: "constant";
  warmup?: Warmup;
  /** Only needed to resolve `warmup.fraction`. */
  maxSteps?: number;
}

/**
 * Polynomial decay `(1 - step/maxSteps)^power` (the release: power 1, i.e. linear
 * to zero). As in the release, the decay is counted from step 0, not from the end
 * of warm-up: after warm-up the factor joins the undelayed curve. Past `maxSteps`
 * the factor is 0 (the release stops training there).
 */
export interface PolySchedule {
  kind: "poly";
  maxSteps: number;
  /** Default 1 (the release). */
  power?: number;
  warmup?: Warmup;
}

/**
 * Cosine decay from 1 at the end of warm-up to `minFactor` at `maxSteps`:
 * `minFactor + (1 - minFactor) * (1 + cos(pi * (step - W) / (maxSteps - W))) / 2`.
 * Past `maxSteps` the factor stays at `minFactor`.
 */
export interface CosineSchedule {
  kind: "cosine";
  maxSteps: number;
  /** Default 0. */
  minFactor?: number;
  warmup?: Warmup;
}

/** A learning-rate schedule: a factor of the base learning rate as a pure function of the step. */
export type LrSchedule = ConstantSchedule | PolySchedule | CosineSchedule;

function checkCount(what: string, v: number | undefined, allowZero: boolean): void {
  if (v === undefined) return;
  if (!Number.isInteger(v) || v < 0 || (!allowZero && v === 0)) throw new UsageError(`schedule: ${what} must be a whole number ${allowZero ? ">= 0" : "> 0"}, got ${v}`);
}

/** The warm-up length of a schedule in updates (0 without warm-up). Throws a UsageError for an invalid warm-up. */
export function warmupSteps(schedule: LrSchedule): number {
  const w = schedule.warmup;
  if (!w) return 0;
  if ((w.steps === undefined) === (w.fraction === undefined)) throw new UsageError("schedule: warmup needs exactly one of steps or fraction");
  const start = w.startFactor ?? 0;
  if (!(start >= 0 && start <= 1)) throw new UsageError(`schedule: warmup.startFactor must be in [0, 1], got ${start}`);
  if (w.steps !== undefined) {
    checkCount("warmup.steps", w.steps, true);
    return w.steps;
  }
  const f = w.fraction!;
  if (!(f >= 0 && f <= 1)) throw new UsageError(`schedule: warmup.fraction must be in [0, 1], got ${f}`);
  if (schedule.maxSteps === undefined) throw new UsageError("schedule: warmup.fraction needs maxSteps");
  return Math.round(f * schedule.maxSteps);
}

/**
 * The learning-rate factor (multiplier of the base rate) for the update with index
 * `step` (0-based). Pure: the same step always gives the same factor, so a resumed
 * run continues exactly where it stopped.
 */
export function lrFactor(schedule: LrSchedule, step: number): number {
  if (!Number.isFinite(step) || step < 0) throw new UsageError(`schedule: step must be >= 0, got ${step}`);
  const kind = (schedule as { kind: string }).kind;
  if (kind !== "constant") checkCount("maxSteps", schedule.maxSteps, false);
  else checkCount("maxSteps", schedule.maxSteps, true);
  const w = warmupSteps(schedule);
  if (step < w) {
    const start = schedule.warmup!.startFactor ?? 0;
    return start + ((1 - start) * step) / w;
  }
  switch (schedule.kind) {
    case "constant":
      return 1;
    case "poly": {
      const power = schedule.power ?? 1;
      if (!(power > 0) || !Number.isFinite(power)) throw new UsageError(`schedule: poly power must be > 0, got ${power}`);
      if (step >= schedule.maxSteps) return 0;
      return Math.pow(1 - step / schedule.maxSteps, power);
    }
    case "cosine": {
      const min = schedule.minFactor ?? 0;
      if (!(min >= 0 && min <= 1)) throw new UsageError(`schedule: cosine minFactor must be in [0, 1], got ${min}`);
      if (step >= schedule.maxSteps) return min;
      const span = schedule.maxSteps - w;
      return min + ((1 - min) * (1 + Math.cos((Math.PI * (step - w)) / span))) / 2;
    }
    default:
      throw new UsageError(`schedule: unknown kind "${kind}" (use constant, poly or cosine)`);
  }
}

/** `baseLr * lrFactor(schedule, step)`: the learning rate of the update with index `step`. */
export function learningRate(baseLr: number, schedule: LrSchedule, step: number): number {
  return baseLr * lrFactor(schedule, step);
}

/** The learning rates of updates 0 .. steps-1, e.g. for plotting a schedule in a notebook. */
export function learningRates(baseLr: number, schedule: LrSchedule, steps: number): number[] {
  checkCount("steps", steps, true);
  return Array.from({ length: steps }, (_, i) => learningRate(baseLr, schedule, i));
}
