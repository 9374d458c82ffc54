/**
 * The `.safetensors` format (Hugging Face): an 8-byte little-endian header length
 * N, N bytes of JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}`,
 * then the byte buffer the offsets index into.
 *
 * The reader validates everything before touching tensor bytes: the header must fit
 * in the file, every dtype must be known, every shape must match its byte length,
 * offsets must lie inside the buffer and must not overlap. A malformed file is a
 * {@link FileError} naming the file and the problem; nothing past the file is read.
 * F16, BF16 and F64 tensors are converted to float32.
 */
import * as fs from "node:fs";
import { FileError } from "../util/errors";
import { writeFileAtomic } from "../util/fs";
import type { HostTensor, NamedTensors } from "./tensors";

const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };
const FLOAT_DTYPES = new Set(["F32", "F16", "BF16", "F64"]);

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export interface SafetensorsHeader {
  tensors: Map<string, HeaderEntry>;
  metadata: Record<string, string>;
  /** Byte offset of the data buffer in the file. */
  dataStart: number;
}

/** Parse and validate the header of a safetensors byte buffer (the whole file). */
export function parseSafetensorsHeader(bytes: Uint8Array, file = "<buffer>"): SafetensorsHeader {
  if (bytes.byteLength < 8) throw new FileError(file, `not a safetensors file: ${bytes.byteLength} bytes, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(bytes.byteLength - 8)) {
    throw new FileError(file, `safetensors header length ${n} is longer than the rest of the file (${bytes.byteLength - 8} bytes)`);
  }
  const headerLen = Number(n);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, headerLen).toString("utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new FileError(file, `safetensors header is not valid JSON: ${(e as Error).message}`);
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) throw new FileError(file, "safetensors header is not a JSON object");
  const dataStart = 8 + headerLen;
  const dataLen = bytes.byteLength - dataStart;
  const tensors = new Map<string, HeaderEntry>();
  let metadata: Record<string, string> = {};
  const spans: [number, number, string][] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (raw === null || typeof raw !== "object" || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === "string")) {
        throw new FileError(file, `safetensors __metadata__ is not an object of strings: ${JSON.stringify(raw).slice(0, 80)}`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const e = raw as Partial<HeaderEntry>;
    if (!e || typeof e !== "object") throw new FileError(file, `tensor "${name}": header entry is not an object`);
    if (typeof e.dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, e.dtype)) throw new FileError(file, `tensor "${name}": unknown dtype ${JSON.stringify(e.dtype)}`);
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new FileError(file, `tensor "${name}": shape ${JSON.stringify(e.shape)} is not a list of non-negative integers`);
    }
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isInteger(o) && o >= 0) || off[0] > off[1]) {
      throw new FileError(file, `tensor "${name}": data_offsets ${JSON.stringify(off)} are not [begin, end] with begin <= end`);
    }
    if (off[1] > dataLen) {
      throw new FileError(file, `tensor "${name}": data_offsets [${off[0]}, ${off[1]}] run past the end of the data (${dataLen} bytes)`);
    }
    const expected = e.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[e.dtype]!;
    if (off[1] - off[0] !== expected) {
      throw new FileError(file, `tensor "${name}": ${off[1] - off[0]} bytes for shape [${e.shape.join(", ")}] of ${e.dtype} (expected ${expected})`);
    }
    tensors.set(name, { dtype: e.dtype, shape: e.shape, data_offsets: [off[0], off[1]] });
    if (off[1] > off[0]) spans.push([off[0], off[1], name]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i]![0] < spans[i - 1]![1]) {
      throw new FileError(file, `tensors "${spans[i - 1]![2]}" and "${spans[i]![2]}" overlap in the data buffer`);
    }
  }
  return { tensors, metadata, dataStart };
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

function decode(bytes: Uint8Array, start: number, e: HeaderEntry, file: string, name: string): Float32Array {
  const count = e.shape.reduce((a, b) => a * b, 1);
  const view = new DataView(bytes.buffer, bytes.byteOffset + start + e.data_offsets[0], e.data_offsets[1] - e.data_offsets[0]);
  const out = new Float32Array(count);
  switch (e.dtype) {
    case "F32":
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      break;
    case "F64":
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
      break;
    case "F16":
      for (let i = 0; i < count; i++) out[i] = f16ToF32(view.getUint16(i * 2, true));
      break;
    case "BF16": {
      const tmp = new DataView(new ArrayBuffer(4));
      for (let i = 0; i < count; i++) {
        tmp.setUint32(0, view.getUint16(i * 2, true) << 16, true);
        out[i] = tmp.getFloat32(0, true);
      }
      break;
    }
    default:
      throw new FileError(file, `tensor "${name}": dtype ${e.dtype} is not a float type; pbip reads float weights only`);
  }
  return out;
}

export interface ReadSafetensorsOptions {
  /** Keep only names this returns true for (others are not decoded). */
  filter?: (name: string) => boolean;
  /** Skip non-float tensors (e.g. BatchNorm's num_batches_tracked) instead of failing. Default true. */
  skipNonFloat?: boolean;
}

/** Read float tensors from a safetensors file (or buffer), converted to float32. */
export function readSafetensors(fileOrBytes: string | Uint8Array, options: ReadSafetensorsOptions = {}): NamedTensors {
  const file = typeof fileOrBytes === "string" ? fileOrBytes : "<buffer>";
  let bytes: Uint8Array;
  if (typeof fileOrBytes === "string") {
    try {
      bytes = fs.readFileSync(fileOrBytes);
    } catch (e) {
      throw new FileError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  } else {
    bytes = fileOrBytes;
  }
  const header = parseSafetensorsHeader(bytes, file);
  const out: NamedTensors = new Map();
  for (const [name, e] of header.tensors) {
    if (options.filter && !options.filter(name)) continue;
    if (!FLOAT_DTYPES.has(e.dtype)) {
      if (options.skipNonFloat ?? true) continue;
      throw new FileError(file, `tensor "${name}": dtype ${e.dtype} is not a float type`);
    }
    out.set(name, { dtype: "float32", shape: [...e.shape], data: decode(bytes, header.dataStart, e, file, name) });
  }
  return out;
}

/** Serialise float32 tensors as safetensors bytes (names sorted, 8-byte aligned header). */
export function encodeSafetensors(tensors: NamedTensors | Record<string, HostTensor>, metadata: Record<string, string> = {}): Buffer {
  const entries = (tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors)).sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`tensor "${name}": shape [${t.shape}] has ${n} elements but data has ${t.data.length}`);
    header[name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + n * 4] };
    offset += n * 4;
  }
  let json = Buffer.from(JSON.stringify(header), "utf8");
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const out = Buffer.alloc(8 + json.length + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(out, 8);
  let p = 8 + json.length;
  for (const [, t] of entries) {
    for (let i = 0; i < t.data.length; i++, p += 4) out.writeFloatLE(t.data[i]!, p);
  }
  return out;
}

/** Write float32 tensors to a safetensors file, atomically. */
export function writeSafetensors(file: string, tensors: NamedTensors | Record<string, HostTensor>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}
