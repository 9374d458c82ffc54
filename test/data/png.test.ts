// The exact PNG codec (src/data/png.ts) and mask reading (src/data/image.ts)
// against independent decoders/encoders: PIL-written fixtures (palette at 1, 2,
// 4 and 8 bits, grey, RGB, RGBA, 16-bit grey; regenerate with
// /usr/bin/python3 test/data/reference/png_reference.py) and sharp (libpng),
// plus damaged files that must fail with an error naming the file.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import sharp from "sharp";
import { crc32, decodePng, encodePalettePng, encodeRgbPng } from "../../src/data/png";
import { readImage, readMask, writeMask, maskIdsFromPng, colorizeMask, readImagesTensor, rgbToTensor } from "../../src/data/image";
import { FileError } from "../../src/util/errors";
import type { RGB } from "../../src/data/types";
import { tmpDir } from "../tmp";

const FIX = path.join(__dirname, "fixtures");
const expected = JSON.parse(fs.readFileSync(path.join(FIX, "expected.json"), "utf8")) as {
  mask_ids: number[][];
  mask_ids_1bit: number[][];
  mask_ids_2bit: number[][];
  rgb: number[][][];
  grey16: number[][];
};
const LUAD: RGB[] = [
  [205, 51, 51],
  [0, 255, 0],
  [65, 105, 225],
  [255, 165, 0],
  [255, 255, 255],
];
const spec = { name: "luad-histoseg", palette: LUAD, backgroundId: 4 };
const flat = (a: number[][]): number[] => a.flat();

const pngTmp = (): string => tmpDir("pbip-png-");

test("crc32 matches the PNG specification's check value", () => {
  assert.equal(crc32(Buffer.from("123456789")), 0xcbf43926);
  assert.equal(crc32(Buffer.from("IEND")), 0xae426082);
});

test("palette masks written by PIL decode to the same ids at 1, 2, 4 and 8 bits", () => {
  for (const [file, ids] of [
    ["mask_p8.png", expected.mask_ids],
    ["mask_p_auto.png", expected.mask_ids], // PIL wrote this one with 4 bits per pixel
    ["mask_p1.png", expected.mask_ids_1bit],
    ["mask_p2.png", expected.mask_ids_2bit],
  ] as const) {
    const m = readMask(path.join(FIX, file), spec);
    assert.equal(m.width, ids[0]!.length, file);
    assert.equal(m.height, ids.length, file);
    assert.deepEqual(Array.from(m.ids), flat(ids), file);
  }
});

test("grey, RGB and RGBA masks, and a reordered palette, map to the same ids", () => {
  const want = flat(expected.mask_ids);
  for (const f of ["mask_grey.png", "mask_rgb.png", "mask_rgba.png", "mask_p_reordered.png"]) {
    assert.deepEqual(Array.from(readMask(path.join(FIX, f), spec).ids), want, f);
  }
  assert.throws(() => readMask(path.join(FIX, "mask_rgb.png")), /palette is needed/);
});

test("RGB and 16-bit grey images decode exactly", () => {
  const d = decodePng(fs.readFileSync(path.join(FIX, "rgb.png")));
  assert.equal(d.colorType, 2);
  assert.deepEqual(Array.from(d.data), expected.rgb.flat(2));
  const g = decodePng(fs.readFileSync(path.join(FIX, "grey16.png")));
  assert.equal(g.bitDepth, 16);
  assert.deepEqual(Array.from(g.data), flat(expected.grey16));
});

test("Adam7-interlaced PNGs (written by sharp) decode like sharp decodes them", async () => {
  const w = 37;
  const h = 23;
  const px = new Uint8Array(w * h * 3).map((_, i) => (i * 37 + (i >> 3)) & 255);
  const inter = await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png({ progressive: true }).toBuffer();
  assert.equal(inter[28], 1, "sharp wrote an interlaced file");
  const d = decodePng(inter);
  assert.deepEqual(Buffer.from(d.data as Uint8Array), Buffer.from(px));
});

test("pbip's encoders round-trip and are read identically by sharp (libpng)", async () => {
  const S = 31;
  const ids = new Uint8Array(S * S).map((_, i) => (i * 7 + (i >> 4)) % 5);
  const png = encodePalettePng(ids, S, S, LUAD);
  const d = decodePng(png);
  assert.equal(d.colorType, 3);
  assert.deepEqual(d.palette, LUAD);
  assert.deepEqual(Buffer.from(d.data as Uint8Array), Buffer.from(ids));
  // sharp expands the palette: each pixel must be the palette colour of its id.
  const viaSharp = await sharp(png).removeAlpha().raw().toBuffer();
  assert.deepEqual(viaSharp, Buffer.from(colorizeMask(ids, LUAD)));

  const rgb = new Uint8Array(S * 19 * 3).map((_, i) => (i * 131 + (i >> 2) * 17) & 255);
  const rgbPng = encodeRgbPng(rgb, S, 19);
  assert.deepEqual(Buffer.from(decodePng(rgbPng).data as Uint8Array), Buffer.from(rgb));
  assert.deepEqual(await sharp(rgbPng).raw().toBuffer(), Buffer.from(rgb));
  // Deterministic bytes.
  assert.deepEqual(encodeRgbPng(rgb, S, 19), rgbPng);
  assert.deepEqual(encodePalettePng(ids, S, S, LUAD), png);
});

test("encoders reject bad input", () => {
  assert.throws(() => encodePalettePng(new Uint8Array(4), 2, 3, LUAD), /expected 6 values/);
  assert.throws(() => encodePalettePng(new Uint8Array([0, 5, 1, 1]), 2, 2, LUAD), /index 5/);
  assert.throws(() => encodeRgbPng(new Uint8Array(5), 1, 1), /expected 3 values/);
});

test("damaged PNGs are FileErrors that name the file and the problem", () => {
  const dir = pngTmp();
  const good = encodePalettePng(new Uint8Array(64 * 64).map((_, i) => i % 5), 64, 64, LUAD);
  const cases: [string, Buffer, RegExp][] = [
    ["truncated.png", good.subarray(0, Math.floor(good.length / 2)), /truncated/],
    ["no-iend.png", good.subarray(0, good.length - 12), /no IEND/],
    ["not-png.png", Buffer.from("hello, not a png"), /signature/],
  ];
  const crcBad = Buffer.from(good);
  crcBad[40]! ^= 0xff; // a byte of the PLTE chunk
  cases.push(["crc.png", crcBad, /CRC mismatch/]);
  // A valid chunk structure whose zlib stream is garbage.
  const zBad = Buffer.from(good);
  const idatAt = zBad.indexOf("IDAT");
  const len = zBad.readUInt32BE(idatAt - 4);
  for (let i = 0; i < len; i++) zBad[idatAt + 4 + i] = 0x55;
  zBad.writeUInt32BE(crc32(zBad.subarray(idatAt, idatAt + 4 + len)), idatAt + 4 + len);
  cases.push(["zlib.png", zBad, /does not decompress/]);
  for (const [name, bytes, re] of cases) {
    const f = path.join(dir, name);
    fs.writeFileSync(f, bytes);
    assert.throws(
      () => readMask(f, spec),
      (e: unknown) => e instanceof FileError && e.file === f && re.test(e.message) && e.message.startsWith(f),
      name,
    );
  }
  assert.throws(() => readMask(path.join(dir, "missing.png"), spec), (e: unknown) => e instanceof FileError && /not found/.test(e.message));
  fs.rmSync(dir, { recursive: true });
});

test("a mask value outside the palette is reported with the value and pixel count", () => {
  const dir = pngTmp();
  const f = path.join(dir, "bad.png");
  const ids = new Uint8Array(16).fill(1);
  ids[3] = 7;
  ids[9] = 7;
  // Written with a larger palette so the file itself is valid.
  fs.writeFileSync(f, encodePalettePng(ids, 4, 4, [...LUAD, [1, 2, 3], [4, 5, 6], [7, 8, 9]]));
  assert.throws(
    () => readMask(f, spec),
    (e: unknown) => e instanceof FileError && e.file === f && /mask value 7 \(2 px\) outside the luad-histoseg palette/.test(e.message),
  );
  // Without a spec the ids come back raw.
  assert.equal(readMask(f).ids[3], 7);
  fs.rmSync(dir, { recursive: true });
});

test("writeMask is atomic and readMask reads it back; maskIdsFromPng needs a palette for RGB", () => {
  const dir = pngTmp();
  const f = path.join(dir, "sub", "m.png");
  const ids = new Uint8Array(20 * 10).map((_, i) => i % 5);
  writeMask(f, ids, 20, 10, LUAD);
  assert.deepEqual(fs.readdirSync(path.dirname(f)), ["m.png"], "no temporary file left behind");
  const m = readMask(f, spec);
  assert.deepEqual([m.width, m.height], [20, 10]);
  assert.deepEqual(Buffer.from(m.ids), Buffer.from(ids));
  const rgbDec = decodePng(encodeRgbPng(colorizeMask(ids, LUAD), 20, 10));
  assert.throws(() => maskIdsFromPng(rgbDec, "x.png"), /palette is needed/);
  fs.rmSync(dir, { recursive: true });
});

test("readImage gives RGB, drops alpha, expands grey, and refuses another size unless asked to resize", async () => {
  const dir = pngTmp();
  const rgba = path.join(dir, "rgba.png");
  await sharp(Buffer.alloc(8 * 8 * 4, 200), { raw: { width: 8, height: 8, channels: 4 } }).png().toFile(rgba);
  const grey = path.join(dir, "grey.png");
  await sharp(Buffer.alloc(8 * 8, 90), { raw: { width: 8, height: 8, channels: 1 } }).png().toFile(grey);
  const a = await readImage(rgba);
  assert.equal(a.data.length, 8 * 8 * 3);
  const g = await readImage(grey);
  assert.equal(g.data.length, 8 * 8 * 3);
  assert.deepEqual(Array.from(g.data.subarray(0, 3)), [90, 90, 90]);
  await assert.rejects(readImage(grey, { expectSize: 16 }), (e: unknown) => e instanceof FileError && e.file === grey && /8x8.*16x16.*resize/.test(e.message));
  const r = await readImage(grey, { expectSize: 16, resize: 16 });
  assert.deepEqual([r.width, r.height, r.data.length], [16, 16, 16 * 16 * 3]);
  const trunc = path.join(dir, "trunc.png");
  fs.writeFileSync(trunc, fs.readFileSync(rgba).subarray(0, 60));
  await assert.rejects(readImage(trunc), (e: unknown) => e instanceof FileError && e.file === trunc);
  fs.rmSync(dir, { recursive: true });
});

test("readImage: a truncated or empty image file says so, whatever message the decoder gives", async () => {
  const dir = pngTmp();
  const good = encodeRgbPng(new Uint8Array(32 * 32 * 3).map((_, i) => i % 251), 32, 32);
  for (const [name, bytes, re] of [
    ["cut.png", good.subarray(0, Math.floor(good.length * 0.6)), /truncated PNG: it does not end with an IEND chunk/],
    ["empty.png", Buffer.alloc(0), /: empty file$/],
  ] as const) {
    const f = path.join(dir, name);
    fs.writeFileSync(f, bytes);
    await assert.rejects(readImage(f), (e: unknown) => e instanceof FileError && e.file === f && re.test(e.message));
  }
  fs.rmSync(dir, { recursive: true });
});

test("readImagesTensor: files of any size become one [N, size, size, 3] tensor in [0, 1]", async () => {
  const dir = pngTmp();
  const a = new Uint8Array(8 * 8 * 3).map((_, i) => (i * 7) % 256);
  fs.writeFileSync(path.join(dir, "a.png"), encodeRgbPng(a, 8, 8));
  fs.writeFileSync(path.join(dir, "b.png"), encodeRgbPng(new Uint8Array(16 * 16 * 3).fill(255), 16, 16));
  const x = await readImagesTensor([path.join(dir, "a.png"), path.join(dir, "b.png")], 8);
  assert.deepEqual(x.shape, [2, 8, 8, 3]);
  const v = await x.data();
  for (let i = 0; i < a.length; i++) assert.ok(Math.abs(v[i]! - a[i]! / 255) < 1e-7, "an image of the right size is not resampled");
  for (let i = a.length; i < v.length; i++) assert.ok(Math.abs(v[i]! - 1) < 1e-6, "white stays white when resized");
  x.dispose();
  assert.throws(() => rgbToTensor([new Uint8Array(5)], 8), /image 0 has 5 bytes, expected 8 x 8 x 3/);
  fs.rmSync(dir, { recursive: true });
});
