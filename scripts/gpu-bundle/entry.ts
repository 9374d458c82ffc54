// Entry point of the GPU bundle's JavaScript (scripts/bundle-gpu.mjs bundles it with
// esbuild into dist-gpu/app/pbip.cjs): the `pbip` command line, as bin/pbip.js runs it.
import { main } from "../../src/cli/main";

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code ?? 0;
  },
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    process.exitCode = 1;
  },
);
