import type { Command } from "../command";

export const commands: Command[] = [];
