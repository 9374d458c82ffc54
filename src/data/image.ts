/**
 * Reading and writing patches and masks.
 *
 * Patches come through sharp as 8-bit RGB (alpha dropped, grey expanded). pbip
 * is RGB throughout; note that the authors' release reads patches with OpenCV
 * and feeds them to its network as BGR without converting (METHOD.md section 6);
 * a model trained by the release therefore expects BGR, one trained by pbip RGB.
 *
 * Masks are palette-mode PNGs whose indices are class ids (background = N), in
 * the dataset's palette; they are read and written with the exact codec in
 * `png.ts`, never through sharp, which would turn indices into colours.
 */
import * as fs from "node:fs";
import sharp from "sharp";
import * as tf from "@tensorflow/tfjs";
import { FileError } from "../util/errors";
import { writeFileAtomic } from "../util/fs";
import { decodePng, encodePalettePng, encodeRgbPng, isPng } from "./png";
import type { DatasetSpec, RGB } from "./types";

/** An RGB image in memory: interleaved bytes, `width * height * 3`. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** A class-id mask in memory: one id per pixel (background = spec.backgroundId). */
export interface MaskImage {
  ids: Uint8Array;
  width: number;
  height: number;
}

/** Options of {@link readImage}. */
export interface ReadImageOptions {
  /** Expected side (square patches); another size is an error unless `resize` is set. */
  expectSize?: number;
  /** Resize to this side (bilinear) when the image has another size. */
  resize?: number;
}

/** The PNG signature and the IEND chunk a complete PNG ends with. */
const PNG_IEND = Buffer.from([0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]);

function fileProblem(file: string, e: unknown, bytes?: Uint8Array): FileError {
  if (e instanceof FileError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return new FileError(file, "file not found");
  if (code) return new FileError(file, `cannot read: ${code}`);
  const msg = (e as Error).message ?? String(e);
  // libpng's messages do not always reach sharp ("Unknown error"): look at the bytes too.
  if (bytes && bytes.length === 0) return new FileError(file, "empty file");
  if (bytes && isPng(bytes) && !Buffer.from(bytes.subarray(Math.max(0, bytes.length - 8))).equals(PNG_IEND)) return new FileError(file, `truncated PNG: it does not end with an IEND chunk (${bytes.length} bytes; decoder: ${msg})`);
  return new FileError(file, /read error|truncat|premature|corrupt|crc|unexpected end/i.test(msg) ? `truncated or corrupt image (${msg})` : `unreadable image (${msg})`);
}

/** RGB images (bytes, each `size` x `size`) as one [N, size, size, 3] float tensor in [0, 1]: the input every pbip network and encoder takes. */
export function rgbToTensor(rgbs: readonly Uint8Array[], size: number): tf.Tensor4D {
  const data = new Float32Array(rgbs.length * size * size * 3);
  rgbs.forEach((rgb, i) => {
    if (rgb.length !== size * size * 3) throw new Error(`rgbToTensor: image ${i} has ${rgb.length} bytes, expected ${size} x ${size} x 3`);
    const off = i * size * size * 3;
    for (let j = 0; j < rgb.length; j++) data[off + j] = rgb[j]! / 255;
  });
  return tf.tensor4d(data, [rgbs.length, size, size, 3]);
}

/**
 * Read image files of any size into one [N, size, size, 3] float tensor in [0, 1]
 * (resized bilinearly where needed), e.g. your own patches for `computeCams`:
 *
 * @example
 * const x = await readImagesTensor(["a.png", "b.png"], config.data.inputSize);
 */
export async function readImagesTensor(files: readonly string[], size: number): Promise<tf.Tensor4D> {
  const imgs = await Promise.all(files.map((f) => readImage(f, { resize: size })));
  return rgbToTensor(imgs.map((im) => im.data), size);
}

/**
 * Read a patch as 8-bit RGB with sharp (asynchronous; decoding runs off the main
 * thread). Errors name the file: missing, unreadable, truncated or corrupt, or of
 * the wrong size (unless `resize` is asked for).
 */
export async function readImage(file: string, opts: ReadImageOptions = {}): Promise<RgbImage> {
  let out: { data: Buffer; info: sharp.OutputInfo };
  let buf: Buffer | undefined;
  try {
    buf = await fs.promises.readFile(file);
    out = await sharp(buf, { failOn: "truncated" }).removeAlpha().toColourspace("srgb").raw().toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw fileProblem(file, e, buf);
  }
  let { data } = out;
  const { width, height, channels } = out.info;
  if (channels !== 3) throw new FileError(file, `decoded to ${channels} channels, expected RGB`);
  const want = opts.resize ?? opts.expectSize;
  if (want !== undefined && (width !== want || height !== want)) {
    if (opts.resize === undefined) {
      throw new FileError(file, `patch is ${width}x${height}, the dataset's patches are ${want}x${want}; ask for resizing (resize: ${want}, --resize ${want}) to use it`);
    }
    data = await sharp(data, { raw: { width, height, channels: 3 } }).resize(want, want, { fit: "fill", kernel: "linear" }).raw().toBuffer();
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: want, height: want };
  }
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height };
}

/** Write an RGB image as PNG, atomically (deterministic bytes: pbip's own encoder). */
export function writeImage(file: string, img: RgbImage): void {
  writeFileAtomic(file, encodeRgbPng(img.data, img.width, img.height));
}

function sameColour(a: readonly number[], b: readonly number[]): boolean {
  return a[0] === b[0] && a[1] === b[1] && a[2] === b[2];
}

/** Options of {@link readMask}. */
export interface ReadMaskOptions {
  /** Resize to this side (nearest neighbour) when the mask has another size. */
  resize?: number;
  /** Expected side; another size is an error unless `resize` is set. */
  expectSize?: number;
  /** Check that every id is a valid mask id (default true when a spec is given). */
  validate?: boolean;
}

/**
 * Turn decoded mask pixels into class ids.
 * - palette PNG (colour type 3): the indices are the ids. When the file's PLTE
 *   differs from the dataset palette but each used colour is in it, ids are
 *   mapped by colour (a mask re-saved by another tool with a reordered palette).
 * - grey PNG (type 0/4): the grey values are the ids.
 * - RGB(A) PNG (type 2/6): colours are mapped through the dataset palette; a
 *   colour outside it is an error.
 */
export function maskIdsFromPng(dec: ReturnType<typeof decodePng>, file: string, spec?: Pick<DatasetSpec, "palette" | "name">): Uint8Array {
  const n = dec.width * dec.height;
  const ids = new Uint8Array(n);
  const d = dec.data;
  const shift = dec.bitDepth === 16 ? 8 : 0;
  if (dec.colorType === 3) {
    const pal = dec.palette!;
    let remap: Int16Array | undefined;
    if (spec) {
      const used = new Uint8Array(256);
      for (let i = 0; i < n; i++) used[d[i]!] = 1;
      let matches = true;
      for (let k = 0; k < 256; k++) if (used[k] && (k >= spec.palette.length || k >= pal.length || !sameColour(pal[k]!, spec.palette[k]!))) matches = false;
      if (!matches) {
        const m = new Int16Array(256).fill(-1);
        let all = true;
        for (let k = 0; k < 256; k++) {
          if (!used[k]) continue;
          const j = k < pal.length ? spec.palette.findIndex((c) => sameColour(c, pal[k]!)) : -1;
          if (j < 0) all = false;
          m[k] = j;
        }
        // If the colours do not all match either, trust the indices (the common PIL convention).
        if (all) remap = m;
      }
    }
    for (let i = 0; i < n; i++) ids[i] = remap ? remap[d[i]!]! : d[i]!;
    return ids;
  }
  if (dec.colorType === 0 || dec.colorType === 4) {
    const c = dec.channels;
    for (let i = 0; i < n; i++) {
      const v = d[i * c]!;
      if (v > 255) throw new FileError(file, `grey mask value ${v} at pixel ${i} is not a class id`);
      ids[i] = v;
    }
    return ids;
  }
  // RGB / RGBA: map through the palette.
  if (!spec) throw new FileError(file, "RGB mask: a dataset palette is needed to map colours to class ids");
  const c = dec.channels;
  const lut = new Map<number, number>();
  spec.palette.forEach((p, k) => lut.set((p[0] << 16) | (p[1] << 8) | p[2], k));
  for (let i = 0; i < n; i++) {
    const key = ((d[i * c]! >> shift) << 16) | ((d[i * c + 1]! >> shift) << 8) | (d[i * c + 2]! >> shift);
    const id = lut.get(key);
    if (id === undefined) {
      const x = i % dec.width;
      const y = Math.floor(i / dec.width);
      throw new FileError(file, `colour ${key >> 16},${(key >> 8) & 255},${key & 255} at pixel (${x},${y}) is not in the ${spec.name} palette`);
    }
    ids[i] = id;
  }
  return ids;
}

/** Count of pixels per id (length 256). */
export function idHistogram(ids: Uint8Array): Uint32Array {
  const h = new Uint32Array(256);
  for (let i = 0; i < ids.length; i++) h[ids[i]!]!++;
  return h;
}

/** Nearest-neighbour resize of a mask (ids stay ids). */
export function resizeMaskNearest(mask: MaskImage, side: number): MaskImage {
  const out = new Uint8Array(side * side);
  for (let y = 0; y < side; y++) {
    const sy = Math.min(mask.height - 1, Math.floor(((y + 0.5) * mask.height) / side));
    for (let x = 0; x < side; x++) {
      const sx = Math.min(mask.width - 1, Math.floor(((x + 0.5) * mask.width) / side));
      out[y * side + x] = mask.ids[sy * mask.width + sx]!;
    }
  }
  return { ids: out, width: side, height: side };
}

/**
 * Read a mask as class ids (synchronous; see {@link maskIdsFromPng} for how each
 * PNG colour type is interpreted). With a spec, an id outside the palette
 * (greater than `backgroundId`) is a {@link FileError} naming the file, the
 * value and how many pixels carry it.
 */
export function readMask(file: string, spec?: Pick<DatasetSpec, "palette" | "name" | "backgroundId">, opts: ReadMaskOptions = {}): MaskImage {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw fileProblem(file, e);
  }
  if (!isPng(buf)) throw new FileError(file, "mask is not a PNG file (bad signature)");
  const dec = decodePng(buf, file);
  const ids = maskIdsFromPng(dec, file, spec);
  if (spec && opts.validate !== false) {
    const h = idHistogram(ids);
    const bad: string[] = [];
    for (let v = spec.palette.length; v < 256; v++) if (h[v]) bad.push(`${v} (${h[v]} px)`);
    if (bad.length) throw new FileError(file, `mask value${bad.length > 1 ? "s" : ""} ${bad.join(", ")} outside the ${spec.name} palette (ids 0..${spec.palette.length - 1})`);
  }
  let mask: MaskImage = { ids, width: dec.width, height: dec.height };
  const want = opts.resize ?? opts.expectSize;
  if (want !== undefined && (dec.width !== want || dec.height !== want)) {
    if (opts.resize === undefined) throw new FileError(file, `mask is ${dec.width}x${dec.height}, the dataset's patches are ${want}x${want}; ask for resizing to use it`);
    mask = resizeMaskNearest(mask, want);
  }
  return mask;
}

/**
 * Write a class-id mask as a palette-mode PNG in `palette` (indices = ids),
 * atomically, byte-for-byte deterministic.
 */
export function writeMask(file: string, ids: Uint8Array, width: number, height: number, palette: readonly RGB[]): void {
  writeFileAtomic(file, encodePalettePng(ids, width, height, palette));
}

/** Colour a class-id mask with a palette: interleaved RGB bytes (for figures). */
export function colorizeMask(ids: Uint8Array, palette: readonly RGB[]): Uint8Array {
  const out = new Uint8Array(ids.length * 3);
  for (let i = 0; i < ids.length; i++) {
    const c = palette[ids[i]!] ?? [0, 0, 0];
    out[i * 3] = c[0];
    out[i * 3 + 1] = c[1];
    out[i * 3 + 2] = c[2];
  }
  return out;
}

/** The multi-hot label of a mask: classes (ids below `numClasses`) with at least `minPixels` pixels. */
export function labelFromMask(ids: Uint8Array, numClasses: number, minPixels = 1): number[] {
  const h = idHistogram(ids);
  return Array.from({ length: numClasses }, (_, c) => (h[c]! >= minPixels ? 1 : 0));
}
