import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { onBackend, randomArray, maxRelErr } from "../helpers";
import { WebAssemblyApi, assemble } from "../../src/runtime/wasm-asm";
import { clipByValueGrad, clipGradFunc, depthwiseInputGradFunc, type DepthwiseGeometry, columnSums, columnSumsFunc, depthwise3x3FilterGrad, depthwise3x3FilterGradFunc, gemm, gemmFunc, relaxedSimdAvailable, wasmSimdKernelsAvailable, type GemmTile } from "../../src/runtime/wasm-simd";

/** C[i] = op(A[i]) B[i] in float64, A [n,M,K] (or [n,K,M] with tA), B [n,K,N]; an operand with n = 1 is shared. */
function refGemm(a: Float32Array, b: Float32Array, na: number, nb: number, M: number, K: number, N: number, tA: boolean): Float64Array {
  const n = Math.max(na, nb);
  const out = new Float64Array(n * M * N);
  for (let i = 0; i < n; i++) {
    const ao = na === 1 ? 0 : i * M * K;
    const bo = nb === 1 ? 0 : i * K * N;
    for (let r = 0; r < M; r++) {
      for (let c = 0; c < N; c++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[ao + (tA ? k * M + r : r * K + k)]! * b[bo + k * N + c]!;
        out[i * M * N + r * N + c] = s;
      }
    }
  }
  return out;
}

// [na, nb, M, K, N, transposeA]: every row remainder (M % 4) and column remainder (N % 8),
// K = 1, shared (broadcast) operands, and the shapes of MiT-b1's attention.
const CASES: [number, number, number, number, number, boolean][] = [
  [3, 3, 5, 7, 9, false],
  [2, 2, 6, 3, 10, true],
  [1, 4, 7, 5, 11, false],
  [4, 1, 8, 2, 12, true],
  [2, 2, 1, 1, 1, false],
  [2, 2, 2, 9, 13, true],
  [1, 1, 3, 4, 14, false],
  [2, 2, 4, 6, 15, true],
  [2, 2, 9, 1, 16, false],
  [2, 2, 49, 64, 49, false],
  [2, 2, 49, 49, 64, true],
  [3, 3, 7, 601, 9, true], // a long shared dimension: transposed batches walk it in blocks
];

test("gemm (generated WASM SIMD kernel) matches a float64 product for every remainder, transposeA and shared operands", async () => {
  await onBackend("wasm", () => {
    assert.ok(wasmSimdKernelsAvailable(), "the kernels register on the WASM backend");
    for (const tile of [undefined, { mr: 3, nv: 3 }, { mr: 1, nv: 1 }] as (GemmTile | undefined)[]) {
      for (const [na, nb, M, K, N, tA] of CASES) {
        const a = randomArray(na * M * K, M * 31 + K);
        const b = randomArray(nb * K * N, N * 7 + 1);
        const want = refGemm(a, b, na, nb, M, K, N, tA);
        const before = tf.memory().numTensors;
        const at = tf.tensor(a, tA ? [na, K, M] : [na, M, K]);
        const bt = tf.tensor(b, [nb, K, N]);
        const c = gemm(at, bt, { transposeA: tA, tile });
        assert.deepEqual(c.shape, [Math.max(na, nb), M, N]);
        const err = maxRelErr(c.dataSync(), want);
        tf.dispose([at, bt, c]);
        assert.equal(tf.memory().numTensors, before, "no tensor is left behind outside a tidy");
        // float32 sums of K products: rounding grows with K (1e-6 up to K = 64, 1e-5 for the 601-long case).
        assert.ok(err < (K > 64 ? 1e-5 : 1e-6), `[${na}|${nb},${M},${K},${N}] tA=${tA} tile ${JSON.stringify(tile)}: max relative error ${err}`);
      }
    }
    // Leading dimensions are kept; mismatches are named.
    const c = tf.tidy(() => gemm(tf.ones([2, 3, 4, 5]), tf.ones([2, 3, 5, 6])));
    assert.deepEqual(c.shape, [2, 3, 4, 6]);
    assert.ok(c.dataSync().every((v) => v === 5));
    c.dispose();
    assert.throws(() => tf.tidy(() => gemm(tf.ones([2, 4, 5]), tf.ones([2, 4, 6]))), /do not match/);
    assert.throws(() => tf.tidy(() => gemm(tf.ones([2, 4, 5]), tf.ones([3, 5, 6]))), /do not match/);
  });
});

test("gemm on one untransposed product (B packed into panels, rows split across threads) with and without a bias, plain and fused multiply-add, matches float64", async () => {
  await onBackend("wasm", () => {
    const tiles: GemmTile[] = [{ mr: 4, nv: 2 }, { mr: 3, nv: 3 }, { mr: 1, nv: 1 }];
    if (relaxedSimdAvailable()) tiles.push({ mr: 4, nv: 2, fma: true });
    // [M, K, N]: every row remainder, column remainders 1-7 past whole panels, N below one panel, K = 1, and a size the pool splits.
    const shapes: [number, number, number][] = [[5, 7, 9], [6, 3, 10], [7, 5, 11], [8, 2, 13], [1, 1, 1], [9, 1, 3], [3, 4, 14], [2, 6, 15], [4, 4, 8], [3001, 64, 23]];
    for (const tile of tiles) {
      for (const [M, K, N] of shapes) {
        for (const withBias of [false, true]) {
          const a = randomArray(M * K, M * 13 + K);
          const b = randomArray(K * N, N * 5 + 3);
          const bias = randomArray(N, N + 99);
          const want = refGemm(a, b, 1, 1, M, K, N, false).map((v, i) => (withBias ? v + bias[i % N]! : v));
          const before = tf.memory().numTensors;
          const [at, bt, biast] = [tf.tensor2d(a, [M, K]), tf.tensor2d(b, [K, N]), tf.tensor1d(bias)];
          const c = gemm(at, bt, { tile, bias: withBias ? biast : undefined });
          assert.deepEqual(c.shape, [M, N]);
          const err = maxRelErr(c.dataSync(), Float64Array.from(want));
          tf.dispose([at, bt, biast, c]);
          assert.equal(tf.memory().numTensors, before, "no tensor left behind (the packed copy of B is freed)");
          assert.ok(err < 1e-6, `[${M},${K}]x[${K},${N}] bias=${withBias} tile ${JSON.stringify(tile)}: max relative error ${err}`);
        }
      }
    }
    assert.throws(() => tf.tidy(() => gemm(tf.ones([2, 4, 5]), tf.ones([2, 5, 6]), { bias: tf.ones([6]) })), /a bias needs one untransposed product/);
    assert.throws(() => tf.tidy(() => gemm(tf.ones([4, 5]), tf.ones([5, 6]), { bias: tf.ones([5]) })), /6 float32 values/);
  });
});

test("gemm with the shared dimension in blocks (kc) and one transposed product split across threads (weight gradients) matches float64", async () => {
  await onBackend("wasm", () => {
    const fma = relaxedSimdAvailable();
    // [M, K, N, transposeA, kc (undefined: the kernel's choice), bias]: blocks with and without a
    // tail, a single full block plus a tail, the default blocks of a long K below and from 256 rows
    // (B unpacked / packed), row and column remainders, a bias that only the first block may add.
    const cases: [number, number, number, boolean, number | undefined, boolean][] = [
      [13, 10, 17, true, 3, false],
      [13, 12, 17, true, 4, false],
      [6, 5, 9, true, 4, false],
      [7, 600, 9, true, undefined, false],
      [260, 520, 11, true, undefined, false],
      [258, 37, 21, true, 8, false],
      [5, 3, 10, true, undefined, false],
      [9, 13, 11, false, 4, true],
      [30, 40, 19, false, 7, false],
    ];
    for (const [M, K, N, tA, kc, withBias] of cases) {
      const a = randomArray(M * K, M + 3 * K);
      const b = randomArray(K * N, N + 5 * K);
      const bias = randomArray(N, N + 1);
      const want = refGemm(a, b, 1, 1, M, K, N, tA).map((v, i) => (withBias ? v + bias[i % N]! : v));
      const before = tf.memory().numTensors;
      const [at, bt, biast] = [tf.tensor2d(a, tA ? [K, M] : [M, K]), tf.tensor2d(b, [K, N]), tf.tensor1d(bias)];
      const c = gemm(at, bt, { transposeA: tA, tile: { mr: 4, nv: 2, fma, kc }, bias: withBias ? biast : undefined });
      const err = maxRelErr(c.dataSync(), Float64Array.from(want));
      tf.dispose([at, bt, biast, c]);
      assert.equal(tf.memory().numTensors, before, "no tensor left behind (a packed copy of B is freed)");
      assert.ok(err < 1e-5, `[${M},${K}]${tA ? "^T" : ""}x[${K},${N}] kc=${kc} bias=${withBias}: max relative error ${err}`);
    }
  });
});

test("gemm on the CPU backend refuses with a clear message instead of computing wrongly", async () => {
  await onBackend("cpu", () => {
    assert.equal(wasmSimdKernelsAvailable(), false);
    assert.throws(() => tf.tidy(() => gemm(tf.ones([1, 2, 2]), tf.ones([1, 2, 2]))), /needs the wasm backend/);
  });
});

/**
 * Run a generated function on a memory of its own, with every buffer between guard
 * bands of a sentinel value: the kernel may only write its outputs.
 */
function runGuarded(funcDef: ReturnType<typeof gemmFunc>, inputs: Float32Array[], outputSizes: number[], extra: number[]): { outputs: Float32Array[]; guardsIntact: boolean } {
  const GUARD = 64; // floats on each side
  const SENTINEL = -12345.5;
  const sizes = [...inputs.map((x) => x.length), ...outputSizes];
  const total = sizes.reduce((s, n) => s + n + GUARD, GUARD);
  const memory = new (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly.Memory({ initial: Math.ceil((total * 4) / 65536) + 1 });
  const f32 = new Float32Array(memory.buffer);
  f32.fill(SENTINEL);
  const offsets: number[] = [];
  let at = GUARD;
  for (const n of sizes) {
    offsets.push(at);
    at += n + GUARD;
  }
  inputs.forEach((x, i) => f32.set(x, offsets[i]));
  outputSizes.forEach((n, j) => f32.fill(0, offsets[inputs.length + j]!, offsets[inputs.length + j]! + n));
  const inst = new WebAssemblyApi.Instance(new WebAssemblyApi.Module(assemble([funcDef])), { env: { memory } });
  (inst.exports.f0 as (...args: number[]) => void)(...offsets.map((o) => o * 4), ...extra);
  let guardsIntact = true;
  let pos = 0;
  offsets.forEach((o, i) => {
    for (let g = pos; g < o; g++) if (f32[g] !== SENTINEL) guardsIntact = false;
    pos = o + sizes[i]!;
  });
  for (let g = pos; g < pos + GUARD; g++) if (f32[g] !== SENTINEL) guardsIntact = false;
  const outputs = outputSizes.map((n, j) => f32.slice(offsets[inputs.length + j]!, offsets[inputs.length + j]! + n));
  return { outputs, guardsIntact };
}

test("the generated GEMM writes exactly its output (guard bands around every buffer stay untouched)", () => {
  for (const [na, nb, M, K, N, tA] of CASES) {
    const a = randomArray(na * M * K, 5);
    const b = randomArray(nb * K * N, 6);
    const batch = Math.max(na, nb);
    const def = gemmFunc(M, K, N, tA, na === 1 ? 0 : M * K, nb === 1 ? 0 : K * N);
    const { outputs, guardsIntact } = runGuarded(def, [a, b], [batch * M * N], [batch]);
    assert.ok(guardsIntact, `[${na}|${nb},${M},${K},${N}] tA=${tA}: a write outside the output`);
    const tol = K > 64 ? 1e-5 : 1e-6;
    assert.ok(maxRelErr(outputs[0]!, refGemm(a, b, na, nb, M, K, N, tA)) < tol);
    // The shared dimension in blocks of kc (with and without a tail block).
    for (const kc of [1, 2, 3].filter((v) => v < K)) {
      const blocked = runGuarded(gemmFunc(M, K, N, tA, na === 1 ? 0 : M * K, nb === 1 ? 0 : K * N, { mr: 4, nv: 2, kc }), [a, b], [batch * M * N], [batch]);
      assert.ok(blocked.guardsIntact, `[${na}|${nb},${M},${K},${N}] tA=${tA} kc=${kc}: a write outside the output`);
      assert.ok(maxRelErr(blocked.outputs[0]!, refGemm(a, b, na, nb, M, K, N, tA)) < tol, `kc=${kc}`);
    }
  }
  // A kernel for the first m rows of a transposed A of M rows (lda = M), as a thread's part runs.
  const [M, K, N, m] = [11, 9, 13, 6];
  const a = randomArray(K * M, 8);
  const b = randomArray(K * N, 9);
  const part = runGuarded(gemmFunc(m, K, N, true, 0, 0, { mr: 4, nv: 2, lda: M, kc: 4 }), [a, b], [m * N], [1]);
  assert.ok(part.guardsIntact, "lda: a write outside the output");
  assert.ok(maxRelErr(part.outputs[0]!, refGemm(a, b, 1, 1, M, K, N, true).slice(0, m * N)) < 1e-6, "lda: the first rows of the whole product");
});

test("columnSums equals float64 column sums, across column blocks of 8 vectors and a remainder", async () => {
  await onBackend("wasm", () => {
    for (const [rows, cols] of [
      [1, 4],
      [7, 36],
      [1000, 64],
      [33, 100],
    ] as [number, number][]) {
      const x = randomArray(rows * cols, rows + cols);
      const want = new Float64Array(cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) want[c]! += x[r * cols + c]!;
      const got = tf.tidy(() => columnSums(tf.tensor2d(x, [rows, cols])).dataSync());
      assert.ok(maxRelErr(got, want) < 1e-5, `[${rows},${cols}]: ${maxRelErr(got, want)}`);
      const { outputs, guardsIntact } = runGuarded(columnSumsFunc(cols / 4), [x], [cols], [rows]);
      assert.ok(guardsIntact, `[${rows},${cols}]: a write outside the output`);
      assert.ok(maxRelErr(outputs[0]!, want) < 1e-5);
    }
    assert.throws(() => tf.tidy(() => columnSums(tf.zeros([3, 6]) as tf.Tensor2D)), /multiple of 4/);
  });
});

/** Filter and bias gradients of a 3x3, stride-1, pad-1 depthwise convolution, in float64. */
function refDwGrad(x: Float32Array, dy: Float32Array, B: number, H: number, W: number, C: number): { dw: Float64Array; db: Float64Array } {
  const dw = new Float64Array(9 * C);
  const db = new Float64Array(C);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let w = 0; w < W; w++) {
        for (let c = 0; c < C; c++) {
          const g = dy[((b * H + h) * W + w) * C + c]!;
          db[c]! += g;
          for (let kh = 0; kh < 3; kh++) {
            for (let kw = 0; kw < 3; kw++) {
              const hh = h + kh - 1;
              const ww = w + kw - 1;
              if (hh < 0 || hh >= H || ww < 0 || ww >= W) continue;
              dw[(kh * 3 + kw) * C + c]! += x[((b * H + hh) * W + ww) * C + c]! * g;
            }
          }
        }
      }
    }
  }
  return { dw, db };
}

test("depthwise3x3FilterGrad equals a float64 loop and TF.js's own depthwise filter gradient", async () => {
  for (const [B, H, W, C] of [
    [2, 5, 4, 8],
    [1, 1, 1, 4],
    [3, 2, 7, 12],
    [1, 6, 6, 64],
  ] as [number, number, number, number][]) {
    const x = randomArray(B * H * W * C, H * 10 + W);
    const dy = randomArray(B * H * W * C, C);
    const want = refDwGrad(x, dy, B, H, W, C);
    const tfjs = await onBackend("cpu", () =>
      tf.tidy(() => {
        const xt = tf.tensor4d(x, [B, H, W, C]);
        const dyt = tf.tensor4d(dy, [B, H, W, C]);
        // The vector-Jacobian product of TF.js's depthwise convolution with respect to its filter.
        return tf.grad((f: tf.Tensor) => tf.sum(tf.mul(tf.depthwiseConv2d(xt, f as tf.Tensor4D, 1, 1), dyt)))(tf.zeros([3, 3, C, 1])).dataSync();
      }),
    );
    assert.ok(maxRelErr(tfjs, want.dw) < 1e-5, "the float64 reference agrees with TF.js");
    await onBackend("wasm", () => {
      const before = tf.memory().numTensors;
      const { dw, db } = tf.tidy(() => {
        const r = depthwise3x3FilterGrad(tf.tensor4d(x, [B, H, W, C]), tf.tensor4d(dy, [B, H, W, C]));
        assert.deepEqual(r.dw.shape, [3, 3, C, 1]);
        return { dw: r.dw.dataSync(), db: r.db.dataSync() };
      });
      assert.equal(tf.memory().numTensors, before);
      assert.ok(maxRelErr(dw, want.dw) < 1e-5, `[${B},${H},${W},${C}] dw: ${maxRelErr(dw, want.dw)}`);
      assert.ok(maxRelErr(db, want.db) < 1e-5, `[${B},${H},${W},${C}] db: ${maxRelErr(db, want.db)}`);
    });
    const { outputs, guardsIntact } = runGuarded(depthwise3x3FilterGradFunc(C / 4), [x, dy], [9 * C, C], [B, H, W]);
    assert.ok(guardsIntact, `[${B},${H},${W},${C}]: a write outside the outputs`);
    assert.ok(maxRelErr(outputs[0]!, want.dw) < 1e-5 && maxRelErr(outputs[1]!, want.db) < 1e-5);
  }
  await onBackend("wasm", () => {
    assert.throws(() => tf.tidy(() => depthwise3x3FilterGrad(tf.zeros([1, 2, 2, 6]) as tf.Tensor4D, tf.zeros([1, 2, 2, 6]) as tf.Tensor4D)), /multiple of 4/);
    assert.throws(() => tf.tidy(() => depthwise3x3FilterGrad(tf.zeros([1, 2, 2, 4]) as tf.Tensor4D, tf.zeros([1, 2, 3, 4]) as tf.Tensor4D)), /differ/);
  });
});

test("clipByValueGrad: dy where lo <= x <= hi, else +0, bit for bit (bounds, NaN, signed zeros, infinities), and writes only its output", async () => {
  const special = [0, -0, 6, -6, 6.000001, 5.999999, NaN, Infinity, -Infinity, 1e-45, -1e-45, 3];
  const n = 4 * 29;
  const x = new Float32Array(n);
  const dy = new Float32Array(n);
  const rx = randomArray(n, 11);
  const rd = randomArray(n, 12);
  for (let i = 0; i < n; i++) {
    x[i] = i < special.length ? special[i]! : 8 * rx[i]!;
    dy[i] = i % 7 === 0 ? -0 : i % 11 === 0 ? NaN : rd[i]!;
  }
  const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
  for (const [lo, hi] of [[0, 6], [-1.5, 2.25]] as [number, number][]) {
    const want = new Float32Array(n);
    for (let i = 0; i < n; i++) want[i] = x[i]! >= lo && x[i]! <= hi ? dy[i]! : 0;
    const tfjs = await onBackend("cpu", () => tf.tidy(() => tf.where(tf.logicalAnd(tf.greaterEqual(tf.tensor1d(x), lo), tf.lessEqual(tf.tensor1d(x), hi)), tf.tensor1d(dy), tf.zeros([n])).dataSync() as Float32Array));
    assert.deepEqual(bits(tfjs), bits(want), "the host loop is TF.js's gradient formula");
    const got = await onBackend("wasm", () => {
      assert.ok(wasmSimdKernelsAvailable());
      const before = tf.memory().numTensors;
      const r = tf.tidy(() => clipByValueGrad(tf.tensor2d(x, [29, 4]), tf.tensor2d(dy, [29, 4]), lo, hi).dataSync() as Float32Array);
      assert.equal(tf.memory().numTensors, before);
      return r;
    });
    assert.deepEqual(bits(got), bits(want), `[${lo}, ${hi}]`);
    const { outputs, guardsIntact } = runGuarded(clipGradFunc(), [x, dy], [n], [n / 4, lo, hi]);
    assert.ok(guardsIntact, "a write outside the output");
    assert.deepEqual(bits(outputs[0]!), bits(want));
  }
  await onBackend("wasm", () => {
    assert.throws(() => tf.tidy(() => clipByValueGrad(tf.zeros([6]), tf.zeros([6]), 0, 6)), /multiple of 4/);
    assert.throws(() => tf.tidy(() => clipByValueGrad(tf.zeros([8]), tf.zeros([2, 4]), 0, 6)), /one shape/);
  });
});

test("depthwiseInputGradFunc: the scatter equals a float64 loop over every tap, writes only dx, and runs for channels in fours", async () => {
  const cases: [number, number, number, number, DepthwiseGeometry][] = [
    // [B, H, W, C] and the geometry: MobileNetV2's stride-2 block (pad bottom/right), same-padding stride 1, dilation, 5x5.
    [2, 9, 9, 8, { c4: 2, kh: 3, kw: 3, sh: 2, sw: 2, dh: 1, dw: 1, top: 0, left: 0 }],
    [1, 7, 6, 4, { c4: 1, kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, top: 1, left: 1 }],
    [1, 9, 9, 4, { c4: 1, kh: 3, kw: 3, sh: 1, sw: 1, dh: 2, dw: 2, top: 2, left: 2 }],
    [2, 10, 11, 12, { c4: 3, kh: 5, kw: 5, sh: 2, sw: 2, dh: 1, dw: 1, top: 2, left: 2 }],
  ];
  for (const [B, H, W, C, g] of cases) {
    const OH = Math.floor((H + 2 * g.top - (g.kh - 1) * g.dh - 1) / g.sh) + 1;
    const OW = Math.floor((W + 2 * g.left - (g.kw - 1) * g.dw - 1) / g.sw) + 1;
    const dy = randomArray(B * OH * OW * C, 31);
    const f = randomArray(g.kh * g.kw * C, 32);
    const want = new Float64Array(B * H * W * C);
    for (let b = 0; b < B; b++)
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++)
          for (let kh = 0; kh < g.kh; kh++)
            for (let kw = 0; kw < g.kw; kw++) {
              const ih = oh * g.sh + kh * g.dh - g.top;
              const iw = ow * g.sw + kw * g.dw - g.left;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              for (let c = 0; c < C; c++) want[((b * H + ih) * W + iw) * C + c] += dy[((b * OH + oh) * OW + ow) * C + c]! * f[(kh * g.kw + kw) * C + c]!;
            }
    const { outputs, guardsIntact } = runGuarded(depthwiseInputGradFunc(g), [dy, f], [B * H * W * C], [B, OH, OW, H, W]);
    assert.ok(guardsIntact, `[${B},${H},${W},${C}]: a write outside dx`);
    assert.ok(maxRelErr(outputs[0]!, want) < 1e-5, `[${B},${H},${W},${C}]: ${maxRelErr(outputs[0]!, want)}`);
  }
  // The depthwise input gradient reaches this kernel on WASM when the channels come in fours.
  const kernels = await onBackend("wasm", async () => {
    const x = tf.tensor4d(randomArray(2 * 9 * 9 * 8, 33), [2, 9, 9, 8]);
    const w = tf.tensor4d(randomArray(9 * 8, 34), [3, 3, 8, 1]);
    const p = await tf.profile(() => tf.tidy(() => tf.grad((z: tf.Tensor) => tf.sum(tf.depthwiseConv2d(z as tf.Tensor4D, w, 2, "same")))(x)));
    tf.dispose([x, w, p.result as tf.Tensor]);
    return p.kernelNames;
  });
  assert.ok(kernels.includes("PbipDepthwiseInputGrad"), kernels.join(" "));
});
