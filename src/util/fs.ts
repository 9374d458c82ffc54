import * as fs from "node:fs";
import * as path from "node:path";
import * as crypto from "node:crypto";
import { FileError } from "./errors";

/**
 * Write a file atomically: write a temporary file beside it, fsync, then rename.
 * A reader sees either the old file or the whole new one, never a partial write.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`);
  const fd = fs.openSync(tmp, "w");
  try {
    fs.writeSync(fd, typeof data === "string" ? Buffer.from(data, "utf8") : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Write JSON atomically, pretty-printed, with a trailing newline. */
export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + "\n");
}

/** Read and parse a JSON file; errors name the file. */
export function readJson<T = unknown>(file: string): T {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new FileError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new FileError(file, `not valid JSON: ${(e as Error).message}`);
  }
}

/** What an existing folder must be for {@link writeDirAtomic} to replace it. */
export interface ReplaceRule {
  /** True when the existing, non-empty folder is one this writer made (e.g. it holds `bank.json`). */
  replaces(existing: string): boolean;
  /** What the writer makes, for the refusal message (e.g. "an image bank"). */
  what: string;
}

/**
 * Throw (naming the folder) unless `dir` is absent, empty, or recognised by `rule`:
 * the check {@link writeDirAtomic} makes, for commands to make before long work.
 */
export function assertReplaceable(dir: string, rule?: ReplaceRule): void {
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) throw new FileError(dir, "exists and is not a folder");
  if (fs.readdirSync(dir).length > 0 && !(rule?.replaces(dir) ?? false)) {
    throw new FileError(dir, `is a folder that is not ${rule?.what ?? "one pbip wrote"} and is not empty; writing here would replace its contents. Choose another folder, or empty it first`);
  }
}

/**
 * Write a directory atomically: `fill` writes into a temporary sibling directory,
 * which then replaces `dir` in one rename (an existing `dir` is moved aside first
 * and removed after). An existing folder is replaced only when it is empty or
 * `rule.replaces` recognises it: anything else is refused before any work, so a
 * mistyped output path never deletes a user's folder.
 */
export async function writeDirAtomic(dir: string, fill: (tmpDir: string) => Promise<void> | void, rule?: ReplaceRule): Promise<void> {
  assertReplaceable(dir, rule);
  const parent = path.dirname(path.resolve(dir));
  fs.mkdirSync(parent, { recursive: true });
  const tmp = path.join(parent, `.${path.basename(dir)}.${process.pid}.${crypto.randomBytes(4).toString("hex")}.tmp`);
  fs.mkdirSync(tmp);
  try {
    await fill(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const old = fs.existsSync(dir) ? `${tmp}.old` : undefined;
  if (old) fs.renameSync(dir, old);
  fs.renameSync(tmp, dir);
  if (old) fs.rmSync(old, { recursive: true, force: true });
}

/**
 * For writers that fill a folder file by file and resume (pseudo-masks, predictions): refuse a
 * folder that holds files but not the writer's record, so that a mistyped `--out` (a dataset's
 * image or mask folder) is never overwritten, nor taken for earlier output. An absent or empty
 * folder, or one with the record, passes.
 */
export function assertRecordedOutputFolder(dir: string, recordName: string, what: string): void {
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) throw new FileError(dir, "exists and is not a folder");
  const entries = fs.readdirSync(dir);
  if (entries.length === 0 || entries.includes(recordName)) return;
  throw new FileError(
    dir,
    `holds ${entries.length} entr${entries.length === 1 ? "y" : "ies"} (e.g. ${entries[0]}) but no ${recordName}: pbip writes ${what} only into an empty folder or one it wrote itself ` +
      "(it would replace files of the same names, such as a dataset's patches, or take them for its own output); give a new --out",
  );
}

/** SHA-256 of a file or buffer, hex. */
export function sha256(data: Uint8Array | string): string {
  return crypto.createHash("sha256").update(data).digest("hex");
}

export function sha256File(file: string): string {
  return sha256(fs.readFileSync(file));
}

/** Float32Array <-> little-endian bytes (copies; independent of host endianness). */
export function float32ToLE(a: Float32Array): Buffer {
  const b = Buffer.alloc(a.length * 4);
  for (let i = 0; i < a.length; i++) b.writeFloatLE(a[i]!, i * 4);
  return b;
}

export function float32FromLE(b: Uint8Array, file = "<buffer>"): Float32Array {
  if (b.byteLength % 4 !== 0) throw new FileError(file, `length ${b.byteLength} is not a multiple of 4 (float32)`);
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = new Float32Array(b.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** The project root (the folder holding package.json), from dist/ or src/. */
export function projectRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, "package.json")) && fs.existsSync(path.join(dir, "data-manifests"))) return dir;
    dir = path.dirname(dir);
  }
  return process.cwd();
}

/** Where pbip caches derived files (extracted models, features): $PBIP_CACHE, else <project>/.cache. */
export function cacheDir(...parts: string[]): string {
  const base = process.env.PBIP_CACHE ?? path.join(projectRoot(), ".cache");
  const d = path.join(base, ...parts);
  fs.mkdirSync(d, { recursive: true });
  return d;
}
