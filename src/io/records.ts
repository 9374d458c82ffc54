/**
 * Output folders that a writer fills file by file and resumes (pseudo-masks, stage-2
 * predictions), with a JSON record of what made their files.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { diffValues } from "../config/profiles";
import { FileError } from "../util/errors";
import { assertRecordedOutputFolder, readJson, writeJsonAtomic } from "../util/fs";
import { stableStringify } from "../util/json";

export interface RecordedFolderOptions {
  dir: string;
  /** The record's file name in `dir` (e.g. `pseudo-masks.json`). */
  recordName: string;
  /** What made the files now (settings and the weights' identity). */
  record: object;
  /** What the folder holds, for messages (`pseudo-masks`). */
  what: string;
  /** Who else could have made them, for messages (`another checkpoint`). */
  madeBy: string;
  /** The files this writer makes there, removed first when overwriting. */
  outputs: readonly string[];
  overwrite?: boolean;
  /** Accept a non-empty folder without a record (one the caller manages itself). */
  adoptUnrecorded?: boolean;
}

/**
 * Ready `dir` for a writer: a non-empty folder without the record is refused (unless
 * adopted); one recorded with another `record` is an error unless `overwrite`. When
 * overwriting, the old files go before the new record is written, so that a run stopped
 * midway and resumed cannot keep old files under the new record. Writes the record.
 */
export function openRecordedFolder(o: RecordedFolderOptions): void {
  if (!o.adoptUnrecorded) assertRecordedOutputFolder(o.dir, o.recordName, o.what);
  const recFile = path.join(o.dir, o.recordName);
  if (fs.existsSync(recFile) && !o.overwrite) {
    const was = readJson<object>(recFile);
    if (stableStringify(was) !== stableStringify(o.record)) {
      const diff = diffValues(was, o.record).map((d) => d.path);
      throw new FileError(recFile, `the masks here were made by ${o.madeBy} or with other settings (${diff.join(", ")} differ${diff.length === 1 ? "s" : ""}); give a new --out, or --overwrite to make them all again`);
    }
  }
  fs.mkdirSync(o.dir, { recursive: true });
  if (o.overwrite) for (const f of o.outputs) fs.rmSync(f, { force: true });
  writeJsonAtomic(recFile, o.record);
}
