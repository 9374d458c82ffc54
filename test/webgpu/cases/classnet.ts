/**
 * Model-level cases for the WebGPU-vs-CPU comparison: a whole PBIP training step
 * of ClassNet (tiny MiT backbone, prototype heads, eq. 4-5 regions, the two-pass
 * image mode through a small differentiable encoder, L_CLS + L_FGS + L_BGS), its
 * gradients for every variable; and the bundled MobileNetV2 backbone's stage maps
 * and gradients. On WebGPU the step takes the path without synchronous reads
 * (pair selection before the tape).
 */
import * as tf from "@tensorflow/tfjs";
import type { BackendCase } from "../harness";
import { seeded } from "./ops";
import { TinyEncoder } from "../../tiny";
import { buildMiT } from "../../../src/model/backbones";
import { buildMobileNetV2Backbone } from "../../../src/model/backbones/mobilenetv2";
import { ClassNet } from "../../../src/model/classnet";
import { resolveConfig, type PbipConfig } from "../../../src/config/profiles";
import { PbipTask } from "../../../src/train/trainer";

const SIZE = 32;

async function pbipStep(mode: "image" | "feature"): Promise<Record<string, tf.Tensor>> {
  const cfg = resolveConfig("release", {
    data: { inputSize: SIZE } as PbipConfig["data"],
    model: { projectionHidden: 8, scaleInit: 5 } as PbipConfig["model"],
    match: { regionMode: mode, encoderChunk: mode === "image" ? 3 : 0 } as PbipConfig["match"],
    loss: { beta: 0.5 } as PbipConfig["loss"],
  });
  const backbone = buildMiT("mit-b0", { config: { embedDims: [8, 8, 16, 16], depths: [1, 1, 1, 1], numHeads: [1, 1, 2, 2], dropPathRate: 0 }, seed: 5 });
  const protos = seeded([8, 5], 11) as tf.Tensor2D;
  const net = new ClassNet({ backbone, prototypes: protos, k: [2, 2, 2, 2], model: cfg.model, normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] }, seed: 1 });
  const encoder = new TinyEncoder(SIZE);
  const task = new PbipTask({ config: cfg, net, encoder, bankPrototypes: protos, backgroundId: 4 });
  const images = tf.tidy(() => tf.div(tf.add(seeded([4, SIZE, SIZE, 3], 21), 1), 2)) as tf.Tensor4D;
  const labels = tf.tensor2d([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1]]);
  const batch = { images, labels, ids: ["a", "b", "c", "d"] };
  const ctx = await task.prepare(batch, 0);
  const vars = task.variables();
  const { value, grads } = tf.variableGrads(() => task.loss(batch, ctx, 0, {}, {}).total, [...vars.values()]);
  const byVar = new Map([...vars].map(([n, v]) => [v.name, n]));
  const out: Record<string, tf.Tensor> = { loss: value };
  for (const [vn, g] of Object.entries(grads)) {
    const n = byVar.get(vn)!;
    if (/patch_embed1\.proj\.weight|block4\.0\.attn\.q\.weight|stage4\/proj\/fc2\/weight|stage2\/scale/.test(n)) out[n] = g;
    else g.dispose();
  }
  task.release(ctx);
  task.dispose();
  tf.dispose([images, labels, protos]);
  net.dispose();
  encoder.dispose();
  return out;
}

export const cases: BackendCase[] = [
  { name: "PBIP training step, image mode (two-pass), tiny MiT + prototype heads", tol: 2e-4, run: () => pbipStep("image") },
  { name: "PBIP training step, feature mode", tol: 2e-4, run: () => pbipStep("feature") },
  {
    name: "bundled MobileNetV2 backbone: stage maps and gradients",
    tol: 2e-4,
    run: async () => {
      const bb = await buildMobileNetV2Backbone();
      const x = tf.tidy(() => seeded([1, SIZE, SIZE, 3], 31));
      const vars = bb.namedVariables();
      const pick = ["backbone/Conv1/kernel", "backbone/block_6_depthwise/depthwise_kernel", "backbone/Conv_1_bn/gamma"];
      const { value, grads } = tf.variableGrads(() => tf.addN(bb.apply(x as tf.Tensor4D, true).map((m, i) => tf.mul(tf.mean(m), i + 1))) as tf.Scalar, pick.map((n) => vars.get(n)!));
      const out: Record<string, tf.Tensor> = { value };
      pick.forEach((n) => (out[n] = grads[vars.get(n)!.name]!));
      const maps = bb.apply(x as tf.Tensor4D, false);
      maps.forEach((m, i) => (out[`stage${i + 1}`] = m));
      x.dispose();
      bb.dispose();
      return out;
    },
  },
];
