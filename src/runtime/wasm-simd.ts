/**
 * WebAssembly SIMD kernels for the products and reductions that the TensorFlow.js
 * WASM backend (4.22) runs on slow paths during training:
 *
 * - `gemm(a, b, {transposeA})`: batched C[i] = op(A[i]) @ B[i]. The backend sends every
 *   product with a batch above 1 or a transpose flag to a scalar triple loop
 *   (about 2 GFLOP/s here); only a single untransposed product reaches XNNPACK
 *   (about 28 GFLOP/s). Attention's q k^T and p v and their gradients are batched.
 *   The code is generated per shape: a tile of `MR` rows by `4 NV` columns of C is
 *   held in SIMD registers while the shared dimension is walked, one vector load of
 *   B per four columns and one broadcast of A per row and step. One product is split
 *   by rows across the kernel threads; a transposed one (a weight gradient x^T dy,
 *   whose shared dimension is every token of the batch) reads x in place and walks
 *   the shared dimension in blocks.
 * - `columnSums(x)`: [N, C] -> [C]. A bias or LayerNorm gradient; TF.js reduces a
 *   leading axis by transposing first, and `ones[1, N] @ x` reaches XNNPACK with x
 *   as the weights it packs on every call (0.3-0.5 GFLOP/s).
 * - `depthwise3x3FilterGrad(x, dy)`: the filter and bias gradients of a 3x3 depthwise
 *   convolution, stride 1, padding 1 (SegFormer's Mix-FFN), in one pass over x and dy
 *   instead of nine shifted copies of x.
 * - `clipByValueGrad(x, dy, lo, hi)`: dy where lo <= x <= hi, else 0, in one pass. TF.js's
 *   gradient of `clipByValue` (every ReLU6 of Keras MobileNetV2 layers: relu, then clip)
 *   runs greaterEqual, lessEqual, logicalAnd, zerosLike and where, each a full pass, the
 *   comparisons on the backend's slow boolean path.
 *
 * Modules are assembled by `./wasm-asm`, import the backend's memory, and read and
 * write tensors in place. They are registered for the `wasm` backend only; callers
 * check {@link wasmSimdKernelsAvailable} and fall back to ordinary TensorFlow.js ops
 * elsewhere. Tested against `tf.matMul`, `tf.sum` and a float64 loop.
 */
import * as tf from "@tensorflow/tfjs";
import { F32, I32, V128, WebAssemblyApi, assemble, countedLoop, countedLoops, guardedLoop, f32x4Add, f32x4Ge, f32x4Le, v128And, f32x4Extract, f32x4Mul, f32x4Replace, f32x4Splat, load32Zero, load64Zero, op, v128Load, v128Store, v128Zero, backendMemory, compiledKernel, compiledKernelInfo, runSplit, tensorAddress, type FuncDef, type WasmBackendLike } from "./wasm-asm";
import { kernelThreads } from "./wasm-pool";

/** Register tile of the generated GEMM: rows of C and four-float vectors of columns. */
export interface GemmTile {
  mr: number;
  nv: number;
  /** Multiply-add with WebAssembly's relaxed SIMD `f32x4.relaxed_madd` (fused where the CPU has FMA). */
  fma?: boolean;
  /**
   * B is packed in panels of `4 nv` columns ({@link packPanelsFunc}): panel j holds columns
   * [4 nv j, 4 nv (j + 1)) as K contiguous rows, the last panel padded with zeros. A
   * tile then walks B contiguously instead of one row of B (N floats apart) per step,
   * which keeps a large B's cache and TLB misses off the inner loop.
   */
  packedB?: boolean;
  /** C starts from a bias row vector (param 5, N floats) added to every row, instead of zero. */
  bias?: boolean;
  /**
   * Block the shared dimension in runs of `kc` (used when kc < K): for each block, every
   * column panel's `kc` rows of B stay in L1 while the tiles of all rows of A go past
   * them, adding into C. Without it a tile walks all of K, so for a long K (a weight
   * gradient x^T dy sums over every token of the batch: K = 31360 for MiT-b1's first
   * stage at batch 10) each tile streams a whole panel of B (K * 32 bytes) and its rows
   * of A from L3. 0: no blocks. Unset in {@link gemm}: transposed products choose by
   * shape ({@link defaultKc}), untransposed ones take none.
   */
  kc?: number;
  /**
   * Elements between consecutive rows of A (untransposed; default K) or between
   * consecutive steps of the shared dimension (transposeA; default M): a kernel for a
   * block of rows of a larger A.
   */
  lda?: number;
}

/** The tile used unless one is given: 4 rows x 8 columns (8 accumulators, 2 of B, 1 broadcast). */
export const DEFAULT_GEMM_TILE: GemmTile = { mr: 4, nv: 2 };

/**
 * C[b] = op(A[b]) @ B[b] for `batch` products; op(A) is A [M, K] or, with `transposeA`,
 * the transpose of A stored [K, M]. B is [K, N] and C is [M, N], row-major float32.
 * `aStep`/`bStep` are the element distances between consecutive A and B matrices
 * (0 broadcasts one matrix to every product). Params: (a, b, c, batch, bias) byte
 * addresses; bias is read only with `tile.bias`.
 */
export function gemmFunc(M: number, K: number, N: number, transposeA: boolean, aStep: number, bStep: number, tile: GemmTile = DEFAULT_GEMM_TILE): FuncDef {
  const { mr: MR, nv: NV } = tile;
  const [A, B, C, BATCH, BIAS] = [0, 1, 2, 3, 4];
  const [bi, k, ap, bp, arow, crow, bcol, ccol, cnt, rcnt, bcp, ak, bk, kb] = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18];
  const S = 19;
  const BV = (v: number) => 20 + v;
  const ACC = (r: number, v: number) => 20 + NV + r * NV + v;
  const asI = transposeA ? 1 : (tile.lda ?? K); // elements between rows of op(A)
  const asK = transposeA ? (tile.lda ?? M) : 1; // elements along the shared dimension
  const body: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((x) => body.push(...x));
  const addTo = (local: number, bytes: number) => emit(op.get(local), op.i32(bytes), op.add, op.set(local));

  /** Load `nv` vectors of B at bp + `off` into BV(0..nv), the last one partial when `rem`. */
  const loadB = (nvFull: number, rem: number, off: number) => {
    for (let v = 0; v < nvFull; v++) emit(op.get(bp), v128Load(off + 16 * v), op.set(BV(v)));
    if (rem) {
      const o = off + 16 * nvFull;
      if (tile.packedB) emit(op.get(bp), v128Load(o)); // the panel is padded: read the whole vector
      else if (rem === 1) emit(op.get(bp), load32Zero(o));
      else if (rem === 2) emit(op.get(bp), load64Zero(o));
      else emit(op.get(bp), load64Zero(o), op.get(bp), op.f32Load(o + 8), f32x4Replace(2));
      emit(op.set(BV(nvFull)));
    }
  };
  const fma = (r: number, nv: number) => {
    for (let v = 0; v < nv; v++) {
      if (tile.fma) emit(op.get(S), op.get(BV(v)), op.get(ACC(r, v)), op.simd(0x105), op.set(ACC(r, v)));
      else emit(op.get(ACC(r, v)), op.get(S), op.get(BV(v)), f32x4Mul(), f32x4Add(), op.set(ACC(r, v)));
    }
  };
  const kLoop = (iterations: number, step: () => void) => {
    if (iterations <= 0) return;
    emit(op.i32(0), op.set(k), op.block, op.loop);
    step();
    emit(op.get(k), op.i32(1), op.add, op.tee(k), op.i32(iterations), op.ltS, op.brIf(0), op.end, op.end);
  };

  /** Load a row's vector `v` at local `base` + `off` (the last one partial when `rem`). */
  const loadRowVector = (base: number, off: number, partial: number) => {
    if (!partial) emit(op.get(base), v128Load(off));
    else if (partial === 1) emit(op.get(base), load32Zero(off));
    else if (partial === 2) emit(op.get(base), load64Zero(off));
    else emit(op.get(base), load64Zero(off), op.get(base), op.f32Load(off + 8), f32x4Replace(2));
  };
  /**
   * One tile: `mr` rows, `nvFull` whole vectors and a last vector of `rem` (1-3) columns,
   * over `kLen` steps of the shared dimension; its accumulators start from zero, the
   * bias, or (a later block of K) the tile of C itself.
   */
  const tileCode = (mr: number, nvFull: number, rem: number, kLen = K, init: "zero" | "bias" | "c" = tile.bias ? "bias" : "zero") => {
    const nv = nvFull + (rem ? 1 : 0);
    for (let r = 0; r < mr; r++) {
      for (let v = 0; v < nv; v++) {
        const partial = v < nvFull ? 0 : rem;
        if (init === "zero") emit(v128Zero());
        else if (init === "bias") loadRowVector(bcp, 16 * v, partial);
        else loadRowVector(ccol, 4 * r * N + 16 * v, partial);
        emit(op.set(ACC(r, v)));
      }
    }
    emit(op.get(arow), op.set(ap), op.get(bcol), op.set(bp));
    kLoop(kLen, () => {
      loadB(nvFull, rem, 0);
      for (let r = 0; r < mr; r++) {
        emit(op.get(ap), op.f32Load(4 * r * asI), f32x4Splat(), op.set(S));
        fma(r, nv);
      }
      addTo(ap, 4 * asK);
      addTo(bp, tile.packedB ? 16 * NV : 4 * N);
    });
    for (let r = 0; r < mr; r++) {
      for (let v = 0; v < nvFull; v++) emit(op.get(ccol), op.get(ACC(r, v)), v128Store(4 * r * N + 16 * v));
      for (let l = 0; l < rem; l++) emit(op.get(ccol), op.get(ACC(r, nvFull)), f32x4Extract(l), op.f32Store(4 * r * N + 16 * nvFull + 4 * l));
    }
  };

  const fullCols = Math.floor(N / (4 * NV));
  const remCols = N - fullCols * 4 * NV;
  /** All column tiles of `mr` rows starting at arow / crow. */
  const rowBlock = (mr: number) => {
    emit(op.get(B), op.set(bcol), op.get(crow), op.set(ccol), op.get(BIAS), op.set(bcp));
    if (fullCols > 0) {
      emit(op.i32(0), op.set(cnt), op.block, op.loop);
      tileCode(mr, NV, 0);
      addTo(bcol, tile.packedB ? 16 * NV * K : 16 * NV);
      addTo(ccol, 16 * NV);
      addTo(bcp, 16 * NV);
      emit(op.get(cnt), op.i32(1), op.add, op.tee(cnt), op.i32(fullCols), op.ltS, op.brIf(0), op.end, op.end);
    }
    if (remCols > 0) tileCode(mr, Math.floor(remCols / 4), remCols % 4);
  };

  const fullRows = Math.floor(M / MR);
  const remRows = M - fullRows * MR;
  const kc = tile.kc !== undefined && tile.kc > 0 && tile.kc < K ? tile.kc : 0;
  /** Panels outer, rows inner, for one block of K starting at ak / bk. */
  const kBlock = (kLen: number, init: "zero" | "bias" | "c") => {
    /** All row tiles of one panel (`nvFull` whole vectors, a last one of `rem` columns) at bcol / crow. */
    const panel = (nvFull: number, rem: number) => {
      emit(op.get(ak), op.set(arow), op.get(crow), op.set(ccol));
      if (fullRows > 0) {
        countedLoop(emit, rcnt, op.i32(fullRows), () => {
          tileCode(MR, nvFull, rem, kLen, init);
          addTo(arow, 4 * MR * asI);
          addTo(ccol, 4 * MR * N);
        });
      }
      if (remRows > 0) tileCode(remRows, nvFull, rem, kLen, init);
    };
    emit(op.get(bk), op.set(bcol), op.get(C), op.set(crow), op.get(BIAS), op.set(bcp));
    if (fullCols > 0) {
      countedLoop(emit, cnt, op.i32(fullCols), () => {
        panel(NV, 0);
        addTo(bcol, tile.packedB ? 16 * NV * K : 16 * NV);
        addTo(crow, 16 * NV);
        addTo(bcp, 16 * NV);
      });
    }
    if (remCols > 0) panel(Math.floor(remCols / 4), remCols % 4);
  };
  emit(op.i32(0), op.set(bi), op.block, op.loop);
  if (kc === 0) {
    emit(op.get(A), op.set(arow), op.get(C), op.set(crow));
    if (fullRows > 0) {
      emit(op.i32(0), op.set(rcnt), op.block, op.loop);
      rowBlock(MR);
      addTo(arow, 4 * MR * asI);
      addTo(crow, 4 * MR * N);
      emit(op.get(rcnt), op.i32(1), op.add, op.tee(rcnt), op.i32(fullRows), op.ltS, op.brIf(0), op.end, op.end);
    }
    if (remRows > 0) rowBlock(remRows);
  } else {
    // Blocks of K: the first starts C from zero or the bias, the others add to it.
    const full = Math.floor(K / kc);
    const tail = K - full * kc;
    const next = () => {
      addTo(ak, 4 * kc * asK);
      addTo(bk, 4 * kc * (tile.packedB ? 4 * NV : N));
    };
    emit(op.get(A), op.set(ak), op.get(B), op.set(bk));
    kBlock(kc, tile.bias ? "bias" : "zero");
    if (full > 1) {
      countedLoop(emit, kb, op.i32(full - 1), () => {
        next();
        kBlock(kc, "c");
      });
    }
    if (tail > 0) {
      next();
      kBlock(tail, "c");
    }
  }
  addTo(A, 4 * aStep);
  addTo(B, 4 * bStep);
  addTo(C, 4 * M * N);
  emit(op.get(bi), op.i32(1), op.add, op.tee(bi), op.get(BATCH), op.ltS, op.brIf(0), op.end, op.end);
  return { params: [I32, I32, I32, I32, I32], locals: [...new Array(14).fill(I32), ...new Array(1 + NV + MR * NV).fill(V128)], body };
}

/**
 * Pack B [K, N] (row-major) into panels of `4 nv` columns for a `packedB` GEMM: panel j
 * is [K, 4 nv] row-major, columns past N zero. Params (b, out, K); out holds
 * ceil(N / (4 nv)) K 4 nv floats.
 */
export function packPanelsFunc(N: number, nv: number): FuncDef {
  const [B, OUT, KK] = [0, 1, 2];
  const [k, src, dst, pnl] = [3, 4, 5, 6];
  const W = 4 * nv;
  const full = Math.floor(N / W);
  const rem = N - full * W;
  const body: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((x) => body.push(...x));
  emit(op.get(OUT), op.set(dst));
  if (full > 0) {
    countedLoop(emit, pnl, op.i32(full), () => {
      emit(op.get(B), op.get(pnl), op.i32(4 * W), op.mul, op.add, op.set(src));
      countedLoop(emit, k, op.get(KK), () => {
        for (let v = 0; v < nv; v++) emit(op.get(dst), op.get(src), v128Load(16 * v), v128Store(16 * v));
        emit(op.get(src), op.i32(4 * N), op.add, op.set(src), op.get(dst), op.i32(4 * W), op.add, op.set(dst));
      });
    });
  }
  if (rem > 0) {
    emit(op.get(B), op.i32(4 * W * full), op.add, op.set(src));
    countedLoop(emit, k, op.get(KK), () => {
      for (let v = 0; v < nv; v++) emit(op.get(dst), v128Zero(), v128Store(16 * v));
      for (let c = 0; c < rem; c++) emit(op.get(dst), op.get(src), op.f32Load(4 * c), op.f32Store(4 * c));
      emit(op.get(src), op.i32(4 * N), op.add, op.set(src), op.get(dst), op.i32(4 * W), op.add, op.set(dst));
    });
  }
  return { params: [I32, I32, I32], locals: [I32, I32, I32, I32], body };
}

/**
 * Column sums out[c] = sum_r x[r, c] of x [rows, 4 c4]. Columns are taken in blocks of
 * up to 8 vectors held in registers while the rows are walked. Params (x, out, rows).
 */
export function columnSumsFunc(c4: number): FuncDef {
  const [X, OUT, ROWS] = [0, 1, 2];
  const [r, p] = [3, 4];
  const ACC = (v: number) => 5 + v;
  const BLOCK = 8;
  const body: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((x) => body.push(...x));
  for (let v0 = 0; v0 < c4; v0 += BLOCK) {
    const nv = Math.min(BLOCK, c4 - v0);
    for (let v = 0; v < nv; v++) emit(v128Zero(), op.set(ACC(v)));
    emit(op.get(X), op.set(p), op.i32(0), op.set(r));
    emit(op.block, op.loop); // rows >= 1 (checked by the caller)
    for (let v = 0; v < nv; v++) emit(op.get(ACC(v)), op.get(p), v128Load(16 * (v0 + v)), f32x4Add(), op.set(ACC(v)));
    emit(op.get(p), op.i32(16 * c4), op.add, op.set(p));
    emit(op.get(r), op.i32(1), op.add, op.tee(r), op.get(ROWS), op.ltS, op.brIf(0), op.end, op.end);
    for (let v = 0; v < nv; v++) emit(op.get(OUT), op.get(ACC(v)), v128Store(16 * (v0 + v)));
  }
  return { params: [I32, I32, I32], locals: [I32, I32, ...new Array(Math.min(BLOCK, c4)).fill(V128)], body };
}

/**
 * Filter and bias gradients of a 3x3 depthwise convolution, stride 1, padding 1, for
 * x and dy [B, H, W, 4 c4]: dw[kh, kw, c] = sum x[b, h+kh-1, w+kw-1, c] dy[b, h, w, c]
 * over in-bounds positions, db[c] = sum dy[b, h, w, c]. Params
 * (x, dy, dw, db, images, H, W), all >= 1; dw (9 C floats) and db (C floats) are
 * accumulated into, so the caller passes zeroed outputs.
 */
export function depthwise3x3FilterGradFunc(c4: number): FuncDef {
  const [X, DY, DW, DB, NB, H, W] = [0, 1, 2, 3, 4, 5, 6];
  const [b, h, w, j, dyp, xp, acc, hh, ww] = [7, 8, 9, 10, 11, 12, 13, 14, 15];
  const rowBytes = 16 * c4;
  const body: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((x) => body.push(...x));
  /** for j in 0..c4: `inner()` with the byte offset 16 j in local `acc`-relative addressing. */
  const channelLoop = (inner: () => void) => countedLoop(emit, j, op.i32(rowBytes), inner, 16);
  emit(op.get(DY), op.set(dyp));
  countedLoops(emit, [[b, op.get(NB)], [h, op.get(H)], [w, op.get(W)]], () => {
    // bias: db += dy[pixel]
    channelLoop(() => emit(op.get(DB), op.get(j), op.add, op.tee(acc), op.get(acc), v128Load(), op.get(dyp), op.get(j), op.add, v128Load(), f32x4Add(), v128Store()));
    for (let kh = 0; kh < 3; kh++) {
      // hh = h + kh - 1 in [0, H): one unsigned compare (-1 wraps to 2^32 - 1)
      emit(op.get(h), op.i32(kh - 1), op.add, op.tee(hh), op.get(H), op.ltU, op.if);
      for (let kw = 0; kw < 3; kw++) {
        emit(op.get(w), op.i32(kw - 1), op.add, op.tee(ww), op.get(W), op.ltU, op.if);
        // xp = X + ((b H + hh) W + ww) rowBytes
        emit(op.get(X), op.get(b), op.get(H), op.mul, op.get(hh), op.add, op.get(W), op.mul, op.get(ww), op.add, op.i32(rowBytes), op.mul, op.add, op.set(xp));
        const tapOff = (kh * 3 + kw) * rowBytes;
        channelLoop(() => {
          emit(op.get(DW), op.get(j), op.add, op.tee(acc), op.get(acc), v128Load(tapOff));
          emit(op.get(xp), op.get(j), op.add, v128Load(), op.get(dyp), op.get(j), op.add, v128Load(), f32x4Mul(), f32x4Add(), v128Store(tapOff));
        });
        emit(op.end);
      }
      emit(op.end);
    }
    emit(op.get(dyp), op.i32(rowBytes), op.add, op.set(dyp));
  });
  return { params: [I32, I32, I32, I32, I32, I32, I32], locals: new Array(9).fill(I32), body };
}

/** Geometry of a depthwise convolution (channel multiplier 1) baked into its input-gradient kernel. */
export interface DepthwiseGeometry {
  c4: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  dh: number;
  dw: number;
  top: number;
  left: number;
}

/**
 * Input gradient of a depthwise convolution with channel multiplier 1 and any kernel,
 * stride, dilation and padding, as a scatter:
 * dx[b, oh sh + kh dh - top, ow sw + kw dw - left, c] += dy[b, oh, ow, c] f[kh, kw, c]
 * over in-bounds positions. dy [B, OH, OW, 4 c4], f [KH, KW, 4 c4], dx [B, H, W, 4 c4],
 * zeroed by the caller. Params (dy, f, dx, B, OH, OW, H, W), all >= 1.
 */
export function depthwiseInputGradFunc(g: DepthwiseGeometry): FuncDef {
  const [DY, F, DX, NB, OH, OW, H, W] = [0, 1, 2, 3, 4, 5, 6, 7];
  const [b, oh, ow, ih, iw, j, dyp, dxp, acc] = [8, 9, 10, 11, 12, 13, 14, 15, 16];
  const rowBytes = 16 * g.c4;
  const body: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((x) => body.push(...x));
  emit(op.get(DY), op.set(dyp));
  countedLoops(emit, [[b, op.get(NB)], [oh, op.get(OH)], [ow, op.get(OW)]], () => {
    for (let kh = 0; kh < g.kh; kh++) {
      // ih = oh sh + kh dh - top in [0, H): one unsigned compare (negatives wrap)
      emit(op.get(oh), op.i32(g.sh), op.mul, op.i32(kh * g.dh - g.top), op.add, op.tee(ih), op.get(H), op.ltU, op.if);
      for (let kw = 0; kw < g.kw; kw++) {
        emit(op.get(ow), op.i32(g.sw), op.mul, op.i32(kw * g.dw - g.left), op.add, op.tee(iw), op.get(W), op.ltU, op.if);
        emit(op.get(DX), op.get(b), op.get(H), op.mul, op.get(ih), op.add, op.get(W), op.mul, op.get(iw), op.add, op.i32(rowBytes), op.mul, op.add, op.set(dxp));
        const tapOff = (kh * g.kw + kw) * rowBytes;
        countedLoop(emit, j, op.i32(rowBytes), () => {
          emit(op.get(dxp), op.get(j), op.add, op.tee(acc), op.get(acc), v128Load());
          emit(op.get(dyp), op.get(j), op.add, v128Load(), op.get(F), op.get(j), op.add, v128Load(tapOff), f32x4Mul(), f32x4Add(), v128Store());
        }, 16);
        emit(op.end);
      }
      emit(op.end);
    }
    emit(op.get(dyp), op.i32(rowBytes), op.add, op.set(dyp));
  });
  return { params: new Array(8).fill(I32), locals: new Array(9).fill(I32), body };
}

/**
 * dx = dy where lo <= x <= hi, else +0, over `n4` four-float vectors: the same bits as
 * TF.js's `where(logicalAnd(greaterEqual(x, lo), lessEqual(x, hi)), dy, 0)` (a NaN x
 * fails both comparisons and gives 0). Params (x, dy, dx, n4, lo: f32, hi: f32).
 */
export function clipGradFunc(): FuncDef {
  const [X, DY, DX, N4, LO, HI] = [0, 1, 2, 3, 4, 5];
  const [i, lo, hi, x] = [6, 7, 8, 9];
  const body: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((z) => body.push(...z));
  emit(op.get(LO), f32x4Splat(), op.set(lo), op.get(HI), f32x4Splat(), op.set(hi));
  // n4 >= 1 (checked by the caller)
  countedLoop(emit, i, op.get(N4), () => {
    emit(op.get(DX), op.get(X), v128Load(), op.tee(x), op.get(lo), f32x4Ge(), op.get(x), op.get(hi), f32x4Le(), v128And(), op.get(DY), v128Load(), v128And(), v128Store());
    for (const p of [X, DY, DX]) emit(op.get(p), op.i32(16), op.add, op.set(p));
  });
  return { params: [I32, I32, I32, I32, F32, F32], locals: [I32, V128, V128, V128], body };
}

/**
 * A permutation copy of 4-byte elements, written in output order: for output indices
 * (i0, i1, i2, i3) of [n0, d1, d2, d3], out[...] = x[i0 s0 + i1 s1 + i2 s2 + i3 s3]
 * (s* in bytes). With `contiguous` (s3 = 4 bytes) the last axis is copied as `nvec`
 * four-element vectors and `rem` single elements; otherwise element by element, `rem`
 * = d3 of them. Params (x, out, n0, d1, d2, nvec, rem, s0, s1, s2, s3), counts n0, d1,
 * d2 >= 1.
 */
export function permuteCopyFunc(contiguous: boolean): FuncDef {
  const [X, OUT, N0, D1, D2, NVEC, REM, S0, S1, S2, S3] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
  const [i0, i1, i2, j, p0, p1, p2, q] = [11, 12, 13, 14, 15, 16, 17, 18];
  const body: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((x) => body.push(...x));
  const guarded = (count: number, inner: () => void) => guardedLoop(emit, j, count, inner);
  emit(op.get(X), op.set(p0));
  countedLoop(emit, i0, op.get(N0), () => {
    emit(op.get(p0), op.set(p1));
    countedLoop(emit, i1, op.get(D1), () => {
      emit(op.get(p1), op.set(p2));
      countedLoop(emit, i2, op.get(D2), () => {
        emit(op.get(p2), op.set(q));
        if (contiguous) {
          guarded(NVEC, () => emit(op.get(OUT), op.get(q), v128Load(), v128Store(), op.get(OUT), op.i32(16), op.add, op.set(OUT), op.get(q), op.i32(16), op.add, op.set(q)));
          guarded(REM, () => emit(op.get(OUT), op.get(q), op.i32Load(), op.i32Store(), op.get(OUT), op.i32(4), op.add, op.set(OUT), op.get(q), op.i32(4), op.add, op.set(q)));
        } else {
          guarded(REM, () => emit(op.get(OUT), op.get(q), op.i32Load(), op.i32Store(), op.get(OUT), op.i32(4), op.add, op.set(OUT), op.get(q), op.get(S3), op.add, op.set(q)));
        }
        emit(op.get(p2), op.get(S2), op.add, op.set(p2));
      });
      emit(op.get(p1), op.get(S1), op.add, op.set(p1));
    });
    emit(op.get(p0), op.get(S0), op.add, op.set(p0));
  });
  return { params: new Array(11).fill(I32), locals: new Array(8).fill(I32), body };
}

/** The element-wise operations of {@link binaryFunc}: SIMD and scalar opcodes. */
export const BINARY_OPS = { add: [0xe4, 0x92], sub: [0xe5, 0x93], mul: [0xe6, 0x94] } as const;
export type BinaryOp = keyof typeof BINARY_OPS;

/**
 * out = big (op) small, element-wise, with `small` repeating every period: for each of
 * `blocks` blocks of `4 pvec + prem` elements of big and out, small's first period is
 * read again (blocks = 1 with a whole-length small is the same-shape case). With
 * `smallFirst` the operands are swapped: out = small (op) big (subtraction's order).
 * Params (big, small, out, blocks, pvec, prem), blocks >= 1.
 */
export function binaryFunc(opName: BinaryOp, smallFirst: boolean): FuncDef {
  const [BIG, SMALL, OUT, BLOCKS, PVEC, PREM] = [0, 1, 2, 3, 4, 5];
  const [bk, j, sp] = [6, 7, 8];
  const [vop, sop] = BINARY_OPS[opName];
  const body: number[] = [];
  const emit = (...xs: number[][]) => xs.forEach((x) => body.push(...x));
  const guarded = (count: number, inner: () => void) => guardedLoop(emit, j, count, inner);
  const step = (ptr: number, bytes: number) => emit(op.get(ptr), op.i32(bytes), op.add, op.set(ptr));
  countedLoop(emit, bk, op.get(BLOCKS), () => {
    emit(op.get(SMALL), op.set(sp));
    guarded(PVEC, () => {
      emit(op.get(OUT));
      if (smallFirst) emit(op.get(sp), v128Load(), op.get(BIG), v128Load());
      else emit(op.get(BIG), v128Load(), op.get(sp), v128Load());
      emit(op.simd(vop), v128Store());
      step(BIG, 16);
      step(sp, 16);
      step(OUT, 16);
    });
    guarded(PREM, () => {
      emit(op.get(OUT));
      if (smallFirst) emit(op.get(sp), op.f32Load(), op.get(BIG), op.f32Load());
      else emit(op.get(BIG), op.f32Load(), op.get(sp), op.f32Load());
      emit([sop], op.f32Store());
      step(BIG, 4);
      step(sp, 4);
      step(OUT, 4);
    });
  });
  return { params: new Array(6).fill(I32), locals: [I32, I32, I32], body };
}

/**
 * a (op) b for float32 tensors whose broadcast is one operand repeating along leading
 * axes of the other (same shapes; a bias [C] on [N, C]; Swin's attention bias
 * [1, heads, 49, 49] on [windows, 1, heads, 49, 49]), on every kernel thread. Returns
 * undefined (and computes nothing) for any other broadcast, which the caller leaves to
 * TF.js. Same IEEE results as TF.js's kernels.
 */
export function periodicBinary(be: WasmBackendLike, opName: BinaryOp, a: tf.TensorInfo, b: tf.TensorInfo): tf.TensorInfo | undefined {
  if (a.dtype !== "float32" || b.dtype !== "float32" || !wasmSimdKernelsAvailable()) return undefined;
  const na = tf.util.sizeFromShape(a.shape);
  const nb = tf.util.sizeFromShape(b.shape);
  if (na === 0 || nb === 0) return undefined;
  const repeats = (big: readonly number[], small: readonly number[]) => {
    let k = 0;
    while (k < small.length && small[k] === 1) k++;
    const core = small.slice(k);
    if (core.length > big.length) return false;
    const tail = big.slice(big.length - core.length);
    return core.every((d, i) => d === tail[i]) && small.length <= big.length;
  };
  let big: tf.TensorInfo, small: tf.TensorInfo, smallFirst: boolean;
  if (na >= nb && repeats(a.shape, b.shape)) [big, small, smallFirst] = [a, b, false];
  else if (nb > na && repeats(b.shape, a.shape)) [big, small, smallFirst] = [b, a, true];
  else return undefined;
  const n = Math.max(na, nb);
  const period = Math.min(na, nb);
  if (period < 16) return undefined; // scalars and short rows: TF.js's kernel does better than one block per few elements
  const kernel = compiledKernelInfo(be, `binary.${opName}.${smallFirst}`, () => binaryFunc(opName, smallFirst));
  const out = be.makeOutput([...big.shape], "float32");
  const [pbig, psmall, pout] = [addr(be, big), addr(be, small), addr(be, out)];
  if (period === n) {
    // Same shapes: split the vectors; the last part takes the remainder.
    const vecs = Math.floor(n / 4);
    const rem = n % 4;
    if (vecs === 0) kernel.fn(pbig, psmall, pout, 1, 0, rem);
    else runSplit(be, vecs, MIN_PART_VECTORS, (s, c) => ({ kernel, args: [pbig + 16 * s, psmall + 16 * s, pout + 16 * s, 1, c, s + c === vecs ? rem : 0] }));
  } else {
    const blocks = n / period;
    runSplit(be, blocks, Math.ceil((4 * MIN_PART_VECTORS) / period), (s, c) => ({ kernel, args: [pbig + 4 * s * period, psmall, pout + 4 * s * period, c, Math.floor(period / 4), period % 4] }));
  }
  return out;
}

// ------------------------------------------------------------------ registration


const GEMM = "PbipGemm";
const COLSUM = "PbipColumnSums";
const DW_GRAD = "PbipDepthwise3x3FilterGrad";
const CLIP_GRAD = "PbipClipByValueGrad";
const DW_INPUT_GRAD = "PbipDepthwiseInputGrad";
let registered: boolean | undefined;
const compiled = compiledKernel;
const compiledInfo = compiledKernelInfo;
/** Work below which a part is not worth waking a second thread for (about 0.1 ms of one thread). */
const MIN_PART_FLOPS = 4e6;
/** The same for an element-wise pass, in four-float vectors. */
const MIN_PART_VECTORS = 1 << 15;
const addr = tensorAddress;

type KernelBody = (be: WasmBackendLike, inputs: Record<string, tf.TensorInfo>, attrs: Record<string, unknown>) => tf.TensorInfo | tf.TensorInfo[];

/** Register `body` as the `wasm` kernel `kernelName`. */
function wasmKernel(kernelName: string, body: KernelBody): void {
  tf.registerKernel({
    kernelName,
    backendName: "wasm",
    kernelFunc: ({ inputs, backend, attrs }) => body(backend as unknown as WasmBackendLike, inputs as unknown as Record<string, tf.TensorInfo>, attrs as unknown as Record<string, unknown>),
  });
}

/** A new float32 output of the kernel, filled with zeros (for kernels that accumulate into it). */
function zeroedOutput(be: WasmBackendLike, shape: number[]): tf.TensorInfo {
  const out = be.makeOutput(shape, "float32");
  new Float32Array(backendMemory(be).memory.buffer, addr(be, out), tf.util.sizeFromShape(shape)).fill(0);
  return out;
}

function register(): boolean {
  if (registered !== undefined) return registered;
  registered = false;
  try {
    if (!tf.findBackend("wasm")) return false;
    if (!WebAssemblyApi.validate(assemble([gemmFunc(5, 3, 7, false, 15, 21), gemmFunc(5, 3, 13, true, 15, 0, { mr: 3, nv: 3 }), columnSumsFunc(9), depthwise3x3FilterGradFunc(2), clipGradFunc(), depthwiseInputGradFunc({ c4: 2, kh: 3, kw: 3, sh: 2, sw: 2, dh: 1, dw: 1, top: 0, left: 1 })]))) return false;
    // Another copy of this module (src and dist in one process) may have registered them already.
    if (tf.getKernel(GEMM, "wasm") && tf.getKernel(DW_INPUT_GRAD, "wasm")) {
      registered = true;
      return true;
    }
    wasmKernel(GEMM, (be, { a, b, bias }, attrs) => {
      const { M, K, N, batch, transposeA, aStep, bStep, mr, nv, fma, kc: kcAttr } = attrs as unknown as { M: number; K: number; N: number; batch: number; transposeA: boolean; aStep: number; bStep: number; mr: number; nv: number; fma: boolean; kc: number };
      // A transposed A with a long shared dimension (a weight gradient; attention's dV = p^T dy
      // over MiT-b1's 3136 tokens) walks it in blocks: the tile's choice, or defaultKc's.
      const kcT = transposeA ? (kcAttr < 0 ? defaultKc(K, M) : kcAttr < K ? kcAttr : 0) : 0;
      const kernel = (m: number) => compiledInfo(be, `gemm.${m}.${K}.${N}.${transposeA}.${aStep}.${bStep}.${mr}.${nv}.${fma}.${kcT}`, () => gemmFunc(m, K, N, transposeA, aStep, bStep, { mr, nv, fma, kc: kcT }));
      const out = be.makeOutput([batch, M, N], "float32");
      const [pa, pb, pc] = [addr(be, a!), addr(be, b!), addr(be, out)];
      const flops = 2 * M * K * N;
      if (batch > 1) {
        // Whole products per thread.
        runSplit(be, batch, Math.ceil(MIN_PART_FLOPS / flops), (s, n) => ({ kernel: kernel(M), args: [pa + 4 * s * aStep, pb + 4 * s * bStep, pc + 4 * s * M * N, n] }));
      } else if (!transposeA) {
        // One product (a linear layer): B packed into panels, then blocks of rows of A and C
        // per thread (a row's dot products are the same whatever the block).
        const panels = Math.ceil(N / (4 * nv));
        const packed = be.makeOutput([panels * K * 4 * nv], "float32");
        compiled(be, `packPanels.${N}.${nv}`, () => packPanelsFunc(N, nv))(pb, addr(be, packed), K);
        const withBias = bias !== undefined;
        const pbias = withBias ? addr(be, bias) : 0;
        const kc = kcAttr > 0 && kcAttr < K ? kcAttr : 0;
        const packedKernel = (m: number) => compiledInfo(be, `gemmPacked.${m}.${K}.${N}.${mr}.${nv}.${fma}.${withBias}.${kc}`, () => gemmFunc(m, K, N, false, 0, 0, { mr, nv, fma, packedB: true, bias: withBias, kc }));
        try {
          runSplit(be, M, Math.max(mr, Math.ceil(MIN_PART_FLOPS / (2 * K * N))), (s, m) => ({ kernel: packedKernel(m), args: [pa + 4 * s * K, addr(be, packed), pc + 4 * s * N, 1, pbias] }), mr);
        } finally {
          be.disposeData(packed.dataId);
        }
      } else {
        // One product op(A) = A^T (a weight gradient x^T dy, K = the batch's tokens): A read
        // in place, blocks of rows (columns of the stored A) per thread, K in blocks. B is
        // packed into panels where 256 or more rows share the copy's cost.
        const pack = M >= 256;
        const panels = Math.ceil(N / (4 * nv));
        const packed = pack ? be.makeOutput([panels * K * 4 * nv], "float32") : undefined;
        if (packed) compiled(be, `packPanels.${N}.${nv}`, () => packPanelsFunc(N, nv))(pb, addr(be, packed), K);
        const pB = packed ? addr(be, packed) : pb;
        const rowsKernel = (m: number) => compiledInfo(be, `gemmT.${m}.${K}.${N}.${M}.${mr}.${nv}.${fma}.${kcT}.${pack}`, () => gemmFunc(m, K, N, true, 0, 0, { mr, nv, fma, kc: kcT, lda: M, packedB: pack }));
        try {
          runSplit(be, M, Math.max(mr, Math.ceil(MIN_PART_FLOPS / (2 * K * N))), (s, m) => ({ kernel: rowsKernel(m), args: [pa + 4 * s, pB, pc + 4 * s * N, 1, 0] }), mr);
        } finally {
          if (packed) be.disposeData(packed.dataId);
        }
      }
      return out;
    });
    wasmKernel(COLSUM, (be, { x }) => {
      const [rows, cols] = x!.shape as [number, number];
      const fn = compiled(be, `colsum.${cols}`, () => columnSumsFunc(cols / 4));
      const out = be.makeOutput([cols], "float32");
      fn(addr(be, x!), addr(be, out), rows);
      return out;
    });
    // d(column sums)/dx: every row receives dy.
    tf.registerGradient({
      kernelName: COLSUM,
      inputsToSave: ["x"],
      gradFunc: (dy, saved) => {
        const [x] = saved as [tf.Tensor];
        return { x: () => tf.broadcastTo(dy as tf.Tensor, x.shape) };
      },
    });
    wasmKernel(DW_GRAD, (be, { x, dy }) => {
      const [nb, h, w, c] = x!.shape as [number, number, number, number];
      const fn = compiled(be, `dw3x3.${c}`, () => depthwise3x3FilterGradFunc(c / 4));
      const dw = zeroedOutput(be, [3, 3, c, 1]);
      const db = zeroedOutput(be, [c]);
      fn(addr(be, x!), addr(be, dy!), addr(be, dw), addr(be, db), nb, h, w);
      return [dw, db];
    });
    wasmKernel(DW_INPUT_GRAD, (be, { dy, filter }, attrs) => {
      const { geometry: g, inputShape } = attrs as unknown as { geometry: DepthwiseGeometry; inputShape: [number, number, number, number] };
      const [nb, oh, ow] = dy!.shape as [number, number, number, number];
      const kernel = compiledInfo(be, `dwInputGrad.${g.c4}.${g.kh}.${g.kw}.${g.sh}.${g.sw}.${g.dh}.${g.dw}.${g.top}.${g.left}`, () => depthwiseInputGradFunc(g));
      const dx = zeroedOutput(be, inputShape);
      const [h, w] = [inputShape[1], inputShape[2]];
      const [pdy, pf, pdx] = [addr(be, dy!), addr(be, filter!), addr(be, dx)];
      // Whole images per thread: each writes only its own image's dx.
      const perImage = 2 * oh * ow * g.kh * g.kw * 4 * g.c4;
      if (nb > 0 && oh > 0 && ow > 0) runSplit(be, nb, Math.ceil(MIN_PART_FLOPS / perImage), (s, n) => ({ kernel, args: [pdy + 4 * s * oh * ow * 4 * g.c4, pf, pdx + 4 * s * h * w * 4 * g.c4, n, oh, ow, h, w] }));
      return dx;
    });
    wasmKernel(CLIP_GRAD, (be, { x, dy }, attrs) => {
      const { lo, hi } = attrs as unknown as { lo: number; hi: number };
      const kernel = compiledInfo(be, "clipGrad", clipGradFunc);
      const dx = be.makeOutput(x!.shape, "float32");
      const [px, pdy, pdx] = [addr(be, x!), addr(be, dy!), addr(be, dx)];
      runSplit(be, tf.util.sizeFromShape(x!.shape) / 4, MIN_PART_VECTORS, (s, n) => ({ kernel, args: [px + 16 * s, pdy + 16 * s, pdx + 16 * s, n, lo, hi] }));
      return dx;
    });
    registered = true;
  } catch {
    registered = false;
  }
  return registered;
}

let relaxed: boolean | undefined;

/**
 * Turn on WebAssembly relaxed SIMD for pbip's kernels where Node has it behind a flag
 * (Node 20: V8's `--experimental-wasm-relaxed-simd`; Node 22 ships it), so the GEMM can
 * use `f32x4.relaxed_madd`, one fused multiply-add where the CPU has FMA. Set
 * `PBIP_WASM_RELAXED_SIMD=0` to keep plain SIMD. Returns {@link relaxedSimdAvailable}.
 * Results differ from plain SIMD in the last bits (one rounding instead of two), the
 * same on every run of one machine.
 */
export function enableRelaxedSimd(): boolean {
  if (process.env.PBIP_WASM_RELAXED_SIMD === "0") {
    relaxed = false;
    return false;
  }
  if (!relaxedSimdAvailable()) {
    try {
      (require("node:v8") as typeof import("node:v8")).setFlagsFromString("--experimental-wasm-relaxed-simd");
    } catch {
      // not Node, or the flag is gone (relaxed SIMD shipped): validation below decides
    }
    relaxed = undefined;
  }
  return relaxedSimdAvailable();
}

/** True when this engine compiles relaxed SIMD (and `PBIP_WASM_RELAXED_SIMD` is not 0). */
export function relaxedSimdAvailable(): boolean {
  if (relaxed === undefined) relaxed = process.env.PBIP_WASM_RELAXED_SIMD !== "0" && WebAssemblyApi.validate(assemble([gemmFunc(4, 2, 8, false, 0, 0, { mr: 4, nv: 2, fma: true })]));
  return relaxed;
}

/**
 * Whether {@link permuteCopy} takes a copy of output `dims`: rank 2 to 4, at least
 * `minElements`, more than one kernel thread and a first axis to split. Otherwise the
 * caller keeps TF.js's own kernel.
 */
export function permuteCopyFits(be: WasmBackendLike, dims: readonly number[], minElements = 1 << 16): boolean {
  if (dims.length < 2 || dims.length > 4 || dims[0]! < 2 || !wasmSimdKernelsAvailable()) return false;
  return dims.reduce((a, b) => a * b, 1) >= minElements && kernelThreads(backendMemory(be).memory) >= 2;
}

/**
 * Copy the 4-byte elements at byte address `x` into `out` in the order of an output of
 * `dims`, output axis k advancing `strides[k]` input elements (a merged transpose plan,
 * `transposePlan` in `./wasm-kernels`), on every kernel thread, split along the first
 * axis. The caller checks {@link permuteCopyFits} first.
 */
export function permuteCopy(be: WasmBackendLike, x: number, out: number, dims: readonly number[], strides: readonly number[]): void {
  // [a0, a1, ...] -> [a0, 1, ..., a1, ...]: keep the first axis first, to split along it.
  const pad = 4 - dims.length;
  const d = [dims[0]!, ...new Array(pad).fill(1), ...dims.slice(1)];
  const st = [strides[0]!, ...new Array(pad).fill(0), ...strides.slice(1)].map((v) => 4 * v);
  const contiguous = st[3] === 4;
  const kernel = compiledKernelInfo(be, `permuteCopy.${contiguous}`, () => permuteCopyFunc(contiguous));
  const nvec = contiguous ? Math.floor(d[3]! / 4) : 0;
  const rem = contiguous ? d[3]! % 4 : d[3]!;
  const rowElements = d[1]! * d[2]! * d[3]!;
  runSplit(be, d[0]!, Math.ceil(MIN_PART_VECTORS / rowElements), (s, n) => ({ kernel, args: [x + s * st[0]!, out + 4 * s * rowElements, n, d[1]!, d[2]!, nvec, rem, st[0]!, st[1]!, st[2]!, st[3]!] }));
}

/** True when the active backend is `wasm` with SIMD and these kernels are registered. */
export function wasmSimdKernelsAvailable(): boolean {
  return tf.getBackend() === "wasm" && register();
}

function requireKernels(what: string): void {
  if (!wasmSimdKernelsAvailable()) throw new Error(`${what}: needs the wasm backend with SIMD (check wasmSimdKernelsAvailable() first)`);
}

/**
 * The K block of a single transposed product (a weight gradient) when its tile does not
 * set one: none up to K = 512; then 256 where B is packed (M >= 256: a panel's block of
 * B, 8 KB, stays in L1) and 128 where it is not (its rows, N floats apart, land on few
 * cache sets). Chosen with `npx tsx bench/gemm-speed.ts` on MiT-b1's weight gradients.
 */
function defaultKc(K: number, M: number): number {
  return K <= 512 ? 0 : M >= 256 ? 256 : 128;
}

/**
 * Batched matrix product on the WASM backend: a [..., M, K] (with `transposeA`,
 * [..., K, M], multiplied as its transpose) times b [..., K, N] -> [..., M, N]. The
 * leading dimensions of a and b are flattened and must hold the same number of
 * matrices, or one of them a single matrix that is used for every product. With
 * `bias` ([N], one untransposed product only) every row of C starts from it. Not
 * differentiable by itself (used inside custom-gradient ops).
 */
export function gemm(a: tf.Tensor, b: tf.Tensor, opts: { transposeA?: boolean; tile?: GemmTile; bias?: tf.Tensor } = {}): tf.Tensor {
  requireKernels("gemm");
  const transposeA = opts.transposeA ?? false;
  const tile = opts.tile ?? DEFAULT_GEMM_TILE;
  if (a.rank < 2 || b.rank < 2) throw new Error(`gemm: operands must have rank >= 2, got [${a.shape}] and [${b.shape}]`);
  if (a.dtype !== "float32" || b.dtype !== "float32") throw new Error(`gemm: float32 only, got ${a.dtype} and ${b.dtype}`);
  const [d1, d2] = [a.shape[a.rank - 2]!, a.shape[a.rank - 1]!];
  const [M, K] = transposeA ? [d2, d1] : [d1, d2];
  const [Kb, N] = [b.shape[b.rank - 2]!, b.shape[b.rank - 1]!];
  const na = a.size / (d1 * d2);
  const nb = b.size / (Kb * N);
  if (Kb !== K || (na !== nb && na !== 1 && nb !== 1)) {
    throw new Error(`gemm: shapes [${a.shape}]${transposeA ? "^T" : ""} and [${b.shape}] do not match`);
  }
  const batch = Math.max(na, nb);
  const lead = (na >= nb ? a : b).shape.slice(0, -2);
  const bias = opts.bias;
  if (bias && (batch !== 1 || transposeA || bias.size !== N || bias.dtype !== "float32")) {
    throw new Error(`gemm: a bias needs one untransposed product and ${N} float32 values, got [${bias.shape}] ${bias.dtype} for [${a.shape}]${transposeA ? "^T" : ""} x [${b.shape}]`);
  }
  if (batch === 0 || M === 0 || N === 0 || K === 0) return bias ? tf.add(tf.zeros([...lead, M, N]), bias) : tf.zeros([...lead, M, N]);
  const attrs = { M, K, N, batch, transposeA, aStep: na === 1 ? 0 : M * K, bStep: nb === 1 ? 0 : K * N, mr: tile.mr, nv: tile.nv, fma: tile.fma ?? false, kc: tile.kc ?? -1 };
  const out = tf.engine().runKernel(GEMM, bias ? { a, b, bias } : { a, b }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
  return reshapeOwned(out, [...lead, M, N]);
}

/** `x` reshaped, giving up `x` (a kernel output the caller does not see; outside a tidy it would leak). */
function reshapeOwned(x: tf.Tensor, shape: number[]): tf.Tensor {
  if (tf.util.arraysEqual(x.shape, shape)) return x;
  const r = tf.reshape(x, shape);
  x.dispose();
  return r;
}

/** Column sums of x [N, C] -> [C] (C a multiple of 4, N >= 1) on the WASM backend; differentiable. */
export function columnSums(x: tf.Tensor2D): tf.Tensor1D {
  requireKernels("columnSums");
  if (x.shape[1] % 4 !== 0 || x.shape[0] < 1) throw new Error(`columnSums: needs >= 1 row and a multiple of 4 columns, got [${x.shape}]`);
  return tf.engine().runKernel(COLSUM, { x }, {}) as tf.Tensor1D;
}

/**
 * Filter gradient [3, 3, C, 1] and bias gradient [C] of a 3x3 depthwise convolution
 * with stride 1 and padding 1, from its input x and output gradient dy, both
 * [B, H, W, C] (C a multiple of 4), on the WASM backend.
 */
export function depthwise3x3FilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D): { dw: tf.Tensor4D; db: tf.Tensor1D } {
  requireKernels("depthwise3x3FilterGrad");
  if (!tf.util.arraysEqual(x.shape, dy.shape)) throw new Error(`depthwise3x3FilterGrad: x [${x.shape}] and dy [${dy.shape}] differ`);
  if (x.shape[3] % 4 !== 0 || x.size === 0) throw new Error(`depthwise3x3FilterGrad: needs a multiple of 4 channels and a non-empty input, got [${x.shape}]`);
  const [dw, db] = tf.engine().runKernel(DW_GRAD, { x, dy }, {}) as tf.Tensor[];
  return { dw: dw as tf.Tensor4D, db: db as tf.Tensor1D };
}

/**
 * ClipByValue's input gradient on the WASM backend: dy where lo <= x <= hi, else 0, in
 * one pass; bit for bit TF.js's own. x and dy float32 of one shape, size a positive
 * multiple of 4.
 */
export function clipByValueGrad(x: tf.Tensor, dy: tf.Tensor, lo: number, hi: number): tf.Tensor {
  requireKernels("clipByValueGrad");
  if (!tf.util.arraysEqual(x.shape, dy.shape) || x.size % 4 !== 0 || x.size === 0 || x.dtype !== "float32" || dy.dtype !== "float32") {
    throw new Error(`clipByValueGrad: needs float32 x and dy of one shape with a positive multiple of 4 elements, got ${x.dtype} [${x.shape}] and ${dy.dtype} [${dy.shape}]`);
  }
  return tf.engine().runKernel(CLIP_GRAD, { x, dy }, { lo, hi } as unknown as tf.NamedAttrMap);
}

/**
 * Input gradient [B, H, W, C] of a depthwise convolution with channel multiplier 1 (C a
 * multiple of 4), from dy [B, OH, OW, C] and the filter [KH, KW, C, 1], on the WASM
 * backend, in one pass (see {@link depthwiseInputGradFunc}). `info` is tfjs's
 * convolution info for the forward pass (strides, dilations, padding).
 */
export function depthwiseInputGrad(dy: tf.Tensor4D, filter: tf.Tensor4D, info: tf.backend_util.Conv2DInfo): tf.Tensor4D {
  requireKernels("depthwiseInputGrad");
  const [kh, kw, c, m] = filter.shape;
  if (m !== 1 || c % 4 !== 0) throw new Error(`depthwiseInputGrad: needs channel multiplier 1 and a multiple of 4 channels, got filter [${filter.shape}]`);
  if (dy.shape[3] !== c || dy.shape[1] !== info.outHeight || dy.shape[2] !== info.outWidth) throw new Error(`depthwiseInputGrad: dy [${dy.shape}] does not fit the convolution (${info.outHeight}x${info.outWidth}x${c})`);
  const geometry: DepthwiseGeometry = { c4: c / 4, kh, kw, sh: info.strideHeight, sw: info.strideWidth, dh: info.dilationHeight, dw: info.dilationWidth, top: info.padInfo.top, left: info.padInfo.left };
  const inputShape = [info.batchSize, info.inHeight, info.inWidth, c];
  return tf.engine().runKernel(DW_INPUT_GRAD, { dy, filter }, { geometry, inputShape } as unknown as tf.NamedAttrMap) as tf.Tensor4D;
}
