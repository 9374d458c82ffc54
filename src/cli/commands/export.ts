import { type Command, parse, str } from "../command";
import { UsageError } from "../../util/errors";
import { exportRun } from "../../pipeline/export";

const exportCmd: Command = {
  name: ["export"],
  summary: "gather a run folder into supplementary material (HTML notebooks, figures, results CSV/Markdown, configs, checksums, environment)",
  usage: ["pbip export RUN_DIR --out DIR", "", "RUN_DIR  a run folder written by `npm run demo`, `pbip demo` or the notebooks", "--out    the folder to write (replaced atomically); zip it to upload"].join("\n"),
  async run(argv) {
    const p = parse("export", argv, { out: { type: "string" } }, true);
    const runDir = p.positionals[0];
    const out = str(p, "out");
    if (!runDir || !out) throw new UsageError("pbip export: give RUN_DIR and --out DIR (see --help)");
    const s = await exportRun(runDir, out);
    console.log(`wrote ${s.outDir}: ${s.notebooks} notebooks, ${s.figures} figures, ${s.checksums} checksums`);
    return 0;
  },
};

export const commands: Command[] = [exportCmd];
