// The .safetensors reader on well-formed and malformed files: every malformed file
// must be a FileError that names the file and the problem, and nothing outside the
// file (or outside the given byte view) may be read.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { readSafetensors, parseSafetensorsHeader, encodeSafetensors, writeSafetensors } from "../../src/io";
import { FileError } from "../../src/util";
import { tmpDir } from "../tmp";

/** Assemble a file: u64 LE header length (or an override), header text, data bytes. */
function makeFile(header: unknown, data: Uint8Array | number[] = [], headerLength?: bigint): Buffer {
  const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header), "utf8");
  const out = Buffer.alloc(8 + json.length + data.length);
  out.writeBigUInt64LE(headerLength ?? BigInt(json.length), 0);
  json.copy(out, 8);
  Buffer.from(data).copy(out, 8 + json.length);
  return out;
}

function f32(...values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeFloatLE(v, i * 4));
  return b;
}

const dir = tmpDir("pbip-st-");
function onDisk(name: string, bytes: Uint8Array): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, bytes);
  return p;
}

/** Expect a FileError naming `file` whose message matches `re`, both from a path and from the bytes. */
function rejects(name: string, bytes: Uint8Array, re: RegExp): void {
  const file = onDisk(name, bytes);
  assert.throws(
    () => readSafetensors(file),
    (e: unknown) => e instanceof FileError && e.file === file && e.message.startsWith(file) && re.test(e.problem),
    `${name}: expected FileError matching ${re}`,
  );
  assert.throws(() => readSafetensors(bytes), (e: unknown) => e instanceof FileError && re.test(e.problem), `${name} (buffer)`);
}

const good = { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [1, 1], data_offsets: [8, 12] } };
const goodData = f32(1.5, -2, 3);

test("a well-formed file reads back its tensors and metadata", () => {
  const bytes = makeFile({ __metadata__: { format: "pt" }, ...good }, goodData);
  const t = readSafetensors(onDisk("good.safetensors", bytes));
  assert.deepEqual([...t.keys()], ["a", "b"]);
  assert.deepEqual(t.get("a"), { dtype: "float32", shape: [2], data: new Float32Array([1.5, -2]) });
  assert.deepEqual(t.get("b")!.shape, [1, 1]);
  assert.deepEqual(parseSafetensorsHeader(bytes).metadata, { format: "pt" });
  assert.equal(readSafetensors(bytes, { filter: (n) => n === "b" }).size, 1);
});

test("encode -> read round trip, names sorted, header 8-byte aligned", () => {
  const file = path.join(dir, "rt.safetensors");
  writeSafetensors(file, { z: { dtype: "float32", shape: [3], data: new Float32Array([1, 2, 3]) }, y: { dtype: "float32", shape: [], data: new Float32Array([7]) } }, { k: "v" });
  const bytes = fs.readFileSync(file);
  assert.equal(Number(bytes.readBigUInt64LE(0)) % 8, 0);
  const t = readSafetensors(file);
  assert.deepEqual([...t.keys()], ["y", "z"]);
  assert.deepEqual(t.get("y")!.data, new Float32Array([7]));
  assert.deepEqual(t.get("z")!.data, new Float32Array([1, 2, 3]));
  assert.throws(() => encodeSafetensors({ x: { dtype: "float32", shape: [2, 2], data: new Float32Array(3) } }), /"x": shape \[2,2\] has 4 elements but data has 3/);
});

test("F16, BF16 and F64 are converted to float32 exactly", () => {
  const f16 = [0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0xfc00, 0x3555];
  const bf16 = [0x3f80, 0xbfc0, 0x4049];
  const data = Buffer.alloc(f16.length * 2 + bf16.length * 2 + 16);
  f16.forEach((h, i) => data.writeUInt16LE(h, i * 2));
  bf16.forEach((h, i) => data.writeUInt16LE(h, f16.length * 2 + i * 2));
  data.writeDoubleLE(Math.PI, 20);
  data.writeDoubleLE(-1e-3, 28);
  const t = readSafetensors(
    makeFile(
      {
        h: { dtype: "F16", shape: [7], data_offsets: [0, 14] },
        b: { dtype: "BF16", shape: [3], data_offsets: [14, 20] },
        d: { dtype: "F64", shape: [2], data_offsets: [20, 36] },
      },
      data,
    ),
  );
  assert.deepEqual([...t.get("h")!.data], [1, -2, 65504, 2 ** -24, Infinity, -Infinity, Math.fround(0.333251953125)]);
  assert.deepEqual([...t.get("b")!.data], [1, -1.5, 3.140625]);
  assert.deepEqual([...t.get("d")!.data], [Math.fround(Math.PI), Math.fround(-1e-3)]);
});

test("non-float tensors are skipped by default and rejected on request", () => {
  const bytes = makeFile({ n: { dtype: "I64", shape: [1], data_offsets: [0, 8] }, a: { dtype: "F32", shape: [1], data_offsets: [8, 12] } }, Buffer.concat([Buffer.alloc(8), f32(2)]));
  assert.deepEqual([...readSafetensors(bytes).keys()], ["a"]);
  assert.throws(() => readSafetensors(bytes, { skipNonFloat: false }), (e: unknown) => e instanceof FileError && /"n": dtype I64 is not a float type/.test(e.problem));
});

test("file shorter than the 8-byte length prefix", () => {
  rejects("short.safetensors", Buffer.from([1, 2, 3]), /shorter than the 8-byte header length/);
  rejects("empty.safetensors", Buffer.alloc(0), /0 bytes/);
});

test("header longer than the file", () => {
  rejects("longheader.safetensors", makeFile(good, goodData, 10_000n), /header length 10000 is longer than the rest of the file/);
  rejects("hugeheader.safetensors", makeFile(good, goodData, 2n ** 63n + 5n), /header length \d+ is longer than the rest of the file/);
});

test("header that is not a JSON object", () => {
  rejects("notjson.safetensors", makeFile("{not json", []), /not valid JSON/);
  rejects("array.safetensors", makeFile([1, 2], []), /not a JSON object/);
  rejects("null.safetensors", makeFile("null", []), /not a JSON object/);
  rejects("entry.safetensors", makeFile({ a: 5 }, []), /"a": header entry is not an object/);
  rejects("zeroheader.safetensors", makeFile("", []), /not valid JSON/);
});

test("unknown dtype (including names inherited from Object.prototype)", () => {
  rejects("dtype.safetensors", makeFile({ a: { dtype: "F8_E4M3X", shape: [1], data_offsets: [0, 1] } }, [0]), /"a": unknown dtype "F8_E4M3X"/);
  rejects("dtype-proto.safetensors", makeFile({ a: { dtype: "toString", shape: [1], data_offsets: [0, 4] } }, f32(1)), /"a": unknown dtype "toString"/);
  rejects("dtype-missing.safetensors", makeFile({ a: { shape: [1], data_offsets: [0, 4] } }, f32(1)), /"a": unknown dtype undefined/);
});

test("bad shapes", () => {
  rejects("shape-neg.safetensors", makeFile({ a: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, f32(1)), /"a": shape \[-1\] is not a list of non-negative integers/);
  rejects("shape-frac.safetensors", makeFile({ a: { dtype: "F32", shape: [1.5], data_offsets: [0, 4] } }, f32(1)), /"a": shape/);
  rejects("shape-str.safetensors", makeFile({ a: { dtype: "F32", shape: "2", data_offsets: [0, 8] } }, f32(1, 2)), /"a": shape "2"/);
});

test("wrong byte length for the shape", () => {
  rejects("bytelen.safetensors", makeFile({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, f32(1, 2)), /"a": 8 bytes for shape \[3\] of F32 \(expected 12\)/);
  rejects("bytelen16.safetensors", makeFile({ a: { dtype: "F16", shape: [2, 2], data_offsets: [0, 4] } }, [0, 0, 0, 0]), /"a": 4 bytes for shape \[2, 2\] of F16 \(expected 8\)/);
  rejects(
    "bytelen-huge.safetensors",
    makeFile({ a: { dtype: "F32", shape: [2 ** 40, 2 ** 40], data_offsets: [0, 4] } }, f32(1)),
    /"a": 4 bytes for shape \[1099511627776, 1099511627776\] of F32/,
  );
});

test("offsets out of range, reversed or malformed", () => {
  rejects("past-end.safetensors", makeFile({ a: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, f32(1, 2)), /"a": data_offsets \[4, 12\] run past the end of the data \(8 bytes\)/);
  rejects("begin-past.safetensors", makeFile({ a: { dtype: "F32", shape: [0], data_offsets: [100, 100] } }, f32(1)), /"a": data_offsets \[100, 100\] run past the end of the data \(4 bytes\)/);
  rejects("reversed.safetensors", makeFile({ a: { dtype: "F32", shape: [1], data_offsets: [8, 4] } }, f32(1, 2)), /"a": data_offsets \[8,4\] are not \[begin, end\] with begin <= end/);
  rejects("negative.safetensors", makeFile({ a: { dtype: "F32", shape: [1], data_offsets: [-4, 0] } }, f32(1)), /"a": data_offsets \[-4,0\]/);
  rejects("three.safetensors", makeFile({ a: { dtype: "F32", shape: [1], data_offsets: [0, 4, 8] } }, f32(1, 2)), /"a": data_offsets \[0,4,8\]/);
  rejects("huge-offset.safetensors", makeFile({ a: { dtype: "F32", shape: [1], data_offsets: [1e300, 1e300 + 4] } }, f32(1)), /"a": data_offsets .* run past the end/);
});

test("overlapping offsets", () => {
  const data = f32(1, 2, 3);
  rejects(
    "overlap.safetensors",
    makeFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, data),
    /tensors "a" and "b" overlap in the data buffer/,
  );
  rejects(
    "same.safetensors",
    makeFile({ b: { dtype: "F32", shape: [1], data_offsets: [4, 8] }, a: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, data),
    /overlap in the data buffer/,
  );
  // Adjacent spans and empty tensors do not overlap.
  const ok = readSafetensors(
    makeFile(
      {
        a: { dtype: "F32", shape: [1], data_offsets: [0, 4] },
        e: { dtype: "F32", shape: [0], data_offsets: [4, 4] },
        b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
      },
      data,
    ),
  );
  assert.deepEqual([...ok.get("b")!.data], [2, 3]);
  assert.equal(ok.get("e")!.data.length, 0);
});

test("a truncated file is rejected wherever it is cut", () => {
  const whole = makeFile(good, goodData);
  const headerEnd = 8 + Number(whole.readBigUInt64LE(0));
  for (const cut of [1, 4, 7, 8, 20, headerEnd - 1, headerEnd, headerEnd + 5, whole.length - 1]) {
    const part = whole.subarray(0, cut);
    assert.throws(
      () => readSafetensors(onDisk(`cut${cut}.safetensors`, part)),
      (e: unknown) => e instanceof FileError && /shorter than|longer than the rest|run past the end|not valid JSON/.test(e.problem),
      `cut at ${cut}`,
    );
  }
});

test("a view into a larger buffer is never read past its end", () => {
  // The bytes right after the view hold the real tail of the file: a reader that used
  // the underlying ArrayBuffer instead of the view would silently succeed.
  const whole = makeFile(good, goodData);
  const host = new Uint8Array(whole.length + 16);
  host.set(whole, 16);
  const view = host.subarray(16, 16 + whole.length - 4);
  assert.throws(() => readSafetensors(view), (e: unknown) => e instanceof FileError && /"b": data_offsets \[8, 12\] run past the end of the data \(8 bytes\)/.test(e.problem));
  // ... and the full view inside the larger buffer reads correctly.
  const full = host.subarray(16, 16 + whole.length);
  assert.deepEqual([...readSafetensors(full).get("b")!.data], [3]);
});

test("metadata must be a map of strings", () => {
  rejects("meta-array.safetensors", makeFile({ __metadata__: [1], ...good }, goodData), /__metadata__ is not an object of strings/);
  rejects("meta-num.safetensors", makeFile({ __metadata__: { epoch: 3 }, ...good }, goodData), /__metadata__ is not an object of strings/);
});

test("a missing file is a FileError naming it", () => {
  const file = path.join(dir, "nope.safetensors");
  assert.throws(() => readSafetensors(file), (e: unknown) => e instanceof FileError && e.file === file && /cannot read: ENOENT/.test(e.problem));
});
