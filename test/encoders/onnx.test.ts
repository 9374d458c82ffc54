/**
 * The ONNX encoder against TensorFlow.js: the test writes a tiny ONNX model
 * itself (Conv -> Relu -> GlobalAveragePool -> Flatten, with initializers) with a
 * hand-written protobuf encoder, runs it through OnnxEncoder (onnxruntime-node)
 * and compares with tf.conv2d/relu/mean on the same weights and a hand-written
 * preprocessing.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr } from "../helpers";
import { OnnxEncoder, denseToNHWC, sidecarPathFor, type EncoderSidecar } from "../../src/encoders/onnx";
import { createEncoder, describeEncoder } from "../../src/encoders/factory";
import { tmpDir } from "../tmp";

// ---- a minimal protobuf writer (wire types 0 and 2 are all ONNX needs here) ----
class Pb {
  private parts: Buffer[] = [];
  private static varint(v: number): Buffer {
    const out: number[] = [];
    let n = BigInt(v);
    do {
      let b = Number(n & 0x7fn);
      n >>= 7n;
      if (n > 0n) b |= 0x80;
      out.push(b);
    } while (n > 0n);
    return Buffer.from(out);
  }
  int(field: number, v: number): this {
    this.parts.push(Pb.varint((field << 3) | 0), Pb.varint(v));
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.parts.push(Pb.varint((field << 3) | 2), Pb.varint(b.length), Buffer.from(b));
    return this;
  }
  str(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, "utf8"));
  }
  msg(field: number, m: Pb): this {
    return this.bytes(field, m.finish());
  }
  finish(): Buffer {
    return Buffer.concat(this.parts);
  }
}

// onnx.proto field numbers (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto, TypeProto).
function tensorProto(name: string, dims: number[], data: Float32Array): Pb {
  const t = new Pb();
  for (const d of dims) t.int(1, d); // dims
  t.int(2, 1); // data_type FLOAT
  t.str(8, name);
  const raw = Buffer.alloc(data.length * 4);
  data.forEach((v, i) => raw.writeFloatLE(v, i * 4));
  return t.bytes(9, raw); // raw_data
}
function intsAttr(name: string, ints: number[]): Pb {
  const a = new Pb().str(1, name);
  for (const i of ints) a.int(8, i);
  return a.int(20, 7); // type INTS
}
function intAttr(name: string, v: number): Pb {
  return new Pb().str(1, name).int(3, v).int(20, 2); // type INT
}
function node(op: string, inputs: string[], outputs: string[], attrs: Pb[] = []): Pb {
  const n = new Pb();
  for (const i of inputs) n.str(1, i);
  for (const o of outputs) n.str(2, o);
  n.str(3, `${op}_${outputs[0]}`).str(4, op);
  for (const a of attrs) n.msg(5, a);
  return n;
}
function valueInfo(name: string, dims: (number | string)[]): Pb {
  const shape = new Pb();
  for (const d of dims) shape.msg(1, typeof d === "number" ? new Pb().int(1, d) : new Pb().str(2, d));
  const tensorType = new Pb().int(1, 1).msg(2, shape);
  return new Pb().str(1, name).msg(2, new Pb().msg(1, tensorType));
}

interface TinyModel {
  bytes: Buffer;
  w: Float32Array; // OIHW [C, 3, 3, 3]
  b: Float32Array;
  channels: number;
}

/** Conv(3x3, pad 1) -> Relu ("dense") -> GlobalAveragePool -> Flatten ("pooled"). */
function tinyOnnx(size: number, channels: number, batch: number | string): TinyModel {
  const w = randomArray(channels * 3 * 3 * 3, 11);
  const b = randomArray(channels, 12);
  const g = new Pb();
  g.msg(1, node("Conv", ["pixels", "W", "B"], ["conv"], [intsAttr("kernel_shape", [3, 3]), intsAttr("pads", [1, 1, 1, 1]), intsAttr("strides", [1, 1])]));
  g.msg(1, node("Relu", ["conv"], ["dense"]));
  g.msg(1, node("GlobalAveragePool", ["dense"], ["gap"]));
  g.msg(1, node("Flatten", ["gap"], ["pooled"], [intAttr("axis", 1)]));
  g.str(2, "tiny");
  g.msg(5, tensorProto("W", [channels, 3, 3, 3], w));
  g.msg(5, tensorProto("B", [channels], b));
  g.msg(11, valueInfo("pixels", [batch, 3, size, size]));
  g.msg(12, valueInfo("pooled", [batch, channels]));
  g.msg(12, valueInfo("dense", [batch, channels, size, size]));
  const m = new Pb().int(1, 8).str(2, "pbip-test").msg(7, g).msg(8, new Pb().str(1, "").int(2, 13));
  return { bytes: m.finish(), w, b, channels };
}

/** Independent reference: hand-written preprocessing, then tf.conv2d / relu / mean in NHWC. */
function reference(model: TinyModel, images: Float32Array, shape: [number, number, number, number], sc: EncoderSidecar) {
  const [n, h, wd] = shape;
  const pre = new Float32Array(images.length);
  const bgr = sc.channelOrder === "BGR";
  for (let p = 0; p < n * h * wd; p++) {
    for (let c = 0; c < 3; c++) {
      const src = bgr ? 2 - c : c;
      pre[p * 3 + c] = (images[p * 3 + src]! * (sc.scale ?? 1) - sc.mean[c]!) / sc.std[c]!;
    }
  }
  return tf.tidy(() => {
    const x = tf.tensor4d(pre, shape);
    const kernel = tf.transpose(tf.tensor4d(model.w, [model.channels, 3, 3, 3]), [2, 3, 1, 0]) as tf.Tensor4D; // OIHW -> HWIO
    const dense = tf.relu(tf.add(tf.conv2d(x, kernel, 1, "same"), tf.tensor1d(model.b)));
    return { dense: dense.dataSync().slice(), pooled: tf.mean(dense, [1, 2]).dataSync().slice() };
  });
}

function setup(size: number, batch: number | string, sidecar: Partial<EncoderSidecar> = {}) {
  const dir = tmpDir("pbip-onnx-");
  const model = tinyOnnx(size, 4, batch);
  const file = path.join(dir, "tiny.onnx");
  fs.writeFileSync(file, model.bytes);
  const sc: EncoderSidecar = {
    name: "tiny-conv",
    inputSize: size,
    channelOrder: "BGR",
    scale: 1,
    mean: [0.5, 0.4, 0.3],
    std: [0.2, 0.25, 0.3],
    layout: "NCHW",
    inputName: "pixels",
    outputName: "pooled",
    denseOutputName: "dense",
    denseLayout: "NCHW",
    dim: 4,
    source: "written by test/encoders/onnx.test.ts",
    ...sidecar,
  };
  fs.writeFileSync(sidecarPathFor(file), JSON.stringify(sc));
  return { dir, file, model, sc };
}

test("ONNX encoder matches a TensorFlow.js computation of the same weights (pooled and dense)", async () => {
  await onBackend("cpu", async () => {
    const { file, model, sc } = setup(8, "batch");
    const enc = await OnnxEncoder.create(file);
    try {
      assert.equal(enc.identity.name, "onnx:tiny-conv");
      assert.equal(enc.identity.dim, 4);
      assert.equal(enc.differentiable, false);
      assert.equal(enc.hasDense, true);
      assert.match(enc.identity.weightsHash, /^[0-9a-f]{16}$/);
      const shape: [number, number, number, number] = [3, 8, 8, 3];
      const data = randomArray(3 * 8 * 8 * 3, 5).map((v) => (v + 1) / 2);
      const images = tf.tensor4d(data, shape);
      const before = tf.memory().numTensors;
      const out = await enc.encode(images, { dense: true });
      assert.deepEqual(out.pooled.shape, [3, 4]);
      assert.deepEqual(out.dense!.shape, [3, 8, 8, 4]);
      const ref = reference(model, data, shape, sc);
      const errP = maxRelErr(out.pooled.dataSync(), ref.pooled);
      const errD = maxRelErr(out.dense!.dataSync(), ref.dense);
      assert.ok(errP < 1e-5, `pooled relative error ${errP}`);
      assert.ok(errD < 1e-5, `dense relative error ${errD}`);
      tf.dispose([out.pooled, out.dense!]);
      assert.equal(tf.memory().numTensors, before, "encode leaks tensors");
      images.dispose();
    } finally {
      enc.dispose();
    }
  });
});

test("ONNX encoder resizes other patch sizes with the library preprocessing and loops a fixed batch of 1", async () => {
  await onBackend("cpu", async () => {
    const { file, model, sc } = setup(8, 1, { channelOrder: "RGB", scale: 255, mean: [120, 110, 100], std: [50, 60, 70] });
    const enc = await OnnxEncoder.create(file);
    try {
      assert.equal(enc.fixedBatch, 1);
      const data = randomArray(3 * 16 * 16 * 3, 6).map((v) => (v + 1) / 2);
      const images = tf.tensor4d(data, [3, 16, 16, 3]);
      const out = await enc.encode(images);
      assert.equal(out.dense, undefined);
      // Reference: the same bilinear resize (half-pixel centres), then the hand-written path.
      const resized = tf.tidy(() => tf.image.resizeBilinear(images, [8, 8], false, true).dataSync().slice()) as Float32Array;
      const ref = reference(model, resized, [3, 8, 8, 3], sc);
      const err = maxRelErr(out.pooled.dataSync(), ref.pooled);
      assert.ok(err < 1e-5, `pooled relative error ${err}`);
      tf.dispose([images, out.pooled]);
    } finally {
      enc.dispose();
    }
  });
});

test("the factory opens onnx:<file> and describes it", async () => {
  await onBackend("cpu", async () => {
    const { file } = setup(8, "batch", { standInNote: "random weights, a test model" });
    const enc = await createEncoder(`onnx:${file}`);
    try {
      const text = describeEncoder(enc);
      assert.match(text, /onnx:tiny-conv/);
      assert.match(text, /STAND-IN/);
      assert.match(text, /random weights, a test model/);
      assert.match(text, /not differentiable/);
    } finally {
      enc.dispose();
    }
  });
});

test("sidecar problems are errors that name the sidecar file", async () => {
  const cases: [string, Partial<EncoderSidecar> | "missing" | "garbled", RegExp][] = [
    ["unknown output", { outputName: "features" }, /outputName "features" is not in the model/],
    ["unknown input", { inputName: "image" }, /inputName "image" is not in the model/],
    ["unknown dense output", { denseOutputName: "tokens" }, /denseOutputName "tokens" is not in the model/],
    ["wrong input size", { inputSize: 16 }, /8x8 but the sidecar says inputSize 16/],
    ["wrong dim", { dim: 5 }, /d = 4 but the sidecar says dim 5/],
    ["wrong layout", { layout: "NHWC" }, /channels in layout NHWC/],
    ["bad mean", { mean: [1, 2] as unknown as [number, number, number] }, /"mean" must be three numbers/],
    ["bad std", { std: [1, 0, 1] }, /"std" must be three positive numbers/],
    ["missing sidecar", "missing", /sidecar JSON not found/],
    ["garbled sidecar", "garbled", /not valid JSON/],
  ];
  for (const [what, change, re] of cases) {
    const { file } = setup(8, "batch", typeof change === "object" ? change : {});
    const scFile = sidecarPathFor(file);
    if (change === "missing") fs.rmSync(scFile);
    if (change === "garbled") fs.writeFileSync(scFile, "{ name: ");
    await assert.rejects(OnnxEncoder.create(file), (e: Error) => {
      assert.ok(e.message.includes(scFile), `${what}: message does not name ${scFile}: ${e.message}`);
      assert.match(e.message, re, what);
      return true;
    });
  }
  await assert.rejects(OnnxEncoder.create("/nonexistent/model.onnx"), /nonexistent\/model.onnx: ONNX model file not found/);
  const dir = tmpDir("pbip-onnx-");
  const bad = path.join(dir, "broken.onnx");
  fs.writeFileSync(bad, Buffer.from("not a model"));
  fs.writeFileSync(sidecarPathFor(bad), JSON.stringify({ name: "x", inputSize: 8, mean: [0, 0, 0], std: [1, 1, 1] }));
  await assert.rejects(OnnxEncoder.create(bad), /broken.onnx: onnxruntime cannot load it/);
});

test("denseToNHWC turns tokens (with a CLS token) and NCHW maps into NHWC grids", async () => {
  await onBackend("cpu", () => {
    // [1, 1 + 4, 2] tokens: CLS then a 2x2 grid.
    const tok = tf.tensor3d([[[9, 9], [1, 2], [3, 4], [5, 6], [7, 8]]]);
    const g = denseToNHWC(tok, "tokens", 1, "t");
    assert.deepEqual(g.shape, [1, 2, 2, 2]);
    assert.deepEqual(Array.from(g.dataSync()), [1, 2, 3, 4, 5, 6, 7, 8]);
    const nchw = tf.tensor4d([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 2, 2]);
    const h = denseToNHWC(nchw, "NCHW", 0, "t");
    assert.deepEqual(Array.from(h.dataSync()), [1, 5, 2, 6, 3, 7, 4, 8]);
    const z = tf.zeros([1, 4, 2]);
    assert.throws(() => denseToNHWC(z, "tokens", 1, "t"), /not a square grid/);
    tf.dispose([tok, g, nchw, h, z]);
  });
});

test("the factory names what it accepts", async () => {
  await assert.rejects(createEncoder("medclip"), /unknown encoder "medclip"; use one of mobilenetv2, swin-t, onnx:<file.onnx>, tfjs:<model.json>/);
  await assert.rejects(createEncoder("mobilenetv2", { weights: "x.safetensors" }), /fixed weights/);
  await assert.rejects(createEncoder("onnx:"), /give the path of the .onnx file/);
  await assert.rejects(createEncoder("tfjs:/nonexistent/model.json"), /model.json: TensorFlow.js model.json not found/);
});
