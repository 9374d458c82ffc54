import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "../util/errors";
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
