/**
 * A small, exact PNG codec for masks (and deterministic RGB output).
 *
 * sharp cannot hand back the raw indices of a palette-mode PNG, and segmentation
 * masks in LUAD-HistoSeg and BCSS-WSSS are palette-mode PNGs whose indices are
 * the class ids. This module reads and writes those files byte-exactly with
 * node:zlib: it encodes 8-bit palette images (colour type 3, with PLTE) and
 * 8-bit RGB images (colour type 2), and decodes colour types 0, 2, 3, 4 and 6 at
 * every bit depth the PNG specification allows, interlaced or not. Every damaged
 * file (bad signature, CRC mismatch, missing IEND, truncated or corrupt zlib
 * stream, wrong data length) is a {@link FileError} that names the file.
 */
import * as zlib from "node:zlib";
import { FileError } from "../util/errors";
import type { RGB } from "./types";

const SIGNATURE = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO 3309, as PNG uses it) of `data`, continuing from `crc`. */
export function crc32(data: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "ascii");
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

function ihdr(width: number, height: number, bitDepth: number, colorType: number): Buffer {
  const b = Buffer.alloc(13);
  b.writeUInt32BE(width, 0);
  b.writeUInt32BE(height, 4);
  b[8] = bitDepth;
  b[9] = colorType;
  b[10] = 0; // deflate
  b[11] = 0; // adaptive filtering
  b[12] = 0; // no interlace
  return b;
}

function checkDims(width: number, height: number, n: number, channels: number, what: string): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new Error(`${what}: width and height must be positive integers, got ${width}x${height}`);
  }
  if (n !== width * height * channels) throw new Error(`${what}: expected ${width * height * channels} values for ${width}x${height}x${channels}, got ${n}`);
}

/** Options of the PNG encoders. */
export interface PngEncodeOptions {
  /** zlib level 0-9; default 6. Output bytes depend on it (and on Node's zlib). */
  level?: number;
}

/**
 * Encode an 8-bit palette-mode PNG (colour type 3): one byte per pixel, the
 * palette index, which for a mask is the class id (e.g. 0 TE, 1 NEC, 2 LYM,
 * 3 TAS, 4 background in LUAD-HistoSeg). Deterministic: the same input gives
 * the same bytes (filter "none" on every row, fixed zlib settings).
 */
export function encodePalettePng(indices: Uint8Array, width: number, height: number, palette: readonly RGB[], opts: PngEncodeOptions = {}): Buffer {
  checkDims(width, height, indices.length, 1, "encodePalettePng");
  if (palette.length < 1 || palette.length > 256) throw new Error(`encodePalettePng: palette must have 1..256 entries, got ${palette.length}`);
  for (let i = 0; i < indices.length; i++) {
    if (indices[i]! >= palette.length) throw new Error(`encodePalettePng: pixel ${i} has index ${indices[i]}, but the palette has ${palette.length} entries`);
  }
  const plte = Buffer.alloc(palette.length * 3);
  palette.forEach((c, i) => plte.set(c, i * 3));
  const raw = Buffer.alloc((width + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width + 1)] = 0;
    raw.set(indices.subarray(y * width, (y + 1) * width), y * (width + 1) + 1);
  }
  const idat = zlib.deflateSync(raw, { level: opts.level ?? 6 });
  return Buffer.concat([SIGNATURE, chunk("IHDR", ihdr(width, height, 8, 3)), chunk("PLTE", plte), chunk("IDAT", idat), chunk("IEND", new Uint8Array(0))]);
}

/**
 * Encode an 8-bit RGB PNG (colour type 2) from interleaved RGB bytes. Rows are
 * filtered with the usual minimum-sum-of-absolute-differences heuristic over the
 * five PNG filters, so the bytes are a pure function of the pixels.
 */
export function encodeRgbPng(rgb: Uint8Array, width: number, height: number, opts: PngEncodeOptions = {}): Buffer {
  checkDims(width, height, rgb.length, 3, "encodeRgbPng");
  const stride = width * 3;
  const raw = Buffer.alloc((stride + 1) * height);
  const cand = Array.from({ length: 5 }, () => new Uint8Array(stride));
  for (let y = 0; y < height; y++) {
    const row = rgb.subarray(y * stride, (y + 1) * stride);
    const prev = y > 0 ? rgb.subarray((y - 1) * stride, y * stride) : undefined;
    const c0 = cand[0]!;
    const c1 = cand[1]!;
    const c2 = cand[2]!;
    const c3 = cand[3]!;
    const c4 = cand[4]!;
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    let s4 = 0;
    for (let i = 0; i < stride; i++) {
      const x = row[i]!;
      const a = i >= 3 ? row[i - 3]! : 0;
      const b = prev ? prev[i]! : 0;
      const c = prev && i >= 3 ? prev[i - 3]! : 0;
      const p = a + b - c;
      const pa = p > a ? p - a : a - p;
      const pb = p > b ? p - b : b - p;
      const pc = p > c ? p - c : c - p;
      const pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      const v1 = (x - a) & 255;
      const v2 = (x - b) & 255;
      const v3 = (x - ((a + b) >> 1)) & 255;
      const v4 = (x - pred) & 255;
      c0[i] = x;
      c1[i] = v1;
      c2[i] = v2;
      c3[i] = v3;
      c4[i] = v4;
      s0 += x < 128 ? x : 256 - x;
      s1 += v1 < 128 ? v1 : 256 - v1;
      s2 += v2 < 128 ? v2 : 256 - v2;
      s3 += v3 < 128 ? v3 : 256 - v3;
      s4 += v4 < 128 ? v4 : 256 - v4;
    }
    // Minimum sum of absolute differences; ties go to the lower filter number.
    const sums = [s0, s1, s2, s3, s4];
    let best = 0;
    for (let f = 1; f < 5; f++) if (sums[f]! < sums[best]!) best = f;
    raw[y * (stride + 1)] = best;
    raw.set(cand[best]!, y * (stride + 1) + 1);
  }
  const idat = zlib.deflateSync(raw, { level: opts.level ?? 6 });
  return Buffer.concat([SIGNATURE, chunk("IHDR", ihdr(width, height, 8, 2)), chunk("IDAT", idat), chunk("IEND", new Uint8Array(0))]);
}

/** A decoded PNG: samples unpacked to one array element per channel per pixel. */
export interface DecodedPng {
  width: number;
  height: number;
  /** PNG colour type: 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA. */
  colorType: number;
  bitDepth: number;
  /** Samples per pixel: 1 (grey, palette), 2, 3 or 4. */
  channels: number;
  /** Row-major samples, `channels` per pixel; palette indices for colour type 3; 16-bit files give a Uint16Array. */
  data: Uint8Array | Uint16Array;
  /** The PLTE chunk as colours, for colour type 3 (and optional for 2/6). */
  palette?: RGB[];
}

const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const DEPTHS: Record<number, number[]> = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };
const ADAM7: [number, number, number, number][] = [
  [0, 0, 8, 8],
  [4, 0, 8, 8],
  [0, 4, 4, 8],
  [2, 0, 4, 4],
  [0, 2, 2, 4],
  [1, 0, 2, 2],
  [0, 1, 1, 2],
];

/**
 * Decode a PNG file's bytes. `file` names the file in errors. Checks the
 * signature, every chunk's CRC, IHDR validity, the presence of IDAT and IEND,
 * the zlib stream and the length of the decompressed data.
 */
export function decodePng(buf: Uint8Array, file = "<buffer>"): DecodedPng {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 8 || !b.subarray(0, 8).equals(SIGNATURE)) throw new FileError(file, "not a PNG file (bad signature)");
  let pos = 8;
  let header: { width: number; height: number; bitDepth: number; colorType: number; interlace: number } | undefined;
  let palette: RGB[] | undefined;
  const idat: Buffer[] = [];
  let ended = false;
  while (pos < b.length) {
    if (pos + 12 > b.length) throw new FileError(file, `truncated PNG: chunk header cut off at byte ${pos} of ${b.length}`);
    const len = b.readUInt32BE(pos);
    const type = b.toString("latin1", pos + 4, pos + 8);
    if (pos + 12 + len > b.length) throw new FileError(file, `truncated PNG: chunk ${type} needs ${len} bytes at byte ${pos}, file has ${b.length}`);
    const data = b.subarray(pos + 8, pos + 8 + len);
    const crc = b.readUInt32BE(pos + 8 + len);
    if (crc32(b.subarray(pos + 4, pos + 8 + len)) !== crc) throw new FileError(file, `corrupt PNG: CRC mismatch in chunk ${type} at byte ${pos}`);
    pos += 12 + len;
    if (type === "IHDR") {
      if (len !== 13) throw new FileError(file, `corrupt PNG: IHDR has ${len} bytes, expected 13`);
      header = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), bitDepth: data[8]!, colorType: data[9]!, interlace: data[12]! };
      if (data[10] !== 0 || data[11] !== 0) throw new FileError(file, "unsupported PNG: unknown compression or filter method");
    } else if (type === "PLTE") {
      if (len % 3 !== 0 || len === 0 || len > 768) throw new FileError(file, `corrupt PNG: PLTE has ${len} bytes`);
      palette = [];
      for (let i = 0; i < len; i += 3) palette.push([data[i]!, data[i + 1]!, data[i + 2]!]);
    } else if (type === "IDAT") {
      idat.push(data);
    } else if (type === "IEND") {
      ended = true;
      break;
    }
  }
  if (!header) throw new FileError(file, "corrupt PNG: no IHDR chunk");
  if (!ended) throw new FileError(file, "truncated PNG: no IEND chunk");
  if (idat.length === 0) throw new FileError(file, "corrupt PNG: no IDAT chunk");
  const { width, height, bitDepth, colorType, interlace } = header;
  const channels = CHANNELS[colorType];
  if (channels === undefined || !DEPTHS[colorType]!.includes(bitDepth)) throw new FileError(file, `corrupt PNG: colour type ${colorType} with bit depth ${bitDepth}`);
  if (width === 0 || height === 0) throw new FileError(file, `corrupt PNG: size ${width}x${height}`);
  if (interlace > 1) throw new FileError(file, `corrupt PNG: interlace method ${interlace}`);
  if (colorType === 3 && !palette) throw new FileError(file, "corrupt PNG: palette image without PLTE");
  let raw: Buffer;
  try {
    raw = zlib.inflateSync(Buffer.concat(idat));
  } catch (e) {
    throw new FileError(file, `corrupt PNG: image data does not decompress (${(e as Error).message})`);
  }
  const bitsPerPixel = channels * bitDepth;
  const bpp = Math.max(1, bitsPerPixel >> 3);
  const out = bitDepth === 16 ? new Uint16Array(width * height * channels) : new Uint8Array(width * height * channels);
  const passes: [number, number, number, number][] = interlace ? ADAM7 : [[0, 0, 1, 1]];
  let off = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const pw = Math.ceil((width - x0) / dx);
    const ph = Math.ceil((height - y0) / dy);
    if (pw <= 0 || ph <= 0) continue;
    const stride = Math.ceil((pw * bitsPerPixel) / 8);
    const need = (stride + 1) * ph;
    if (off + need > raw.length) throw new FileError(file, `truncated PNG: image data has ${raw.length} bytes, ${width}x${height} needs more`);
    let prev = new Uint8Array(stride);
    let cur = new Uint8Array(stride);
    for (let y = 0; y < ph; y++) {
      const ft = raw[off]!;
      const line = raw.subarray(off + 1, off + 1 + stride);
      off += stride + 1;
      switch (ft) {
        case 0:
          cur.set(line);
          break;
        case 1:
          for (let i = 0; i < stride; i++) cur[i] = (line[i]! + (i >= bpp ? cur[i - bpp]! : 0)) & 255;
          break;
        case 2:
          for (let i = 0; i < stride; i++) cur[i] = (line[i]! + prev[i]!) & 255;
          break;
        case 3:
          for (let i = 0; i < stride; i++) cur[i] = (line[i]! + (((i >= bpp ? cur[i - bpp]! : 0) + prev[i]!) >> 1)) & 255;
          break;
        case 4:
          for (let i = 0; i < bpp && i < stride; i++) cur[i] = (line[i]! + prev[i]!) & 255;
          for (let i = bpp; i < stride; i++) {
            const a = cur[i - bpp]!;
            const b = prev[i]!;
            const c = prev[i - bpp]!;
            const p = a + b - c;
            const pa = p > a ? p - a : a - p;
            const pb = p > b ? p - b : b - p;
            const pc = p > c ? p - c : c - p;
            cur[i] = (line[i]! + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c)) & 255;
          }
          break;
        default:
          throw new FileError(file, `corrupt PNG: unknown filter type ${ft} on row ${y}`);
      }
      // Unpack the row into out.
      const yy = y0 + y * dy;
      if (bitDepth === 8 && !interlace) {
        out.set(cur, yy * width * channels);
        const t = prev;
        prev = cur;
        cur = t;
        continue;
      }
      for (let px = 0; px < pw; px++) {
        const xx = x0 + px * dx;
        const base = (yy * width + xx) * channels;
        for (let ch = 0; ch < channels; ch++) {
          const s = px * channels + ch;
          let v: number;
          if (bitDepth === 8) v = cur[s]!;
          else if (bitDepth === 16) v = (cur[2 * s]! << 8) | cur[2 * s + 1]!;
          else {
            const bit = s * bitDepth;
            v = (cur[bit >> 3]! >> (8 - bitDepth - (bit & 7))) & ((1 << bitDepth) - 1);
          }
          out[base + ch] = v;
        }
      }
      const t = prev;
      prev = cur;
      cur = t;
    }
  }
  return { width, height, colorType, bitDepth, channels, data: out, palette };
}

/** True when the bytes start with the PNG signature. */
export function isPng(buf: Uint8Array): boolean {
  return buf.length >= 8 && Buffer.from(buf.buffer, buf.byteOffset, 8).equals(SIGNATURE);
}
