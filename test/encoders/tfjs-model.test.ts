/**
 * TensorFlow.js encoders from disk: a layers model saved by the test, and a graph
 * model whose model.json the test writes by hand (Placeholder -> Conv2D ->
 * BiasAdd -> Relu -> Mean). Both are compared with tf ops on the same weights
 * after a hand-written preprocessing, including gradients with respect to the image.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr, finiteDiff } from "../helpers";
import { TfjsModelEncoder, readModelFiles } from "../../src/encoders/tfjs-model";
import { sidecarPathFor, type EncoderSidecar } from "../../src/encoders/onnx";
import { createEncoder, describeEncoder } from "../../src/encoders/factory";
import { tmpDir } from "../tmp";

const SIZE = 8;
const C = 4;
const W = randomArray(3 * 3 * 3 * C, 21); // HWIO
const B = randomArray(C, 22);
const MEAN: [number, number, number] = [0.5, 0.45, 0.4];
const STD: [number, number, number] = [0.25, 0.2, 0.3];

function sidecar(over: Partial<EncoderSidecar> = {}): EncoderSidecar {
  return { name: "tiny-tfjs", inputSize: SIZE, channelOrder: "RGB", scale: 1, mean: MEAN, std: STD, source: "test", ...over };
}

/** Reference: hand-written normalisation, conv (same) + bias, relu; pooled = spatial mean. */
function reference(x: tf.Tensor4D): { pooled: tf.Tensor2D; dense: tf.Tensor4D } {
  const mean = tf.tensor1d(MEAN);
  const std = tf.tensor1d(STD);
  const n = tf.div(tf.sub(x, mean), std) as tf.Tensor4D;
  const dense = tf.relu(tf.add(tf.conv2d(n, tf.tensor4d(W, [3, 3, 3, C]), 1, "same"), tf.tensor1d(B))) as tf.Tensor4D;
  return { pooled: tf.mean(dense, [1, 2]) as tf.Tensor2D, dense };
}

async function saveLayersModel(dir: string): Promise<string> {
  const input = tf.input({ shape: [null, null, 3] as unknown as number[] });
  const conv = tf.layers.conv2d({ filters: C, kernelSize: 3, padding: "same", activation: "relu", name: "features" }).apply(input) as tf.SymbolicTensor;
  const gap = tf.layers.globalAveragePooling2d({ name: "gap" }).apply(conv) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: gap });
  model.getLayer("features").setWeights([tf.tensor4d(W, [3, 3, 3, C]), tf.tensor1d(B)]);
  const file = path.join(dir, "model.json");
  await model.save(
    tf.io.withSaveHandler(async (art) => {
      const data = art.weightData as ArrayBuffer;
      fs.writeFileSync(path.join(dir, "group1-shard1of1.bin"), Buffer.from(data));
      fs.writeFileSync(file, JSON.stringify({ format: "layers-model", modelTopology: art.modelTopology, weightsManifest: [{ paths: ["group1-shard1of1.bin"], weights: art.weightSpecs }] }));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: "JSON" } };
    }),
  );
  model.dispose();
  return file;
}

const b64 = (s: string) => Buffer.from(s).toString("base64");

function saveGraphModel(dir: string): string {
  const dim = (ns: number[]) => ({ dim: ns.map((n) => ({ size: String(n) })) });
  const constNode = (name: string, shape: number[], dtype: string) => ({ name, op: "Const", attr: { value: { tensor: { dtype, tensorShape: dim(shape) } }, dtype: { type: dtype } } });
  const nodes = [
    { name: "x", op: "Placeholder", attr: { dtype: { type: "DT_FLOAT" }, shape: { shape: dim([-1, -1, -1, 3]) } } },
    constNode("w", [3, 3, 3, C], "DT_FLOAT"),
    constNode("b", [C], "DT_FLOAT"),
    constNode("axes", [2], "DT_INT32"),
    {
      name: "conv",
      op: "Conv2D",
      input: ["x", "w"],
      attr: { T: { type: "DT_FLOAT" }, strides: { list: { i: ["1", "1", "1", "1"] } }, dilations: { list: { i: ["1", "1", "1", "1"] } }, padding: { s: b64("SAME") }, data_format: { s: b64("NHWC") } },
    },
    { name: "biasadd", op: "BiasAdd", input: ["conv", "b"], attr: { T: { type: "DT_FLOAT" }, data_format: { s: b64("NHWC") } } },
    { name: "relu", op: "Relu", input: ["biasadd"], attr: { T: { type: "DT_FLOAT" } } },
    { name: "pooled", op: "Mean", input: ["relu", "axes"], attr: { T: { type: "DT_FLOAT" }, Tidx: { type: "DT_INT32" }, keep_dims: { b: false } } },
  ];
  const bin = Buffer.alloc((W.length + B.length + 2) * 4);
  W.forEach((v, i) => bin.writeFloatLE(v, i * 4));
  B.forEach((v, i) => bin.writeFloatLE(v, (W.length + i) * 4));
  bin.writeInt32LE(1, (W.length + B.length) * 4);
  bin.writeInt32LE(2, (W.length + B.length + 1) * 4);
  fs.writeFileSync(path.join(dir, "weights.bin"), bin);
  const file = path.join(dir, "model.json");
  fs.writeFileSync(
    file,
    JSON.stringify({
      format: "graph-model",
      generatedBy: "pbip test",
      modelTopology: { node: nodes, library: {}, versions: { producer: 1 } },
      weightsManifest: [
        {
          paths: ["weights.bin"],
          weights: [
            { name: "w", shape: [3, 3, 3, C], dtype: "float32" },
            { name: "b", shape: [C], dtype: "float32" },
            { name: "axes", shape: [2], dtype: "int32" },
          ],
        },
      ],
    }),
  );
  return file;
}

const tmp = () => tmpDir("pbip-tfjs-");

async function checkEncoder(enc: TfjsModelEncoder) {
  const data = randomArray(2 * SIZE * SIZE * 3, 9).map((v) => (v + 1) / 2);
  const x = tf.tensor4d(data, [2, SIZE, SIZE, 3]);
  const before = tf.memory().numTensors;
  const out = await enc.encode(x, { dense: true });
  const ref = tf.tidy(() => reference(x));
  assert.deepEqual(out.pooled.shape, [2, C]);
  assert.deepEqual(out.dense!.shape, [2, SIZE, SIZE, C]);
  const eP = maxRelErr(out.pooled.dataSync(), ref.pooled.dataSync());
  const eD = maxRelErr(out.dense!.dataSync(), ref.dense.dataSync());
  assert.ok(eP < 1e-5, `pooled relative error ${eP}`);
  assert.ok(eD < 1e-5, `dense relative error ${eD}`);
  tf.dispose([out.pooled, out.dense!, ref.pooled, ref.dense]);
  assert.equal(tf.memory().numTensors, before, "encode leaks tensors");

  // Gradients of a scalar of the pooled feature with respect to the image: encoder vs reference vs finite differences.
  const coef = tf.tensor2d(randomArray(2 * C, 3), [2, C]);
  const gEnc = tf.grad((im: tf.Tensor) => tf.sum(tf.mul(enc.apply(im as tf.Tensor4D).pooled, coef)))(x);
  const gRef = tf.grad((im: tf.Tensor) => tf.sum(tf.mul(reference(im as tf.Tensor4D).pooled, coef)))(x);
  const eG = maxRelErr(gEnc.dataSync(), gRef.dataSync());
  assert.ok(eG < 1e-5, `gradient relative error ${eG}`);
  const f = (arr: Float32Array) => tf.tidy(() => tf.sum(tf.mul(enc.apply(tf.tensor4d(arr, [2, SIZE, SIZE, 3])).pooled, coef)).dataSync()[0]!);
  const coords = [0, 17, 100, 301];
  const fd = finiteDiff(f, Float32Array.from(data), coords, 1e-2);
  const g = gEnc.dataSync();
  coords.forEach((c, i) => assert.ok(Math.abs(fd[i]! - g[c]!) < 2e-3 + 0.02 * Math.abs(fd[i]!), `d/dx[${c}]: finite difference ${fd[i]} vs gradient ${g[c]}`));
  tf.dispose([x, coef, gEnc, gRef]);
}

test("a TensorFlow.js layers model from disk matches tf ops on the same weights, gradients included", async () => {
  await onBackend("cpu", async () => {
    const dir = tmp();
    const file = await saveLayersModel(dir);
    fs.writeFileSync(sidecarPathFor(file), JSON.stringify(sidecar({ outputName: "gap", denseOutputName: "features" })));
    assert.equal(sidecarPathFor(file), path.join(dir, "model.encoder.json"));
    const enc = await TfjsModelEncoder.create(file);
    try {
      assert.equal(enc.kind, "layers");
      assert.equal(enc.differentiable, true);
      assert.equal(enc.identity.dim, C);
      assert.equal(enc.identity.name, "tfjs:tiny-tfjs");
      await checkEncoder(enc);
    } finally {
      enc.dispose();
    }
  });
});

test("a layers model's default output is used; a 4-D output is pooled and doubles as the dense map", async () => {
  await onBackend("cpu", async () => {
    const dir = tmp();
    const file = await saveLayersModel(dir);
    fs.writeFileSync(sidecarPathFor(file), JSON.stringify(sidecar()));
    const plain = await TfjsModelEncoder.create(file);
    assert.equal(plain.hasDense, false);
    plain.dispose();
    fs.writeFileSync(sidecarPathFor(file), JSON.stringify(sidecar({ outputName: "features" })));
    const enc = await TfjsModelEncoder.create(file);
    try {
      assert.equal(enc.hasDense, true);
      await checkEncoder(enc);
    } finally {
      enc.dispose();
    }
  });
});

test("a hand-written TensorFlow.js graph model from disk matches tf ops, gradients included", async () => {
  await onBackend("cpu", async () => {
    const dir = tmp();
    const file = saveGraphModel(dir);
    fs.writeFileSync(sidecarPathFor(file), JSON.stringify(sidecar({ inputName: "x", outputName: "pooled", denseOutputName: "relu", dim: C })));
    const enc = (await createEncoder(`tfjs:${file}`)) as TfjsModelEncoder;
    try {
      assert.equal(enc.kind, "graph");
      assert.equal(enc.differentiable, true);
      assert.match(describeEncoder(enc), /tfjs:tiny-tfjs: d = 4/);
      assert.doesNotMatch(describeEncoder(enc), /STAND-IN/);
      await checkEncoder(enc);
    } finally {
      enc.dispose();
    }
  });
});

test("broken model folders and sidecars are errors that name the file", async () => {
  await onBackend("cpu", async () => {
    const dir = tmp();
    const file = await saveLayersModel(dir);
    const sc = sidecarPathFor(file);
    fs.writeFileSync(sc, JSON.stringify(sidecar({ outputName: "nope" })));
    await assert.rejects(TfjsModelEncoder.create(file), (e: Error) => e.message.startsWith(sc) && /outputName "nope" is not a layer/.test(e.message));
    fs.writeFileSync(sc, JSON.stringify(sidecar({ dim: 7 })));
    await assert.rejects(TfjsModelEncoder.create(file), /d = 4 but the sidecar says dim 7/);
    const shard = path.join(dir, "group1-shard1of1.bin");
    fs.writeFileSync(shard, Buffer.alloc(12));
    assert.throws(() => readModelFiles(file), (e: Error) => e.message.startsWith(shard) && /hold 12 bytes/.test(e.message));
    fs.rmSync(shard);
    assert.throws(() => readModelFiles(file), (e: Error) => e.message.startsWith(shard) && /not found/.test(e.message));
    fs.writeFileSync(file, JSON.stringify({ hello: 1 }));
    assert.throws(() => readModelFiles(file), /not a TensorFlow.js model.json/);
  });
});
