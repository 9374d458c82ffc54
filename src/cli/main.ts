import type { Command } from "./command";
import { UsageError } from "../util/errors";
import { commands as doctor } from "./commands/doctor";
import { commands as data } from "./commands/data";
import { commands as bank } from "./commands/bank";
import { commands as train } from "./commands/train";
import { commands as cam } from "./commands/cam";
import { commands as evaluate } from "./commands/eval";
import { commands as seg } from "./commands/seg";
import { commands as exportRun } from "./commands/export";
import { commands as bench } from "./commands/bench";
import { commands as demo } from "./commands/demo";
import { commands as ablate } from "./commands/ablate";

export const COMMANDS: Command[] = [...doctor, ...data, ...bank, ...train, ...cam, ...evaluate, ...seg, ...exportRun, ...bench, ...demo, ...ablate];

function help(): string {
  const rows = COMMANDS.map((c) => `  pbip ${c.name.join(" ").padEnd(16)} ${c.summary}`);
  return ["pbip: PBIP (CVPR 2025) for weakly supervised histopathology segmentation", "", "commands:", ...rows, "", "pbip <command> --help shows its options."].join("\n");
}

/** Entry point of the `pbip` binary; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    console.log(help());
    return 0;
  }
  // Longest match of command words.
  const match = COMMANDS.filter((c) => c.name.every((w, i) => argv[i] === w)).sort((a, b) => b.name.length - a.name.length)[0];
  if (!match) {
    console.error(`pbip: unknown command "${argv.slice(0, 2).join(" ")}"\n\n${help()}`);
    return 2;
  }
  const rest = argv.slice(match.name.length);
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(`pbip ${match.name.join(" ")}: ${match.summary}\n\n${match.usage}`);
    return 0;
  }
  try {
    return (await match.run(rest)) ?? 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(e.message);
      return 2;
    }
    throw e;
  }
}
