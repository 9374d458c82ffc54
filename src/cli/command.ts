import { parseArgs, type ParseArgsConfig } from "node:util";
import * as fs from "node:fs";
import * as path from "node:path";
import { FileError, UsageError } from "../util/errors";
import { readJson } from "../util/fs";
import type { DatasetSpec } from "../data/types";
import { initBackend, parseBackendChoice, formatBackendReport, type BackendReport } from "../runtime/backend";

/** One `pbip` subcommand (possibly with sub-subcommands, e.g. `pbip data synth`). */
export interface Command {
  /** Words after `pbip`, e.g. `["data", "synth"]`. */
  name: string[];
  summary: string;
  /** Usage text shown by `--help`: options one per line. */
  usage: string;
  run(argv: string[]): Promise<number | void>;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Parsed options: strings, booleans, or arrays for `multiple` options. */
export interface Parsed {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

/** parseArgs with strict checking and a usage error that names the command. */
export function parse(cmd: string, argv: string[], options: Options, allowPositionals = false): Parsed {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true }) as Parsed;
  } catch (e) {
    throw new UsageError(`pbip ${cmd}: ${(e as Error).message}`);
  }
}

/** The `--backend` option every compute command accepts. */
export const backendOption = { backend: { type: "string" as const } };

/** Initialise the backend from `--backend` (else PBIP_BACKEND, else auto) and print what was chosen. */
/** `--backend NAME` checked as a usage error (exit 2) before anything starts. */
export function backendArg(value: string | undefined): ReturnType<typeof parseBackendChoice> | undefined {
  if (value === undefined) return undefined;
  try {
    return parseBackendChoice(value, "--backend");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export async function startBackend(value: string | undefined, quiet = false): Promise<BackendReport> {
  const choice = backendArg(value);
  const report = await initBackend(choice ? { backend: choice } : {});
  if (!quiet) console.error(formatBackendReport(report).split("\n").slice(0, 2).join("\n"));
  return report;
}

/** A string option (undefined when absent). */
export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** An optional number option that passes `check` (`want` says what it takes); undefined when not given. A blank value is an error, not 0. */
export function numberArg(cmd: string, name: string, v: string | undefined, check: (n: number) => boolean, want: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || !check(n)) throw new UsageError(`pbip ${cmd}: --${name} must be ${want}, got "${v}"`);
  return n;
}

/** An optional integer option of at least `min`; undefined when not given. */
export function intArg(cmd: string, name: string, v: string | undefined, min = 1): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`pbip ${cmd}: --${name} must be an integer >= ${min}, got "${v}"`);
  return n;
}

export function intOption(cmd: string, name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`pbip ${cmd}: --${name} must be a non-negative integer, got "${v}"`);
  return n;
}

/**
 * The dataset of `--data DIR`: the `--dataset` name when given, else the spec in the folder's
 * card.json (the embedded synthetic sets carry one). A folder without either is a usage error:
 * guessing would normalise and label real data as another dataset.
 */
export function datasetArg(cmd: string, data: string, name: string | undefined): string | DatasetSpec {
  if (name) return name;
  const card = path.join(data, "card.json");
  if (!fs.existsSync(card)) throw new UsageError(`pbip ${cmd}: --dataset NAME is required (${data} has no card.json naming its dataset; e.g. --dataset luad-histoseg or bcss-wsss)`);
  const c = readJson<{ spec?: DatasetSpec }>(card);
  if (!c.spec) throw new FileError(card, "has no spec; give --dataset NAME");
  return c.spec;
}

/**
 * Ctrl-C for long training commands: the first stops the run after the step in progress (the
 * loop saves the steps since the last checkpoint, so running the same command again resumes
 * there); a second quits at once. `dispose` restores the default behaviour.
 */
export function interruptOnCtrlC(): { signal: AbortSignal; dispose: () => void } {
  const ctrl = new AbortController();
  const second = () => {
    process.stderr.write("\nsecond Ctrl-C: quitting now; the steps since the last checkpoint are lost\n");
    process.exit(130);
  };
  const first = () => {
    process.stderr.write("\nCtrl-C: stopping after this step and saving it (Ctrl-C again to quit at once)\n");
    ctrl.abort();
    process.once("SIGINT", second);
  };
  process.once("SIGINT", first);
  return {
    signal: ctrl.signal,
    dispose: () => {
      process.removeListener("SIGINT", first);
      process.removeListener("SIGINT", second);
    },
  };
}

/** The line a training command prints when Ctrl-C stopped it. */
export function interruptedLine(ev: { step: number; checkpoint?: string }): string {
  return `\nstopped at step ${ev.step}${ev.checkpoint ? `; saved in ${ev.checkpoint}` : ""}: run the same command again to resume`;
}
