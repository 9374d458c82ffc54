/**
 * AdamW: Adam with decoupled weight decay (Loshchilov & Hutter), with PyTorch's
 * `torch.optim.AdamW` semantics, which TensorFlow.js does not ship (METHOD.md
 * section 6: the release trains with AdamW, lr 5e-5, weight decay 1e-3, betas
 * (0.9, 0.999), eps 1e-8; the paper with lr 1e-5, weight decay 0.003).
 *
 * One update of parameter p with gradient g, learning rate lr (the scheduled rate
 * times the group's `lrScale`), weight decay wd and the parameter's own step count t:
 *
 *     p <- p * (1 - lr * wd)                        decoupled decay, before the Adam step
 *     m <- beta1 * m + (1 - beta1) * g
 *     v <- beta2 * v + (1 - beta2) * g^2
 *     p <- p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * eps sits outside the square root, as in PyTorch. A parameter without a gradient
 * in a step is left alone (no decay, its t does not advance), as in PyTorch.
 *
 * The release passes `model.parameters()` as one group to its `PolyWarmupAdamW`: one
 * learning rate and weight decay on every parameter, norms, biases and the learnable
 * similarity scale included, and no separate head learning rate. The default here
 * (no `groups`) does the same; {@link noDecayForVectors} is the common alternative.
 */
import * as tf from "@tensorflow/tfjs";
import type { HostTensor, NamedTensors } from "../io/tensors";
import { UsageError } from "../util/errors";

/** Parameters to optimise: a list (named by `variable.name`) or stable names mapped to variables. */
export type Parameters = readonly tf.Variable[] | ReadonlyMap<string, tf.Variable> | Readonly<Record<string, tf.Variable>>;

/**
 * A parameter group: parameters whose name matches get their own learning-rate
 * multiplier and/or weight decay. The first matching group wins; unmatched
 * parameters use the optimiser's defaults.
 */
export interface ParamGroup {
  /** Shown by {@link AdamW.describeGroups}. */
  name: string;
  /** A pattern tested against the parameter's name, or a predicate. */
  match: RegExp | ((name: string, variable: tf.Variable) => boolean);
  /** Multiplies the learning rate for this group (e.g. 10 for a freshly initialised head). Default 1. */
  lrScale?: number;
  /** Weight decay for this group; default the optimiser's `weightDecay`. */
  weightDecay?: number;
}

/** Options of {@link AdamW}; defaults are PyTorch's except `weightDecay` (PyTorch 0.01; the release 1e-3). */
export interface AdamWOptions {
  /** Base learning rate, used when {@link AdamW.step} is given none (the schedule usually supplies it). */
  lr: number;
  /** (beta1, beta2). Default (0.9, 0.999). */
  betas?: readonly [number, number];
  /** Added to sqrt(v-hat). Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay. Default 0.01 (PyTorch's default). */
  weightDecay?: number;
  /** Per-group settings; see {@link ParamGroup}. Default: none (one group, like the release). */
  groups?: readonly ParamGroup[];
  /**
   * Clip gradients to this global L2 norm before the update, as
   * `torch.nn.utils.clip_grad_norm_(params, maxNorm)` does: every gradient is
   * multiplied by `min(1, maxNorm / (norm + 1e-6))`. The norm before clipping is
   * available from {@link AdamW.gradNorm}. Default: no clipping.
   */
  clipGradNorm?: number;
  /**
   * Update the parameters that share the update's constants (learning-rate scale,
   * weight decay, step count) as one flat vector: the same arithmetic, bit for bit,
   * in a dozen kernels instead of a dozen per parameter tensor (what GPU backends pay
   * for, one dispatch each). Default true; false runs one parameter at a time.
   */
  fuse?: boolean;
}

/** The scalars of one update (see the module comment). */
interface UpdateConstants {
  /** The learning rate times the group's lrScale. */
  lrP: number;
  weightDecay: number;
  /** 1 - beta1^t */
  bc1: number;
  /** sqrt(1 - beta2^t) */
  bc2Sqrt: number;
}

/** Settings of one parameter after group resolution. */
export interface ResolvedParam {
  name: string;
  group: string;
  lrScale: number;
  weightDecay: number;
  shape: number[];
}

/** What {@link AdamW.step} reports. */
export interface StepInfo {
  /** The optimiser steps taken so far, this one included. */
  step: number;
  /** The base learning rate used (before group multipliers). */
  lr: number;
  /** Parameters that had no gradient in this step and were left unchanged. */
  skipped: string[];
}

/**
 * The optimiser state, enough to resume exactly: `tensors` holds `exp_avg/<name>`
 * (m) and `exp_avg_sq/<name>` (v) as float32, the names PyTorch's state uses;
 * `paramSteps` each parameter's Adam step count. Write `tensors` with
 * writeSafetensors and the rest as JSON.
 */
export interface AdamWState {
  /** Optimiser steps taken (the schedule's step). */
  step: number;
  /** Per-parameter Adam step count t (PyTorch's `state[p]["step"]`). */
  paramSteps: Record<string, number>;
  tensors: NamedTensors;
}

interface Slot {
  name: string;
  variable: tf.Variable;
  m: tf.Variable;
  v: tf.Variable;
  t: number;
  lrScale: number;
  weightDecay: number;
  group: string;
}

/**
 * A group that exempts every parameter of rank 0 or 1 (biases, LayerNorm/BatchNorm
 * scales and shifts, the learnable similarity scale s_i) from weight decay: the
 * usual transformer recipe, not the release's.
 */
export function noDecayForVectors(name = "no-decay (rank <= 1)"): ParamGroup {
  return { name, match: (_n, v) => v.rank <= 1, weightDecay: 0 };
}

function entries(params: Parameters): [string, tf.Variable][] {
  if (Array.isArray(params)) return (params as tf.Variable[]).map((v) => [v.name, v]);
  if (params instanceof Map) return [...(params as ReadonlyMap<string, tf.Variable>).entries()];
  return Object.entries(params as Record<string, tf.Variable>);
}

/** A non-trainable zero variable shaped like `v` (tidy frees the temporary zeros tensor; the variable keeps the data). */
function zeroSlot(v: tf.Variable): tf.Variable {
  return tf.tidy(() => tf.variable(tf.zerosLike(v), false));
}

function finite(what: string, v: number, lo = -Infinity): number {
  if (!Number.isFinite(v) || v < lo) throw new UsageError(`AdamW: ${what} must be a finite number${lo > -Infinity ? ` >= ${lo}` : ""}, got ${v}`);
  return v;
}

/**
 * AdamW with decoupled weight decay, parameter groups, optional global-norm
 * clipping, and a savable state (see the module comment for the update).
 *
 * @example
 * const opt = new AdamW(model.namedParameters(), { lr: 5e-5, weightDecay: 1e-3 });
 * const { value, grads } = tf.variableGrads(() => lossFn());
 * opt.step(grads, learningRate(5e-5, { kind: "poly", maxSteps, power: 1 }, opt.stepCount));
 * tf.dispose([value, grads]);
 */
export class AdamW {
  private readonly slots: Slot[];
  private readonly byName = new Map<string, Slot>();
  private readonly byVarName = new Map<string, Slot>();
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  private readonly baseLr: number;
  private readonly clip?: number;
  private steps = 0;
  private disposed = false;
  /** The last global gradient norm (clipping on), kept on the device until read or replaced. */
  private lastNorm?: tf.Scalar;
  /** Update parameters that share the update's constants as one flat vector (see {@link AdamWOptions.fuse}). */
  private readonly fuse: boolean;

  constructor(params: Parameters, options: AdamWOptions) {
    this.baseLr = finite("lr", options.lr, 0);
    const [b1, b2] = options.betas ?? [0.9, 0.999];
    if (!(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1)) throw new UsageError(`AdamW: betas must be in [0, 1), got (${b1}, ${b2})`);
    this.beta1 = b1;
    this.beta2 = b2;
    this.eps = finite("eps", options.eps ?? 1e-8, 0);
    const wd = finite("weightDecay", options.weightDecay ?? 0.01, 0);
    if (options.clipGradNorm !== undefined && !(options.clipGradNorm > 0)) throw new UsageError(`AdamW: clipGradNorm must be > 0, got ${options.clipGradNorm}`);
    this.clip = options.clipGradNorm;
    this.fuse = options.fuse ?? true;
    const list = entries(params);
    if (list.length === 0) throw new UsageError("AdamW: no parameters to optimise");
    this.slots = list.map(([name, variable]) => {
      if (this.byName.has(name)) throw new UsageError(`AdamW: parameter name "${name}" appears twice`);
      if (variable.dtype !== "float32") throw new UsageError(`AdamW: parameter "${name}" is ${variable.dtype}; only float32 parameters can be optimised`);
      const group = options.groups?.find((g) => (g.match instanceof RegExp ? g.match.test(name) : g.match(name, variable)));
      const slot: Slot = {
        name,
        variable,
        m: zeroSlot(variable),
        v: zeroSlot(variable),
        t: 0,
        lrScale: finite(`lrScale of group "${group?.name}"`, group?.lrScale ?? 1, 0),
        weightDecay: finite(`weightDecay of group "${group?.name}"`, group?.weightDecay ?? wd, 0),
        group: group?.name ?? "default",
      };
      this.byName.set(name, slot);
      this.byVarName.set(variable.name, slot);
      return slot;
    });
  }

  /**
   * One AdamW update of (p, m, v) with gradient g, element-wise (see the module
   * comment). Each stage frees its temporaries; with `owned`, the inputs are disposed
   * as soon as they are used up (the flat vectors of a fused group, 56 MB each for
   * MiT-b1 on the WASM heap: the step's peak stays at about 6 of them).
   */
  private update(p0: tf.Tensor, m0: tf.Tensor, v0: tf.Tensor, g: tf.Tensor, c: UpdateConstants, owned = false): { p: tf.Tensor; m: tf.Tensor; v: tf.Tensor } {
    const done = (...ts: tf.Tensor[]) => owned && tf.dispose(ts);
    const m = tf.tidy(() => tf.add(tf.mul(m0, this.beta1), tf.mul(g, 1 - this.beta1)));
    done(m0);
    const v = tf.tidy(() => tf.add(tf.mul(v0, this.beta2), tf.mul(tf.square(g), 1 - this.beta2)));
    done(v0, g);
    const denom = tf.tidy(() => tf.add(tf.div(tf.sqrt(v), c.bc2Sqrt), this.eps));
    const step = tf.tidy(() => tf.mul(tf.div(m, denom), c.lrP / c.bc1));
    denom.dispose();
    const p = tf.tidy(() => tf.sub(c.weightDecay !== 0 ? tf.mul(p0, 1 - c.lrP * c.weightDecay) : p0, step));
    step.dispose();
    done(p0);
    return { p, m, v };
  }

  /** Optimiser steps taken so far: the `step` to pass to the schedule for the next update. */
  get stepCount(): number {
    return this.steps;
  }

  /** Each parameter's resolved group, learning-rate multiplier and weight decay. */
  describeGroups(): ResolvedParam[] {
    return this.slots.map((s) => ({ name: s.name, group: s.group, lrScale: s.lrScale, weightDecay: s.weightDecay, shape: [...s.variable.shape] }));
  }

  /**
   * Apply one update. `grads` maps names to gradients, as `tf.variableGrads`
   * returns them (keyed by `variable.name`); keys by the names given to the
   * constructor work too. Gradients are not disposed (the caller owns them).
   *
   * @param lr the base learning rate of this update (e.g. from {@link learningRate}); default the constructor's `lr`.
   */
  step(grads: tf.NamedTensorMap | ReadonlyMap<string, tf.Tensor>, lr: number = this.baseLr): StepInfo {
    if (this.disposed) throw new UsageError("AdamW: step() after dispose()");
    finite("lr", lr, 0);
    const lookup = (name: string): tf.Tensor | undefined => (grads instanceof Map ? grads.get(name) : (grads as tf.NamedTensorMap)[name]);
    const pairs: [Slot, tf.Tensor][] = [];
    const skipped: string[] = [];
    const keys = grads instanceof Map ? [...grads.keys()] : Object.keys(grads);
    for (const key of keys) {
      if (!this.byVarName.has(key) && !this.byName.has(key)) throw new UsageError(`AdamW: a gradient for "${key}", which is not one of the optimiser's parameters`);
    }
    for (const s of this.slots) {
      const g = lookup(s.variable.name) ?? lookup(s.name);
      if (!g) {
        skipped.push(s.name);
        continue;
      }
      if (g.shape.length !== s.variable.shape.length || g.shape.some((d, i) => d !== s.variable.shape[i])) {
        throw new UsageError(`AdamW: gradient of "${s.name}" has shape [${g.shape.join(", ")}], the parameter [${s.variable.shape.join(", ")}]`);
      }
      pairs.push([s, g]);
    }
    // Nothing is read back to the host here (a synchronous read fails on WebGPU in Node).
    const norm = tf.tidy(() => {
      let coef: tf.Scalar | undefined;
      let norm: tf.Scalar | undefined;
      if (this.clip !== undefined && pairs.length > 0) {
        norm = tf.sqrt(tf.addN(pairs.map(([, g]) => tf.sum(tf.square(g))))) as tf.Scalar;
        // as torch.nn.utils.clip_grad_norm_: multiply by min(1, maxNorm / (norm + 1e-6)), always
        coef = tf.minimum(tf.div(this.clip, tf.add(norm, 1e-6)), 1) as tf.Scalar;
      }
      // Parameters that share every constant of the update (learning-rate scale, weight
      // decay, step count) are updated as one flat vector: the same element-wise
      // arithmetic in the same order (same bits), a dozen kernels instead of a dozen
      // per parameter tensor. On WebGPU each kernel costs a dispatch from JavaScript,
      // which made the per-tensor loop 0.6 s of a 2.3 s step on an H200.
      const groups = new Map<string, [Slot, tf.Tensor][]>();
      for (const pair of pairs) {
        const s = pair[0];
        s.t += 1;
        const key = `${s.lrScale}/${s.weightDecay}/${s.t}`;
        const members = groups.get(key);
        if (members) members.push(pair);
        else groups.set(key, [pair]);
      }
      for (const members of groups.values()) {
        const s0 = members[0]![0];
        const c: UpdateConstants = {
          lrP: lr * s0.lrScale,
          weightDecay: s0.weightDecay,
          bc1: 1 - Math.pow(this.beta1, s0.t),
          bc2Sqrt: Math.sqrt(1 - Math.pow(this.beta2, s0.t)),
        };
        if (!this.fuse || members.length === 1) {
          for (const [s, g0] of members) {
            const g = coef ? tf.mul(g0, coef) : g0;
            const u = this.update(s.variable, s.m, s.v, g, c);
            s.m.assign(u.m);
            s.v.assign(u.v);
            s.variable.assign(u.p);
          }
          continue;
        }
        tf.tidy(() => {
          const flat = (xs: tf.Tensor[]) => tf.tidy(() => tf.concat(xs.map((x) => tf.reshape(x, [-1]))));
          const g = tf.tidy(() => {
            const g0 = flat(members.map(([, g]) => g));
            return coef ? tf.mul(g0, coef) : g0;
          });
          const m0 = flat(members.map(([s]) => s.m));
          const v0 = flat(members.map(([s]) => s.v));
          const p0 = flat(members.map(([s]) => s.variable));
          const u = this.update(p0, m0, v0, g, c, true);
          // Split each result back into its parameters' shapes, one at a time (the pieces
          // live on in the variables; the flat vectors go).
          const sizes = members.map(([s]) => s.variable.size);
          for (const [flatOut, target] of [
            [u.m, (s: Slot) => s.m],
            [u.v, (s: Slot) => s.v],
            [u.p, (s: Slot) => s.variable],
          ] as const) {
            const parts = tf.split(flatOut, sizes);
            members.forEach(([s], i) => target(s).assign(tf.reshape(parts[i]!, s.variable.shape)));
            tf.dispose([flatOut, ...parts]);
          }
        });
      }
      return norm;
    });
    this.lastNorm?.dispose();
    this.lastNorm = norm;
    this.steps += 1;
    return { step: this.steps, lr, skipped };
  }

  /**
   * The global L2 norm of the last step's gradients before clipping (as
   * clip_grad_norm_ returns it); undefined when clipping is off or before the first step.
   */
  async gradNorm(): Promise<number | undefined> {
    if (!this.lastNorm) return undefined;
    return (await this.lastNorm.data())[0]!;
  }

  /** A copy of the state on the host (m, v, step counts), for a checkpoint. Asynchronous: it reads the device. */
  async getState(): Promise<AdamWState> {
    const tensors: NamedTensors = new Map();
    const paramSteps: Record<string, number> = {};
    const host = async (t: tf.Variable): Promise<HostTensor> => ({ dtype: "float32", shape: [...t.shape], data: Float32Array.from((await t.data()) as Float32Array) });
    for (const s of this.slots) {
      tensors.set(`exp_avg/${s.name}`, await host(s.m));
      tensors.set(`exp_avg_sq/${s.name}`, await host(s.v));
      paramSteps[s.name] = s.t;
    }
    return { step: this.steps, paramSteps, tensors };
  }

  /**
   * Restore a state saved by {@link getState} (possibly in another process) into this
   * optimiser, which must have the same parameter names and shapes. Every problem is
   * listed in one error that names `source` (e.g. the checkpoint file).
   */
  setState(state: AdamWState, source = "optimizer state"): void {
    const problems: string[] = [];
    if (!Number.isInteger(state.step) || state.step < 0) problems.push(`step is ${state.step}`);
    const expected = new Set<string>();
    for (const s of this.slots) {
      for (const key of [`exp_avg/${s.name}`, `exp_avg_sq/${s.name}`]) {
        expected.add(key);
        const h = state.tensors.get(key);
        if (!h) problems.push(`missing ${key}`);
        else if (h.shape.length !== s.variable.shape.length || h.shape.some((d, i) => d !== s.variable.shape[i])) {
          problems.push(`${key} has shape [${h.shape.join(", ")}], the parameter [${s.variable.shape.join(", ")}]`);
        } else if (h.data.length !== s.variable.size) problems.push(`${key} has ${h.data.length} values for ${s.variable.size}`);
      }
      const t = state.paramSteps[s.name];
      if (!Number.isInteger(t) || t! < 0) problems.push(`paramSteps["${s.name}"] is ${t}`);
    }
    for (const key of state.tensors.keys()) if (!expected.has(key)) problems.push(`unexpected ${key}`);
    if (problems.length) throw new UsageError(`${source}: does not fit this optimiser: ${problems.slice(0, 20).join("; ")}${problems.length > 20 ? "; ..." : ""}`);
    for (const s of this.slots) {
      tf.tidy(() => {
        s.m.assign(tf.tensor(state.tensors.get(`exp_avg/${s.name}`)!.data, s.variable.shape, "float32"));
        s.v.assign(tf.tensor(state.tensors.get(`exp_avg_sq/${s.name}`)!.data, s.variable.shape, "float32"));
      });
      s.t = state.paramSteps[s.name]!;
    }
    this.steps = state.step;
  }

  /** Free the moment tensors. The parameters are the caller's and stay. */
  dispose(): void {
    if (this.disposed) return;
    for (const s of this.slots) {
      s.m.dispose();
      s.v.dispose();
    }
    this.lastNorm?.dispose();
    this.lastNorm = undefined;
    this.disposed = true;
  }
}
