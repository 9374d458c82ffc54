/**
 * Encoders by name, as configs and the CLI spell them (`encoder.name` in a
 * profile, `--encoder` on the command line):
 *
 * | name | encoder |
 * |---|---|
 * | `mobilenetv2` | the bundled MobileNetV2 from nsfwjs: a stand-in, not MedCLIP ({@link MobileNetV2Encoder}) |
 * | `swin-t` | Swin-T as the authors' release builds its "MedCLIP" (ImageNet Swin-T + Linear(768,512)); needs `weights` |
 * | `onnx:<file.onnx>` | any encoder exported to ONNX with its sidecar JSON ({@link OnnxEncoder}) |
 * | `tfjs:<model.json>` | a TensorFlow.js layers or graph model on disk with its sidecar ({@link TfjsModelEncoder}) |
 */
import * as path from "node:path";
import type { ImageEncoder } from "./types";
import { MobileNetV2Encoder } from "./mobilenetv2";
import { OnnxEncoder } from "./onnx";
import { TfjsModelEncoder } from "./tfjs-model";
import { UsageError } from "../util/errors";

/** Options of {@link createEncoder}. */
export interface CreateEncoderOptions {
  /** Weights file for encoders that take one (`swin-t`: a .safetensors file). */
  weights?: string;
  /** Sidecar JSON for `onnx:`/`tfjs:` when it is not beside the model. */
  sidecar?: string;
}

/** The encoder names {@link createEncoder} accepts, for help texts. */
export const ENCODER_NAMES = ["mobilenetv2", "swin-t", "onnx:<file.onnx>", "tfjs:<model.json>"] as const;

type SwinModule = Record<string, unknown>;

function loadSwinModule(): SwinModule {
  try {
    // Optional module (written separately); resolved at run time so this file builds without it.
    return require("./swin") as SwinModule;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "MODULE_NOT_FOUND" && /[\\/]swin['"]?/.test(err.message)) {
      throw new UsageError("encoder swin-t: this build of pbip has no Swin-T encoder (src/encoders/swin.ts); use mobilenetv2, onnx:<file> or tfjs:<model.json>");
    }
    throw e;
  }
}

async function createSwin(options: CreateEncoderOptions): Promise<ImageEncoder> {
  const mod = loadSwinModule();
  type Create = (o: CreateEncoderOptions) => Promise<ImageEncoder>;
  let factory = mod.createSwinEncoder as Create | undefined;
  if (!factory) {
    for (const v of Object.values(mod)) {
      const cls = v as { name?: string; create?: unknown };
      if (typeof v === "function" && typeof cls.create === "function" && /swin/i.test(cls.name ?? "")) {
        factory = (cls.create as Create).bind(v);
        break;
      }
    }
  }
  if (!factory) throw new Error("encoder swin-t: src/encoders/swin exports neither createSwinEncoder() nor a Swin encoder class with a static create()");
  return factory(options);
}

/**
 * Build the frozen image encoder phi named `name` (see the table above). Unknown
 * names are a {@link UsageError} that lists the accepted ones.
 */
export async function createEncoder(name: string, options: CreateEncoderOptions = {}): Promise<ImageEncoder> {
  const n = name.trim();
  if (n === "mobilenetv2" || n === "mobilenetv2-nsfwjs") {
    if (options.weights) throw new UsageError(`encoder ${n}: the bundled MobileNetV2 has fixed weights; --weights is not accepted`);
    return MobileNetV2Encoder.create();
  }
  if (n === "swin-t" || n === "swin_t" || n === "swin") return createSwin(options);
  if (n.startsWith("onnx:")) {
    const file = n.slice(5);
    if (!file) throw new UsageError("encoder onnx:<file>: give the path of the .onnx file");
    return OnnxEncoder.create(path.resolve(file), options.sidecar ? { sidecar: options.sidecar } : {});
  }
  if (n.startsWith("tfjs:")) {
    const file = n.slice(5);
    if (!file) throw new UsageError("encoder tfjs:<model.json>: give the path of the model.json");
    return TfjsModelEncoder.create(path.resolve(file), options.sidecar ? { sidecar: options.sidecar } : {});
  }
  if (n.endsWith(".onnx")) return OnnxEncoder.create(path.resolve(n), options.sidecar ? { sidecar: options.sidecar } : {});
  throw new UsageError(`unknown encoder "${name}"; use one of ${ENCODER_NAMES.join(", ")}`);
}

/**
 * A few lines that say what an encoder is: name, d, weights hash, preprocessing,
 * whether it is differentiable and has a dense map, and, always when it is one,
 * that it is a STAND-IN and for what.
 */
export function describeEncoder(enc: ImageEncoder): string {
  const id = enc.identity;
  const p = id.preprocessing;
  const lines = [
    `encoder ${id.name}: d = ${id.dim}, weights ${id.weightsHash}`,
    `  input ${p.inputSize}x${p.inputSize} ${p.channelOrder}, x*${p.scale} - mean [${p.mean.join(", ")}] / std [${p.std.join(", ")}]`,
    `  ${enc.differentiable ? "differentiable (runs inside a TensorFlow.js gradient tape)" : "not differentiable (feature region mode only)"}; ${enc.hasDense ? "has a dense feature map" : "no dense feature map"}`,
  ];
  if (enc.isStandIn) lines.push(`  STAND-IN: ${enc.standInNote ?? "not the encoder the paper used"}`);
  return lines.join("\n");
}
