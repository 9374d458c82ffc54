import * as tf from "@tensorflow/tfjs";
import sharp from "sharp";
import type { RgbImage, MaskImage } from "../data/image";

export type { RgbImage };

/** Plain pixel data: `channels` values per pixel, row-major. Float arrays are read as [0, 1], integer arrays as [0, 255]. */
export interface PixelArray {
  data: ArrayLike<number>;
  width: number;
  height: number;
  /** 1 (grey), 3 (RGB) or 4 (RGBA, alpha ignored); default 3. */
  channels?: number;
}

/**
 * What the views accept as a patch: an 8-bit {@link RgbImage} (as `readImage`
 * of src/data returns), plain pixels, or a tensor `[H, W, 3]`, `[1, H, W, 3]` or
 * `[H, W]` (float32 read as [0, 1] like `Batch.images`, int32 as [0, 255]).
 * Encoded PNG/JPEG bytes are decoded with {@link decodeToRgb} first.
 */
export type ImageInput = RgbImage | PixelArray | tf.Tensor;

/** A mask of ids, row-major. */
export interface IdMask {
  width: number;
  height: number;
  data: ArrayLike<number>;
}

/** Mask input: ids as plain data, a {@link MaskImage} (as `readMask` of src/data returns), or a tensor `[H, W]`, `[H, W, 1]` or `[1, H, W]`. */
export type MaskInput = IdMask | MaskImage | tf.Tensor;

/** Per-class maps `[H, W, C]`, row-major, channels last (e.g. CAMs or similarity maps M). */
export interface MapStack {
  width: number;
  height: number;
  channels: number;
  data: Float32Array;
}

/** Map input: plain `[H, W, C]` data or a tensor `[H, W, C]` / `[1, H, W, C]`. */
export type MapsInput = MapStack | tf.Tensor;

function isFloatArray(a: ArrayLike<number>): boolean {
  return a instanceof Float32Array || a instanceof Float64Array || Array.isArray(a);
}

/** Convert any {@link ImageInput} to 8-bit RGB. Tensors are read synchronously and not disposed. */
export function toRgbImage(x: ImageInput): RgbImage {
  if (x instanceof tf.Tensor) {
    let shape = x.shape;
    if (shape.length === 4) {
      if (shape[0] !== 1) throw new Error(`image tensor has batch ${shape[0]}; pass one image ([H, W, 3] or [1, H, W, 3])`);
      shape = shape.slice(1);
    }
    const float = x.dtype === "float32";
    const vals = x.dataSync();
    if (shape.length === 2) return fromPixels({ data: vals, height: shape[0]!, width: shape[1]!, channels: 1 }, float);
    if (shape.length === 3) return fromPixels({ data: vals, height: shape[0]!, width: shape[1]!, channels: shape[2]! }, float);
    throw new Error(`image tensor must be [H, W], [H, W, C] or [1, H, W, C], got [${x.shape.join(", ")}]`);
  }
  const p = x as PixelArray;
  if ((p.data instanceof Uint8Array || p.data instanceof Uint8ClampedArray) && (p.channels ?? 3) === 3 && p.data.length === p.width * p.height * 3) {
    return p.data instanceof Uint8Array ? (p as RgbImage) : { width: p.width, height: p.height, data: new Uint8Array(p.data.buffer, p.data.byteOffset, p.data.byteLength) };
  }
  return fromPixels(p, isFloatArray(p.data));
}

function fromPixels(p: PixelArray, float: boolean): RgbImage {
  const c = p.channels ?? 3;
  const n = p.width * p.height;
  if (![1, 3, 4].includes(c)) throw new Error(`image must have 1, 3 or 4 channels, got ${c}`);
  if (p.data.length !== n * c) throw new Error(`image data has ${p.data.length} values, expected ${p.height} x ${p.width} x ${c} = ${n * c}`);
  const s = float ? 255 : 1;
  const q = (v: number) => (v * s >= 255 ? 255 : v * s > 0 ? Math.round(v * s) : 0);
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    if (c === 1) {
      const v = q(p.data[i]!);
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = v;
    } else {
      out[3 * i] = q(p.data[c * i]!);
      out[3 * i + 1] = q(p.data[c * i + 1]!);
      out[3 * i + 2] = q(p.data[c * i + 2]!);
    }
  }
  return { width: p.width, height: p.height, data: out };
}

/** Convert a {@link MaskInput} to plain ids. */
export function toIdMask(x: MaskInput): IdMask {
  if (x instanceof tf.Tensor) {
    const s = x.shape.filter((d, i) => !(d === 1 && (i === 0 || i === x.shape.length - 1) && x.shape.length === 3));
    if (s.length !== 2) throw new Error(`mask tensor must be [H, W], [H, W, 1] or [1, H, W], got [${x.shape.join(", ")}]`);
    return { height: s[0]!, width: s[1]!, data: x.dataSync() };
  }
  if ("ids" in x) return { width: x.width, height: x.height, data: x.ids };
  if (x.data.length !== x.width * x.height) throw new Error(`mask has ${x.data.length} pixels, expected ${x.height} x ${x.width}`);
  return x;
}

/** Convert a {@link MapsInput} to a plain `[H, W, C]` stack. */
export function toMapStack(x: MapsInput): MapStack {
  if (x instanceof tf.Tensor) {
    let shape = x.shape;
    if (shape.length === 4 && shape[0] === 1) shape = shape.slice(1);
    if (shape.length === 2) shape = [shape[0]!, shape[1]!, 1];
    if (shape.length !== 3) throw new Error(`maps tensor must be [H, W, C] or [1, H, W, C], got [${x.shape.join(", ")}]`);
    return { height: shape[0]!, width: shape[1]!, channels: shape[2]!, data: Float32Array.from(x.dataSync()) };
  }
  if (x.data.length !== x.width * x.height * x.channels) throw new Error(`maps have ${x.data.length} values, expected ${x.height} x ${x.width} x ${x.channels}`);
  return x;
}

/** Nearest-neighbour resize of a mask (for masks at a different resolution than the patch). */
export function resizeIdsNearest(m: IdMask, height: number, width: number): IdMask {
  if (m.height === height && m.width === width) return m;
  const out = new Int32Array(height * width);
  for (let y = 0; y < height; y++) {
    const sy = Math.min(m.height - 1, Math.floor(((y + 0.5) * m.height) / height));
    for (let x = 0; x < width; x++) out[y * width + x] = m.data[sy * m.width + Math.min(m.width - 1, Math.floor(((x + 0.5) * m.width) / width))]!;
  }
  return { height, width, data: out };
}

/** Bilinear resize of a map stack (half-pixel centres, edges clamped). */
export function resizeMapsBilinear(m: MapStack, height: number, width: number): MapStack {
  if (m.height === height && m.width === width) return m;
  const c = m.channels;
  const out = new Float32Array(height * width * c);
  for (let y = 0; y < height; y++) {
    const fy = Math.min(Math.max(((y + 0.5) * m.height) / height - 0.5, 0), m.height - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, m.height - 1);
    const wy = fy - y0;
    for (let x = 0; x < width; x++) {
      const fx = Math.min(Math.max(((x + 0.5) * m.width) / width - 0.5, 0), m.width - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, m.width - 1);
      const wx = fx - x0;
      for (let k = 0; k < c; k++) {
        const a = m.data[(y0 * m.width + x0) * c + k]!;
        const b = m.data[(y0 * m.width + x1) * c + k]!;
        const d = m.data[(y1 * m.width + x0) * c + k]!;
        const e = m.data[(y1 * m.width + x1) * c + k]!;
        out[(y * width + x) * c + k] = (1 - wy) * ((1 - wx) * a + wx * b) + wy * ((1 - wx) * d + wx * e);
      }
    }
  }
  return { height, width, channels: c, data: out };
}

/** Integer nearest-neighbour upscaling (crisp pixels for small patches). */
export function upscale(img: RgbImage, factor: number): RgbImage {
  if (factor === 1) return img;
  if (!Number.isInteger(factor) || factor < 1) throw new Error(`scale must be a positive integer, got ${factor}`);
  const w = img.width * factor;
  const h = img.height * factor;
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const sy = Math.floor(y / factor);
    for (let x = 0; x < w; x++) {
      const s = (sy * img.width + Math.floor(x / factor)) * 3;
      const o = (y * w + x) * 3;
      out[o] = img.data[s]!;
      out[o + 1] = img.data[s + 1]!;
      out[o + 2] = img.data[s + 2]!;
    }
  }
  return { width: w, height: h, data: out };
}

/** Encode an RGB image as PNG. */
export async function rgbToPng(img: RgbImage): Promise<Buffer> {
  return sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), { raw: { width: img.width, height: img.height, channels: 3 } })
    .png()
    .toBuffer();
}

/** Decode a PNG/JPEG (or any format sharp reads) to RGB, flattening alpha onto white. */
export async function decodeToRgb(buf: Buffer | Uint8Array): Promise<RgbImage> {
  const { data, info } = await sharp(buf).flatten({ background: "#ffffff" }).removeAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`decoded image has ${info.channels} channels, expected 3`);
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** True if `b` starts with the PNG signature. */
export function isPngBuffer(b: unknown): b is Buffer {
  return b instanceof Uint8Array && b.length >= 8 && Buffer.from(b.buffer, b.byteOffset, 8).equals(PNG_SIGNATURE);
}

/** Width and height from a PNG's IHDR chunk (no decoding). */
export function pngDimensions(b: Uint8Array): { width: number; height: number } {
  if (!isPngBuffer(b) || b.length < 24) throw new Error("not a PNG");
  const v = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  return { width: v.readUInt32BE(16), height: v.readUInt32BE(20) };
}
