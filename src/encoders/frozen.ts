/**
 * Running a frozen tfjs-layers model so that its input gradient costs only what it needs.
 *
 * tfjs-layers runs every `Conv2D` through `tf.fused.conv2d`, whose custom gradient
 * computes the input, filter and bias gradients together, asked for or not. A frozen
 * encoder in the `image` region mode needs only the input gradient; in the bundled
 * MobileNetV2 the filter gradients of its 35 convolutions were about a quarter of the
 * encoder's forward and backward time on WASM (the first 3x3 convolution's alone,
 * at full resolution, half a second for 44 regions at 112 px).
 *
 * {@link applyFrozen} walks the model's layers in order and runs each `Conv2D` without
 * bias and with a linear activation (every convolution of Keras MobileNetV2) as
 * `tf.conv2d`, whose registered gradient computes each input's gradient only when the
 * tape asks for it. The forward values and the input gradient are bit for bit those
 * of `model.apply` (the same kernels; tested). Every other layer runs as itself.
 * Models the walk does not cover (shared layers, multiple inputs, a layer with several
 * outputs, channels-first convolutions) run through `model.apply` unchanged.
 */
import * as tf from "@tensorflow/tfjs";

interface WalkLayer {
  name: string;
  getClassName(): string;
  apply(x: tf.Tensor | tf.Tensor[], kwargs?: Record<string, unknown>): tf.Tensor | tf.Tensor[];
  inboundNodes: { inboundLayers: { name: string }[]; tensorIndices: number[]; outputTensors: unknown[] }[];
  // Conv2D's fields (tfjs-layers keeps them public).
  kernel?: { read(): tf.Tensor };
  useBias?: boolean;
  activation?: { getClassName(): string };
  strides?: number[];
  padding?: string;
  dilationRate?: number | number[];
  dataFormat?: string;
}

/** Whether {@link applyFrozen} can walk `model` layer by layer (else it calls `model.apply`). */
export function walkable(model: tf.LayersModel): boolean {
  if (model.inputs.length !== 1) return false;
  return (model.layers as unknown as WalkLayer[]).every((l) => {
    if (l.inboundNodes.length !== 1) return false;
    const node = l.inboundNodes[0]!;
    return node.outputTensors.length === 1 && node.tensorIndices.every((i) => i === 0);
  });
}

/** A `Conv2D` that {@link applyFrozen} runs as `tf.conv2d`. */
function plainConv(l: WalkLayer): boolean {
  return l.getClassName() === "Conv2D" && l.useBias === false && l.activation?.getClassName().toLowerCase() === "linear" && l.dataFormat === "channelsLast" && l.kernel !== undefined;
}

/**
 * The model's outputs for input `x` (inference mode), computed layer by layer so that
 * a gradient with respect to `x` skips the convolutions' filter gradients; see the
 * module comment. Returns one tensor per model output.
 */
export function applyFrozen(model: tf.LayersModel, x: tf.Tensor): tf.Tensor[] {
  if (!walkable(model)) {
    const y = model.apply(x, { training: false }) as tf.Tensor | tf.Tensor[];
    return Array.isArray(y) ? y : [y];
  }
  const outputNames = model.outputs.map((o) => o.sourceLayer.name);
  return tf.tidy(() => {
    const values = new Map<string, tf.Tensor>();
    const input = model.inputLayers[0]!.name;
    values.set(input, x);
    for (const l of model.layers as unknown as WalkLayer[]) {
      if (l.name === input) continue;
      const ins = l.inboundNodes[0]!.inboundLayers.map((p) => {
        const v = values.get(p.name);
        if (!v) throw new Error(`applyFrozen: layer ${l.name} needs ${p.name}, which has not run`);
        return v;
      });
      let y: tf.Tensor;
      if (plainConv(l)) {
        const d = l.dilationRate ?? 1;
        y = tf.conv2d(ins[0] as tf.Tensor4D, l.kernel!.read() as tf.Tensor4D, l.strides as [number, number], l.padding === "same" ? "same" : "valid", "NHWC", (typeof d === "number" ? [d, d] : d) as [number, number]);
      } else {
        y = l.apply(ins.length === 1 ? ins[0]! : ins, { training: false }) as tf.Tensor;
      }
      values.set(l.name, y);
    }
    return outputNames.map((n) => values.get(n)!);
  });
}
