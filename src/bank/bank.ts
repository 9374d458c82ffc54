/**
 * The image bank on disk and in memory: prototypes P in R^{N x K x d} (METHOD.md
 * section 2, the paper's eq. 1 clustering) with everything needed to trust them.
 *
 * A bank is a folder:
 * - `prototypes.f32`: little-endian float32, `[sum K, d]` row-major, classes in
 *   label order, each class's K subclass rows together (rows `offsets[c]` to `offsets[c+1]-1`);
 * - `bank.json` ({@link BankMeta}): format version, class names and order, K per
 *   class, offsets, d, the encoder's identity (name, weights hash, preprocessing,
 *   stand-in note), rule, N_K, seed, the bank config used, the selection
 *   statistics, every subclass's members with their cosine distances to the
 *   centre, and the pbip version. No timestamps: the same inputs give the same bytes.
 *
 * The folder is written atomically ({@link writeDirAtomic}). {@link loadBank}
 * checks sizes and, given the encoder in use, that it is the one that built the bank.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as tf from "@tensorflow/tfjs";
import type { BankRule, PbipConfig } from "../config/profiles";
import type { EncoderIdentity, ImageEncoder } from "../encoders/types";
import { FileError } from "../util/errors";
import { float32FromLE, float32ToLE, readJson, sha256, writeDirAtomic, writeFileAtomic, writeJsonAtomic, type ReplaceRule } from "../util/fs";
import type { SubclassRecord } from "./prototypes";
import type { SelectionStats } from "./select";

/** `format` field of bank.json. */
export const BANK_FORMAT = "pbip-image-bank";
/** Version of the bank folder format; bumped on incompatible changes. */
export const BANK_FORMAT_VERSION = 1;
export const BANK_JSON = "bank.json";
export const BANK_PROTOTYPES = "prototypes.f32";

/** The encoder that built a bank: its identity plus whether it is a stand-in. */
export interface BankEncoderRecord extends EncoderIdentity {
  isStandIn: boolean;
  standInNote?: string;
}

/** Contents of bank.json. */
export interface BankMeta {
  format: typeof BANK_FORMAT;
  formatVersion: number;
  /** pbip version that wrote the bank. */
  pbipVersion: string;
  /** Dataset name (spec name) and the folder the patches came from, as given. */
  dataset: { name: string; root?: string };
  /** Class names in label order (N). */
  classes: string[];
  /** Class codes in label order, e.g. TE, NEC, LYM, TAS. */
  codes: string[];
  /** K per class (a class with fewer patches than K gets fewer subclasses). */
  k: number[];
  /** Row offsets: class c owns rows offsets[c] .. offsets[c+1]-1; length N+1, last = sum K. */
  offsets: number[];
  /** Feature dimension d. */
  dim: number;
  encoder: BankEncoderRecord;
  rule: BankRule;
  /** N_K (patches per subclass for `nearest`, per sub-bank for `random`; unused by `centroid`). */
  nK: number;
  seed: number;
  /** The bank section of the config used. */
  config: PbipConfig["bank"];
  /** How many patches each selection step kept, per class. */
  selection: SelectionStats;
  /** One record per prototype row, in row order. */
  subclasses: SubclassRecord[];
  /** Per class: k-means iterations and convergence (absent for `random`). */
  kmeans?: ({ iterations: number; converged: boolean } | null)[];
}

/** An image bank in memory: metadata plus the `[sum K, d]` prototype rows. */
export interface ImageBank {
  meta: BankMeta;
  /** Row-major `[sum K, d]`. */
  prototypes: Float32Array;
  /** Folder it was loaded from or saved to. */
  dir?: string;
}

/** The bank record of an encoder. */
export function encoderRecord(enc: ImageEncoder): BankEncoderRecord {
  const r: BankEncoderRecord = { ...enc.identity, preprocessing: { ...enc.identity.preprocessing }, isStandIn: enc.isStandIn };
  if (enc.standInNote) r.standInNote = enc.standInNote;
  return r;
}

/** Problems with a bank's internal consistency (empty when fine). */
export function bankProblems(bank: ImageBank): string[] {
  const m = bank.meta;
  const p: string[] = [];
  if (m.format !== BANK_FORMAT) p.push(`format is ${JSON.stringify(m.format)}, expected "${BANK_FORMAT}"`);
  if (m.formatVersion !== BANK_FORMAT_VERSION) p.push(`format version ${m.formatVersion}; this pbip reads version ${BANK_FORMAT_VERSION}`);
  const n = m.classes?.length ?? 0;
  if (n === 0) p.push("no classes");
  if (m.k?.length !== n) p.push(`k has ${m.k?.length} entries for ${n} classes`);
  if (m.offsets?.length !== n + 1) p.push(`offsets has ${m.offsets?.length} entries, expected ${n + 1}`);
  else {
    let o = 0;
    for (let c = 0; c < n; c++) {
      if (m.offsets[c] !== o) p.push(`offsets[${c}] is ${m.offsets[c]}, expected ${o}`);
      o += m.k[c] ?? 0;
    }
    if (m.offsets[n] !== o) p.push(`offsets[${n}] is ${m.offsets[n]}, expected ${o}`);
  }
  const rows = m.offsets?.[n] ?? 0;
  if (!(m.dim >= 1)) p.push(`dim is ${m.dim}`);
  if (bank.prototypes.length !== rows * m.dim) p.push(`prototypes hold ${bank.prototypes.length} floats, expected sum K x d = ${rows} x ${m.dim}`);
  if (m.subclasses?.length !== rows) p.push(`${m.subclasses?.length} subclass records for ${rows} prototype rows`);
  if (m.encoder?.dim !== m.dim) p.push(`encoder dim ${m.encoder?.dim} differs from bank dim ${m.dim}`);
  let finite = true;
  for (let i = 0; i < bank.prototypes.length; i++) {
    if (!Number.isFinite(bank.prototypes[i]!)) {
      p.push(`prototype value ${i} is not finite`);
      finite = false;
      break;
    }
  }
  if (finite && m.dim >= 1 && bank.prototypes.length === rows * m.dim && rows > 0) {
    // A dead or constant encoder gives prototypes that are zero or all alike: matching against them means nothing.
    const d = m.dim;
    const row = (r: number) => bank.prototypes.subarray(r * d, (r + 1) * d);
    const zero: number[] = [];
    for (let r = 0; r < rows; r++) if (row(r).every((v) => v === 0)) zero.push(r);
    if (zero.length) p.push(`prototype row${zero.length > 1 ? "s" : ""} ${zero.join(", ")} ${zero.length > 1 ? "are" : "is"} all zeros (the encoder gave zero features for those patches)`);
    else if (rows > 1) {
      let spread = 0;
      for (let r = 1; r < rows; r++) for (let j = 0; j < d; j++) spread = Math.max(spread, Math.abs(row(r)[j]! - row(0)[j]!));
      if (spread === 0) p.push(`all ${rows} prototypes are the same vector (the encoder's features do not vary with the patch)`);
    }
  }
  return p;
}

/** SHA-256 (first 16 hex digits) of prototype values as little-endian float32 bytes: what a stage-1 checkpoint records of its bank. */
export function prototypesSha256(values: Float32Array): string {
  return sha256(float32ToLE(values)).slice(0, 16);
}

/** A bank folder replaces only another bank folder (one holding bank.json), or an empty one. */
export const BANK_FOLDER_RULE: ReplaceRule = { what: "an image bank (bank.json)", replaces: (d) => fs.existsSync(path.join(d, BANK_JSON)) };

/** Write a bank folder atomically: `prototypes.f32` and `bank.json`. Returns the folder. */
export async function saveBank(dir: string, bank: ImageBank): Promise<string> {
  const problems = bankProblems(bank);
  if (problems.length) throw new Error(`saveBank ${dir}: inconsistent bank: ${problems.join("; ")}`);
  await writeDirAtomic(dir, (tmp) => {
    writeFileAtomic(path.join(tmp, BANK_PROTOTYPES), float32ToLE(bank.prototypes));
    writeJsonAtomic(path.join(tmp, BANK_JSON), bank.meta);
  }, BANK_FOLDER_RULE);
  bank.dir = dir;
  return dir;
}

/** Options of {@link loadBank}. */
export interface LoadBankOptions {
  /** The encoder in use: the bank must have been built with it (name, d, weights hash, preprocessing). */
  encoder?: ImageEncoder | EncoderIdentity;
}

/**
 * The differences between the encoder that built a bank and another one, as
 * readable phrases (empty when they match): name, d, weights hash, and every
 * preprocessing field.
 */
export function encoderMismatch(built: EncoderIdentity, used: EncoderIdentity): string[] {
  const out: string[] = [];
  if (built.name !== used.name) out.push(`name ${built.name} vs ${used.name}`);
  if (built.dim !== used.dim) out.push(`d ${built.dim} vs ${used.dim}`);
  if (built.weightsHash !== used.weightsHash) out.push(`weights hash ${built.weightsHash} vs ${used.weightsHash}`);
  const a = built.preprocessing as unknown as Record<string, unknown>;
  const b = used.preprocessing as unknown as Record<string, unknown>;
  for (const k of new Set([...Object.keys(a ?? {}), ...Object.keys(b ?? {})])) {
    if (JSON.stringify(a?.[k]) !== JSON.stringify(b?.[k])) out.push(`preprocessing.${k} ${JSON.stringify(a?.[k])} vs ${JSON.stringify(b?.[k])}`);
  }
  return out;
}

/** Throw a {@link FileError} naming bank.json when `bank` was built with another encoder. */
export function assertBankEncoder(bank: ImageBank, encoder: ImageEncoder | EncoderIdentity): void {
  const used = "identity" in encoder ? encoder.identity : encoder;
  const diff = encoderMismatch(bank.meta.encoder, used);
  if (diff.length) {
    const file = bank.dir ? path.join(bank.dir, BANK_JSON) : "<bank>";
    throw new FileError(
      file,
      `this bank was built with encoder ${bank.meta.encoder.name} (d = ${bank.meta.dim}, weights ${bank.meta.encoder.weightsHash}) but the encoder in use is ${used.name} (d = ${used.dim}, weights ${used.weightsHash}); they differ in ${diff.join("; ")}. Rebuild the bank with \`pbip bank build --encoder ...\` for this encoder.`,
    );
  }
}

/** Read a bank folder, check its consistency and, when given, that it matches the encoder in use. */
export function loadBank(dir: string, options: LoadBankOptions = {}): ImageBank {
  const jsonFile = path.join(dir, BANK_JSON);
  const binFile = path.join(dir, BANK_PROTOTYPES);
  if (!fs.existsSync(dir)) throw new FileError(dir, "bank folder not found (build one with `pbip bank build`)");
  const meta = readJson<BankMeta>(jsonFile);
  if (!fs.existsSync(binFile)) throw new FileError(binFile, "prototype file missing");
  const prototypes = float32FromLE(fs.readFileSync(binFile), binFile);
  const bank: ImageBank = { meta, prototypes, dir };
  const problems = bankProblems(bank);
  if (problems.length) throw new FileError(jsonFile, `not a valid bank: ${problems.join("; ")}`);
  if (options.encoder) assertBankEncoder(bank, options.encoder);
  return bank;
}

/** Number of prototype rows, sum K. */
export function numPrototypes(bank: ImageBank): number {
  return bank.meta.offsets[bank.meta.classes.length]!;
}

/** The prototypes as a `[sum K, d]` tensor (P flattened over classes and subclasses). The caller disposes it. */
export function prototypesTensor(bank: ImageBank): tf.Tensor2D {
  return tf.tensor2d(bank.prototypes, [numPrototypes(bank), bank.meta.dim]);
}

/** The prototypes as `[N, K, d]` (P of the paper); only when every class has the same K. */
export function prototypesTensor3d(bank: ImageBank): tf.Tensor3D {
  const k = bank.meta.k;
  if (k.some((v) => v !== k[0])) throw new Error(`prototypesTensor3d: K differs between classes (${k.join(", ")}); use prototypesTensor and subclassClassIndex`);
  return tf.tensor3d(bank.prototypes, [bank.meta.classes.length, k[0]!, bank.meta.dim]);
}

/** Class index of every prototype row. */
export function subclassClassIndex(bank: ImageBank): number[] {
  const out: number[] = [];
  bank.meta.k.forEach((k, c) => {
    for (let s = 0; s < k; s++) out.push(c);
  });
  return out;
}

/** Rows [start, end) of class `c`. */
export function classRows(bank: ImageBank, c: number): [number, number] {
  if (c < 0 || c >= bank.meta.classes.length) throw new Error(`classRows: class ${c} out of range 0..${bank.meta.classes.length - 1}`);
  return [bank.meta.offsets[c]!, bank.meta.offsets[c + 1]!];
}

/** The row of subclass `s` of class `c`. */
export function prototypeRow(bank: ImageBank, c: number, s: number): number {
  const [a, b] = classRows(bank, c);
  if (s < 0 || a + s >= b) throw new Error(`prototypeRow: class ${bank.meta.classes[c]} has ${b - a} subclasses, asked for ${s}`);
  return a + s;
}

/** A short label per prototype row: `<code>.<subclass>`, e.g. `TE.0`. */
export function subclassLabels(bank: ImageBank): string[] {
  return bank.meta.subclasses.map((s) => `${bank.meta.codes[s.classIndex] ?? bank.meta.classes[s.classIndex]}.${s.subclass}`);
}
